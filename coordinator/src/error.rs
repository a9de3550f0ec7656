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

/// Why a run stopped: its folder, the receiver endpoint, or the run loop itself.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An endpoint is not a URL, or is `https://` without a CA (the reason names the URL).
    #[error("{reason}")]
    Endpoint {
        /// The endpoint given.
        url: String,
        /// Why it cannot be used.
        reason: service_kit::transport::client::ClientError,
    },
    /// The run folder could not be read or written.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The progress bar's template does not parse.
    #[error("progress bar template: {0}")]
    ProgressTemplate(#[source] indicatif::style::TemplateError),
    /// A row arrived for a cell whose results file was never opened (a bug in the run loop).
    #[error("row for a cell that was not opened (cell {index})")]
    CellNotOpened {
        /// The cell's index in the run.
        index: usize,
    },
    /// An evaluation task panicked.
    #[error("an evaluation task panicked: {0}")]
    TaskPanicked(#[source] tokio::task::JoinError),
}
