//! Typed errors of the C2C crate: every failure names what was wrong and the sizes involved.

use std::path::PathBuf;

/// Errors returned by the projector, fusion, alignment, selection and allocation code.
#[derive(Debug, thiserror::Error)]
pub enum C2cError {
    /// A tensor operation failed inside candle.
    #[error("tensor operation failed while {context}: {source}")]
    Tensor {
        /// What the crate was doing.
        context: &'static str,
        /// The candle error.
        #[source]
        source: candle_core::Error,
    },
    /// A tensor had a shape other than the one required.
    #[error("{what}: expected shape {expected:?}, got {got:?}")]
    Shape {
        /// Which tensor.
        what: String,
        /// The required shape (0 marks a free dimension).
        expected: Vec<usize>,
        /// The shape found.
        got: Vec<usize>,
    },
    /// A checkpoint lacks a tensor the projector needs.
    #[error("checkpoint {path}: missing tensor {name}")]
    MissingTensor {
        /// The file read.
        path: PathBuf,
        /// The full tensor name.
        name: String,
    },
    /// A file could not be read or written.
    #[error("i/o on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON config could not be parsed or had an invalid value.
    #[error("config {path}: {message}")]
    Config {
        /// The file (or a label for in-memory configs).
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// A list of token positions was not strictly increasing or out of range.
    #[error("{what}: position {position} at index {index} is invalid (limit {limit})")]
    Position {
        /// Which list.
        what: &'static str,
        /// Index in the list.
        index: usize,
        /// The offending position.
        position: usize,
        /// Exclusive upper bound (or the previous position when not increasing).
        limit: usize,
    },
    /// Two inputs that must agree in length or count do not.
    #[error("{what}: {left} != {right}")]
    Mismatch {
        /// What was compared.
        what: &'static str,
        /// First count.
        left: usize,
        /// Second count.
        right: usize,
    },
    /// A numeric argument was outside its valid range.
    #[error("{what} = {value} is outside {range}")]
    Range {
        /// The argument.
        what: &'static str,
        /// The value given.
        value: f64,
        /// The valid range, in words.
        range: &'static str,
    },
}

/// Result alias of the crate.
pub type Result<T> = std::result::Result<T, C2cError>;

/// Adds a context label to candle errors.
pub(crate) trait TensorContext<T> {
    /// Wraps a candle error with what the crate was doing.
    fn ctx(self, context: &'static str) -> Result<T>;
}

impl<T> TensorContext<T> for candle_core::Result<T> {
    fn ctx(self, context: &'static str) -> Result<T> {
        self.map_err(|source| C2cError::Tensor { context, source })
    }
}
