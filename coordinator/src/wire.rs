//! The gRPC edge: a resolved cell becomes an `EvaluateRequest`, and an `EvaluateReply` (or a
//! status) becomes a result row. Settings the v1 API cannot express are refused here, once,
//! before any sample runs.

use std::collections::BTreeMap;

use kvwire_proto::v1 as pb;

use crate::cell::CellConfig;
use crate::grid::{Layout, RankNormalization, Scoring};
use crate::method::{Granularity, MethodSpec, Precision, PrecisionPlan, Selection, TextMode};
use crate::row::{
    ByteBreakdown, ByteCounts, RankRecord, ResultRow, RoundRecord, RowError, RowStatus,
    budget_slack,
};
use crate::timestamp::now_unix_ms;

/// The parts of an `EvaluateRequest` that are the same for every sample of a cell.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    method: i32,
    transfer: Option<pb::TransferSettings>,
    text: Option<pb::TextSettings>,
    scoring: i32,
    rank_normalization: i32,
    refine: Option<pb::RefineSettings>,
    layout: Layout,
}

impl RequestTemplate {
    /// Converts a cell's method and scoring, or says which setting the API lacks.
    pub fn of(cell: &CellConfig) -> Result<RequestTemplate, String> {
        let scoring = match cell.scoring {
            Scoring::Letter => pb::Scoring::Letter,
            Scoring::Generate => pb::Scoring::Generate,
            Scoring::Rank => pb::Scoring::Rank,
        } as i32;
        let rank_normalization = match cell.rank_normalization {
            None => pb::RankNormalization::Unspecified,
            Some(RankNormalization::Raw) => pb::RankNormalization::Raw,
            Some(RankNormalization::PerToken) => pb::RankNormalization::PerToken,
            Some(RankNormalization::PerChar) => pb::RankNormalization::PerChar,
        } as i32;
        if matches!(cell.method, MethodSpec::SharerOnly(_)) && cell.scoring != Scoring::Letter {
            return Err(format!(
                "sharer_only answers by letter only; scoring `{}` is not available for it",
                cell.scoring.as_str()
            ));
        }
        let cap = cell.budget_cap_bytes.unwrap_or(0);
        let mut template = RequestTemplate {
            method: pb::Method::ReceiverOnly as i32,
            transfer: None,
            text: None,
            scoring,
            rank_normalization,
            refine: None,
            layout: cell.layout,
        };
        match &cell.method {
            MethodSpec::ReceiverOnly(_) => {}
            MethodSpec::SharerOnly(_) => template.method = pb::Method::SharerOnly as i32,
            MethodSpec::Text(t) => {
                template.method = pb::Method::Text as i32;
                let kind = match t.mode {
                    TextMode::Raw => pb::MessageKind::Raw,
                    TextMode::Summary => pb::MessageKind::Summary,
                    TextMode::Hint => pb::MessageKind::Hint,
                    TextMode::Passage => pb::MessageKind::Passage,
                    TextMode::PassageExtract => pb::MessageKind::PassageExtract,
                    TextMode::PassageSummary => pb::MessageKind::PassageSummary,
                };
                template.text = Some(pb::TextSettings {
                    kind: kind as i32,
                    byte_cap: cap,
                });
            }
            MethodSpec::Kv(s) | MethodSpec::C2c(s) => {
                template.method = if matches!(cell.method, MethodSpec::Kv(_)) {
                    pb::Method::Kv
                } else {
                    pb::Method::C2c
                } as i32;
                let payload = payload(s.precision);
                let granularity = match s.granularity {
                    Granularity::PerBlock => pb::Granularity::PerBlock,
                    Granularity::PerHead => pb::Granularity::PerHead,
                    Granularity::PerTensor => pb::Granularity::PerTensor,
                    Granularity::PerLayer => {
                        return Err("granularity `per_layer` is not in the v1 API".into());
                    }
                };
                let selection = match s.selection {
                    Selection::All => pb::Selection::All,
                    Selection::Front => pb::Selection::Front,
                    Selection::Back => pb::Selection::Back,
                    Selection::Random => pb::Selection::Random,
                    Selection::Vnorm => pb::Selection::Vnorm,
                    Selection::Knorm => pb::Selection::Knorm,
                    Selection::QueryAttention => pb::Selection::QueryAttention,
                };
                template.transfer = Some(pb::TransferSettings {
                    payload: payload as i32,
                    granularity: granularity as i32,
                    selection: selection as i32,
                    keep_fraction: s.keep.unwrap_or(1.0) as f32,
                    byte_cap: cap,
                    seed: cell.seed.unwrap_or(0),
                    precision_plan: precision_plan(s.plan) as i32,
                    fp16_layers: s.fp16_layers.unwrap_or(0),
                });
                if let Some(r) = &s.refine {
                    template.refine = Some(refine_settings(r));
                }
            }
        }
        Ok(template)
    }

    /// The request for one example. The passage goes to the receiver only in the context
    /// layout (which forwards it to the sharer); the shared layout sends the question alone.
    pub fn request(&self, mut example: pb::Example, sharer_endpoint: &str) -> pb::EvaluateRequest {
        let layout = match self.layout {
            Layout::Shared => {
                example.passage.clear();
                pb::Layout::Unspecified
            }
            Layout::Context => pb::Layout::Context,
        };
        pb::EvaluateRequest {
            example: Some(example),
            method: self.method,
            transfer: self.transfer,
            text: self.text,
            scoring: self.scoring,
            sharer_endpoint: sharer_endpoint.to_string(),
            refine: self.refine,
            max_new_tokens: 0,
            rank_normalization: self.rank_normalization,
            layout: layout as i32,
        }
    }
}

fn refine_settings(r: &crate::method::Refine) -> pb::RefineSettings {
    pb::RefineSettings {
        margin_threshold: r.margin_threshold as f32,
        upgrade_payload: payload(r.upgrade.unwrap_or(Precision::Int8)) as i32,
        mode: match r.mode {
            crate::method::RefineMode::Upgrade => pb::RefineMode::Upgrade,
            crate::method::RefineMode::Indices => pb::RefineMode::Extra,
        } as i32,
        reserve_fraction: r.reserve.unwrap_or(0.0) as f32,
        max_positions: r.max_positions.unwrap_or(0),
    }
}

fn precision_plan(p: PrecisionPlan) -> pb::PrecisionPlan {
    match p {
        PrecisionPlan::Uniform => pb::PrecisionPlan::Unspecified,
        PrecisionPlan::MixedLayers => pb::PrecisionPlan::MixedLayers,
        PrecisionPlan::LayerSensitivity => pb::PrecisionPlan::LayerSensitivity,
        PrecisionPlan::Rate => pb::PrecisionPlan::TokenRate,
        PrecisionPlan::TopK => pb::PrecisionPlan::TokenTopK,
    }
}

fn payload(p: Precision) -> pb::Payload {
    match p {
        Precision::Fp16 => pb::Payload::Fp16,
        Precision::Int8 => pb::Payload::Int8,
        Precision::Int4 => pb::Payload::Int4,
    }
}

/// Stages of a reply's pipeline (all but the server's end to end).
pub const PIPELINE_STAGES: usize = 11;

/// The pipeline stages of `StageTimings` in pipeline order, with their row and report names.
pub fn pipeline_stages(t: &pb::StageTimings) -> [(&'static str, f64); PIPELINE_STAGES] {
    [
        ("sharer_prefill", t.sharer_prefill_ms),
        ("sharer_select", t.sharer_select_ms),
        ("sharer_quantize", t.sharer_quantize_ms),
        ("sharer_encode", t.sharer_encode_ms),
        ("first_frame_wait", t.first_frame_wait_ms),
        ("transfer", t.transfer_ms),
        ("decode", t.decode_ms),
        ("project", t.project_ms),
        ("fuse", t.fuse_ms),
        ("receiver_prefill", t.receiver_prefill_ms),
        ("score", t.score_ms),
    ]
}

/// Stage timings as a map, keeping stages that ran (non-zero) and always `end_to_end`.
fn stages(t: Option<&pb::StageTimings>) -> BTreeMap<String, f64> {
    let Some(t) = t else {
        return BTreeMap::new();
    };
    let mut map: BTreeMap<String, f64> = pipeline_stages(t)
        .into_iter()
        .filter(|(_, ms)| *ms > 0.0)
        .map(|(k, ms)| (k.to_string(), ms))
        .collect();
    map.insert("end_to_end".into(), t.end_to_end_ms);
    map
}

fn bytes(b: Option<&pb::ByteCounts>) -> ByteCounts {
    let Some(b) = b else {
        return ByteCounts::default();
    };
    let d = b.breakdown.unwrap_or_default();
    ByteCounts {
        bytes_measured_total: b.measured_total,
        bytes_measured_breakdown: ByteBreakdown {
            headers: d.headers,
            indices: d.indices,
            payload: d.payload,
            scales: d.scales,
            request: d.request,
        },
        bytes_estimated_total: b.estimated_total,
        grpc_message_bytes: b.grpc_message_bytes,
        transport_bytes_read: b.transport_read,
        transport_bytes_written: b.transport_written,
    }
}

/// What identifies one try of one sample.
#[derive(Debug, Clone)]
pub struct Try<'a> {
    /// The cell id.
    pub cell_id: &'a str,
    /// The cell's config.
    pub cell: &'a CellConfig,
    /// The example id.
    pub sample_id: &'a str,
    /// The gold letter.
    pub gold: &'a str,
    /// Try number.
    pub attempt: u32,
    /// Wall time of the call, ms.
    pub wall_ms: f64,
}

fn base_row(t: &Try<'_>) -> ResultRow {
    ResultRow {
        cell_id: t.cell_id.to_string(),
        sample_id: t.sample_id.to_string(),
        attempt: t.attempt,
        status: RowStatus::Failed,
        error: None,
        pair: t.cell.pair.label.clone(),
        dataset: t.cell.dataset.name.clone(),
        method: t.cell.method_label.clone(),
        link: t.cell.link.clone(),
        gold: t.gold.to_string(),
        prediction: None,
        correct: None,
        margin: None,
        rank: Vec::new(),
        bytes: ByteCounts::default(),
        budget_cap_bytes: t.cell.budget_cap_bytes,
        budget_actual_bytes: 0,
        budget_slack_bytes: budget_slack(t.cell.budget_cap_bytes, 0),
        timings_ms: BTreeMap::new(),
        rounds: Vec::new(),
        coordinator_wall_ms: t.wall_ms,
        finished_at_unix_ms: now_unix_ms(),
    }
}

/// The row of an answered try.
pub fn answered_row(t: &Try<'_>, reply: &pb::EvaluateReply) -> ResultRow {
    let mut row = base_row(t);
    let total = bytes(reply.total.as_ref());
    row.status = RowStatus::Ok;
    row.prediction = Some(reply.prediction.clone());
    row.correct = Some(reply.correct);
    row.margin = Some(f64::from(reply.margin));
    row.rank = reply
        .rank
        .iter()
        .map(|r| {
            let prediction = letter(r.prediction);
            RankRecord {
                normalization: match pb::RankNormalization::try_from(r.normalization) {
                    Ok(pb::RankNormalization::Raw) => "raw",
                    Ok(pb::RankNormalization::PerToken) => "per_token",
                    Ok(pb::RankNormalization::PerChar) => "per_char",
                    Ok(pb::RankNormalization::Unspecified) | Err(_) => "unknown",
                }
                .to_string(),
                correct: !prediction.is_empty() && prediction == t.gold,
                prediction,
                margin: r.margin,
                scores: r.scores.clone(),
            }
        })
        .collect();
    row.bytes = total;
    let cap = (reply.budget_cap_bytes > 0).then_some(reply.budget_cap_bytes);
    row.budget_cap_bytes = cap.or(t.cell.budget_cap_bytes);
    row.budget_actual_bytes = total.bytes_measured_total;
    row.budget_slack_bytes = budget_slack(row.budget_cap_bytes, total.bytes_measured_total);
    row.timings_ms = stages(reply.timings.as_ref());
    row.rounds = reply
        .rounds
        .iter()
        .map(|r| RoundRecord {
            round: r.round,
            bytes: bytes(r.bytes.as_ref()),
            timings_ms: stages(r.timings.as_ref()),
            prediction: Some(r.prediction.clone()).filter(|p| !p.is_empty()),
            margin: Some(f64::from(r.margin)),
        })
        .collect();
    row
}

/// The letter of a choice index (empty when out of range).
fn letter(index: u32) -> String {
    char::from_u32(u32::from(b'A') + index)
        .filter(|c| c.is_ascii_uppercase())
        .map_or_else(String::new, String::from)
}

/// The row of a failed try: the gRPC code name (or a coordinator-side kind), the service's
/// error label when it sent one, and the message.
pub fn failed_row(t: &Try<'_>, kind: &str, error_type: Option<&str>, message: &str) -> ResultRow {
    let mut row = base_row(t);
    row.error = Some(RowError {
        kind: kind.to_string(),
        error_type: error_type.map(str::to_string),
        message: message.to_string(),
        retry_after_ms: None,
    });
    row
}

/// The row of a try that ended in a gRPC status.
pub fn status_row(t: &Try<'_>, status: &tonic::Status) -> ResultRow {
    let error_type = status
        .metadata()
        .get(service_kit::rpc::ERROR_TYPE_KEY)
        .and_then(|v| v.to_str().ok());
    failed_row(t, &code_name(status.code()), error_type, status.message())
}

/// Stable name of a gRPC status code (`Unavailable`, `DeadlineExceeded`, ...).
pub fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
}
