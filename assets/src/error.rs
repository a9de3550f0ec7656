//! Typed errors of the asset store. Every error that a user can fix names the command to run.

use std::path::PathBuf;

/// The command that downloads and verifies the default assets.
pub const FETCH_COMMAND: &str = "cargo run --release -p assets -- fetch";

/// Errors from locating, fetching, extracting or verifying an asset.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// The asset file is not in the cache.
    #[error("asset `{asset}` is missing at {}: run `{fix}`", path.display())]
    Missing {
        /// Asset name.
        asset: &'static str,
        /// Where it was expected.
        path: PathBuf,
        /// Command that fixes it.
        fix: String,
    },
    /// The cached file has the wrong size (truncated or replaced).
    #[error(
        "asset `{asset}` at {} has {actual} bytes, expected {expected}: run `{fix}`",
        path.display()
    )]
    SizeMismatch {
        /// Asset name.
        asset: &'static str,
        /// Path of the file.
        path: PathBuf,
        /// Pinned size.
        expected: u64,
        /// Size on disk.
        actual: u64,
        /// Command that fixes it.
        fix: String,
    },
    /// The file's stamp is absent or does not record the pinned sha256 (never verified, or a
    /// different version).
    #[error("asset `{asset}` at {} has no valid verification stamp: run `{fix}`", path.display())]
    Unverified {
        /// Asset name.
        asset: &'static str,
        /// Path of the file.
        path: PathBuf,
        /// Command that fixes it.
        fix: String,
    },
    /// Content hash differs from the pinned sha256.
    #[error("{what} at {} has sha256 {actual}, expected {expected}: run `{fix}`", path.display())]
    ChecksumMismatch {
        /// What was hashed (asset name or downloaded package file).
        what: String,
        /// Path of the file.
        path: PathBuf,
        /// Pinned sha256 (hex).
        expected: String,
        /// Observed sha256 (hex).
        actual: String,
        /// Command that fixes it.
        fix: String,
    },
    /// An unknown asset name was given.
    #[error("unknown asset `{name}`; known: {known}")]
    UnknownAsset {
        /// The name given.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// A registry client (pip, npm) could not be started or failed.
    #[error("`{command}` failed ({status}): {stderr_tail}")]
    ClientFailed {
        /// The command line run.
        command: String,
        /// Exit status or spawn error.
        status: String,
        /// Last lines of its standard error.
        stderr_tail: String,
    },
    /// The registry client succeeded but did not leave exactly one package file.
    #[error("expected one `*.{extension}` file in {} after download, found {found}", dir.display())]
    DownloadNotFound {
        /// Download directory.
        dir: PathBuf,
        /// Expected extension.
        extension: &'static str,
        /// How many matching files were found.
        found: usize,
    },
    /// A package archive does not contain the expected member.
    #[error("archive {} has no member `{member}`", archive.display())]
    MemberNotFound {
        /// The archive.
        archive: PathBuf,
        /// Member path inside it.
        member: String,
    },
    /// An archive could not be read.
    #[error("archive {} is unreadable: {reason}", archive.display())]
    Archive {
        /// The archive.
        archive: PathBuf,
        /// What went wrong.
        reason: String,
    },
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
    /// No cache directory could be determined (no `KVWIRE_CACHE_DIR`, no `HOME`).
    #[error("no cache directory: set KVWIRE_CACHE_DIR or HOME, or pass --cache-dir")]
    NoCacheDir,
}

impl AssetError {
    /// Wraps an I/O error with the operation and path.
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| AssetError::Io { op, path, source }
    }
}
