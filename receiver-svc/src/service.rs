//! The gRPC boundary of the receiver: converts the wire request, applies the caller's deadline
//! (or the configured one), runs the evaluation, and maps errors to status codes in one place
//! ([`ReceiverError`] -> `Status`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_server::Receiver;
use service_kit::trace_context::TraceContext;
use tonic::{Request, Response, Status};
use tracing::field::Empty;
use tracing::instrument;

use crate::domain::EvaluateParams;
use crate::error::ReceiverError;
use crate::evaluate::ReceiverCore;

const SERVICE: &str = "receiver";

/// The Receiver gRPC service.
#[derive(Debug, Clone)]
pub struct ReceiverService {
    core: Arc<ReceiverCore>,
}

impl ReceiverService {
    /// A service around an evaluation core.
    pub fn new(core: ReceiverCore) -> Self {
        Self {
            core: Arc::new(core),
        }
    }
}

/// Parses a `grpc-timeout` header value (`<digits><unit>`, unit one of H M S m u n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok().filter(|_| digits.len() <= 8)?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Records the rpc outcome (count, latency, error type) and converts the error.
fn finish<T>(
    method: &'static str,
    start: Instant,
    result: Result<T, ReceiverError>,
) -> Result<T, Status> {
    service_kit::rpc::finish(SERVICE, method, start, result)
}

#[tonic::async_trait]
impl Receiver for ReceiverService {
    #[instrument(skip_all, name = "receiver.evaluate", fields(trace_id = Empty, method = Empty, example_id = Empty))]
    async fn evaluate(
        &self,
        request: Request<pb::EvaluateRequest>,
    ) -> Result<Response<pb::EvaluateReply>, Status> {
        let start = Instant::now();
        let trace = TraceContext::from_metadata_or_root(request.metadata());
        let span = tracing::Span::current();
        span.record("trace_id", trace.trace_id_hex());
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .unwrap_or_else(|| self.core.default_timeout());
        let deadline = start + timeout;
        let result = async {
            let params = EvaluateParams::try_from(request.into_inner())?;
            span.record("method", params.method.label());
            span.record("example_id", params.example.id.as_str());
            tokio::time::timeout(timeout, self.core.evaluate(params, trace, deadline))
                .await
                .map_err(|_| ReceiverError::Deadline(timeout))?
                .map(pb::EvaluateReply::from)
        }
        .await;
        finish("Evaluate", start, result).map(Response::new)
    }

    #[instrument(skip_all, name = "receiver.info")]
    async fn info(
        &self,
        _request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let loaded = self.core.engine().loaded();
        let c = loaded.model.config();
        finish("Info", Instant::now(), Ok(()))?;
        Ok(Response::new(pb::ModelInfo {
            spec: loaded.spec.to_string(),
            architecture: c.arch.name().to_string(),
            layers: c.n_layers as u32,
            kv_heads: c.n_kv_heads as u32,
            head_dim: c.head_dim as u32,
            vocab_size: c.vocab_size as u32,
            tokenizer: loaded.tokenizer_source.clone(),
            random_weights: loaded.spec.is_random(),
            device: loaded.model.weights_info().device.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        for bad in ["", "m", "12", "123456789S", "5x"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }
}
