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
    /// A C2C checkpoint asked to fuse in a prompt layout it was not trained for.
    #[error(
        "the C2C fuser {checkpoint} was trained for the {trained} layout, not the {requested} \
         layout of this request ({hint})"
    )]
    LayoutNotTrained {
        /// The checkpoint folder.
        checkpoint: String,
        /// The layout it was trained for (`shared` or `context`).
        trained: &'static str,
        /// The layout asked for.
        requested: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// A context-layout transfer without every passage row: C2C writes one slot per sharer
    /// token, so it needs rows `0..prompt_tokens` (no selection, no byte cap that drops rows).
    #[error(
        "context-layout C2C needs every passage row 0..{prompt_tokens}: {missing} missing \
         (first missing positions {first_missing:?}); send every position (selection all, no \
         byte cap that drops rows)"
    )]
    PartialPassage {
        /// Passage length, sharer tokens (the session header).
        prompt_tokens: usize,
        /// Rows not held.
        missing: usize,
        /// The first missing positions (at most [`FuserError::MISSING_SHOWN`]).
        first_missing: Vec<usize>,
    },
    /// A passage longer than the context slots the checkpoint was trained with.
    #[error(
        "passage of {tokens} sharer tokens; this context-layout fuser has {max} slots \
         (max_passage_tokens of its context.json)"
    )]
    PassageTooLong {
        /// Passage length, sharer tokens.
        tokens: usize,
        /// The checkpoint's `max_passage_tokens`.
        max: usize,
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
    /// Missing positions a [`FuserError::PartialPassage`] names.
    pub const MISSING_SHOWN: usize = 8;

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
