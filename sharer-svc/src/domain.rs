//! Domain requests of the sharer and their conversion from the wire types, at the boundary.

use eval_harness::Example;
use kvwire::Granularity;
use kvwire::v2::Payload;
use kvwire_proto::v1 as pb;
use service_kit::prompt_limit::PromptLimit;
use service_kit::stages::StageTimings;

use crate::error::SharerError;
use c2c::select::{PolicySpec, ScoreKind};

use crate::plan::PrecisionPlan;
use crate::select::Selection;

/// What to prefill.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptSource {
    /// An example in the task prompt (docs/EVALUATION.md) and chat template, with answer prefix.
    Example(Example),
    /// Raw text, tokenized as is.
    Text(String),
}

/// How a transfer is selected, coded and capped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransferPlan {
    /// Payload coding.
    pub payload: Payload,
    /// Scale granularity.
    pub granularity: Granularity,
    /// Token selection.
    pub selection: Selection,
    /// Byte cap on the summed frames, 0 for none.
    pub byte_cap: u64,
    /// How precision is spread over layers and tokens.
    pub precision: PrecisionPlan,
}

/// One message of a Share or Refine stream, as the producers make it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Chunk {
    /// One KVWire v2 record: the session header first, then one frame per layer.
    pub frame: Vec<u8>,
    /// The frame's layer (none for the session header).
    pub layer: Option<u32>,
    /// Session id for Refine, on the first chunk when the session is kept.
    pub session_id: String,
    /// The sharer's stage times, on the last chunk.
    pub timings: Option<StageTimings>,
    /// Prompt tokens, on the first chunk.
    pub prompt_tokens: u32,
}

impl From<Chunk> for pb::ShareChunk {
    fn from(c: Chunk) -> Self {
        pb::ShareChunk {
            frame: c.frame.into(),
            layer: c.layer,
            session_id: c.session_id,
            timings: c.timings.map(pb::StageTimings::from),
            prompt_tokens: c.prompt_tokens,
        }
    }
}

/// A validated Share request.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareParams {
    /// The prompt.
    pub prompt: PromptSource,
    /// The transfer plan.
    pub plan: TransferPlan,
    /// Keep the session for Refine.
    pub keep_session: bool,
    /// Every prompt position is a candidate, the last included (the context layout); else
    /// every position but the last (the receiver runs it).
    pub all_positions: bool,
    /// The text the receiver runs after the shared rows, for query-aware selection.
    pub query: Option<String>,
}

/// Which text baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Question and choices.
    Raw,
    /// Extractive summary.
    Summary,
    /// Generated hint.
    Hint,
    /// The example's passage (the context layout's raw-passage baseline).
    Passage,
    /// The passage's sentences the question asks about, under the cap.
    PassageExtract,
    /// A summary of the passage the sharer model generates, told the question.
    PassageSummary,
}

impl MessageKind {
    /// Metric and log label.
    pub fn label(self) -> &'static str {
        match self {
            MessageKind::Raw => "raw",
            MessageKind::Summary => "summary",
            MessageKind::Hint => "hint",
            MessageKind::Passage => "passage",
            MessageKind::PassageExtract => "passage_extract",
            MessageKind::PassageSummary => "passage_summary",
        }
    }
}

/// What a Refine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefineWant {
    /// Positions not sent yet, at a payload.
    Extra {
        /// Positions, ascending, no duplicates.
        positions: Vec<u32>,
        /// Payload.
        payload: Payload,
    },
    /// Residual upgrade of sent positions.
    Upgrade {
        /// Positions, ascending, no duplicates.
        positions: Vec<u32>,
        /// Residual payload.
        payload: Payload,
    },
}

/// A validated Refine request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefineParams {
    /// Session id.
    pub session_id: [u8; 16],
    /// What to send.
    pub want: RefineWant,
    /// Scale granularity.
    pub granularity: Granularity,
}

/// UTF-8 bytes of an example's prompt text: question, choices and passage.
pub fn example_text_bytes(e: &Example) -> usize {
    e.question.len()
        + e.choices.iter().map(String::len).sum::<usize>()
        + e.passage.as_ref().map_or(0, String::len)
}

/// Refuses prompt text over `max` bytes (`limits.max_prompt_bytes`), before it is tokenized.
pub fn check_prompt_bytes(bytes: usize, max: usize, what: &'static str) -> Result<(), SharerError> {
    Ok(PromptLimit::check_bytes(bytes, max, what)?)
}

impl ShareParams {
    /// Refuses a prompt whose text (the example's or the raw text, and the query) is over
    /// `max` bytes.
    pub fn check_prompt_bytes(&self, max: usize) -> Result<(), SharerError> {
        let query = self.query.as_ref().map_or(0, String::len);
        match &self.prompt {
            PromptSource::Example(e) => check_prompt_bytes(
                example_text_bytes(e) + query,
                max,
                "question, choices, passage and query",
            ),
            PromptSource::Text(t) => check_prompt_bytes(t.len() + query, max, "text and query"),
        }
    }
}

/// Converts a wire example (its passage kept when non-empty).
pub fn example_from_wire(e: Option<pb::Example>) -> Result<Example, SharerError> {
    let e = e.ok_or_else(|| SharerError::invalid("example", "missing"))?;
    Example::new(e.id, e.question, e.choices, &e.gold)
        .map(|example| example.with_passage(e.passage))
        .map_err(|err| SharerError::invalid("example", err.to_string()))
}

/// Converts a wire payload (unspecified means int8).
pub fn payload_from_wire(code: i32) -> Result<Payload, SharerError> {
    match pb::Payload::try_from(code) {
        Ok(pb::Payload::Unspecified | pb::Payload::Int8) => Ok(Payload::Int8),
        Ok(pb::Payload::Fp16) => Ok(Payload::Fp16),
        Ok(pb::Payload::Int4) => Ok(Payload::Int4),
        Err(_) => Err(SharerError::invalid(
            "payload",
            format!("unknown value {code}"),
        )),
    }
}

/// Converts a wire granularity (unspecified means per block).
pub fn granularity_from_wire(code: i32) -> Result<Granularity, SharerError> {
    match pb::Granularity::try_from(code) {
        Ok(pb::Granularity::Unspecified | pb::Granularity::PerBlock) => Ok(Granularity::PerBlock),
        Ok(pb::Granularity::PerHead) => Ok(Granularity::PerHead),
        Ok(pb::Granularity::PerTensor) => Ok(Granularity::PerTensor),
        Err(_) => Err(SharerError::invalid(
            "granularity",
            format!("unknown value {code}"),
        )),
    }
}

impl TryFrom<Option<pb::TransferSettings>> for TransferPlan {
    type Error = SharerError;

    fn try_from(t: Option<pb::TransferSettings>) -> Result<Self, SharerError> {
        let t = t.unwrap_or_default();
        let fraction = if t.keep_fraction == 0.0 {
            1.0
        } else {
            t.keep_fraction
        };
        if fraction.is_nan() || fraction <= 0.0 || fraction > 1.0 {
            return Err(SharerError::invalid(
                "transfer.keep_fraction",
                format!("{fraction} is not in (0, 1]"),
            ));
        }
        let policy = match pb::Selection::try_from(t.selection) {
            Ok(pb::Selection::Unspecified | pb::Selection::All) => PolicySpec::Front,
            Ok(pb::Selection::Front) => PolicySpec::Front,
            Ok(pb::Selection::Back) => PolicySpec::Back,
            Ok(pb::Selection::Random) => PolicySpec::Random { seed: t.seed },
            Ok(pb::Selection::Vnorm) => PolicySpec::Scored(ScoreKind::Vnorm),
            Ok(pb::Selection::Knorm) => PolicySpec::Scored(ScoreKind::Knorm),
            Ok(pb::Selection::QueryAttention) => PolicySpec::Scored(ScoreKind::QueryAttention),
            Err(_) => {
                return Err(SharerError::invalid(
                    "transfer.selection",
                    format!("unknown value {}", t.selection),
                ));
            }
        };
        let selection = Selection {
            policy,
            keep_fraction: f64::from(fraction),
        };
        let precision = precision_plan_from_wire(&t)?;
        Ok(TransferPlan {
            payload: payload_from_wire(t.payload)?,
            granularity: granularity_from_wire(t.granularity)?,
            selection,
            byte_cap: t.byte_cap,
            precision,
        })
    }
}

/// Converts a wire precision plan (unspecified means uniform). `fp16_layers` belongs to the
/// mixed plan alone; the measured plans choose among int4/int8 with per-block scales, so they
/// take no other payload or granularity.
pub fn precision_plan_from_wire(t: &pb::TransferSettings) -> Result<PrecisionPlan, SharerError> {
    use pb::PrecisionPlan as W;
    let plan = match W::try_from(t.precision_plan) {
        Ok(W::Unspecified | W::Uniform) => PrecisionPlan::Uniform,
        Ok(W::MixedLayers) => PrecisionPlan::MixedLayers {
            fp16_layers: t.fp16_layers as usize,
        },
        Ok(W::LayerSensitivity) => PrecisionPlan::LayerSensitivity,
        Ok(W::TokenRate) => PrecisionPlan::TokenRate { int4: true },
        Ok(W::TokenTopK) => PrecisionPlan::TokenRate { int4: false },
        Err(_) => {
            return Err(SharerError::invalid(
                "transfer.precision_plan",
                format!("unknown value {}", t.precision_plan),
            ));
        }
    };
    let mixed = matches!(plan, PrecisionPlan::MixedLayers { .. });
    if mixed && t.fp16_layers == 0 {
        return Err(SharerError::invalid(
            "transfer.fp16_layers",
            "the mixed-layers plan needs at least 1 fp16 layer",
        ));
    }
    if !mixed && t.fp16_layers != 0 {
        return Err(SharerError::invalid(
            "transfer.fp16_layers",
            "only the mixed-layers plan takes fp16 layers",
        ));
    }
    if plan.is_measured() {
        let int8 = [pb::Payload::Unspecified, pb::Payload::Int8].map(|p| p as i32);
        if !int8.contains(&t.payload) {
            return Err(SharerError::invalid(
                "transfer.payload",
                "the measured plans choose int4/int8 themselves: leave payload unset or int8",
            ));
        }
        let block = [pb::Granularity::Unspecified, pb::Granularity::PerBlock].map(|g| g as i32);
        if !block.contains(&t.granularity) {
            return Err(SharerError::invalid(
                "transfer.granularity",
                "the measured plans use per-block scales",
            ));
        }
    }
    Ok(plan)
}

impl TryFrom<pb::ShareRequest> for ShareParams {
    type Error = SharerError;

    fn try_from(r: pb::ShareRequest) -> Result<Self, SharerError> {
        let prompt = match r.prompt {
            Some(pb::share_request::Prompt::Example(e)) => {
                PromptSource::Example(example_from_wire(Some(e))?)
            }
            Some(pb::share_request::Prompt::Text(t)) if !t.is_empty() => PromptSource::Text(t),
            _ => return Err(SharerError::invalid("prompt", "missing or empty")),
        };
        let plan: TransferPlan = r.transfer.try_into()?;
        let query = Some(r.query).filter(|q| !q.is_empty());
        if plan.selection.score_kind() == Some(ScoreKind::QueryAttention) && query.is_none() {
            return Err(SharerError::invalid(
                "query",
                "query-attention selection needs the query (the text the receiver runs after \
                 the shared rows)",
            ));
        }
        Ok(ShareParams {
            prompt,
            plan,
            keep_session: r.keep_session,
            all_positions: r.all_positions,
            query,
        })
    }
}

/// Parses a 32-hex-digit session id.
pub fn session_id_from_hex(s: &str) -> Result<[u8; 16], SharerError> {
    let bad = || SharerError::invalid("session_id", "expected 32 hex digits");
    let value = u128::from_str_radix(s, 16).map_err(|_| bad())?;
    if s.len() != 32 {
        return Err(bad());
    }
    Ok(value.to_be_bytes())
}

/// Formats a session id as 32 hex digits.
pub fn session_id_to_hex(id: &[u8; 16]) -> String {
    format!("{:032x}", u128::from_be_bytes(*id))
}

fn sorted_unique(field: &'static str, mut positions: Vec<u32>) -> Result<Vec<u32>, SharerError> {
    if positions.is_empty() {
        return Err(SharerError::invalid(field, "no positions"));
    }
    positions.sort_unstable();
    let n = positions.len();
    positions.dedup();
    if positions.len() != n {
        return Err(SharerError::invalid(field, "duplicate positions"));
    }
    Ok(positions)
}

impl TryFrom<pb::RefineRequest> for RefineParams {
    type Error = SharerError;

    fn try_from(r: pb::RefineRequest) -> Result<Self, SharerError> {
        let want = match r.want {
            Some(pb::refine_request::Want::Extra(e)) => RefineWant::Extra {
                positions: sorted_unique("extra.positions", e.positions)?,
                payload: payload_from_wire(e.payload)?,
            },
            Some(pb::refine_request::Want::Upgrade(u)) => RefineWant::Upgrade {
                positions: sorted_unique("upgrade.positions", u.positions)?,
                payload: payload_from_wire(u.payload)?,
            },
            None => return Err(SharerError::invalid("want", "missing")),
        };
        Ok(RefineParams {
            session_id: session_id_from_hex(&r.session_id)?,
            want,
            granularity: granularity_from_wire(r.granularity)?,
        })
    }
}

/// Converts a wire message kind (unspecified means raw).
pub fn message_kind_from_wire(code: i32) -> Result<MessageKind, SharerError> {
    match pb::MessageKind::try_from(code) {
        Ok(pb::MessageKind::Unspecified | pb::MessageKind::Raw) => Ok(MessageKind::Raw),
        Ok(pb::MessageKind::Summary) => Ok(MessageKind::Summary),
        Ok(pb::MessageKind::Hint) => Ok(MessageKind::Hint),
        Ok(pb::MessageKind::Passage) => Ok(MessageKind::Passage),
        Ok(pb::MessageKind::PassageExtract) => Ok(MessageKind::PassageExtract),
        Ok(pb::MessageKind::PassageSummary) => Ok(MessageKind::PassageSummary),
        Err(_) => Err(SharerError::invalid(
            "kind",
            format!("unknown value {code}"),
        )),
    }
}

#[cfg(test)]
#[path = "domain_tests.rs"]
mod tests;
