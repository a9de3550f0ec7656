//! The receiver's error type and its one mapping to gRPC status codes, with a stable label for
//! metrics. Errors of the sharer keep their code (never flattened into a string).

use fuser::FuserError;
use model_runtime::RuntimeError;
use service_kit::prompt_limit::PromptLimit;
use service_kit::rpc::{ERROR_TYPE_KEY, ServiceError};
use tonic::{Code, Status};

/// The sharer's labels (`kvwire-error-type`) the receiver passes on as its own: refusals of
/// the request and limits, which say what the caller asked for (a byte cap too small, a prompt
/// too long, an overloaded sharer). A sharer's internal failure (`model`, `encode`, `worker`)
/// or a label not listed here is `sharer_status`. A bounded list: the label is a metric label
/// too, and the sharer is another process.
pub const SHARER_REFUSALS: &[&str] = &[
    "invalid_argument",
    "prompt_too_long",
    "request_too_large",
    "cap_too_small",
    "session_not_found",
    "session_store_full",
    "refine",
    "overloaded",
    "cancelled",
    "unauthenticated",
];

/// Everything that can fail in a receiver rpc.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
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
    /// The request names a sharer that is not on this receiver's allow-list.
    #[error(
        "sharer {endpoint} is not allowed: this receiver connects only to its sharer_endpoint \
         and allowed_sharers"
    )]
    SharerNotAllowed {
        /// The endpoint named.
        endpoint: String,
    },
    /// The request names an `https://` sharer and this receiver has no CA to check it with.
    #[error(
        "sharer {endpoint}: https:// (TLS) needs sharer_client.ca (the CA of the sharer's \
         certificate) in this receiver's configuration; refusing to use it as plaintext"
    )]
    TlsUnsupported {
        /// The endpoint named.
        endpoint: String,
    },
    /// Every job slot is busy and the wait queue is full.
    #[error(transparent)]
    Overloaded(#[from] service_kit::rpc::Overloaded),
    /// The method needs a fuser this pair does not have.
    #[error("method {method} needs a fuser; this receiver's pair has {fuser}")]
    NoFuser {
        /// The method.
        method: &'static str,
        /// The configured fuser.
        fuser: &'static str,
    },
    /// The sharer could not be reached.
    #[error("sharer {endpoint} unreachable: {reason}")]
    SharerUnreachable {
        /// The endpoint.
        endpoint: String,
        /// Connection error.
        reason: String,
    },
    /// The sharer endpoint did not answer as a gRPC server (another protocol on that port, or
    /// the connection failed before any answer): the status came from the transport, not
    /// from a sharer.
    #[error(
        "sharer did not answer over gRPC (not a sharer on that port, or the connection failed): {reason}"
    )]
    SharerTransport {
        /// What the transport reported.
        reason: String,
    },
    /// The sharer answered with an error status.
    #[error("sharer returned {code:?}: {message}")]
    SharerStatus {
        /// The sharer's code.
        code: Code,
        /// The sharer's message.
        message: String,
        /// The sharer's label when it is one of [`SHARER_REFUSALS`] (passed on as this
        /// error's label); otherwise the label is `sharer_status`.
        label: Option<&'static str>,
    },
    /// The frame stream broke (connection lost, sharer killed) after some frames arrived.
    #[error("sharer stream broke after {frames} frame(s): {reason}")]
    StreamBroken {
        /// Frames received before the break.
        frames: usize,
        /// Transport error.
        reason: String,
    },
    /// The records do not decode, or do not form a valid transfer.
    #[error("kvwire transfer: {0}")]
    Transfer(#[from] kvwire::AssembleError),
    /// The fuser cannot build the receiver's cache from what arrived.
    #[error("fuser: {0}")]
    Fuse(#[from] fuser::FuserError),
    /// The model failed.
    #[error("model: {0}")]
    Model(#[from] RuntimeError),
    /// The model's scores cannot rank the choices (not finite).
    #[error("scoring: {0}")]
    Scoring(String),
    /// The deadline passed.
    #[error("deadline of {0:?} exceeded")]
    Deadline(std::time::Duration),
    /// The evaluation's deadline passed while waiting for the sharer: the receiver's own
    /// timeout on its sharer call (the `grpc-timeout` it set from the remaining deadline),
    /// which tonic reports as CANCELLED "Timeout expired".
    #[error("deadline passed while waiting for the sharer: {0}")]
    SharerDeadline(String),
    /// A blocking worker panicked or was aborted.
    #[error("worker failed: {0}")]
    Worker(String),
}

impl ReceiverError {
    /// Shorthand for [`ReceiverError::InvalidArgument`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ReceiverError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// A sharer status received on a unary call or at stream start. A status tonic made from
    /// a transport failure (it keeps that error as its source; one the sharer sent has none)
    /// is [`ReceiverError::SharerTransport`]: UNAVAILABLE, not the CANCELLED or UNKNOWN tonic
    /// gives it. A client-side timeout (tonic's `TimeoutExpired`) is
    /// [`ReceiverError::SharerDeadline`]: DEADLINE_EXCEEDED, labelled `deadline`.
    pub fn from_sharer(status: Status) -> Self {
        let mut source = std::error::Error::source(&status);
        let transport = source.is_some();
        let mut timeout = false;
        while let Some(e) = source {
            timeout |= e.is::<tonic::TimeoutExpired>();
            source = e.source();
        }
        if timeout {
            return ReceiverError::SharerDeadline(status.message().to_string());
        }
        if transport {
            return ReceiverError::SharerTransport {
                reason: format!("{:?}: {}", status.code(), status.message()),
            };
        }
        let label = status
            .metadata()
            .get(ERROR_TYPE_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| SHARER_REFUSALS.iter().copied().find(|known| *known == l));
        ReceiverError::SharerStatus {
            code: status.code(),
            message: status.message().to_string(),
            label,
        }
    }
}

impl ReceiverError {
    /// Whether the model stopped between layers because the caller went away
    /// (`model_runtime::cancel`), directly or inside the fuser.
    fn cancelled(&self) -> bool {
        matches!(
            self,
            ReceiverError::Model(RuntimeError::Cancelled)
                | ReceiverError::Fuse(FuserError::Runtime(RuntimeError::Cancelled))
        )
    }
}

impl ServiceError for ReceiverError {
    fn code(&self) -> Code {
        if self.cancelled() {
            return Code::Cancelled;
        }
        match self {
            ReceiverError::InvalidArgument { .. } | ReceiverError::PromptLimit(_) => {
                Code::InvalidArgument
            }
            ReceiverError::SharerNotAllowed { .. } => Code::PermissionDenied,
            ReceiverError::TlsUnsupported { .. } => Code::FailedPrecondition,
            ReceiverError::Overloaded(_) => Code::ResourceExhausted,
            ReceiverError::NoFuser { .. } => Code::FailedPrecondition,
            ReceiverError::SharerUnreachable { .. }
            | ReceiverError::SharerTransport { .. }
            | ReceiverError::StreamBroken { .. } => Code::Unavailable,
            ReceiverError::SharerStatus { code, .. } => *code,
            ReceiverError::Transfer(_) => Code::DataLoss,
            // A cache that does not fit the pair (other model, other prompt, other shape).
            ReceiverError::Fuse(FuserError::Input { .. }) => Code::FailedPrecondition,
            // A C2C checkpoint of the other layout, or a transfer its context slots cannot
            // take (rows missing, a passage longer than its slots).
            ReceiverError::Fuse(
                FuserError::LayoutNotTrained { .. }
                | FuserError::PartialPassage { .. }
                | FuserError::PassageTooLong { .. },
            ) => Code::FailedPrecondition,
            ReceiverError::Fuse(_) => Code::Internal,
            ReceiverError::Deadline(_) | ReceiverError::SharerDeadline(_) => Code::DeadlineExceeded,
            ReceiverError::Model(_) | ReceiverError::Scoring(_) | ReceiverError::Worker(_) => {
                Code::Internal
            }
        }
    }

    fn error_type(&self) -> &'static str {
        if self.cancelled() {
            return "cancelled";
        }
        match self {
            ReceiverError::InvalidArgument { .. } => "invalid_argument",
            ReceiverError::PromptLimit(_) => PromptLimit::LABEL,
            ReceiverError::SharerNotAllowed { .. } => "sharer_not_allowed",
            ReceiverError::TlsUnsupported { .. } => "tls_unsupported",
            ReceiverError::Overloaded(_) => "overloaded",
            ReceiverError::NoFuser { .. } => "no_fuser",
            ReceiverError::SharerUnreachable { .. } => "sharer_unreachable",
            ReceiverError::SharerTransport { .. } => "sharer_transport",
            ReceiverError::SharerStatus { label, .. } => label.unwrap_or("sharer_status"),
            ReceiverError::StreamBroken { .. } => "sharer_stream_broken",
            ReceiverError::Transfer(kvwire::AssembleError::Decode(_)) => "decode",
            ReceiverError::Transfer(_) => "transfer",
            ReceiverError::Fuse(_) => "fuse",
            ReceiverError::Model(_) => "model",
            ReceiverError::Scoring(_) => "scoring",
            ReceiverError::Deadline(_) | ReceiverError::SharerDeadline(_) => "deadline",
            ReceiverError::Worker(_) => "worker",
        }
    }

    fn worker(reason: String) -> Self {
        ReceiverError::Worker(reason)
    }
}

service_kit::status_from!(ReceiverError);

#[cfg(test)]
mod tests {
    use super::*;

    fn labelled(status: Status, label: &'static str) -> Status {
        let mut status = status;
        status.metadata_mut().insert(
            ERROR_TYPE_KEY,
            tonic::metadata::MetadataValue::from_static(label),
        );
        status
    }

    #[test]
    fn a_sharer_refusal_keeps_its_code_and_label_and_a_fault_is_sharer_status() {
        let refused = labelled(
            Status::failed_precondition("byte cap 10 ..."),
            "cap_too_small",
        );
        let s: Status = ReceiverError::from_sharer(refused).into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(s.metadata().get(ERROR_TYPE_KEY).unwrap(), "cap_too_small");
        assert!(s.message().starts_with("sharer returned"), "{s:?}");
        // A full session store refuses a kept Share: RESOURCE_EXHAUSTED, its label kept.
        let full = labelled(
            Status::resource_exhausted("session not kept: the session store is full"),
            "session_store_full",
        );
        let s: Status = ReceiverError::from_sharer(full).into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.metadata().get(ERROR_TYPE_KEY).unwrap(),
            "session_store_full"
        );
        assert!(s.message().contains("session store is full"), "{s:?}");
        // The sharer's internal failure, or a label this receiver does not know.
        for label in ["model", "made_up_label"] {
            let s: Status =
                ReceiverError::from_sharer(labelled(Status::internal("boom"), label)).into();
            assert_eq!(s.code(), Code::Internal);
            assert_eq!(s.metadata().get(ERROR_TYPE_KEY).unwrap(), "sharer_status");
        }
    }

    #[test]
    fn sharer_codes_pass_through_and_breaks_are_unavailable() {
        let s: Status = ReceiverError::from_sharer(Status::not_found("gone")).into();
        assert_eq!(s.code(), Code::NotFound);
        let s: Status = ReceiverError::StreamBroken {
            frames: 2,
            reason: "reset".into(),
        }
        .into();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(
            s.metadata().get(ERROR_TYPE_KEY).unwrap(),
            "sharer_stream_broken"
        );
    }

    #[test]
    fn model_work_stopped_between_layers_is_cancelled() {
        for e in [
            ReceiverError::from(RuntimeError::Cancelled),
            ReceiverError::from(FuserError::from(RuntimeError::Cancelled)),
        ] {
            let s: Status = e.into();
            assert_eq!(s.code(), Code::Cancelled);
            assert_eq!(s.metadata().get(ERROR_TYPE_KEY).unwrap(), "cancelled");
        }
    }

    #[test]
    fn transport_statuses_are_unavailable_and_timeouts_are_deadlines() {
        // What tonic makes of a port that does not speak gRPC: a status with a source.
        let transport = Status::from_error(Box::new(std::io::Error::other("transport error")));
        let s: Status = ReceiverError::from_sharer(transport).into();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(
            s.metadata().get(ERROR_TYPE_KEY).unwrap(),
            "sharer_transport"
        );
        // The receiver's own timeout on its sharer call: tonic makes it CANCELLED "Timeout
        // expired"; the receiver answers DEADLINE_EXCEEDED, `deadline` (docs/STATUS_CODES.md).
        let timeout = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(timeout.code(), Code::Cancelled);
        let s: Status = ReceiverError::from_sharer(timeout).into();
        assert_eq!(s.code(), Code::DeadlineExceeded);
        assert_eq!(s.metadata().get(ERROR_TYPE_KEY).unwrap(), "deadline");
        // A DEADLINE_EXCEEDED the sharer itself sent (no source) keeps the sharer's label.
        let s: Status =
            ReceiverError::from_sharer(Status::deadline_exceeded("sharer's own")).into();
        assert_eq!(s.code(), Code::DeadlineExceeded);
        assert_eq!(s.metadata().get(ERROR_TYPE_KEY).unwrap(), "sharer_status");
    }
}
