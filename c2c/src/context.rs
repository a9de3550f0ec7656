//! The context layout's fuse step: sharer rows of a passage the receiver never read, written
//! into receiver **context slots** (one slot per sharer token) whose base K/V are the
//! receiver's cache of a neutral filler.
//!
//! Per linked layer and slot: `r + g w P([s ; r])`, the projector and gate of the shared-prompt
//! layout, with two RoPE steps around it (K only; V carries no position):
//!
//! 1. the sharer K of the row is un-rotated with the sharer's RoPE at its sharer position, and
//!    the slot's filler K with the receiver's RoPE at the slot position, so the projector reads
//!    position-free K on both sides;
//! 2. the projector's correction `g w P` (fused minus filler, in the position-free frame) is
//!    rotated with the receiver's RoPE at the slot position and added to the slot's post-RoPE
//!    filler K. Rotation is linear, so this is `rot_r(unrot_r(r) + g w P)`, and a closed gate
//!    leaves the filler rows exactly as they were.

use crate::cache::KvLayer;
use crate::error::{C2cError, Result, TensorContext};
use crate::fuse::put_rows;
use crate::projector::{GateMode, Projector};
use crate::rope::RopeSpec;

/// Both models' RoPE, for moving K between them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopePair {
    /// The sharer's RoPE (its K arrives rotated with it).
    pub sharer: RopeSpec,
    /// The receiver's RoPE (slots need it).
    pub receiver: RopeSpec,
}

/// Sharer rows of one sharer layer bound for context slots: `kv` `[B, Hs, n, Ds]` (post-RoPE
/// K), row `i` read by the sharer at `sharer_positions[i]` and written into receiver slot
/// `slots[i]`.
#[derive(Debug, Clone)]
pub struct SlotRows {
    /// Sharer K/V rows.
    pub kv: KvLayer,
    /// The sharer position of each row (its RoPE angle).
    pub sharer_positions: Vec<usize>,
    /// The receiver slot of each row, strictly increasing.
    pub slots: Vec<usize>,
}

impl SlotRows {
    /// One slot per sharer token: rows `0..n` of `kv` into slots `0..n`.
    pub fn dense(kv: KvLayer) -> Result<Self> {
        let (_, _, n, _) = kv.dims()?;
        Ok(Self {
            kv,
            sharer_positions: (0..n).collect(),
            slots: (0..n).collect(),
        })
    }
}

/// Fuses `rows` into the slot cache `base` (`[B, Hr, S, Dr]`, the receiver's filler rows, K
/// post-RoPE at slot positions `0..S`) of one linked receiver layer.
pub fn fuse_slots(
    projector: &Projector,
    rows: &SlotRows,
    base: &KvLayer,
    gate: &GateMode,
    ropes: &RopePair,
) -> Result<KvLayer> {
    let (b, _, s, _) = base.dims()?;
    let (rb, _, n, _) = rows.kv.dims()?;
    for (what, len) in [
        (
            "sharer rows vs their sharer positions",
            rows.sharer_positions.len(),
        ),
        ("sharer rows vs their slots", rows.slots.len()),
    ] {
        if len != n {
            return Err(C2cError::Mismatch {
                what,
                left: n,
                right: len,
            });
        }
    }
    if rb != b {
        return Err(C2cError::Mismatch {
            what: "sharer batch vs slot batch",
            left: rb,
            right: b,
        });
    }
    crate::cache::check_positions(&rows.slots, s, "context slots")?;
    if n == 0 {
        return Ok(base.clone());
    }
    let own = base.gather_tokens(&rows.slots)?;
    let own_k = ropes.receiver.unrotate(&own.k, &rows.slots)?;
    let sharer_k = ropes.sharer.unrotate(&rows.kv.k, &rows.sharer_positions)?;
    let fused = projector.forward_cache(
        &KvLayer::new(sharer_k, rows.kv.v.clone())?,
        &KvLayer::new(own_k.clone(), own.v.clone())?,
        gate,
    )?;
    let delta = (fused.k - own_k).ctx("K correction")?;
    let k = (own.k + ropes.receiver.rotate(&delta, &rows.slots)?).ctx("adding rotated K")?;
    Ok(KvLayer {
        k: put_rows(&base.k, &k, &rows.slots)?,
        v: put_rows(&base.v, &fused.v, &rows.slots)?,
    })
}
