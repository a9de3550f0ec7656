//! Quantization error of one token row under the KVWire rules (kvwire/FORMAT.md): symmetric,
//! qmax 127 (int8) or 7 (int4), scale = max(absmax/qmax, 1e-6) in f32, q = clip(round half to
//! even(x/scale)), dequantized with the fp16-rounded scale; per_block = one scale per (b, h, t)
//! over D. The rate allocator uses these errors as distortions; they are computed here, on plain
//! slices, so the allocator does not depend on the wire crate.

use half::f16;

use crate::error::{C2cError, Result};

/// Squared error of per-block quantize-dequantize of `row` (one head's D values) with `qmax`.
pub fn block_sq_error(row: &[f32], qmax: f32) -> f64 {
    let absmax = row.iter().fold(0f32, |m, &x| m.max(x.abs()));
    let scale = (absmax / qmax).max(1e-6);
    let deq_scale = f16::from_f32(scale).to_f32();
    row.iter()
        .map(|&x| {
            let q = (x / scale).round_ties_even().clamp(-qmax, qmax);
            let e = (x - q * deq_scale) as f64;
            e * e
        })
        .sum()
}

/// Squared error of rounding `row` to fp16.
pub fn fp16_sq_error(row: &[f32]) -> f64 {
    row.iter()
        .map(|&x| {
            let e = (x - f16::from_f32(x).to_f32()) as f64;
            e * e
        })
        .sum()
}

/// Distortion (squared error summed over heads, D, K and V) of each way to send one token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenDistortion {
    /// Not sent: the receiver keeps its own cache, so the sharer row is lost (||k||^2 + ||v||^2).
    pub drop: f64,
    /// int4 per_block.
    pub int4: f64,
    /// int8 per_block.
    pub int8: f64,
    /// fp16.
    pub fp16: f64,
}

/// Per-token distortions of a layer's sharer K and V, each `[H, T, D]` (batch 1).
pub fn token_distortions(
    k: &[f32],
    v: &[f32],
    h: usize,
    t: usize,
    d: usize,
) -> Result<Vec<TokenDistortion>> {
    for (len, what) in [(k.len(), "K [H,T,D]"), (v.len(), "V [H,T,D]")] {
        if len != h * t * d {
            return Err(C2cError::Mismatch {
                what,
                left: len,
                right: h * t * d,
            });
        }
    }
    let mut out = vec![
        TokenDistortion {
            drop: 0.0,
            int4: 0.0,
            int8: 0.0,
            fp16: 0.0
        };
        t
    ];
    for x in [k, v] {
        for hi in 0..h {
            for (ti, acc) in out.iter_mut().enumerate() {
                let row = &x[(hi * t + ti) * d..(hi * t + ti + 1) * d];
                acc.drop += row.iter().map(|&a| (a as f64) * (a as f64)).sum::<f64>();
                acc.int4 += block_sq_error(row, 7.0);
                acc.int8 += block_sq_error(row, 127.0);
                acc.fp16 += fp16_sq_error(row);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_row_matches_the_wire_rules() {
        // Golden vector row [1,-2,3,-4] (kvwire/FORMAT.md): int8 scale 4/127, q = [32,-64,95,-127].
        let row = [1.0f32, -2.0, 3.0, -4.0];
        let scale = 4.0f32 / 127.0;
        let ds = f16::from_f32(scale).to_f32();
        let expect: f64 = [32.0f32, -64.0, 95.0, -127.0]
            .iter()
            .zip(row)
            .map(|(q, x)| ((x - q * ds) as f64).powi(2))
            .sum();
        assert_eq!(block_sq_error(&row, 127.0), expect);
        // int4: scale 4/7; in f32 x/scale = [1.7499999,-3.4999998,5.25,-6.9999995] -> q = [2,-3,5,-7]
        // (the reference's golden int4 body packs 0xd2 0x95 for this row).
        let s4 = f16::from_f32(4.0f32 / 7.0).to_f32();
        let expect4: f64 = [2.0f32, -3.0, 5.0, -7.0]
            .iter()
            .zip(row)
            .map(|(q, x)| ((x - q * s4) as f64).powi(2))
            .sum();
        assert!((block_sq_error(&row, 7.0) - expect4).abs() < 1e-12);
        assert_eq!(block_sq_error(&[0.0; 4], 7.0), 0.0);
    }

    #[test]
    fn distortions_are_ordered_on_random_rows() {
        let mut s = 1u64;
        let data: Vec<f32> = (0..2 * 5 * 8)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        let d = token_distortions(&data, &data, 2, 5, 8).expect("dist");
        for t in d {
            assert!(
                t.fp16 <= t.int8 && t.int8 <= t.int4 && t.int4 <= t.drop,
                "{t:?}"
            );
        }
    }
}
