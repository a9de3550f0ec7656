//! Receiver-driven round 2 (docs/REFINEMENT.md): when to ask (the margin trigger), what to ask
//! for (positions ordered by the receiver's delta scores: the attention its own question puts
//! on each received position), and how much fits in the bytes the cap leaves. Pure functions
//! over the held cache's positions and the scores; the engine computes the scores.

use kvwire::HostCache;
use kvwire::quant::Granularity;
use kvwire::v2::{FrameKind, FrameOptions, Payload, SessionHeader};
use kvwire_proto::v1 as pb;
use prost::Message;

use crate::domain::RefinePlan;

/// Whether round 2 runs: a plan, a kept session, and a round-1 margin strictly below the
/// threshold (a NaN margin never triggers).
pub(super) fn triggered(plan: Option<&RefinePlan>, margin: f32, session_id: &str) -> bool {
    plan.is_some_and(|plan| !session_id.is_empty() && margin < plan.margin_threshold)
}

/// Round 1's cap: the whole cap less the fraction kept for round 2 (0: no cap).
pub(super) fn round1_cap(cap: u64, plan: Option<&RefinePlan>) -> u64 {
    match plan {
        Some(plan) if cap > 0 => (cap as f64 * (1.0 - f64::from(plan.reserve_fraction))) as u64,
        _ => cap,
    }
}

/// Round 2's bytes: what round 1 left of the cap when the plan keeps a reserve; `None` (not
/// bound) without a cap or with no reserve, where the cap is round 1's alone (the behaviour
/// before reserves existed).
pub(super) fn round2_budget(cap: u64, plan: &RefinePlan, round1_bytes: u64) -> Option<u64> {
    (cap > 0 && plan.reserve_fraction > 0.0).then(|| cap.saturating_sub(round1_bytes))
}

/// `held` ordered by descending delta score (`scores[i]` belongs to `held[i]`); ties go to
/// the earlier position.
pub fn upgrade_order(held: &[u32], scores: &[f32]) -> Vec<u32> {
    let mut order: Vec<(u32, f32)> = held.iter().copied().zip(scores.iter().copied()).collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    order.into_iter().map(|(p, _)| p).collect()
}

/// Positions in `0..shareable` not held, ordered by the delta score spread from the held
/// positions: a candidate `p` scores `max over held q of score(q) / |p - q|` (a held token
/// the question attends to makes its missing neighbours likely parts of the same phrase; the
/// weight halves at distance 2). Ties go to the earlier position; candidates with no held
/// position at all score 0 and keep prompt order.
pub fn extra_order(held: &[u32], scores: &[f32], shareable: usize) -> Vec<u32> {
    let mut order: Vec<(u32, f32)> = (0..shareable as u32)
        .filter(|p| held.binary_search(p).is_err())
        .map(|p| {
            let spread = held
                .iter()
                .zip(scores)
                .map(|(&q, &s)| s.max(0.0) / p.abs_diff(q) as f32)
                .fold(0.0_f32, f32::max);
            (p, spread)
        })
        .collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    order.into_iter().map(|(p, _)| p).collect()
}

fn granularity(code: i32) -> Granularity {
    match pb::Granularity::try_from(code) {
        Ok(pb::Granularity::PerHead) => Granularity::PerHead,
        Ok(pb::Granularity::PerTensor) => Granularity::PerTensor,
        _ => Granularity::PerBlock,
    }
}

fn payload(code: pb::Payload) -> Payload {
    match code {
        pb::Payload::Fp16 => Payload::Fp16,
        pb::Payload::Int4 => Payload::Int4,
        pb::Payload::Int8 | pb::Payload::Unspecified => Payload::Int8,
    }
}

/// The Refine request of round 2 for a round-1 cache `held` and its delta `scores`, or `None`
/// when no position is left to ask for or none fits `budget` (the cap's bytes left after
/// round 1; `None`: no cap). Upgrades re-send the chosen held positions as a residual at the
/// plan's upgrade payload; extras send new positions at the transfer's payload. The request's
/// own bytes count against the budget.
pub(super) fn round2_request(
    plan: &RefinePlan,
    transfer: &pb::TransferSettings,
    held: &HostCache,
    scores: &[f32],
    budget: Option<u64>,
    session_id: &str,
) -> Option<pb::RefineRequest> {
    let shareable = held.prompt_tokens;
    let (order, wire_payload, kind) = match plan.mode {
        pb::RefineMode::Extra => {
            let pl = pb::Payload::try_from(transfer.payload).unwrap_or(pb::Payload::Int8);
            (
                extra_order(&held.positions, scores, shareable),
                pl,
                FrameKind::Base,
            )
        }
        _ => (
            upgrade_order(&held.positions, scores),
            plan.upgrade_payload,
            FrameKind::Residual,
        ),
    };
    let limit = match plan.max_positions {
        0 => order.len(),
        m => m.min(order.len()),
    };
    let request = |k: usize| {
        let mut positions = order[..k].to_vec();
        positions.sort_unstable();
        let want = match kind {
            FrameKind::Base => pb::refine_request::Want::Extra(pb::ExtraPositions {
                positions,
                payload: wire_payload as i32,
            }),
            FrameKind::Residual => pb::refine_request::Want::Upgrade(pb::PrecisionUpgrade {
                positions,
                payload: wire_payload as i32,
            }),
        };
        pb::RefineRequest {
            session_id: session_id.to_string(),
            want: Some(want),
            granularity: transfer.granularity,
        }
    };
    let opts = FrameOptions {
        payload: payload(wire_payload),
        granularity: granularity(transfer.granularity),
        round: 2,
        kind,
        ..FrameOptions::default()
    };
    let header = session_header_len(held);
    // An upper bound of round 2's bytes with k positions (index bytes always counted), which
    // grows with k; the exact size is at most this.
    let bytes = |k: usize| {
        let shape = [1, held.heads, k, held.head_dim];
        let frame = kvwire::v2::estimate_frame_bytes(&opts, shape, k, shareable as u32);
        header + held.layers.len() as u64 * frame + request(k).encoded_len() as u64
    };
    let fits = |k: usize| budget.is_none_or(|b| bytes(k) <= b);
    let (mut lo, mut hi) = (0, limit);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(mid) { lo = mid } else { hi = mid - 1 }
    }
    (lo > 0).then(|| request(lo))
}

/// Length of the session header that opens round 2 (the sharer writes the same header as in
/// round 1, with its model id and no receiver id).
fn session_header_len(held: &HostCache) -> u64 {
    SessionHeader {
        session_id: [0; 16],
        sharer_model: held.sharer_model.clone(),
        receiver_model: String::new(),
        layers: held.layers.len() as u16,
        kv_heads: held.heads as u16,
        head_dim: held.head_dim as u16,
        tokens: held.prompt_tokens as u32,
        round: 2,
        frames: held.layers.len() as u32,
    }
    .encoded_len() as u64
}

#[cfg(test)]
#[path = "refine_tests.rs"]
mod tests;
