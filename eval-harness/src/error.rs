//! Typed errors of the dataset loaders.

use std::path::PathBuf;

/// Errors from reading datasets.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Filesystem error with the path involved.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The zip (wheel) could not be read.
    #[error("archive {}: {reason}", archive.display())]
    Archive {
        /// Archive path.
        archive: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A member the dataset needs is absent from the archive.
    #[error("archive {} has no member `{member}`", archive.display())]
    MissingMember {
        /// Archive path.
        archive: PathBuf,
        /// Member path.
        member: String,
    },
    /// A record is not valid JSON.
    #[error("{source_name} record {record}: invalid JSON: {reason}")]
    Json {
        /// File or member the record came from.
        source_name: String,
        /// Zero-based record (line) number.
        record: usize,
        /// Parser message.
        reason: String,
    },
    /// A record lacks a field or has one of the wrong type.
    #[error("{source_name} record {record}: field `{field}`: {reason}")]
    Field {
        /// File or member the record came from.
        source_name: String,
        /// Zero-based record number.
        record: usize,
        /// Field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An Arrow IPC stream could not be decoded.
    #[error("{source_name}: Arrow IPC: {reason}")]
    Arrow {
        /// File or member.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// The record schema matches no known dataset layout.
    #[error("{source_name} record {record}: unknown record layout (keys: {keys})")]
    UnknownLayout {
        /// File or member.
        source_name: String,
        /// Zero-based record number.
        record: usize,
        /// Keys present.
        keys: String,
    },
    /// The dataset/split is not in the package.
    #[error("dataset `{dataset}` is not available from {from}")]
    Unavailable {
        /// Dataset reference asked for.
        dataset: String,
        /// Where it was looked for.
        from: String,
    },
    /// A dataset name or split could not be parsed.
    #[error("unknown dataset `{name}`; known: {known}")]
    UnknownDataset {
        /// Name given.
        name: String,
        /// Known names.
        known: String,
    },
    /// More records than the loader accepts.
    #[error("{source_name}: more than {max} records")]
    TooManyRecords {
        /// File or member.
        source_name: String,
        /// The limit.
        max: usize,
    },
}

impl DataError {
    #[cfg(feature = "data")]
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| DataError::Io { op, path, source }
    }
}
