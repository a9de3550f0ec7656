//! Typed errors of the runtime: every variant names what was wrong and where.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The config or GGUF names an architecture this runtime does not implement.
    #[error("unknown architecture `{name}` (supported: qwen2, qwen3, llama, mistral)")]
    UnknownArchitecture {
        /// The architecture string as found in the file.
        name: String,
    },
    /// A weight the architecture needs is not in the file.
    #[error("missing tensor `{name}`")]
    MissingTensor {
        /// Name of the tensor in the file's own naming scheme.
        name: String,
    },
    /// A weight exists but its shape does not match the config.
    #[error("tensor `{name}` has shape {got:?}, config expects {expected:?}")]
    ShapeMismatch {
        /// Name of the tensor.
        name: String,
        /// Shape implied by the config.
        expected: Vec<usize>,
        /// Shape found in the file.
        got: Vec<usize>,
    },
    /// A config or metadata field is missing or has the wrong type or value.
    #[error("config field `{field}`: {reason}")]
    BadConfig {
        /// The field (HF config.json key or GGUF metadata key).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The GGUF file could not be parsed.
    #[error("bad GGUF file {path}: {reason}")]
    BadGguf {
        /// The file.
        path: PathBuf,
        /// What the parser reported.
        reason: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A JSON file could not be parsed.
    #[error("cannot parse {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// The tokenizer could not be built or failed on an input.
    #[error("tokenizer: {reason}")]
    Tokenizer {
        /// What went wrong.
        reason: String,
    },
    /// A caller-provided input (ids, offset, cache) does not fit the model.
    #[error("invalid input `{what}`: {reason}")]
    InvalidInput {
        /// Which argument.
        what: &'static str,
        /// Why it does not fit.
        reason: String,
    },
    /// The work was cancelled (its [`crate::cancel::CancelToken`] was set): it stopped
    /// between layers without a result.
    #[error("cancelled between layers: the caller went away or its deadline passed")]
    Cancelled,
    /// A tensor operation failed inside candle.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result alias of the runtime.
pub type Result<T> = std::result::Result<T, RuntimeError>;

impl RuntimeError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::BadConfig {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn input(what: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn tokenizer(reason: impl std::fmt::Display) -> Self {
        Self::Tokenizer {
            reason: reason.to_string(),
        }
    }
}
