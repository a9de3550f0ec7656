//! Typed errors of the fused receiver.

/// Errors from fusing, scoring and training.
#[derive(Debug, thiserror::Error)]
pub enum FuserError {
    /// The model runtime failed (forward pass, tokenizer, shapes).
    #[error(transparent)]
    Runtime(#[from] model_runtime::RuntimeError),
    /// The C2C math failed (projector shapes, positions, layer map).
    #[error(transparent)]
    C2c(#[from] c2c::C2cError),
    /// A tensor operation failed.
    #[error("tensor operation failed while {context}: {source}")]
    Tensor {
        /// What was being done.
        context: &'static str,
        /// The candle error.
        #[source]
        source: candle_core::Error,
    },
    /// Input that cannot be fused or scored (empty prompt, mismatched pair, bad option).
    #[error("{what}: {message}")]
    Input {
        /// The offending input.
        what: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Quantizing the sharer cache for QAT failed.
    #[error("quantizing the sharer cache: {0}")]
    Quantize(#[from] kvwire::EncodeError),
    /// A training state file could not be read or written.
    #[error("training state {path}: {message}")]
    State {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl FuserError {
    /// An input error.
    pub fn input(what: &'static str, message: impl Into<String>) -> Self {
        Self::Input {
            what,
            message: message.into(),
        }
    }
}

/// Result with [`FuserError`].
pub type Result<T> = std::result::Result<T, FuserError>;

/// Attaches a context to candle errors.
pub(crate) trait Ctx<T> {
    fn ctx(self, context: &'static str) -> Result<T>;
}

impl<T> Ctx<T> for std::result::Result<T, candle_core::Error> {
    fn ctx(self, context: &'static str) -> Result<T> {
        self.map_err(|source| FuserError::Tensor { context, source })
    }
}
