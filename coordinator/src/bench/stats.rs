//! One measured request and the quantiles over a method's requests: every stage the reply's
//! top-level `StageTimings` carries, the client's own end-to-end time, and the bytes the
//! receiver counted.

use std::collections::BTreeMap;

use eval_harness::percentile;
use kvwire_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::wire::{PIPELINE_STAGES, pipeline_stages};

/// One timed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Stage name and milliseconds, as the reply reports them, in report order.
    pub stages: [(&'static str, f64); STAGES],
    /// Evaluate call issued to reply received, measured by the bench client.
    pub client_ms: f64,
    /// The reply's byte totals.
    pub bytes: ByteSample,
}

/// Bytes of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ByteSample {
    /// KVWire bytes (KV methods) or the text message's UTF-8 bytes (T2T).
    pub measured: u64,
    /// Protobuf-encoded gRPC messages between receiver and sharer, both directions.
    pub grpc: u64,
    /// TCP bytes on the receiver's sharer connection, read plus written.
    pub tcp: u64,
}

/// Number of stages a reply carries: the pipeline's and the server's end to end.
pub const STAGES: usize = PIPELINE_STAGES + 1;

/// The stages of `StageTimings`, in pipeline order, with their report names.
pub fn stages_of(t: &pb::StageTimings) -> [(&'static str, f64); STAGES] {
    let pipeline = pipeline_stages(t);
    std::array::from_fn(|i| {
        pipeline
            .get(i)
            .copied()
            .unwrap_or(("server_end_to_end", t.end_to_end_ms))
    })
}

/// The stage names, in report order.
pub fn stage_names() -> [&'static str; STAGES] {
    stages_of(&pb::StageTimings::default()).map(|(name, _)| name)
}

impl Sample {
    /// The sample of one reply.
    pub fn of(reply: &pb::EvaluateReply, client_ms: f64) -> Sample {
        let timings = reply.timings.unwrap_or_default();
        let total = reply.total.unwrap_or_default();
        Sample {
            stages: stages_of(&timings),
            client_ms,
            bytes: ByteSample {
                measured: total.measured_total,
                grpc: total.grpc_message_bytes,
                tcp: total.transport_read + total.transport_written,
            },
        }
    }
}

/// Median and 95th percentile (numpy's linear interpolation) of `count` values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Values summarised.
    pub count: usize,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
}

impl Quantiles {
    /// Of `values` (zeros when empty, with count 0).
    pub fn of(values: &[f64]) -> Quantiles {
        Quantiles {
            count: values.len(),
            p50: percentile(values, 0.5).unwrap_or(0.0),
            p95: percentile(values, 0.95).unwrap_or(0.0),
        }
    }
}

/// Median bytes of a method's requests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bytes {
    /// KVWire bytes for KV methods, the message's UTF-8 bytes for T2T, 0 for receiver-only.
    pub measured: u64,
    /// gRPC message bytes between receiver and sharer.
    pub grpc: u64,
    /// TCP bytes on the receiver's sharer connection.
    pub tcp: u64,
}

/// The quantiles of one method at one prompt length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// End to end as the bench client measured it (the call's wall time).
    pub client_end_to_end_ms: Quantiles,
    /// Each stage the reply carries, ms.
    pub stages_ms: BTreeMap<String, Quantiles>,
    /// Median bytes.
    pub bytes: Bytes,
}

fn median_u64(values: impl Iterator<Item = u64>) -> u64 {
    let v: Vec<f64> = values.map(|b| b as f64).collect();
    percentile(&v, 0.5).unwrap_or(0.0).round() as u64
}

impl Summary {
    /// Over the measured requests (warm-up excluded by the caller).
    pub fn of(samples: &[Sample]) -> Summary {
        let client: Vec<f64> = samples.iter().map(|s| s.client_ms).collect();
        let stages_ms = stage_names()
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let values: Vec<f64> = samples.iter().map(|s| s.stages[i].1).collect();
                (name.to_string(), Quantiles::of(&values))
            })
            .collect();
        Summary {
            client_end_to_end_ms: Quantiles::of(&client),
            stages_ms,
            bytes: Bytes {
                measured: median_u64(samples.iter().map(|s| s.bytes.measured)),
                grpc: median_u64(samples.iter().map(|s| s.bytes.grpc)),
                tcp: median_u64(samples.iter().map(|s| s.bytes.tcp)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_is_summarised_over_every_sample() {
        let reply = pb::EvaluateReply {
            timings: Some(pb::StageTimings {
                receiver_prefill_ms: 2.0,
                ..Default::default()
            }),
            ..Default::default()
        };
        let samples: Vec<Sample> = (1..=3).map(|i| Sample::of(&reply, i as f64)).collect();
        let s = Summary::of(&samples);
        assert_eq!(s.stages_ms.len(), STAGES);
        assert!(s.stages_ms.values().all(|q| q.count == 3));
        assert_eq!(s.client_end_to_end_ms.p50, 2.0);
        assert!((s.client_end_to_end_ms.p95 - 2.9).abs() < 1e-9);
        assert_eq!(s.stages_ms["receiver_prefill"].p50, 2.0);
    }
}
