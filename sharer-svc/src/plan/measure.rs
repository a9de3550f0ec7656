//! The distortions the measured plans allocate by, from the sharer's own rows of this request:
//! each token's squared dequantization error (kvwire's per-block int4/int8 rules, c2c::quant)
//! in every layer, weighted by the token's importance.
//!
//! Importance is the selection's own score when it has one (the attention the receiver's
//! question puts on the token, or its K/V norm), else the token's V norm summed over layers,
//! scaled to mean 1 over the candidates. A layer's distortion is the weighted sum over its
//! tokens: the absolute squared error, i.e. the relative error times the layer's row energy, so
//! a layer whose rows are larger (which moves attention logits and outputs more for the same
//! relative error) counts more. Dropping a token costs its whole rows (`||k||^2 + ||v||^2`).

use c2c::quant::{TokenDistortion, token_distortions};
use kvwire::HostLayer;

use crate::error::SharerError;

/// What the measured plans allocate by.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Per candidate token: its weighted distortion summed over layers.
    pub tokens: Vec<TokenDistortion>,
    /// Per layer: its weighted distortion summed over the tokens, `(int4, int8)`.
    pub layers: Vec<(f64, f64)>,
}

/// Importance of each of `positions`: `scores[position]`, scaled to mean 1 (uniform when the
/// scores are missing, negative, non-finite or all zero).
pub fn importance_weights(scores: &[f32], positions: &[u32]) -> Vec<f64> {
    let raw: Option<Vec<f64>> = positions
        .iter()
        .map(|&p| {
            scores
                .get(p as usize)
                .map(|&s| f64::from(s))
                .filter(|s| s.is_finite() && *s >= 0.0)
        })
        .collect();
    let total: f64 = raw.as_ref().map_or(0.0, |r| r.iter().sum());
    match raw {
        Some(r) if total > 0.0 => {
            let mean = total / r.len() as f64;
            r.into_iter().map(|s| s / mean).collect()
        }
        _ => vec![1.0; positions.len()],
    }
}

/// Measures `layers` (each `[1, heads, n, head_dim]` over the same n tokens) with one weight
/// per token.
pub fn measure(
    layers: &[HostLayer],
    heads: usize,
    head_dim: usize,
    weights: &[f64],
) -> Result<Measured, SharerError> {
    let n = weights.len();
    let zero = TokenDistortion {
        drop: 0.0,
        int4: 0.0,
        int8: 0.0,
        fp16: 0.0,
    };
    let mut tokens = vec![zero; n];
    let mut per_layer = Vec::with_capacity(layers.len());
    for l in layers {
        let d = token_distortions(&l.k, &l.v, heads, n, head_dim)
            .map_err(|e| SharerError::Worker(format!("measuring distortions: {e}")))?;
        let (mut int4, mut int8) = (0.0, 0.0);
        for ((acc, t), &w) in tokens.iter_mut().zip(&d).zip(weights) {
            acc.drop += w * t.drop;
            acc.int4 += w * t.int4;
            acc.int8 += w * t.int8;
            acc.fp16 += w * t.fp16;
            int4 += w * t.int4;
            int8 += w * t.int8;
        }
        per_layer.push((int4, int8));
    }
    Ok(Measured {
        tokens,
        layers: per_layer,
    })
}
