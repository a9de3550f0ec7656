//! Summary statistics for the harness, the coordinator and the load generator: mean,
//! interpolated percentiles, accuracy with n, the Wilson score 95% interval of an accuracy, and
//! seeded percentile-bootstrap 95% intervals for one method's accuracy and for the paired
//! difference of two methods on the same items. Plain functions over slices.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Arithmetic mean; `None` for no values.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The `q`-quantile (0..=1) with linear interpolation between order statistics (numpy's
/// default); `None` for no values. NaNs sort last.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Wilson score 95% interval for `successes` out of `n` (stays inside [0, 1] and is sane at
/// small n); `None` for n = 0.
pub fn wilson_95(successes: usize, n: usize) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    const Z: f64 = 1.959_963_984_540_054;
    let n_f = n as f64;
    let p = successes as f64 / n_f;
    let z2 = Z * Z;
    let denom = 1.0 + z2 / n_f;
    let centre = (p + z2 / (2.0 * n_f)) / denom;
    let half = Z * ((p * (1.0 - p) / n_f) + z2 / (4.0 * n_f * n_f)).sqrt() / denom;
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// Default number of bootstrap resamples.
pub const DEFAULT_RESAMPLES: usize = 2000;

/// Accuracy over n scored items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Accuracy {
    /// Items answered correctly.
    pub correct: usize,
    /// Items scored.
    pub n: usize,
    /// `correct / n` (0 when n = 0).
    pub value: f64,
}

/// Accuracy of per-item correctness flags.
pub fn accuracy(correct: &[bool]) -> Accuracy {
    let c = correct.iter().filter(|&&x| x).count();
    let n = correct.len();
    Accuracy {
        correct: c,
        n,
        value: if n == 0 { 0.0 } else { c as f64 / n as f64 },
    }
}

/// A two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
    /// Coverage (0.95).
    pub level: f64,
}

/// The bootstrap interval: nearest-rank order statistics of the sorted resample means (not
/// [`percentile`]'s interpolation; the recorded intervals were computed this way).
fn percentile_interval(mut stats: Vec<f64>, level: f64) -> Interval {
    stats.sort_by(f64::total_cmp);
    let alpha = (1.0 - level) / 2.0;
    let at = |q: f64| {
        let idx = (q * (stats.len() - 1) as f64).round() as usize;
        stats[idx.min(stats.len() - 1)]
    };
    Interval {
        low: at(alpha),
        high: at(1.0 - alpha),
        level,
    }
}

/// Mean of `values` resampled with replacement `resamples` times (seeded ChaCha8).
fn bootstrap_means(values: &[f64], resamples: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = values.len();
    (0..resamples)
        .map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect()
}

/// 95% percentile-bootstrap interval of the accuracy; `None` for no items or no resamples.
pub fn bootstrap_accuracy_ci(correct: &[bool], resamples: usize, seed: u64) -> Option<Interval> {
    if correct.is_empty() || resamples == 0 {
        return None;
    }
    let values: Vec<f64> = correct.iter().map(|&c| f64::from(u8::from(c))).collect();
    Some(percentile_interval(
        bootstrap_means(&values, resamples, seed),
        0.95,
    ))
}

/// Paired difference of accuracies `a - b` on the same items, with its 95% percentile-bootstrap
/// interval (items resampled jointly). `None` if the lengths differ or are zero.
pub fn paired_difference_ci(
    a: &[bool],
    b: &[bool],
    resamples: usize,
    seed: u64,
) -> Option<(f64, Interval)> {
    let as_f64 = |v: &[bool]| -> Vec<f64> { v.iter().map(|&x| f64::from(u8::from(x))).collect() };
    paired_mean_difference_ci(&as_f64(a), &as_f64(b), resamples, seed)
}

/// Paired difference of means `a - b` of a per-item quantity (a latency, say) on the same items,
/// with its 95% percentile-bootstrap interval (items resampled jointly). `None` if the lengths
/// differ or are zero.
pub fn paired_mean_difference_ci(
    a: &[f64],
    b: &[f64],
    resamples: usize,
    seed: u64,
) -> Option<(f64, Interval)> {
    if a.len() != b.len() || a.is_empty() || resamples == 0 {
        return None;
    }
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
    Some((
        mean,
        percentile_interval(bootstrap_means(&diffs, resamples, seed), 0.95),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert_eq!(percentile(&v, 0.5), Some(3.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 1.0), Some(10.0));
        // numpy.percentile([1,2,3,4,10], 95) == 8.8
        assert!((percentile(&v, 0.95).unwrap() - 8.8).abs() < 1e-12);
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
    }

    #[test]
    fn mean_of_values() {
        assert_eq!(mean(&[1.0, 2.0, 6.0]), Some(3.0));
        assert_eq!(mean(&[]), None);
    }

    #[test]
    fn wilson_matches_reference_values() {
        // The Wilson formula evaluated independently in Python: (0.180748, 0.454300).
        let (lo, hi) = wilson_95(12, 40).unwrap();
        assert!(
            (lo - 0.180748).abs() < 1e-6 && (hi - 0.454300).abs() < 1e-6,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson_95(0, 10).unwrap();
        assert_eq!(lo, 0.0);
        assert!(hi > 0.2 && hi < 0.35);
        assert_eq!(wilson_95(0, 0), None);
    }

    #[test]
    fn accuracy_and_interval_cover_the_estimate() {
        let flags: Vec<bool> = (0..400).map(|i| i % 4 != 0).collect();
        let acc = accuracy(&flags);
        assert_eq!((acc.correct, acc.n, acc.value), (300, 400, 0.75));
        let ci = bootstrap_accuracy_ci(&flags, DEFAULT_RESAMPLES, 0).unwrap();
        assert!(ci.low < 0.75 && 0.75 < ci.high, "{ci:?}");
        // Normal approximation half-width 1.96 * sqrt(.75 * .25 / 400) = 0.042.
        assert!((ci.high - ci.low - 0.085).abs() < 0.015, "{ci:?}");
        assert_eq!(
            ci,
            bootstrap_accuracy_ci(&flags, DEFAULT_RESAMPLES, 0).unwrap(),
            "seeded"
        );
        assert!(bootstrap_accuracy_ci(&[], 10, 0).is_none());
        assert_eq!(accuracy(&[]).value, 0.0);
    }

    #[test]
    fn paired_difference_is_tighter_than_unpaired_when_methods_agree() {
        // b is right on the same items as a plus 20 more: difference exactly -0.05.
        let a: Vec<bool> = (0..400).map(|i| i % 2 == 0).collect();
        let b: Vec<bool> = (0..400).map(|i| i % 2 == 0 || i % 20 == 1).collect();
        let (diff, ci) = paired_difference_ci(&a, &b, DEFAULT_RESAMPLES, 1).unwrap();
        assert!((diff + 0.05).abs() < 1e-12);
        assert!(ci.high < 0.0, "b is significantly better: {ci:?}");
        assert!(ci.high - ci.low < 0.06, "{ci:?}");
        assert!(paired_difference_ci(&a, &b[1..], 10, 0).is_none());
    }
}
