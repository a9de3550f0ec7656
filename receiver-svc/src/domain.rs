//! The receiver's domain request and reply and their conversions from and to the wire types,
//! at the boundary.

use eval_harness::{Example, LETTERS, Normalization};
use fuser::PromptLayout;
use kvwire_proto::v1 as pb;

use crate::error::ReceiverError;
use crate::report::{ByteCounts, Evaluation, RoundReport};

/// Communication method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The receiver alone.
    ReceiverOnly,
    /// The sharer's own answer.
    SharerOnly,
    /// A sharer text message as prompt context.
    Text {
        /// Which baseline (wire code, checked).
        kind: pb::MessageKind,
        /// UTF-8 byte cap, 0 for none.
        byte_cap: u64,
    },
    /// KV transfer through the pair's fuser (identity for a same-model pair).
    Kv,
    /// KV transfer through a trained C2C fuser.
    C2c,
}

impl Method {
    /// Metric and log label.
    pub fn label(self) -> &'static str {
        match self {
            Method::ReceiverOnly => "receiver_only",
            Method::SharerOnly => "sharer_only",
            Method::Text { .. } => "text",
            Method::Kv => "kv",
            Method::C2c => "c2c",
        }
    }
}

/// How to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    /// Forced choice over the letter tokens.
    Letter,
    /// Greedy generation and letter extraction.
    Generate,
    /// Rank classification; the normalisation picks the prediction and the margin.
    Rank(Normalization),
}

/// Round-2 policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefinePlan {
    /// Refine when the round-1 margin is below this.
    pub margin_threshold: f32,
    /// Payload of the residual upgrade (wire code, checked).
    pub upgrade_payload: pb::Payload,
    /// What round 2 asks for (unset on the wire: upgrade).
    pub mode: pb::RefineMode,
    /// Fraction of the byte cap kept for round 2, in [0, 1).
    pub reserve_fraction: f32,
    /// Most positions round 2 asks for; 0: as many as fit.
    pub max_positions: usize,
}

/// A validated Evaluate request.
#[derive(Debug, Clone)]
pub struct EvaluateParams {
    /// The example (domain).
    pub example: Example,
    /// The example as sent to the sharer.
    pub wire_example: pb::Example,
    /// Method.
    pub method: Method,
    /// Transfer settings forwarded to the sharer (it validates them).
    pub transfer: pb::TransferSettings,
    /// Scoring.
    pub scoring: Scoring,
    /// Sharer endpoint, when the request names one.
    pub sharer_endpoint: Option<String>,
    /// Round 2, when enabled.
    pub refine: Option<RefinePlan>,
    /// New tokens for generation, 0 for the default.
    pub max_new_tokens: usize,
    /// Prompt layout (shared prompt, or the context layout with `passage`).
    pub layout: PromptLayout,
    /// The example's passage (context layout: non-empty).
    pub passage: Option<String>,
}

impl EvaluateParams {
    /// UTF-8 bytes of the request's prompt text: question, choices and passage.
    pub fn text_bytes(&self) -> usize {
        let e = &self.example;
        e.question.len()
            + e.choices.iter().map(String::len).sum::<usize>()
            + self.passage.as_ref().map_or(0, String::len)
    }
}

impl TryFrom<pb::EvaluateRequest> for EvaluateParams {
    type Error = ReceiverError;

    fn try_from(r: pb::EvaluateRequest) -> Result<Self, ReceiverError> {
        let wire_example = r
            .example
            .ok_or_else(|| ReceiverError::invalid("example", "missing"))?;
        let e = wire_example.clone();
        let example = Example::new(e.id, e.question, e.choices, &e.gold)
            .map_err(|err| ReceiverError::invalid("example", err.to_string()))?;
        let method = match pb::Method::try_from(r.method) {
            Ok(pb::Method::ReceiverOnly) => Method::ReceiverOnly,
            Ok(pb::Method::SharerOnly) => Method::SharerOnly,
            Ok(pb::Method::Text) => {
                let t = r.text.unwrap_or_default();
                let kind = pb::MessageKind::try_from(t.kind).map_err(|_| {
                    ReceiverError::invalid("text.kind", format!("unknown value {}", t.kind))
                })?;
                Method::Text {
                    kind,
                    byte_cap: t.byte_cap,
                }
            }
            Ok(pb::Method::Kv) => Method::Kv,
            Ok(pb::Method::C2c) => Method::C2c,
            Ok(pb::Method::Unspecified) | Err(_) => {
                return Err(ReceiverError::invalid(
                    "method",
                    format!("unknown or unset value {}", r.method),
                ));
            }
        };
        let scoring = match pb::Scoring::try_from(r.scoring) {
            Ok(pb::Scoring::Unspecified | pb::Scoring::Letter) => Scoring::Letter,
            Ok(pb::Scoring::Generate) => Scoring::Generate,
            Ok(pb::Scoring::Rank) => Scoring::Rank(normalization(r.rank_normalization)?),
            Err(_) => {
                return Err(ReceiverError::invalid(
                    "scoring",
                    format!("unknown value {}", r.scoring),
                ));
            }
        };
        let layout = match pb::Layout::try_from(r.layout) {
            Ok(pb::Layout::Unspecified | pb::Layout::SharedPrompt) => PromptLayout::Shared,
            Ok(pb::Layout::Context) => PromptLayout::Context,
            Err(_) => {
                return Err(ReceiverError::invalid(
                    "layout",
                    format!("unknown value {}", r.layout),
                ));
            }
        };
        check_layout(layout, method, scoring, &wire_example.passage)?;
        let passage = Some(wire_example.passage.clone()).filter(|p| !p.is_empty());
        let refine = match r.refine {
            Some(s) if s.margin_threshold > 0.0 => {
                // Letter margins are probabilities; rank margins are log-probability gaps.
                let bounded = !matches!(scoring, Scoring::Rank(_));
                if !s.margin_threshold.is_finite() || (bounded && s.margin_threshold > 1.0) {
                    return Err(ReceiverError::invalid(
                        "refine.margin_threshold",
                        if bounded {
                            "must be in [0, 1] for letter scoring"
                        } else {
                            "must be finite"
                        },
                    ));
                }
                let upgrade_payload = pb::Payload::try_from(s.upgrade_payload).map_err(|_| {
                    ReceiverError::invalid("refine.upgrade_payload", "unknown value")
                })?;
                let mode = match pb::RefineMode::try_from(s.mode) {
                    Ok(pb::RefineMode::Unspecified) => pb::RefineMode::Upgrade,
                    Ok(m) => m,
                    Err(_) => return Err(ReceiverError::invalid("refine.mode", "unknown value")),
                };
                if !(0.0..1.0).contains(&s.reserve_fraction) {
                    return Err(ReceiverError::invalid(
                        "refine.reserve_fraction",
                        "must be in [0, 1)",
                    ));
                }
                Some(RefinePlan {
                    margin_threshold: s.margin_threshold,
                    upgrade_payload,
                    mode,
                    reserve_fraction: s.reserve_fraction,
                    max_positions: s.max_positions as usize,
                })
            }
            _ => None,
        };
        Ok(Self {
            example,
            wire_example,
            method,
            transfer: r.transfer.unwrap_or_default(),
            scoring,
            sharer_endpoint: Some(r.sharer_endpoint).filter(|s| !s.is_empty()),
            refine,
            max_new_tokens: r.max_new_tokens as usize,
            passage,
            layout,
        })
    }
}

/// What the context layout needs and refuses: a passage, rank scoring, the passage as the
/// only text baseline (KV and C2C are allowed: whether the pair's fuser serves the layout is
/// the fuser's to say, `fuser::C2cFuser`). The shared layout refuses the passage text kind.
fn check_layout(
    layout: PromptLayout,
    method: Method,
    scoring: Scoring,
    passage: &str,
) -> Result<(), ReceiverError> {
    let passage_text = matches!(
        method,
        Method::Text {
            kind: pb::MessageKind::Passage
                | pb::MessageKind::PassageExtract
                | pb::MessageKind::PassageSummary,
            ..
        }
    );
    match layout {
        PromptLayout::Shared if passage_text => Err(ReceiverError::invalid(
            "text.kind",
            "MESSAGE_KIND_PASSAGE, _PASSAGE_EXTRACT and _PASSAGE_SUMMARY are the context \
             layout's text baselines: set layout = LAYOUT_CONTEXT",
        )),
        PromptLayout::Shared => Ok(()),
        PromptLayout::Context if passage.trim().is_empty() => Err(ReceiverError::invalid(
            "example.passage",
            "the context layout needs a non-empty passage (the text the sharer has read)",
        )),
        PromptLayout::Context if !matches!(scoring, Scoring::Rank(_)) => {
            Err(ReceiverError::invalid(
                "scoring",
                "the context layout scores by rank: the plain \"Question: ...\\nAnswer:\" \
                 context continues the passage; the letter and generation prompts (chat \
                 template) have no place for it",
            ))
        }
        PromptLayout::Context if matches!(method, Method::Text { .. }) && !passage_text => {
            Err(ReceiverError::invalid(
                "text.kind",
                "the context layout's text baselines are the passage (MESSAGE_KIND_PASSAGE) \
                 and its extract (_PASSAGE_EXTRACT); the raw, summary and hint kinds are about \
                 the question, which the receiver has",
            ))
        }
        PromptLayout::Context => Ok(()),
    }
}

impl From<Evaluation> for pb::EvaluateReply {
    fn from(e: Evaluation) -> Self {
        let o = e.outcome;
        pb::EvaluateReply {
            prediction: o
                .prediction
                .map(|i| LETTERS[i].to_string())
                .unwrap_or_default(),
            correct: e.correct,
            margin: o.margin,
            probabilities: o.probabilities,
            rounds: e.rounds.into_iter().map(pb::RoundReport::from).collect(),
            total: Some(e.total.into()),
            timings: Some(e.timings.into()),
            generated: o.generated,
            budget_cap_bytes: e.budget_cap_bytes,
            rank: o
                .rank
                .into_iter()
                .map(|s| pb::RankScores {
                    normalization: normalization_code(s.normalization) as i32,
                    prediction: s.prediction as u32,
                    scores: s.scores,
                    margin: s.margin,
                })
                .collect(),
        }
    }
}

impl From<RoundReport> for pb::RoundReport {
    fn from(r: RoundReport) -> Self {
        pb::RoundReport {
            round: r.round,
            bytes: Some(r.bytes.into()),
            timings: Some(r.timings.into()),
            prediction: r
                .prediction
                .and_then(|i| LETTERS.get(i))
                .map(|l| l.to_string())
                .unwrap_or_default(),
            margin: r.margin,
        }
    }
}

impl From<ByteCounts> for pb::ByteCounts {
    fn from(b: ByteCounts) -> Self {
        let d = b.breakdown;
        pb::ByteCounts {
            measured_total: b.measured_total,
            breakdown: Some(pb::BlobBreakdown {
                headers: d.headers,
                indices: d.indices,
                payload: d.payload,
                scales: d.scales,
                request: d.request,
            }),
            estimated_total: b.estimated_total,
            grpc_message_bytes: b.grpc_message_bytes,
            transport_read: b.transport_read,
            transport_written: b.transport_written,
            frames: b.frames,
        }
    }
}

/// The rank normalisation a request asks for (per character when unset, as OLMES for ARC).
fn normalization(code: i32) -> Result<Normalization, ReceiverError> {
    match pb::RankNormalization::try_from(code) {
        Ok(pb::RankNormalization::Raw) => Ok(Normalization::Raw),
        Ok(pb::RankNormalization::PerToken) => Ok(Normalization::PerToken),
        Ok(pb::RankNormalization::Unspecified | pb::RankNormalization::PerChar) => {
            Ok(Normalization::PerChar)
        }
        Err(_) => Err(ReceiverError::invalid(
            "rank_normalization",
            format!("unknown value {code}"),
        )),
    }
}

/// The wire code of a normalisation.
pub fn normalization_code(n: Normalization) -> pb::RankNormalization {
    match n {
        Normalization::Raw => pb::RankNormalization::Raw,
        Normalization::PerToken => pb::RankNormalization::PerToken,
        Normalization::PerChar => pb::RankNormalization::PerChar,
    }
}

#[cfg(test)]
#[path = "domain_tests.rs"]
mod tests;
