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

/// Why shard folders cannot be merged (`coordinator merge`).
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// No shard folder was given.
    #[error("no shard folders to merge")]
    NoShards,
    /// A folder is not a shard of a run (no `configs/shard.json`).
    #[error(
        "{0}: not a shard folder (no configs/shard.json; run it with `coordinator run --shard I/N`)"
    )]
    NotAShard(PathBuf),
    /// A shard never finished an invocation, so the code it ran is unknown.
    #[error("{0}: no manifest in manifests/ (the shard never finished a run; run it again first)")]
    NoManifest(PathBuf),
    /// Two shards of different grids (or a shard whose invocations ran different grids).
    #[error(
        "{first} ran grid sha256 {first_grid}, {other} ran {other_grid}: not shards of one run"
    )]
    DifferentGrid {
        /// The first folder.
        first: PathBuf,
        /// Its grid's sha256.
        first_grid: String,
        /// The folder that differs.
        other: PathBuf,
        /// That folder's grid sha256.
        other_grid: String,
    },
    /// Two shards (or two invocations of one shard) ran different code.
    #[error(
        "{first} ran code {first_code}, {other} ran {other_code}: rows of different code do not merge"
    )]
    DifferentCommit {
        /// The first folder.
        first: PathBuf,
        /// Its commit (with `+dirty` when tracked files had changes).
        first_code: String,
        /// The folder that differs.
        other: PathBuf,
        /// Its commit.
        other_code: String,
    },
    /// Shards split the run into different numbers of parts.
    #[error("{other} is shard {index}/{count}, but {first} splits the run into {first_count}")]
    DifferentCount {
        /// The first folder.
        first: PathBuf,
        /// Its shard count.
        first_count: usize,
        /// The folder that differs.
        other: PathBuf,
        /// Its shard index.
        index: usize,
        /// Its shard count.
        count: usize,
    },
    /// The same grid expanded to different cells or items in two shards (another data file,
    /// another dataset version).
    #[error("{first} and {other} planned different cells or items for the same grid")]
    DifferentItems {
        /// The first folder.
        first: PathBuf,
        /// The folder that differs.
        other: PathBuf,
    },
    /// Two folders hold the same shard.
    #[error("{first} and {other} both hold shard {index}")]
    Overlap {
        /// The shard index.
        index: usize,
        /// One folder.
        first: PathBuf,
        /// The other.
        other: PathBuf,
    },
    /// Shards of the run are not among the folders.
    #[error("shards {missing:?} of {count} are missing")]
    Missing {
        /// Missing shard indices.
        missing: Vec<usize>,
        /// Shard count.
        count: usize,
    },
    /// A shard folder's plans or rows are not its shard's slice.
    #[error("{path}: {what}")]
    NotItsSlice {
        /// The shard folder.
        path: PathBuf,
        /// What is out of place.
        what: String,
    },
    /// The output folder already holds a run.
    #[error("{0} already holds a run folder; merge into a new folder")]
    OutExists(PathBuf),
    /// A folder could not be read or written.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}
