//! Per-stage times of one round or one evaluation (the data capture contract), as both
//! services record them; converted to and from the wire type only at the gRPC edge.

use kvwire_proto::v1 as pb;

/// Stage times in milliseconds; a stage that did not run is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimings {
    /// Sharer forward pass over the prompt.
    pub sharer_prefill_ms: f64,
    /// Sharer token selection, cache export to host memory and row gathering.
    pub sharer_select_ms: f64,
    /// Sharer quantization and frame serialization.
    pub sharer_quantize_ms: f64,
    /// Sharer session-header encoding.
    pub sharer_encode_ms: f64,
    /// KV methods: the Share or Refine call issued to its first response message received.
    pub first_frame_wait_ms: f64,
    /// First to last response message received (text methods: the whole call).
    pub transfer_ms: f64,
    /// Receiver KVWire decoding, dequantization and cache assembly.
    pub decode_ms: f64,
    /// Sharer rows placed on the device at the receiver's positions (upload, alignment).
    pub project_ms: f64,
    /// The fuser proper (C2C projectors and gated add).
    pub fuse_ms: f64,
    /// Receiver forward pass over its prompt.
    pub receiver_prefill_ms: f64,
    /// Forced-choice or rank scoring, or greedy generation.
    pub score_ms: f64,
    /// Whole round (or whole evaluation) as the receiver saw it.
    pub end_to_end_ms: f64,
}

/// The stage fields, listed once: the sum and both wire conversions are written over them.
macro_rules! over_stages {
    ($($field:ident),* $(,)?) => {
        impl StageTimings {
            /// Adds every stage of `other` to this one.
            pub fn add(&mut self, other: &StageTimings) {
                $(self.$field += other.$field;)*
            }
        }

        impl From<StageTimings> for pb::StageTimings {
            fn from(t: StageTimings) -> Self {
                pb::StageTimings { $($field: t.$field),* }
            }
        }

        impl From<pb::StageTimings> for StageTimings {
            fn from(t: pb::StageTimings) -> Self {
                StageTimings { $($field: t.$field),* }
            }
        }
    };
}

over_stages!(
    sharer_prefill_ms,
    sharer_select_ms,
    sharer_quantize_ms,
    sharer_encode_ms,
    first_frame_wait_ms,
    transfer_ms,
    decode_ms,
    project_ms,
    fuse_ms,
    receiver_prefill_ms,
    score_ms,
    end_to_end_ms,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_and_sums_cover_every_stage() {
        let t = StageTimings {
            sharer_prefill_ms: 1.0,
            sharer_select_ms: 2.0,
            sharer_quantize_ms: 3.0,
            sharer_encode_ms: 4.0,
            first_frame_wait_ms: 4.5,
            transfer_ms: 5.0,
            decode_ms: 6.0,
            project_ms: 7.0,
            fuse_ms: 8.0,
            receiver_prefill_ms: 9.0,
            score_ms: 10.0,
            end_to_end_ms: 11.0,
        };
        let wire = pb::StageTimings::from(t);
        assert_eq!(StageTimings::from(wire), t);
        let mut sum = t;
        sum.add(&t);
        assert_eq!(pb::StageTimings::from(sum).project_ms, 14.0);
        assert_eq!(sum.end_to_end_ms, 22.0);
    }
}
