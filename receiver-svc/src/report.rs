//! Building the per-round and total reports of an evaluation (bytes at every level, stage
//! timings) from what each round measured.

use eval_harness::{Normalization, rank_all};
use kvwire_proto::v1 as pb;
use service_kit::counting::ByteSnapshot;

use crate::domain::normalization_code;
use crate::engine::{Ranked, Scored};
use crate::error::ReceiverError;

/// What scoring produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Predicted choice index, if any.
    pub prediction: Option<usize>,
    /// p1 - p2 (0 for generation).
    pub margin: f32,
    /// Letter probabilities (letter scoring).
    pub probabilities: Vec<f32>,
    /// Generated text (generation scoring).
    pub generated: String,
    /// Receiver forward time, ms.
    pub prefill_ms: f64,
    /// Scoring or generation time, ms.
    pub score_ms: f64,
    /// Rank scores under every normalisation (rank scoring).
    pub rank: Vec<pb::RankScores>,
}

impl Outcome {
    /// From a letter score.
    pub fn from_scored(s: Scored) -> Self {
        Self {
            prediction: Some(s.choice.prediction),
            margin: s.choice.margin,
            probabilities: s.choice.probs,
            generated: String::new(),
            prefill_ms: s.prefill_ms,
            score_ms: s.score_ms,
            rank: Vec::new(),
        }
    }

    /// From rank inputs: all three normalisations reported, `chosen` picks the prediction and
    /// the margin.
    pub fn from_ranked(r: Ranked, chosen: Normalization) -> Result<Self, ReceiverError> {
        let all = rank_all(&r.choices).ok_or_else(|| {
            ReceiverError::Scoring(format!(
                "continuation log-probabilities are not finite: {:?}",
                r.choices.iter().map(|c| c.logprob).collect::<Vec<_>>()
            ))
        })?;
        let pick = all
            .iter()
            .find(|s| s.normalization == chosen)
            .unwrap_or(&all[2]);
        Ok(Self {
            prediction: Some(pick.prediction),
            margin: pick.margin as f32,
            probabilities: Vec::new(),
            generated: String::new(),
            prefill_ms: r.prefill_ms,
            score_ms: r.score_ms,
            rank: all
                .iter()
                .map(|s| pb::RankScores {
                    normalization: normalization_code(s.normalization) as i32,
                    prediction: s.prediction as u32,
                    scores: s.scores.clone(),
                    margin: s.margin,
                })
                .collect(),
        })
    }

    /// From a generation (prefill is inside the generation time).
    pub fn generated(text: String, letter: Option<usize>, ms: f64) -> Self {
        Self {
            prediction: letter,
            generated: text,
            score_ms: ms,
            ..Self::default()
        }
    }

    /// Adds the receiver's times to a round report.
    pub fn add_to(&self, round: &mut pb::RoundReport) {
        let t = round.timings.get_or_insert_default();
        t.receiver_prefill_ms += self.prefill_ms;
        t.score_ms += self.score_ms;
    }
}

/// A round report from its bytes, transport counts and timings.
pub fn round_report(
    round: u32,
    mut bytes: pb::ByteCounts,
    transport: ByteSnapshot,
    timings: pb::StageTimings,
) -> pb::RoundReport {
    bytes.transport_read = transport.read;
    bytes.transport_written = transport.written;
    pb::RoundReport {
        round,
        bytes: Some(bytes),
        timings: Some(timings),
    }
}

/// Sums of bytes and timings over rounds.
pub fn sum_rounds(rounds: &[pb::RoundReport]) -> (pb::ByteCounts, pb::StageTimings) {
    let mut b = pb::ByteCounts {
        breakdown: Some(pb::BlobBreakdown::default()),
        ..Default::default()
    };
    let mut t = pb::StageTimings::default();
    for r in rounds {
        let x = r.bytes.unwrap_or_default();
        b.measured_total += x.measured_total;
        b.estimated_total += x.estimated_total;
        b.grpc_message_bytes += x.grpc_message_bytes;
        b.transport_read += x.transport_read;
        b.transport_written += x.transport_written;
        b.frames += x.frames;
        let (sum, add) = (
            b.breakdown.get_or_insert_default(),
            x.breakdown.unwrap_or_default(),
        );
        sum.headers += add.headers;
        sum.indices += add.indices;
        sum.payload += add.payload;
        sum.scales += add.scales;
        sum.request += add.request;
        let y = r.timings.unwrap_or_default();
        t.sharer_prefill_ms += y.sharer_prefill_ms;
        t.sharer_select_ms += y.sharer_select_ms;
        t.sharer_quantize_ms += y.sharer_quantize_ms;
        t.sharer_encode_ms += y.sharer_encode_ms;
        t.transfer_ms += y.transfer_ms;
        t.decode_ms += y.decode_ms;
        t.project_ms += y.project_ms;
        t.fuse_ms += y.fuse_ms;
        t.receiver_prefill_ms += y.receiver_prefill_ms;
        t.score_ms += y.score_ms;
        t.end_to_end_ms += y.end_to_end_ms;
    }
    (b, t)
}
