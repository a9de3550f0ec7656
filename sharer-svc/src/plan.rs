//! Precision plans: how a round spreads precision over layers and tokens under the byte cap,
//! as plain functions over sizes and measured distortions (no model, no device). Each plan
//! returns the round's frames; every layer's frames cover the same positions (kvwire's round
//! rules), and the round's exact size by kvwire's formula never exceeds the cap.
//!
//! - `Uniform`: every row at the request's payload, one frame per layer.
//! - `MixedLayers` (M6): the last N layers at fp16, the others at the request's payload.
//! - `LayerSensitivity` (Q-KVComm-like): int4 or int8 per layer by measured sensitivity.
//! - `TokenRate` (M10): drop, int4 or int8 per token; `int4 = false` is the {drop, int8} top-k.
//!
//! For the first three the cap keeps the longest prefix of the selection's order that fits
//! (at int4 for `LayerSensitivity`, whose leftover bytes then raise layers to int8); the rate
//! plan allocates over every candidate instead.

mod measure;
#[cfg(test)]
mod tests;

pub use measure::{Measured, importance_weights, measure};

use c2c::layer_policy::{LayerOption, mixed_precision_layers, qkvcomm_layers};
use c2c::rate::{Precision, TokenCost, allocate};
use kvwire::v2::{FrameOptions, Payload, estimate_frame_bytes};

use crate::error::SharerError;
use crate::select::fit_to_cap;

/// How precision is spread over layers and tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrecisionPlan {
    /// Every row at the request's payload.
    #[default]
    Uniform,
    /// The last `fp16_layers` layers at fp16, the others at the request's payload.
    MixedLayers {
        /// Layers at fp16, counted from the last.
        fp16_layers: usize,
    },
    /// int4 or int8 per layer, by measured sensitivity, under the cap.
    LayerSensitivity,
    /// Drop, int4 (when `int4`) or int8 per token, by measured distortion, under the cap.
    TokenRate {
        /// int4 is a choice (else {drop, int8}: top-k).
        int4: bool,
    },
}

impl PrecisionPlan {
    /// Whether the plan needs measured distortions (host rows of every layer before encoding).
    pub fn is_measured(self) -> bool {
        matches!(self, Self::LayerSensitivity | Self::TokenRate { .. })
    }
}

/// One frame of a round: a precision group of one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpec {
    /// Sharer layer.
    pub layer: usize,
    /// Precision group within the layer (0, 1, ...).
    pub group: u8,
    /// Payload coding.
    pub payload: Payload,
    /// Positions, ascending.
    pub positions: Vec<u32>,
}

/// What every frame of a round shares: the model's shape, the session header's length and
/// the frame options other than payload, layer and group.
#[derive(Debug, Clone, Copy)]
pub struct RoundCost {
    /// Sharer layers.
    pub layers: usize,
    /// KV heads.
    pub heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Encoded session header bytes.
    pub header: u64,
    /// Options of every frame (granularity, round, kind).
    pub base: FrameOptions,
}

impl RoundCost {
    /// Exact bytes of one frame over `positions` at `payload` (contiguous positions need no
    /// index bytes).
    pub fn frame_bytes(&self, payload: Payload, positions: &[u32]) -> u64 {
        let contiguous = positions.windows(2).all(|w| w[1] == w[0] + 1);
        let n_indices = if contiguous { 0 } else { positions.len() };
        let opts = FrameOptions {
            payload,
            ..self.base
        };
        let max_position = positions.last().copied().unwrap_or(0);
        let shape = [1, self.heads, positions.len(), self.head_dim];
        estimate_frame_bytes(&opts, shape, n_indices, max_position)
    }

    /// Exact bytes of a round: the session header and every frame.
    pub fn round_bytes(&self, frames: &[FrameSpec]) -> u64 {
        self.header
            + frames
                .iter()
                .map(|f| self.frame_bytes(f.payload, &f.positions))
                .sum::<u64>()
    }

    /// One frame per layer over `positions`, layer `l` at `payloads[l]`.
    pub fn one_per_layer(&self, positions: &[u32], payloads: &[Payload]) -> Vec<FrameSpec> {
        payloads
            .iter()
            .enumerate()
            .map(|(layer, &payload)| FrameSpec {
                layer,
                group: 0,
                payload,
                positions: positions.to_vec(),
            })
            .collect()
    }

    /// The longest prefix of `preferred` that fits `cap` with layer `l` at `payloads[l]`,
    /// ascending; `None` when not even one position fits.
    pub fn fit(&self, preferred: &[u32], payloads: &[Payload], cap: u64) -> Option<Vec<u32>> {
        fit_to_cap(preferred, cap, |p| {
            self.header
                + payloads
                    .iter()
                    .map(|&pl| self.frame_bytes(pl, p))
                    .sum::<u64>()
        })
    }
}

/// The frames of a round under `precision`: `preferred` is the selection's order of
/// preference, `payload` the request's, `cap` the byte cap (0: none). `measure(positions)`
/// gives the measured distortions of the rows at `positions` (ascending); only the measured
/// plans call it, once. The round's exact size never exceeds the cap; `CapTooSmall` when not
/// one token fits.
pub fn plan_frames(
    precision: PrecisionPlan,
    payload: Payload,
    cost: &RoundCost,
    preferred: &[u32],
    cap: u64,
    measure: impl FnOnce(&[u32]) -> Result<Measured, SharerError>,
) -> Result<Vec<FrameSpec>, SharerError> {
    // The size of sending the most preferred token alone.
    let too_small = |payloads: &[Payload]| SharerError::CapTooSmall {
        cap,
        minimum: cost
            .round_bytes(&cost.one_per_layer(&preferred[..preferred.len().min(1)], payloads)),
    };
    let frames = match precision {
        PrecisionPlan::Uniform | PrecisionPlan::MixedLayers { .. } => {
            let payloads = layer_payloads(precision, cost.layers, payload).ok_or_else(|| {
                SharerError::invalid(
                    "transfer.fp16_layers",
                    format!("must be in 1..={} (the sharer's layers)", cost.layers),
                )
            })?;
            let positions = cost
                .fit(preferred, &payloads, cap)
                .ok_or_else(|| too_small(&payloads))?;
            cost.one_per_layer(&positions, &payloads)
        }
        PrecisionPlan::LayerSensitivity => {
            let int4 = vec![Payload::Int4; cost.layers];
            let positions = cost
                .fit(preferred, &int4, cap)
                .ok_or_else(|| too_small(&int4))?;
            let measured = measure(&positions)?;
            let payloads = sensitivity_payloads(cost, &positions, &measured.layers, cap)
                .ok_or_else(|| too_small(&int4))?;
            cost.one_per_layer(&positions, &payloads)
        }
        PrecisionPlan::TokenRate { int4 } => {
            let mut candidates = preferred.to_vec();
            candidates.sort_unstable();
            let measured = measure(&candidates)?;
            let cheapest = if int4 { Payload::Int4 } else { Payload::Int8 };
            rate_frames(cost, &candidates, &measured.tokens, int4, cap)
                .ok_or_else(|| too_small(&vec![cheapest; cost.layers]))?
        }
    };
    let bytes = cost.round_bytes(&frames);
    if cap > 0 && bytes > cap {
        return Err(SharerError::Worker(format!(
            "planned {bytes} bytes over the cap of {cap}"
        )));
    }
    Ok(frames)
}

/// Per-layer payloads of the unmeasured plans: `payload` everywhere, or the last
/// `fp16_layers` at fp16. `None` for a measured plan or a count outside 1..=layers.
pub fn layer_payloads(
    plan: PrecisionPlan,
    layers: usize,
    payload: Payload,
) -> Option<Vec<Payload>> {
    match plan {
        PrecisionPlan::Uniform => Some(vec![payload; layers]),
        PrecisionPlan::MixedLayers { fp16_layers } if (1..=layers).contains(&fp16_layers) => {
            let base = to_precision(payload);
            let spread = mixed_precision_layers(layers, fp16_layers, base);
            spread.into_iter().map(to_payload).collect()
        }
        _ => None,
    }
}

/// Q-KVComm-like: the payload of each layer over `positions`, int8 where the measured
/// distortion `(int4, int8)` of the layer falls most per extra byte, while the round fits
/// `cap` (0: no cap, every layer int8). `None` when even all-int4 does not fit.
pub fn sensitivity_payloads(
    cost: &RoundCost,
    positions: &[u32],
    distortion: &[(f64, f64)],
    cap: u64,
) -> Option<Vec<Payload>> {
    let options: Vec<LayerOption> = distortion
        .iter()
        .map(|&(int4, int8)| LayerOption {
            int4_bytes: cost.frame_bytes(Payload::Int4, positions) as usize,
            int8_bytes: cost.frame_bytes(Payload::Int8, positions) as usize,
            int4_distortion: int4,
            int8_distortion: int8,
            drop_distortion: None,
        })
        .collect();
    let budget = if cap == 0 {
        options.iter().map(|o| o.int8_bytes).sum()
    } else {
        usize::try_from(cap.checked_sub(cost.header)?).ok()?
    };
    let allocation = qkvcomm_layers(&options, budget).ok()?;
    allocation.choices.into_iter().map(to_payload).collect()
}

/// Rate-distortion per token over `candidates` (ascending) with their measured distortions:
/// each dropped, int4 (when `int4`) or int8, the same in every layer, so that the round fits
/// `cap` (0: no cap, every token int8). Per layer one int8 frame (group 0) and one int4 frame
/// (group 1), each only when it has a position. `None` when not one token fits.
pub fn rate_frames(
    cost: &RoundCost,
    candidates: &[u32],
    distortions: &[c2c::quant::TokenDistortion],
    int4: bool,
    cap: u64,
) -> Option<Vec<FrameSpec>> {
    if cap == 0 {
        let payloads = vec![Payload::Int8; cost.layers];
        return Some(cost.one_per_layer(candidates, &payloads));
    }
    // Both groups, or one of them alone: each structure has its own frame headers.
    let structures: &[&[Precision]] = if int4 {
        &[
            &[Precision::Drop, Precision::Int4, Precision::Int8],
            &[Precision::Drop, Precision::Int8],
            &[Precision::Drop, Precision::Int4],
        ]
    } else {
        &[&[Precision::Drop, Precision::Int8]]
    };
    let max_position = candidates.last().copied().unwrap_or(0);
    structures
        .iter()
        .filter_map(|allowed| {
            let groups = (allowed.len() - 1) as u64;
            let fixed =
                cost.header + groups * cost.layers as u64 * cost.frame_bytes(Payload::Int8, &[]);
            let budget = usize::try_from(cap.checked_sub(fixed)?).ok()?;
            let token = token_cost(cost, max_position);
            let items = c2c::layer_policy::token_items(distortions, &token, allowed);
            let allocation = allocate(&items, budget).ok()?;
            let frames = group_frames(cost.layers, candidates, &allocation.choices);
            (!frames.is_empty()).then_some((allocation.distortion, frames))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, frames)| frames)
}

/// Wire bytes of one token over every layer, from kvwire's formula: what one more row adds to
/// a frame (an upper bound: a contiguous run needs no index bytes, and int4 packs two values
/// per byte over the whole tensor).
fn token_cost(cost: &RoundCost, max_position: u32) -> TokenCost {
    let row = |payload: Payload| {
        let opts = FrameOptions {
            payload,
            ..cost.base
        };
        let shape = |t| [1, cost.heads, t, cost.head_dim];
        let one = estimate_frame_bytes(&opts, shape(1), 1, max_position);
        let none = estimate_frame_bytes(&opts, shape(0), 0, max_position);
        (one - none) as usize * cost.layers
    };
    let index = if max_position <= u32::from(u16::MAX) {
        2
    } else {
        4
    } * cost.layers;
    let (int8, int4, fp16) = (row(Payload::Int8), row(Payload::Int4), row(Payload::Fp16));
    let scales = 4 * cost.heads * cost.layers;
    TokenCost {
        index,
        scales,
        int4: int4 - index - scales,
        int8: int8 - index - scales,
        fp16: fp16 - index,
    }
}

/// The frames of a per-token allocation: per layer, the int8 positions (group 0) and the int4
/// positions (group 1), each when not empty. Empty when every token is dropped.
fn group_frames(layers: usize, candidates: &[u32], choices: &[Precision]) -> Vec<FrameSpec> {
    let pick = |want: Precision| -> Vec<u32> {
        candidates
            .iter()
            .zip(choices)
            .filter(|(_, c)| **c == want)
            .map(|(p, _)| *p)
            .collect()
    };
    let groups: Vec<(Payload, Vec<u32>)> = [
        (Payload::Int8, pick(Precision::Int8)),
        (Payload::Int4, pick(Precision::Int4)),
    ]
    .into_iter()
    .filter(|(_, p)| !p.is_empty())
    .collect();
    (0..layers)
        .flat_map(|layer| {
            groups
                .iter()
                .enumerate()
                .map(move |(group, (payload, positions))| FrameSpec {
                    layer,
                    group: group as u8,
                    payload: *payload,
                    positions: positions.clone(),
                })
        })
        .collect()
}

fn to_precision(p: Payload) -> Precision {
    match p {
        Payload::Fp16 => Precision::Fp16,
        Payload::Int8 => Precision::Int8,
        Payload::Int4 => Precision::Int4,
    }
}

fn to_payload(p: Precision) -> Option<Payload> {
    match p {
        Precision::Fp16 => Some(Payload::Fp16),
        Precision::Int8 => Some(Payload::Int8),
        Precision::Int4 => Some(Payload::Int4),
        Precision::Drop => None,
    }
}
