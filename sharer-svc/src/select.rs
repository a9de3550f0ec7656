//! Token selection and the byte cap, as plain functions: which prompt positions to send, and
//! how many of them fit a byte budget by kvwire's own size formula.

use kvwire::v2::{FrameOptions, SessionHeader, estimate_frame_bytes};

/// Which positions a transfer keeps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Selection {
    /// Every candidate position.
    All,
    /// The first fraction.
    Front(f32),
    /// The last fraction.
    Back(f32),
}

/// Positions `0..n` kept by `selection`, ascending. Front/back keep `ceil(fraction * n)`
/// positions, at least one when `n > 0`.
pub fn select_positions(selection: Selection, n: usize) -> Vec<u32> {
    let keep = |f: f32| ((f64::from(f) * n as f64).ceil() as usize).clamp(n.min(1), n);
    match selection {
        Selection::All => (0..n as u32).collect(),
        Selection::Front(f) => (0..keep(f) as u32).collect(),
        Selection::Back(f) => ((n - keep(f)) as u32..n as u32).collect(),
    }
}

/// Estimated bytes of a whole transfer: the session header plus one frame per layer of `t`
/// tokens (contiguous positions need no index bytes).
pub fn estimate_transfer_bytes(
    header: &SessionHeader,
    opts: &FrameOptions,
    layers: usize,
    heads: usize,
    head_dim: usize,
    positions: &[u32],
) -> u64 {
    let contiguous = positions.windows(2).all(|w| w[1] == w[0] + 1);
    let n_indices = if contiguous { 0 } else { positions.len() };
    let max_position = positions.last().copied().unwrap_or(0);
    let frame = estimate_frame_bytes(
        opts,
        [1, heads, positions.len(), head_dim],
        n_indices,
        max_position,
    );
    header.encoded_len() as u64 + layers as u64 * frame
}

/// Shrinks `positions` (dropping from the end for front/all, from the start for back) until
/// the estimated transfer fits `cap`. Returns `None` when not even one position fits.
pub fn fit_to_cap(
    positions: Vec<u32>,
    selection: Selection,
    cap: u64,
    estimate: impl Fn(&[u32]) -> u64,
) -> Option<Vec<u32>> {
    if cap == 0 || estimate(&positions) <= cap {
        return Some(positions);
    }
    fn slice(positions: &[u32], selection: Selection, k: usize) -> &[u32] {
        match selection {
            Selection::Back(_) => &positions[positions.len() - k..],
            _ => &positions[..k],
        }
    }
    // Largest k in 1..len whose estimate fits; the estimate grows with k.
    let (mut lo, mut hi) = (0usize, positions.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if estimate(slice(&positions, selection, mid)) <= cap {
            lo = mid
        } else {
            hi = mid - 1
        }
    }
    (lo > 0).then(|| slice(&positions, selection, lo).to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_back_all_pick_the_right_positions() {
        assert_eq!(select_positions(Selection::All, 4), vec![0, 1, 2, 3]);
        assert_eq!(select_positions(Selection::Front(0.5), 5), vec![0, 1, 2]);
        assert_eq!(select_positions(Selection::Back(0.25), 8), vec![6, 7]);
        assert_eq!(select_positions(Selection::Back(0.01), 8), vec![7]);
        assert!(select_positions(Selection::Front(0.5), 0).is_empty());
    }

    #[test]
    fn cap_keeps_the_largest_prefix_that_fits() {
        let est = |p: &[u32]| 100 + 10 * p.len() as u64;
        let all: Vec<u32> = (0..10).collect();
        assert_eq!(
            fit_to_cap(all.clone(), Selection::All, 0, est)
                .unwrap()
                .len(),
            10
        );
        assert_eq!(
            fit_to_cap(all.clone(), Selection::All, 145, est).unwrap(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            fit_to_cap(all.clone(), Selection::Back(1.0), 125, est).unwrap(),
            vec![8, 9]
        );
        assert_eq!(fit_to_cap(all, Selection::All, 105, est), None);
    }
}
