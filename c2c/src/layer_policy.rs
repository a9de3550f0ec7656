//! Per-layer transfer policies, and the glue from measured distortions and wire costs to the
//! rate allocator's items: rate-distortion per token, mixed precision by layer (last N layers at
//! fp16), KVComm-like layer subsets, Q-KVComm-like int4/int8 per layer under a cap.

use serde::{Deserialize, Serialize};

use crate::error::{C2cError, Result};
use crate::quant::TokenDistortion;
use crate::rate::{Allocation, Choice, Precision, TokenCost, allocate};

/// Allocator items for tokens: one item per token, with a choice per allowed precision.
pub fn token_items(
    distortions: &[TokenDistortion],
    cost: &TokenCost,
    allowed: &[Precision],
) -> Vec<Vec<Choice>> {
    distortions
        .iter()
        .map(|d| {
            allowed
                .iter()
                .map(|&p| Choice {
                    precision: p,
                    bytes: cost.bytes(p),
                    distortion: match p {
                        Precision::Drop => d.drop,
                        Precision::Int4 => d.int4,
                        Precision::Int8 => d.int8,
                        Precision::Fp16 => d.fp16,
                    },
                })
                .collect()
        })
        .collect()
}

/// Mixed precision by layer: the last `last_n` of `layers` at fp16, the others at `base`.
pub fn mixed_precision_layers(layers: usize, last_n: usize, base: Precision) -> Vec<Precision> {
    (0..layers)
        .map(|l| {
            if l + last_n >= layers {
                Precision::Fp16
            } else {
                base
            }
        })
        .collect()
}

/// KVComm-like layer subset: the `count` layers with the highest `scores` (e.g. attention
/// importance measured by the caller), sorted ascending; ties go to the deeper layer.
pub fn kvcomm_layers(scores: &[f32], count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let key = |x: f32| if x.is_nan() { f32::NEG_INFINITY } else { x };
    order.sort_by(|&a, &b| key(scores[b]).total_cmp(&key(scores[a])).then(b.cmp(&a)));
    order.truncate(count);
    order.sort_unstable();
    order
}

/// One layer for the Q-KVComm-like allocation: its bytes at int4 and int8 and the distortion
/// (error times the caller's sensitivity weight) of each.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LayerOption {
    /// Bytes of the whole layer at int4.
    pub int4_bytes: usize,
    /// Bytes at int8.
    pub int8_bytes: usize,
    /// Weighted distortion at int4.
    pub int4_distortion: f64,
    /// Weighted distortion at int8.
    pub int8_distortion: f64,
    /// Weighted distortion when the layer is not sent; `None` forbids dropping it.
    pub drop_distortion: Option<f64>,
}

/// Q-KVComm-like: int4 or int8 (or drop, where allowed) per layer, total bytes <= `cap`.
pub fn qkvcomm_layers(layers: &[LayerOption], cap: usize) -> Result<Allocation> {
    let items: Vec<Vec<Choice>> = layers
        .iter()
        .map(|l| {
            let mut c = vec![
                Choice {
                    precision: Precision::Int4,
                    bytes: l.int4_bytes,
                    distortion: l.int4_distortion,
                },
                Choice {
                    precision: Precision::Int8,
                    bytes: l.int8_bytes,
                    distortion: l.int8_distortion,
                },
            ];
            if let Some(d) = l.drop_distortion {
                c.push(Choice {
                    precision: Precision::Drop,
                    bytes: 0,
                    distortion: d,
                });
            }
            c
        })
        .collect();
    allocate(&items, cap)
}

/// Checks the per-layer precision list has one entry per layer.
pub fn check_layer_count(precisions: &[Precision], layers: usize) -> Result<()> {
    if precisions.len() != layers {
        return Err(C2cError::Mismatch {
            what: "per-layer precisions vs layers",
            left: precisions.len(),
            right: layers,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_precision_and_kvcomm() {
        let p = mixed_precision_layers(5, 2, Precision::Int4);
        assert_eq!(p[..3], [Precision::Int4; 3]);
        assert_eq!(p[3..], [Precision::Fp16; 2]);
        assert_eq!(
            mixed_precision_layers(2, 5, Precision::Int8),
            vec![Precision::Fp16; 2]
        );
        assert_eq!(
            kvcomm_layers(&[0.1, 0.9, 0.5, 0.9, f32::NAN], 3),
            vec![1, 2, 3]
        );
        check_layer_count(&p, 5).expect("count");
        assert!(check_layer_count(&p, 4).is_err());
    }

    #[test]
    fn qkvcomm_upgrades_the_sensitive_layer_first() {
        let layer = |s: f64| LayerOption {
            int4_bytes: 100,
            int8_bytes: 200,
            int4_distortion: 10.0 * s,
            int8_distortion: 1.0 * s,
            drop_distortion: None,
        };
        let layers = [layer(1.0), layer(5.0), layer(2.0)];
        let a = qkvcomm_layers(&layers, 400).expect("alloc");
        assert_eq!(
            a.choices,
            vec![Precision::Int4, Precision::Int8, Precision::Int4]
        );
        assert_eq!(a.bytes, 400);
        assert!(qkvcomm_layers(&layers, 299).is_err());
    }
}
