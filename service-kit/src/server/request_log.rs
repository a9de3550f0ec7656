//! One log line per call (info, target `kvwire::request`): the trace id, the gRPC method path,
//! the final status code, the request and response body bytes (gRPC messages with their 5-byte
//! prefixes) and the latency from the request's arrival to the end of its response body (a
//! streamed response is logged when its last message is sent or its caller goes away).
//!
//! The layer sits outside every other layer of the server, so calls refused by the token check,
//! by tonic's decoding or for an unknown method are logged as well. A call without a
//! `traceparent` gets a new root context here, written into its metadata, so the handler's
//! spans (`TraceContext::from_metadata_or_root`) and this line share the trace id.
//!
//! When spans are exported (`otlp`), the call also gets its OpenTelemetry server span here
//! (named after the method, `kvwire.c2c.v1.Sharer/Share`): its parent is the incoming
//! `traceparent`, or it starts a trace (sampled at the configured ratio); its own context is
//! written into the metadata in place of the incoming one; the handler runs inside it, and it
//! ends with the response body (a stream: its last message), with this line. Health and
//! reflection calls get none.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::trace_context::{TRACEPARENT, TraceContext};

/// Adds [`RequestLog`] to every call of a server of `role`.
#[derive(Debug, Clone, Copy)]
pub struct RequestLogLayer {
    role: &'static str,
}

impl RequestLogLayer {
    /// For a server of `role` (`sharer`, `receiver`).
    pub fn new(role: &'static str) -> Self {
        Self { role }
    }
}

impl<S> tower::Layer<S> for RequestLogLayer {
    type Service = RequestLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestLog {
            inner,
            role: self.role,
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct RequestLog<S> {
    inner: S,
    role: &'static str,
}

impl<S> tower::Service<http::Request<Body>> for RequestLog<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let method = request.uri().path().to_string();
        let span = server_span(&method);
        let trace = ensure_trace(request.headers_mut(), &span);
        let received = Arc::new(AtomicU64::new(0));
        let mut entry = Entry {
            role: self.role,
            method,
            trace_id: trace.trace_id_hex(),
            start: Instant::now(),
            received: Arc::clone(&received),
            sent: 0,
            status: None,
            _span: span.clone(),
        };
        let request = request.map(|body| Body::new(CountedRequest { body, received }));
        let answer = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let response = answer.await?;
                entry.status = status_of(response.headers());
                Ok(response.map(|body| Body::new(LoggedResponse { body, entry })))
            }
            .instrument(span),
        )
    }
}

/// The call's OpenTelemetry server span when spans are exported; a disabled span otherwise
/// (log lines keep their form), and for health and reflection calls (`/grpc.*`: a probe every
/// few seconds would be a trace every few seconds).
fn server_span(method: &str) -> tracing::Span {
    if !crate::otlp::exporting() || method.starts_with("/grpc.") {
        return tracing::Span::none();
    }
    let name = method.trim_start_matches('/');
    let (service, rpc) = name.split_once('/').unwrap_or((name, ""));
    tracing::info_span!(
        "rpc",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = rpc,
    )
}

/// The call's trace context: `span`'s when it is exported (its parent set to the incoming
/// `traceparent`), else the incoming one, else a new root; written into the metadata.
fn ensure_trace(headers: &mut HeaderMap, span: &tracing::Span) -> TraceContext {
    let incoming = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    if let Some(parent) = incoming {
        // Fails only where there is no exporter (no layer to hold a parent).
        let _ = span.set_parent(parent.to_otel());
    }
    let own = TraceContext::of_span(span);
    match (own, incoming) {
        (None, Some(incoming)) => incoming,
        (own, _) => {
            let context = own.unwrap_or_else(TraceContext::new_root);
            if let Ok(v) = HeaderValue::from_str(&context.to_string()) {
                headers.insert(TRACEPARENT, v);
            }
            context
        }
    }
}

/// The `grpc-status` in a header or trailer map.
fn status_of(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    let code = tonic::Code::from_bytes(value.as_bytes());
    Some(crate::metrics_catalog::code_label(code).to_string())
}

/// What the line of one call says; written once, when the response body is dropped.
struct Entry {
    role: &'static str,
    method: String,
    trace_id: String,
    start: Instant,
    received: Arc<AtomicU64>,
    sent: u64,
    status: Option<String>,
    /// The server span, closed (and exported) after the line is written.
    _span: tracing::Span,
}

impl Drop for Entry {
    fn drop(&mut self) {
        tracing::info!(
            target: "kvwire::request",
            trace_id = %self.trace_id,
            method = %self.method,
            status = %self.status.as_deref().unwrap_or("none"),
            request_bytes = self.received.load(Ordering::Relaxed),
            response_bytes = self.sent,
            latency_ms = self.start.elapsed().as_secs_f64() * 1e3,
            "{} call",
            self.role,
        );
    }
}

/// A request body that adds the length of every data frame to `received`.
struct CountedRequest {
    body: Body,
    received: Arc<AtomicU64>,
}

impl HttpBody for CountedRequest {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.received
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A response body that counts its data frames, takes the status from its trailers, and
/// writes the call's line when it is dropped (sent to the end, or its caller gone).
struct LoggedResponse {
    body: Body,
    entry: Entry,
}

impl HttpBody for LoggedResponse {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.entry.sent += data.len() as u64;
            } else if let Some(status) = frame.trailers_ref().and_then(status_of) {
                self.entry.status = Some(status);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
