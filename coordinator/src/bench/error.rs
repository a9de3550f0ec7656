//! Why a benchmark could not run: one variant per failure, each naming the file, process or
//! request it concerns.

use std::path::PathBuf;

/// A benchmark that could not be set up or finished.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A service binary is not where the benchmark looks for it.
    #[error(
        "no executable {} (the bench starts `{name}` from the coordinator's own folder or \
         --bin-dir; build it with `cargo build --release -p {name}`)",
        path.display()
    )]
    MissingBinary {
        /// `sharer-svc` or `receiver-svc`.
        name: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// An option or combination of options cannot be run.
    #[error("{0}")]
    Invalid(String),
    /// A file system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A service process could not be started.
    #[error("starting {service} ({}): {source}", binary.display())]
    Spawn {
        /// Which service (`sharer`, `receiver`).
        service: String,
        /// The binary.
        binary: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A service process ended before the benchmark was done with it.
    #[error("{service} exited ({status}) before it was {when}; its log {}:\n{log_excerpt}", log.display())]
    Exited {
        /// Which service.
        service: String,
        /// Its exit status.
        status: String,
        /// `healthy` or `done`.
        when: &'static str,
        /// Its log file.
        log: PathBuf,
        /// The log, or its first and last lines.
        log_excerpt: String,
    },
    /// A service did not report SERVING in time.
    #[error("{service} not healthy after {secs} s ({reason}); its log {}:\n{log_excerpt}", log.display())]
    NotHealthy {
        /// Which service.
        service: String,
        /// Seconds waited.
        secs: u64,
        /// The last health probe's error.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The log, or its first and last lines.
        log_excerpt: String,
    },
    /// A prompt of the asked length cannot be built.
    #[error("prompt of {tokens} tokens: {reason}")]
    Prompt {
        /// The asked length, receiver tokens.
        tokens: usize,
        /// Why not.
        reason: String,
    },
    /// A model spec or its tokenizer cannot be used.
    #[error("model {spec}: {reason}")]
    Model {
        /// The spec.
        spec: String,
        /// Why not.
        reason: String,
    },
    /// Writing a random-initialised fuser failed.
    #[error("random fuser in {}: {reason}", dir.display())]
    Fuser {
        /// The folder.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// A gRPC call failed.
    #[error("{method} at {tokens} tokens: {call}: {status}")]
    Rpc {
        /// The benchmarked method.
        method: String,
        /// The prompt length.
        tokens: usize,
        /// Which call (`connect`, `Evaluate`).
        call: &'static str,
        /// The status or transport error.
        status: String,
    },
    /// The run was interrupted (Ctrl-C, SIGTERM).
    #[error("interrupted; the services were stopped")]
    Interrupted,
}

impl BenchError {
    /// An [`BenchError::Io`] for `path`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| BenchError::Io { op, path, source }
    }
}
