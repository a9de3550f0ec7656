//! Token selection: per-token scores over plain `[H, T, D]` slices and the policies that turn a
//! keep fraction or count into a sorted list of kept token positions.
//!
//! Sharer-side scores: `vnorm`, `knorm` (norm of the sharer's own V or K rows). Receiver-side
//! scores: `proj_vnorm` (norm of the projected V, P of the V branch) and `delta` (norm of what
//! fusion changes, ||fused - own|| over K and V). Policies: `front` keeps the first tokens,
//! `back` the last ones, `random` a seeded uniform subset, and the scored ones the highest scores.

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{C2cError, Result};

/// Which score a scored policy ranks by, and where it can be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    /// Norm of the sharer's V row (sharer side).
    Vnorm,
    /// Norm of the sharer's K row (sharer side).
    Knorm,
    /// Norm of the projected V row (receiver side: needs the projector).
    ProjVnorm,
    /// Norm of fused minus own K/V (receiver side: needs the projector and the receiver cache).
    Delta,
    /// Attention mass the query (the receiver's question, run by the sharer after its prompt)
    /// puts on the token, over layers, heads and query tokens (sharer side, SnapKV-style).
    QueryAttention,
}

impl ScoreKind {
    /// True when the score needs the receiver (projector and receiver cache).
    pub fn on_receiver(self) -> bool {
        matches!(self, Self::ProjVnorm | Self::Delta)
    }
}

/// How many tokens to keep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepAmount {
    /// A fraction p in [0, 1] of the candidates, rounded up.
    Fraction(f64),
    /// An exact count, capped at the number of candidates.
    Count(usize),
}

impl KeepAmount {
    /// The number kept out of `candidates`.
    pub fn resolve(self, candidates: usize) -> Result<usize> {
        match self {
            Self::Count(n) => Ok(n.min(candidates)),
            Self::Fraction(p) if (0.0..=1.0).contains(&p) => {
                Ok(((p * candidates as f64).ceil() as usize).min(candidates))
            }
            Self::Fraction(p) => Err(C2cError::Range {
                what: "keep fraction",
                value: p,
                range: "[0, 1]",
            }),
        }
    }
}

/// A policy as a request names it, before any score is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySpec {
    /// The first candidates.
    Front,
    /// The last candidates.
    Back,
    /// A seeded uniform random subset.
    Random {
        /// Seed of the ChaCha8 stream.
        seed: u64,
    },
    /// The highest scores of this kind.
    Scored(ScoreKind),
}

impl PolicySpec {
    /// The policy; a scored one ranks by `scores` (one per position; the unscored policies
    /// ignore them, and a scored one given too few finds out in [`ranking`]).
    pub fn with_scores(self, scores: &[f32]) -> Policy<'_> {
        match self {
            Self::Front => Policy::Front,
            Self::Back => Policy::Back,
            Self::Random { seed } => Policy::Random { seed },
            Self::Scored(_) => Policy::Scored(scores),
        }
    }
}

/// A selection policy over candidate positions.
#[derive(Debug, Clone, Copy)]
pub enum Policy<'a> {
    /// Keep the first candidates (length pruning from the back).
    Front,
    /// Keep the last candidates (length pruning from the front).
    Back,
    /// A seeded uniform random subset.
    Random {
        /// Seed of the ChaCha8 stream.
        seed: u64,
    },
    /// The highest `scores[position]`; ties go to the earlier position, NaN ranks last.
    Scored(&'a [f32]),
}

/// Kept positions, sorted ascending, chosen among `candidates` (sorted ascending, e.g. the
/// prompt positions except the last, minus those already held): [`preferred`], sorted.
pub fn select(policy: Policy, candidates: &[usize], amount: KeepAmount) -> Result<Vec<usize>> {
    let mut kept = preferred(policy, candidates, amount)?;
    kept.sort_unstable();
    Ok(kept)
}

/// The positions the policy keeps, most preferred first: the first `amount` of [`ranking`].
pub fn preferred(policy: Policy, candidates: &[usize], amount: KeepAmount) -> Result<Vec<usize>> {
    let k = amount.resolve(candidates.len())?;
    let mut kept = ranking(policy, candidates)?;
    kept.truncate(k);
    Ok(kept)
}

/// Every candidate in the policy's order of preference: the first `k` of it are the `k` the
/// policy keeps. Front: ascending; back: descending; random: a seeded ChaCha8 permutation (its
/// first `k` are the seeded uniform `k`-subset); scored: highest score first, ties to the
/// earlier position, NaN last. A byte cap keeps the longest prefix of this order that fits.
pub fn ranking(policy: Policy, candidates: &[usize]) -> Result<Vec<usize>> {
    Ok(match policy {
        Policy::Front => candidates.to_vec(),
        Policy::Back => candidates.iter().rev().copied().collect(),
        Policy::Random { seed } => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            sample(&mut rng, candidates.len(), candidates.len())
                .into_iter()
                .map(|i| candidates[i])
                .collect()
        }
        Policy::Scored(scores) => {
            if let Some(&bad) = candidates.iter().find(|&&p| p >= scores.len()) {
                return Err(C2cError::Mismatch {
                    what: "candidate position beyond the score vector",
                    left: bad,
                    right: scores.len(),
                });
            }
            let mut order = candidates.to_vec();
            order.sort_by(|&a, &b| {
                rank_key(scores[b])
                    .total_cmp(&rank_key(scores[a]))
                    .then(a.cmp(&b))
            });
            order
        }
    })
}

fn rank_key(x: f32) -> f32 {
    if x.is_nan() { f32::NEG_INFINITY } else { x }
}

/// Per-token L2 norm over heads and D of a `[H, T, D]` slice (batch 1).
pub fn token_norms(x: &[f32], h: usize, t: usize, d: usize) -> Result<Vec<f32>> {
    check_len(x.len(), h, t, d, "token_norms input")?;
    let mut out = vec![0f64; t];
    for hi in 0..h {
        for (ti, acc) in out.iter_mut().enumerate() {
            let row = &x[(hi * t + ti) * d..(hi * t + ti + 1) * d];
            *acc += row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
        }
    }
    Ok(out.into_iter().map(|s| s.sqrt() as f32).collect())
}

/// `delta` score: per-token ||fused - own|| over K and V together, all `[H, T, D]`.
pub fn delta_scores(
    fused_k: &[f32],
    own_k: &[f32],
    fused_v: &[f32],
    own_v: &[f32],
    (h, t, d): (usize, usize, usize),
) -> Result<Vec<f32>> {
    for (len, what) in [
        (fused_k.len(), "delta fused K"),
        (own_k.len(), "delta own K"),
        (fused_v.len(), "delta fused V"),
        (own_v.len(), "delta own V"),
    ] {
        check_len(len, h, t, d, what)?;
    }
    let dk: Vec<f32> = fused_k.iter().zip(own_k).map(|(a, b)| a - b).collect();
    let dv: Vec<f32> = fused_v.iter().zip(own_v).map(|(a, b)| a - b).collect();
    let nk = token_norms(&dk, h, t, d)?;
    let nv = token_norms(&dv, h, t, d)?;
    Ok(nk
        .iter()
        .zip(&nv)
        .map(|(a, b)| (a * a + b * b).sqrt())
        .collect())
}

fn check_len(len: usize, h: usize, t: usize, d: usize, what: &'static str) -> Result<()> {
    if len != h * t * d {
        return Err(C2cError::Mismatch {
            what,
            left: len,
            right: h * t * d,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_pick_the_right_positions() {
        let cands: Vec<usize> = (0..10).collect();
        assert_eq!(
            select(Policy::Front, &cands, KeepAmount::Fraction(0.25)).expect("f"),
            vec![0, 1, 2]
        );
        assert_eq!(
            select(Policy::Back, &cands, KeepAmount::Count(2)).expect("b"),
            vec![8, 9]
        );
        let scores = [0.1, 5.0, f32::NAN, 3.0, 3.0, 0.0, 9.0, 1.0, 2.0, 0.5];
        let kept = select(Policy::Scored(&scores), &cands, KeepAmount::Count(4)).expect("s");
        assert_eq!(kept, vec![1, 3, 4, 6]);
        // Ties go to the earlier position.
        let kept = select(Policy::Scored(&scores), &cands, KeepAmount::Count(3)).expect("s");
        assert_eq!(kept, vec![1, 3, 6]);
        assert!(select(Policy::Front, &cands, KeepAmount::Fraction(1.5)).is_err());
        assert!(select(Policy::Scored(&scores[..5]), &cands, KeepAmount::Count(1)).is_err());
    }

    #[test]
    fn random_is_seeded_sorted_and_within_candidates() {
        let cands: Vec<usize> = (0..50).map(|i| i * 2).collect();
        for seed in 0..20 {
            let a = select(Policy::Random { seed }, &cands, KeepAmount::Fraction(0.3)).expect("a");
            let b = select(Policy::Random { seed }, &cands, KeepAmount::Fraction(0.3)).expect("b");
            assert_eq!(a, b);
            assert_eq!(a.len(), 15);
            assert!(a.windows(2).all(|w| w[0] < w[1]));
            assert!(a.iter().all(|p| cands.contains(p)));
        }
        let a = select(Policy::Random { seed: 1 }, &cands, KeepAmount::Count(10)).expect("a");
        let b = select(Policy::Random { seed: 2 }, &cands, KeepAmount::Count(10)).expect("b");
        assert_ne!(a, b);
    }

    #[test]
    fn norms_and_delta_by_hand() {
        // H=2, T=2, D=2: token 0 rows [3,4] and [0,0] -> 5; token 1 rows [1,0] and [0,1] -> sqrt 2.
        let x = [3.0, 4.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let n = token_norms(&x, 2, 2, 2).expect("norms");
        assert!((n[0] - 5.0).abs() < 1e-6 && (n[1] - 2f32.sqrt()).abs() < 1e-6);
        let zero = [0.0; 8];
        let d = delta_scores(&x, &zero, &x, &zero, (2, 2, 2)).expect("delta");
        assert!((d[0] - 50f32.sqrt()).abs() < 1e-5);
        assert!(token_norms(&x, 2, 2, 3).is_err());
    }
}
