//! Error types of the coordinator library, one enum per concern, with structured fields.

use std::path::PathBuf;

/// A grid file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    /// The TOML does not parse into a grid (syntax, unknown field, wrong type).
    #[error("grid file does not parse: {0}")]
    Parse(String),
    /// The grid parses but has problems; every problem is listed.
    #[error("grid is invalid:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// A run folder that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A complete line of a results file is not a result row.
    #[error("{path} line {line}: not a result row: {message}")]
    CorruptRow {
        /// The results file.
        path: PathBuf,
        /// One-based line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A row was written to the wrong cell's file.
    #[error("row for cell {row_cell} cannot be appended to cell {file_cell}")]
    WrongCell {
        /// The cell of the file.
        file_cell: String,
        /// The cell named in the row.
        row_cell: String,
    },
    /// A JSON document (config, marker, manifest) does not serialize or parse.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The serializer's message.
        message: String,
    },
}

impl RegistryError {
    pub(crate) fn io(op: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        RegistryError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
