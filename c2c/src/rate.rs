//! Rate-distortion allocation under an exact byte cap: every item (a token of a layer, or a whole
//! layer) picks one of its choices ({drop, int4, int8, fp16}, each with its wire bytes and its
//! measured distortion) so that the total bytes never exceed the cap and the total distortion
//! reduction is as large as the greedy can make it.
//!
//! Method: each item's choices are reduced to their lower convex hull in (bytes, distortion);
//! hull steps are taken in order of distortion reduction per byte until the next one does not fit
//! (the Lagrangian solution for the smallest multiplier that fits); the bytes left, fewer than one
//! step, are then spent optimally by dynamic programming over all choices (hull or not). The
//! result is within one step's gain of the optimum, and its gain never falls when the cap grows.

use serde::{Deserialize, Serialize};

use crate::error::{C2cError, Result};

/// How one token (or layer) is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Not sent.
    Drop,
    /// int4 payload.
    Int4,
    /// int8 payload.
    Int8,
    /// fp16 payload.
    Fp16,
}

/// Wire bytes of one token of one layer (K and V together), filled by the caller from the wire
/// format so that the allocator's arithmetic is the format's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCost {
    /// Index bytes of the token position.
    pub index: usize,
    /// Scale bytes of a quantized token (int4/int8).
    pub scales: usize,
    /// int4 payload bytes.
    pub int4: usize,
    /// int8 payload bytes.
    pub int8: usize,
    /// fp16 payload bytes.
    pub fp16: usize,
}

impl TokenCost {
    /// Total bytes of sending the token at `p` (0 for a drop).
    pub fn bytes(&self, p: Precision) -> usize {
        match p {
            Precision::Drop => 0,
            Precision::Int4 => self.index + self.scales + self.int4,
            Precision::Int8 => self.index + self.scales + self.int8,
            Precision::Fp16 => self.index + self.fp16,
        }
    }
}

/// One way to send an item.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Precision used.
    pub precision: Precision,
    /// Wire bytes.
    pub bytes: usize,
    /// Distortion left when sent this way.
    pub distortion: f64,
}

/// The allocator's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    /// Chosen precision per item.
    pub choices: Vec<Precision>,
    /// Total bytes (never above the cap).
    pub bytes: usize,
    /// Total distortion.
    pub distortion: f64,
}

/// Largest dynamic-programming table (items x leftover bytes) of the exact fill.
pub const MAX_FILL_CELLS: usize = 1 << 24;

struct Step {
    item: usize,
    hull_index: usize,
    efficiency: f64,
}

/// Chooses one choice per item with total bytes <= `cap`. Every item starts at its cheapest
/// choice; the cap must cover those.
pub fn allocate(items: &[Vec<Choice>], cap: usize) -> Result<Allocation> {
    let mut hulls = Vec::with_capacity(items.len());
    for (i, choices) in items.iter().enumerate() {
        if choices.is_empty() || choices.iter().any(|c| !c.distortion.is_finite()) {
            return Err(C2cError::Config {
                path: "rate allocation".into(),
                message: format!("item {i} has no choice or a non-finite distortion"),
            });
        }
        hulls.push(lower_hull(choices));
    }
    let floor: usize = hulls.iter().map(|h| h[0].bytes).sum();
    if floor > cap {
        return Err(C2cError::Range {
            what: "byte cap below the cheapest allocation",
            value: cap as f64,
            range: ">= sum of the cheapest choices",
        });
    }
    let mut steps = Vec::new();
    for (item, hull) in hulls.iter().enumerate() {
        for k in 1..hull.len() {
            let gain = hull[k - 1].distortion - hull[k].distortion;
            let cost = (hull[k].bytes - hull[k - 1].bytes) as f64;
            steps.push(Step {
                item,
                hull_index: k,
                efficiency: gain / cost,
            });
        }
    }
    steps.sort_by(|a, b| {
        b.efficiency
            .total_cmp(&a.efficiency)
            .then(a.item.cmp(&b.item))
            .then(a.hull_index.cmp(&b.hull_index))
    });
    let mut current: Vec<Choice> = hulls.iter().map(|h| h[0]).collect();
    let mut left = cap - floor;
    for s in &steps {
        let next = hulls[s.item][s.hull_index];
        let extra = next.bytes - current[s.item].bytes;
        if extra > left {
            break;
        }
        left -= extra;
        current[s.item] = next;
    }
    fill_leftover(items, &mut current, &mut left);
    Ok(Allocation {
        choices: current.iter().map(|c| c.precision).collect(),
        bytes: cap - left,
        distortion: current.iter().map(|c| c.distortion).sum(),
    })
}

/// Upgrades from `cur` (any choice of the item, hull or not) that fit in `left` bytes and help.
fn upgrades(choices: &[Choice], cur: &Choice, left: usize) -> Vec<Choice> {
    choices
        .iter()
        .filter(|c| {
            c.bytes > cur.bytes && c.bytes - cur.bytes <= left && c.distortion < cur.distortion
        })
        .copied()
        .collect()
}

/// Spends the bytes left after the hull prefix optimally (a multiple-choice knapsack by dynamic
/// programming over the leftover, which is smaller than one hull step). Exactness here is what
/// makes the total gain monotone in the cap. Instances too large for the table fall back to a
/// greedy pass (best single upgrade per item, best gain per byte first).
fn fill_leftover(items: &[Vec<Choice>], current: &mut [Choice], left: &mut usize) {
    let l = *left;
    let cands: Vec<(usize, Vec<Choice>)> = items
        .iter()
        .enumerate()
        .map(|(i, cs)| (i, upgrades(cs, &current[i], l)))
        .filter(|(_, ups)| !ups.is_empty())
        .collect();
    if cands.is_empty() {
        return;
    }
    if cands.len().saturating_mul(l + 1) > MAX_FILL_CELLS {
        fill_greedy(items, current, left);
        return;
    }
    let width = l + 1;
    let mut best = vec![0f64; width];
    let mut pick = vec![0u8; cands.len() * width];
    for (ci, (i, ups)) in cands.iter().enumerate() {
        let prev = best.clone();
        let cur = current[*i];
        for b in 0..width {
            for (j, u) in ups.iter().enumerate() {
                let cost = u.bytes - cur.bytes;
                if cost <= b {
                    let v = prev[b - cost] + (cur.distortion - u.distortion);
                    if v > best[b] {
                        best[b] = v;
                        pick[ci * width + b] = (j + 1) as u8;
                    }
                }
            }
        }
    }
    let mut b = l;
    for ci in (0..cands.len()).rev() {
        let j = pick[ci * width + b] as usize;
        if j > 0 {
            let (i, ups) = &cands[ci];
            let u = ups[j - 1];
            b -= u.bytes - current[*i].bytes;
            current[*i] = u;
        }
    }
    *left = b;
}

/// Greedy fallback of [`fill_leftover`] for very large leftovers.
fn fill_greedy(items: &[Vec<Choice>], current: &mut [Choice], left: &mut usize) {
    let best_upgrade = |i: usize, cur: &Choice, left: usize| {
        upgrades(&items[i], cur, left)
            .into_iter()
            .map(|c| {
                (
                    c,
                    (cur.distortion - c.distortion) / (c.bytes - cur.bytes) as f64,
                )
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
    };
    let mut order: Vec<(usize, f64)> = (0..items.len())
        .filter_map(|i| best_upgrade(i, &current[i], *left).map(|(_, e)| (i, e)))
        .collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    for (i, _) in order {
        if let Some((c, _)) = best_upgrade(i, &current[i], *left) {
            *left -= c.bytes - current[i].bytes;
            current[i] = c;
        }
    }
}

/// The lower convex hull of an item's choices in (bytes, distortion), cheapest first, with
/// strictly falling distortion and falling gain per byte.
fn lower_hull(choices: &[Choice]) -> Vec<Choice> {
    let mut sorted = choices.to_vec();
    sorted.sort_by(|a, b| {
        a.bytes
            .cmp(&b.bytes)
            .then(a.distortion.total_cmp(&b.distortion))
    });
    let mut hull: Vec<Choice> = Vec::with_capacity(sorted.len());
    for c in sorted {
        if hull
            .last()
            .is_some_and(|last| c.distortion >= last.distortion)
        {
            continue; // costs at least as much and is no better
        }
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            let slope_ab = (a.distortion - b.distortion) / (b.bytes - a.bytes) as f64;
            let slope_bc = (b.distortion - c.distortion) / (c.bytes - b.bytes) as f64;
            if slope_bc >= slope_ab {
                hull.pop(); // b lies on or above the segment a-c
            } else {
                break;
            }
        }
        hull.push(c);
    }
    hull
}
