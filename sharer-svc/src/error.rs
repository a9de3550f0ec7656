//! The sharer's error type and its one mapping to gRPC status codes, with a stable label for
//! metrics.

use model_runtime::RuntimeError;
use service_kit::prompt_limit::PromptLimit;
use service_kit::rpc::ServiceError;
use tonic::Code;

/// Everything that can fail in a sharer rpc.
#[derive(Debug, thiserror::Error)]
pub enum SharerError {
    /// A request field is missing or out of range.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The request field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The prompt is over `limits.max_prompt_bytes` or `limits.max_prompt_tokens`.
    #[error(transparent)]
    PromptLimit(#[from] PromptLimit),
    /// Every job slot is busy and the wait queue is full.
    #[error(transparent)]
    Overloaded(#[from] service_kit::rpc::Overloaded),
    /// Not even one token fits the byte cap.
    #[error("byte cap {cap} is below the smallest transfer ({minimum} bytes)")]
    CapTooSmall {
        /// The cap.
        cap: u64,
        /// Bytes of a one-token transfer.
        minimum: u64,
    },
    /// The session id is unknown or expired.
    #[error("session {0} not found (unknown, expired or evicted)")]
    SessionNotFound(String),
    /// A kept session has no room in the store (docs/REFINEMENT.md, "Session store").
    #[error("session not kept: {0}")]
    SessionStoreFull(#[from] crate::sessions::StoreFull),
    /// The refinement asks for something the session cannot give.
    #[error("refinement: {0}")]
    Refine(String),
    /// The model failed.
    #[error("model: {0}")]
    Model(#[from] RuntimeError),
    /// Frame encoding failed.
    #[error("kvwire encode: {0}")]
    Encode(#[from] kvwire::EncodeError),
    /// The client went away or the deadline passed while work was in progress.
    #[error("cancelled: {0}")]
    Cancelled(&'static str),
    /// A blocking worker panicked or was aborted.
    #[error("worker failed: {0}")]
    Worker(String),
}

impl SharerError {
    /// Shorthand for [`SharerError::InvalidArgument`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        SharerError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}

impl ServiceError for SharerError {
    fn code(&self) -> Code {
        match self {
            // A prompt over the limit is a bad argument, as on the receiver (the label
            // `prompt_too_long` tells it apart): docs/STATUS_CODES.md.
            SharerError::InvalidArgument { .. }
            | SharerError::Refine(_)
            | SharerError::PromptLimit(_) => Code::InvalidArgument,
            SharerError::Overloaded(_) | SharerError::SessionStoreFull(_) => {
                Code::ResourceExhausted
            }
            SharerError::CapTooSmall { .. } => Code::FailedPrecondition,
            SharerError::SessionNotFound(_) => Code::NotFound,
            // The model stopped between layers: the caller went away (model_runtime::cancel).
            SharerError::Cancelled(_) | SharerError::Model(RuntimeError::Cancelled) => {
                Code::Cancelled
            }
            SharerError::Model(_) | SharerError::Encode(_) | SharerError::Worker(_) => {
                Code::Internal
            }
        }
    }

    fn error_type(&self) -> &'static str {
        match self {
            SharerError::InvalidArgument { .. } => "invalid_argument",
            SharerError::PromptLimit(_) => PromptLimit::LABEL,
            SharerError::Overloaded(_) => "overloaded",
            SharerError::CapTooSmall { .. } => "cap_too_small",
            SharerError::SessionNotFound(_) => "session_not_found",
            SharerError::SessionStoreFull(_) => "session_store_full",
            SharerError::Refine(_) => "refine",
            SharerError::Cancelled(_) | SharerError::Model(RuntimeError::Cancelled) => "cancelled",
            SharerError::Model(_) => "model",
            SharerError::Encode(_) => "encode",
            SharerError::Worker(_) => "worker",
        }
    }

    fn worker(reason: String) -> Self {
        SharerError::Worker(reason)
    }
}

service_kit::status_from!(SharerError);

#[cfg(test)]
mod tests {
    use service_kit::rpc::ERROR_TYPE_KEY;
    use tonic::Status;

    use super::*;

    #[test]
    fn status_carries_code_message_and_type() {
        let s: Status = SharerError::SessionNotFound("ab".into()).into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("ab"));
        assert_eq!(
            s.metadata().get(ERROR_TYPE_KEY).unwrap(),
            "session_not_found"
        );
    }

    #[test]
    fn a_prompt_over_the_limit_is_invalid_argument_as_on_the_receiver() {
        let s: Status = SharerError::from(PromptLimit::Tokens {
            tokens: 9000,
            max: 8192,
        })
        .into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.metadata().get(ERROR_TYPE_KEY).unwrap(), "prompt_too_long");
    }

    #[test]
    fn model_work_stopped_between_layers_is_cancelled() {
        let s: Status = SharerError::from(RuntimeError::Cancelled).into();
        assert_eq!(s.code(), Code::Cancelled);
        assert_eq!(s.metadata().get(ERROR_TYPE_KEY).unwrap(), "cancelled");
    }
}
