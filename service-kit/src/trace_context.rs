//! W3C trace context (`traceparent`) carried in gRPC metadata, so one evaluation's spans in the
//! coordinator, the receiver and the sharer share a trace id.
//!
//! Without OTLP export ids are generated here and recorded as span fields (the log lines join
//! on them). With it (`otlp`) the context is the OpenTelemetry one: a server span adopts the
//! incoming context as its parent ([`TraceContext::to_otel`]), and an outgoing call carries the
//! current span's ([`TraceContext::outgoing`]).

use std::fmt;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use rand::Rng;
use tonic::metadata::{MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The metadata key of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A trace id, the id of the span that made the outgoing call, and whether the trace is
/// sampled (its spans exported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id, never all zero.
    pub trace_id: u128,
    /// 8-byte parent span id, never zero.
    pub span_id: u64,
    /// The `sampled` trace flag.
    pub sampled: bool,
}

impl TraceContext {
    /// A new root context with random ids, sampled.
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        Self {
            trace_id: rng.random_range(1..=u128::MAX),
            span_id: rng.random_range(1..=u64::MAX),
            sampled: true,
        }
    }

    /// A child context: same trace, new span id.
    pub fn child(&self) -> Self {
        Self {
            span_id: rand::rng().random_range(1..=u64::MAX),
            ..*self
        }
    }

    /// The OpenTelemetry context of `span` when spans are exported (the layer is installed
    /// and the span is known to it); `None` otherwise.
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| Self {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            sampled: sc.is_sampled(),
        })
    }

    /// The context to send with a call made now, from the current span: the current span's
    /// OpenTelemetry context when spans are exported (the callee's spans become its children),
    /// else a child of this one.
    pub fn outgoing(&self) -> Self {
        Self::of_span(&tracing::Span::current()).unwrap_or_else(|| self.child())
    }

    /// This context as a remote OpenTelemetry parent.
    pub fn to_otel(&self) -> opentelemetry::Context {
        let flags = if self.sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::NOT_SAMPLED
        };
        let sc = SpanContext::new(
            TraceId::from_bytes(self.trace_id.to_be_bytes()),
            SpanId::from_bytes(self.span_id.to_be_bytes()),
            flags,
            true,
            TraceState::NONE,
        );
        opentelemetry::Context::new().with_remote_span_context(sc)
    }

    /// Parses a `traceparent` header value (`00-<32 hex>-<16 hex>-<2 hex>`).
    pub fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        (trace_id != 0 && span_id != 0).then_some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The context in incoming metadata, if present and well formed.
    pub fn from_metadata(metadata: &MetadataMap) -> Option<Self> {
        metadata
            .get(TRACEPARENT)?
            .to_str()
            .ok()
            .and_then(Self::parse)
    }

    /// The context in incoming metadata, or a new root.
    pub fn from_metadata_or_root(metadata: &MetadataMap) -> Self {
        Self::from_metadata(metadata).unwrap_or_else(Self::new_root)
    }

    /// Writes this context into outgoing metadata.
    pub fn inject(&self, metadata: &mut MetadataMap) {
        if let Ok(value) = MetadataValue::try_from(self.to_string()) {
            metadata.insert(TRACEPARENT, value);
        }
    }

    /// The trace id as 32 lowercase hex digits (for span fields).
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = u8::from(self.sampled);
        write!(
            f,
            "00-{:032x}-{:016x}-{flags:02x}",
            self.trace_id, self.span_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_metadata() {
        let ctx = TraceContext::new_root();
        let mut md = MetadataMap::new();
        ctx.inject(&mut md);
        assert_eq!(TraceContext::from_metadata(&md), Some(ctx));
        let child = ctx.child();
        assert_eq!(child.trace_id, ctx.trace_id);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-abc-def-01",
            "00-00000000000000000000000000000000-0000000000000001-01",
            "00-zz000000000000000000000000000001-0000000000000001-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceContext::parse(good).unwrap().to_string(), good);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let parsed = TraceContext::parse(unsampled).unwrap();
        assert!(!parsed.sampled);
        assert_eq!(parsed.to_string(), unsampled);
    }

    #[test]
    fn without_an_exporter_outgoing_is_a_child() {
        let ctx = TraceContext::new_root();
        assert_eq!(TraceContext::of_span(&tracing::Span::current()), None);
        let out = ctx.outgoing();
        assert_eq!(out.trace_id, ctx.trace_id);
        assert_ne!(out.span_id, ctx.span_id);
        let remote = ctx.to_otel();
        let sc = remote.span().span_context().clone();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(u128::from_be_bytes(sc.trace_id().to_bytes()), ctx.trace_id);
    }
}
