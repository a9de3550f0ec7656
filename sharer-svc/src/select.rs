//! Token selection and the byte cap, as plain functions: which prompt positions to send, and
//! how many of them fit a byte budget (sizes by kvwire's own formula: `plan::RoundCost`).

pub use c2c::select::{PolicySpec, ScoreKind};

use c2c::select::{KeepAmount, preferred};

/// Which positions a transfer keeps: a policy's order of preference (c2c's selection
/// policies), cut at a keep fraction, then at the byte cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Selection {
    /// The order of preference.
    pub policy: PolicySpec,
    /// Fraction of the candidates kept, in (0, 1].
    pub keep_fraction: f64,
}

impl Selection {
    /// Every candidate.
    pub const ALL: Self = Self {
        policy: PolicySpec::Front,
        keep_fraction: 1.0,
    };

    /// The score a scored policy ranks by.
    pub fn score_kind(&self) -> Option<ScoreKind> {
        match self.policy {
            PolicySpec::Scored(kind) => Some(kind),
            _ => None,
        }
    }
}

/// The kept share of positions `0..n`, in the policy's order of preference (not sorted):
/// `ceil(keep_fraction * n)` of them. `scores` holds one value per position for a scored
/// policy (ignored otherwise).
pub fn preferred_positions(
    selection: Selection,
    n: usize,
    scores: &[f32],
) -> Result<Vec<u32>, c2c::C2cError> {
    let candidates: Vec<usize> = (0..n).collect();
    let policy = selection.policy.with_scores(scores);
    let kept = preferred(
        policy,
        &candidates,
        KeepAmount::Fraction(selection.keep_fraction),
    )?;
    Ok(kept.into_iter().map(|p| p as u32).collect())
}

/// The longest prefix of `preferred` (positions in order of preference) whose transfer fits
/// `cap`, sorted ascending; every position when `cap` is 0. `None` when not even one fits.
/// The result always fits: only prefixes measured to fit are kept.
pub fn fit_to_cap(
    preferred: &[u32],
    cap: u64,
    estimate: impl Fn(&[u32]) -> u64,
) -> Option<Vec<u32>> {
    let sorted_prefix = |k: usize| {
        let mut p = preferred[..k].to_vec();
        p.sort_unstable();
        p
    };
    let all = sorted_prefix(preferred.len());
    if cap == 0 || estimate(&all) <= cap {
        return Some(all);
    }
    // Largest k in 1..len whose estimate fits (the estimate grows with k, except that a
    // prefix which happens to be contiguous needs no index bytes).
    let (mut lo, mut hi) = (0usize, preferred.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if estimate(&sorted_prefix(mid)) <= cap {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    (lo > 0).then(|| sorted_prefix(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(policy: PolicySpec, fraction: f64, n: usize, scores: &[f32]) -> Vec<u32> {
        let selection = Selection {
            policy,
            keep_fraction: fraction,
        };
        let mut p = preferred_positions(selection, n, scores).unwrap();
        p.sort_unstable();
        p
    }

    #[test]
    fn each_policy_keeps_what_it_claims() {
        assert_eq!(keep(PolicySpec::Front, 1.0, 4, &[]), vec![0, 1, 2, 3]);
        assert_eq!(keep(PolicySpec::Front, 0.5, 5, &[]), vec![0, 1, 2]);
        assert_eq!(keep(PolicySpec::Back, 0.25, 8, &[]), vec![6, 7]);
        assert_eq!(keep(PolicySpec::Back, 0.01, 8, &[]), vec![7]);
        assert!(keep(PolicySpec::Front, 0.5, 0, &[]).is_empty());
        // Scored: the highest scores, whatever their place.
        let scores = [0.1, 9.0, 0.2, 7.0, 0.3, 8.0];
        for kind in [
            ScoreKind::Vnorm,
            ScoreKind::Knorm,
            ScoreKind::QueryAttention,
        ] {
            assert_eq!(
                keep(PolicySpec::Scored(kind), 0.5, 6, &scores),
                vec![1, 3, 5]
            );
        }
        // Random: seeded, the right count, different seeds differ.
        let a = keep(PolicySpec::Random { seed: 1 }, 0.5, 40, &[]);
        assert_eq!(a, keep(PolicySpec::Random { seed: 1 }, 0.5, 40, &[]));
        assert_eq!(a.len(), 20);
        assert_ne!(a, keep(PolicySpec::Random { seed: 2 }, 0.5, 40, &[]));
        // A scored policy without a score per position is an error, not a guess.
        let selection = Selection {
            policy: PolicySpec::Scored(ScoreKind::Vnorm),
            keep_fraction: 1.0,
        };
        assert!(preferred_positions(selection, 6, &scores[..3]).is_err());
    }

    #[test]
    fn cap_keeps_the_longest_preferred_prefix_that_fits() {
        let est = |p: &[u32]| 100 + 10 * p.len() as u64;
        let order: Vec<u32> = vec![9, 2, 5, 0, 7, 1, 3, 4, 6, 8];
        assert_eq!(fit_to_cap(&order, 0, est).unwrap().len(), 10);
        assert_eq!(fit_to_cap(&order, 145, est).unwrap(), vec![0, 2, 5, 9]);
        assert_eq!(fit_to_cap(&order, 125, est).unwrap(), vec![2, 9]);
        assert_eq!(fit_to_cap(&order, 105, est), None);
    }
}
