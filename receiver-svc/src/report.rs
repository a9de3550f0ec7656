//! What an evaluation reports, as domain values: the outcome of scoring, bytes at every level
//! and stage timings per round and in total. The gRPC reply is built from these at the edge
//! (`domain.rs`).

use eval_harness::{Normalization, RankScore, rank_all};
use service_kit::counting::ByteSnapshot;
use service_kit::stages::StageTimings;

use crate::engine::{Ranked, Scored};
use crate::error::ReceiverError;

/// Bytes of a transfer by section, plus the round-2 request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobBreakdown {
    /// Session and frame headers (with their CRCs).
    pub headers: u64,
    /// Token position indices.
    pub indices: u64,
    /// Quantized or fp16 K/V payload (or the text message).
    pub payload: u64,
    /// Quantization scales.
    pub scales: u64,
    /// The receiver's round-2 request.
    pub request: u64,
}

/// Bytes of one round or a whole evaluation at the three levels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteCounts {
    /// KVWire record bytes (or UTF-8 bytes of a text), plus round-2 request bytes.
    pub measured_total: u64,
    /// `measured_total` by section.
    pub breakdown: BlobBreakdown,
    /// kvwire's size formula for the same records (drift report).
    pub estimated_total: u64,
    /// Encoded gRPC messages, both directions.
    pub grpc_message_bytes: u64,
    /// Bytes read from the TCP connection to the sharer.
    pub transport_read: u64,
    /// Bytes written to it.
    pub transport_written: u64,
    /// KVWire records received (session headers included).
    pub frames: u32,
}

impl ByteCounts {
    /// Counts of a text-like payload of `n` bytes (a message or an answer letter).
    pub fn payload_only(n: u64, grpc_message_bytes: u64) -> Self {
        Self {
            measured_total: n,
            breakdown: BlobBreakdown {
                payload: n,
                ..BlobBreakdown::default()
            },
            estimated_total: n,
            grpc_message_bytes,
            ..Self::default()
        }
    }

    fn add(&mut self, x: &ByteCounts) {
        self.measured_total += x.measured_total;
        self.estimated_total += x.estimated_total;
        self.grpc_message_bytes += x.grpc_message_bytes;
        self.transport_read += x.transport_read;
        self.transport_written += x.transport_written;
        self.frames += x.frames;
        let (sum, add) = (&mut self.breakdown, x.breakdown);
        sum.headers += add.headers;
        sum.indices += add.indices;
        sum.payload += add.payload;
        sum.scales += add.scales;
        sum.request += add.request;
    }
}

/// One round with the sharer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RoundReport {
    /// 1 for the first round.
    pub round: u32,
    /// Its bytes.
    pub bytes: ByteCounts,
    /// Its stage times.
    pub timings: StageTimings,
    /// The prediction after this round (choice index), when scoring gave one.
    pub prediction: Option<usize>,
    /// The margin after this round.
    pub margin: f32,
}

impl RoundReport {
    /// A round from its bytes, the link's transport counts and its timings.
    pub fn new(
        round: u32,
        mut bytes: ByteCounts,
        transport: ByteSnapshot,
        timings: StageTimings,
    ) -> Self {
        bytes.transport_read = transport.read;
        bytes.transport_written = transport.written;
        Self {
            round,
            bytes,
            timings,
            prediction: None,
            margin: 0.0,
        }
    }
}

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
    pub rank: Vec<RankScore>,
}

impl Outcome {
    /// From a letter score.
    pub fn from_scored(s: Scored) -> Self {
        Self {
            prediction: Some(s.choice.prediction),
            margin: s.choice.margin,
            probabilities: s.choice.probs,
            prefill_ms: s.prefill_ms,
            score_ms: s.score_ms,
            ..Self::default()
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
            prefill_ms: r.prefill_ms,
            score_ms: r.score_ms,
            rank: all.to_vec(),
            ..Self::default()
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

    /// Adds the receiver's times and its prediction and margin to a round report.
    pub fn add_to(&self, round: &mut RoundReport) {
        round.timings.receiver_prefill_ms += self.prefill_ms;
        round.timings.score_ms += self.score_ms;
        round.prediction = self.prediction;
        round.margin = self.margin;
    }
}

/// A finished evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// What scoring produced on the last round.
    pub outcome: Outcome,
    /// The prediction is the gold choice.
    pub correct: bool,
    /// Every round with the sharer (none for receiver-only).
    pub rounds: Vec<RoundReport>,
    /// Bytes summed over rounds.
    pub total: ByteCounts,
    /// Stage times summed over rounds, end to end for the whole call.
    pub timings: StageTimings,
    /// The per-sample byte cap that applied (0 for none).
    pub budget_cap_bytes: u64,
}

/// Sums of bytes and timings over rounds.
pub fn sum_rounds(rounds: &[RoundReport]) -> (ByteCounts, StageTimings) {
    let mut bytes = ByteCounts::default();
    let mut timings = StageTimings::default();
    for r in rounds {
        bytes.add(&r.bytes);
        timings.add(&r.timings);
    }
    (bytes, timings)
}
