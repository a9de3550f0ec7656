//! One result row per evaluated sample (see docs/EVALUATION.md): the data capture
//! contract written as one JSON line in `results/<cell>.jsonl`.
//!
//! Row key: (`cell_id`, `sample_id`). Each try of a sample appends a row with the next
//! `attempt`; readers keep the highest attempt per key, so a retry replaces a failed row
//! without duplicating the sample, and the number of tries stays visible.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Outcome of one try of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    /// The receiver answered.
    Ok,
    /// The try failed; `error` says why.
    Failed,
}

/// gRPC codes with which a service refuses a request it cannot serve as asked (a byte cap below
/// one token, a setting the pair does not support): the same request gets the same answer.
pub const REFUSAL_KINDS: &[&str] = &["FailedPrecondition", "InvalidArgument", "OutOfRange"];

/// Why a try failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// Stable error type: a gRPC code name (`Unavailable`, `DeadlineExceeded`, ...) or a
    /// coordinator-side kind (`connect`, `timeout`, `invalid_response`).
    pub kind: String,
    /// The service's stable error label (gRPC metadata `kvwire-error-type`, for example
    /// `sharer_stream_broken`), when it sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    /// Human-readable message.
    pub message: String,
    /// Set when the runner tries the sample again: the wait before the next try, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// Blob bytes split by what they carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ByteBreakdown {
    /// Frame and session headers.
    pub headers: u64,
    /// Token index sections.
    pub indices: u64,
    /// Quantized or fp16 payload (or the UTF-8 text of a message).
    pub payload: u64,
    /// Quantization scales.
    pub scales: u64,
    /// Round-2 request bytes.
    pub request: u64,
}

impl ByteBreakdown {
    /// Sum of all parts.
    pub fn total(&self) -> u64 {
        self.headers + self.indices + self.payload + self.scales + self.request
    }
}

/// Bytes at every level, for a sample or for one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ByteCounts {
    /// Sum of KVWire blob lengths (or message UTF-8 bytes), plus round-2 request bytes.
    pub bytes_measured_total: u64,
    /// The measured bytes split by part.
    pub bytes_measured_breakdown: ByteBreakdown,
    /// Bytes predicted by the size formula (for the drift report).
    pub bytes_estimated_total: u64,
    /// Encoded gRPC message bytes.
    pub grpc_message_bytes: u64,
    /// Bytes read on the receiver's TCP connection to the sharer.
    pub transport_bytes_read: u64,
    /// Bytes written on the receiver's TCP connection to the sharer.
    pub transport_bytes_written: u64,
}

/// One round of a transfer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Round number, from 1.
    pub round: u32,
    /// Bytes of this round.
    #[serde(flatten)]
    pub bytes: ByteCounts,
    /// Stage timings of this round, ms.
    pub timings_ms: BTreeMap<String, f64>,
    /// The receiver's prediction after this round (rows written before it was recorded: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<String>,
    /// Its margin after this round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub margin: Option<f64>,
}

/// Rank-classification scores of a sample under one normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankRecord {
    /// `raw`, `per_token` or `per_char`.
    pub normalization: String,
    /// Predicted letter under this normalisation.
    pub prediction: String,
    /// Whether that prediction equals gold.
    pub correct: bool,
    /// Best minus second-best score.
    pub margin: f64,
    /// Score of each choice, in choice order.
    pub scores: Vec<f64>,
}

/// One try of one sample of one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRow {
    /// The cell.
    pub cell_id: String,
    /// The example id.
    pub sample_id: String,
    /// Try number, from 1.
    pub attempt: u32,
    /// Outcome.
    pub status: RowStatus,
    /// Why the try failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RowError>,
    /// Pair label.
    pub pair: String,
    /// Dataset name.
    pub dataset: String,
    /// Method label.
    pub method: String,
    /// The link profile between receiver and sharer, when the cell names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Gold letter.
    pub gold: String,
    /// Predicted letter, when answered.
    pub prediction: Option<String>,
    /// Whether the prediction equals gold, when answered.
    pub correct: Option<bool>,
    /// Margin between the best and second-best choice (letter: probability; rank: score under
    /// the cell's normalisation).
    pub margin: Option<f64>,
    /// Rank scoring: the scores under every normalisation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rank: Vec<RankRecord>,
    /// Bytes at every level, all rounds together.
    #[serde(flatten)]
    pub bytes: ByteCounts,
    /// Per-sample cap, when one applies.
    pub budget_cap_bytes: Option<u64>,
    /// Bytes charged against the cap (equals `bytes_measured_total`).
    pub budget_actual_bytes: u64,
    /// Cap minus actual (negative means over the cap), when a cap applies.
    pub budget_slack_bytes: Option<i64>,
    /// Stage timings, ms, all rounds together (`end_to_end` included).
    pub timings_ms: BTreeMap<String, f64>,
    /// Per-round detail.
    pub rounds: Vec<RoundRecord>,
    /// Wall time of the Evaluate call as the coordinator saw it, ms.
    pub coordinator_wall_ms: f64,
    /// When the try finished, ms since the Unix epoch.
    pub finished_at_unix_ms: u64,
}

/// Slack of a cap: `cap - actual`, saturating at the i64 range.
pub fn budget_slack(cap: Option<u64>, actual: u64) -> Option<i64> {
    cap.map(|c| {
        let diff = i128::from(c) - i128::from(actual);
        diff.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    })
}

impl ResultRow {
    /// Whether this row is an answered sample.
    pub fn is_ok(&self) -> bool {
        self.status == RowStatus::Ok
    }

    /// Whether the try failed because the request cannot be served as asked
    /// ([`REFUSAL_KINDS`]): deterministic, so a resumed run does not ask again.
    pub fn is_refusal(&self) -> bool {
        self.error
            .as_ref()
            .is_some_and(|e| REFUSAL_KINDS.contains(&e.kind.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_is_signed() {
        assert_eq!(budget_slack(Some(100), 40), Some(60));
        assert_eq!(budget_slack(Some(100), 140), Some(-40));
        assert_eq!(budget_slack(None, 140), None);
    }

    #[test]
    fn row_json_uses_the_contract_field_names() {
        let row = crate::testutil::row("c", "s", 1, true);
        let v = serde_json::to_value(&row).unwrap();
        for key in [
            "bytes_measured_total",
            "bytes_measured_breakdown",
            "bytes_estimated_total",
            "grpc_message_bytes",
            "transport_bytes_read",
            "transport_bytes_written",
            "budget_cap_bytes",
            "budget_actual_bytes",
            "budget_slack_bytes",
            "timings_ms",
            "prediction",
            "gold",
            "correct",
            "margin",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        let back: ResultRow = serde_json::from_value(v).unwrap();
        assert_eq!(back, row);
    }
}
