//! W3C trace context (`traceparent`) carried in gRPC metadata, so one evaluation's spans on the
//! receiver and the sharer share a trace id.
//!
//! This is deliberately small: ids are generated here and recorded as span fields; an OTLP
//! exporter (not compiled in, see `telemetry`) would read the same header.

use std::fmt;

use rand::Rng;
use tonic::metadata::{MetadataMap, MetadataValue};

/// The metadata key of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// A trace id and the id of the span that made the outgoing call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16-byte trace id, never all zero.
    pub trace_id: u128,
    /// 8-byte parent span id, never zero.
    pub span_id: u64,
}

impl TraceContext {
    /// A new root context with random ids.
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        Self {
            trace_id: rng.random_range(1..=u128::MAX),
            span_id: rng.random_range(1..=u64::MAX),
        }
    }

    /// A child context: same trace, new span id.
    pub fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id: rand::rng().random_range(1..=u64::MAX),
        }
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
        (trace_id != 0 && span_id != 0).then_some(Self { trace_id, span_id })
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
        write!(f, "00-{:032x}-{:016x}-01", self.trace_id, self.span_id)
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
    }
}
