//! Slot distillation: a dense training signal for the context layout (docs/FUSER.md, "Slot
//! distillation").
//!
//! The answer's cross-entropy reaches the projectors only through the few answer tokens. The
//! receiver's own cache of the passage (what it would hold had it read the passage) says, for
//! every slot, what the slot should look like. For the passage text tokenized by both models,
//! slot `i` (sharer token `i`) is paired with the last receiver token `j` whose last byte sharer
//! token `i` covers ([`slot_pairs`]); its targets are that token's V, and its K moved from
//! position `j` to slot position `i` with the receiver's RoPE (un-rotate at `j`, rotate at
//! `i`). Slots no receiver token ends in have no target. The loss ([`distill_loss`]) is, per
//! linked receiver layer and for K and V apart, the mean squared error over the paired slots
//! divided by the targets' mean square (a relative error, so layers of any scale weigh alike),
//! averaged.

use c2c::rope::RopeSpec;
use candle_core::{DType, Tensor};
use model_runtime::{KvCache, LayerKv, Model};

use crate::error::{Ctx, FuserError, Result};

/// `(slot, receiver token)` pairs from a receiver-to-sharer token map (`map[j]` = the sharer
/// token paired with receiver token `j`): for each slot, the last receiver token mapped to it,
/// in slot order.
pub fn slot_pairs(map: &[usize]) -> Vec<(usize, usize)> {
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    for (j, &i) in map.iter().enumerate() {
        match pairs.last_mut() {
            Some(last) if last.0 == i => last.1 = j,
            _ => pairs.push((i, j)),
        }
    }
    pairs.sort_by_key(|&(i, _)| i);
    pairs.dedup_by_key(|p| p.0);
    pairs
}

/// The receiver's reading of a passage at the paired slots: per receiver layer, `[1, H, n, D]`
/// K (at the slot positions) and V, for the `n` paired slots in `slots`.
#[derive(Debug, Clone)]
pub struct SlotTargets {
    /// The paired slots, increasing.
    pub slots: Vec<usize>,
    /// Per receiver layer, the target K/V rows.
    pub layers: Vec<LayerKv>,
}

impl SlotTargets {
    /// Runs the receiver over `passage` (its own ids of the passage text, positions `0..R`) and
    /// keeps the rows of `pairs` (from [`slot_pairs`] over the same text), K moved to the
    /// slots' positions with `rope` (the receiver's).
    pub fn new(
        receiver: &Model,
        passage: &[u32],
        pairs: &[(usize, usize)],
        rope: &RopeSpec,
    ) -> Result<Self> {
        if pairs.is_empty() {
            return Err(FuserError::input("slot targets", "no paired slots"));
        }
        if let Some(&(_, j)) = pairs.iter().find(|&&(_, j)| j >= passage.len()) {
            return Err(FuserError::input(
                "slot targets",
                format!(
                    "receiver token {j} of a passage of {} tokens",
                    passage.len()
                ),
            ));
        }
        let mut cache = KvCache::new();
        receiver.forward_hidden(&receiver.ids_tensor(passage)?, 0, &mut cache)?;
        let slots: Vec<usize> = pairs.iter().map(|p| p.0).collect();
        let tokens: Vec<usize> = pairs.iter().map(|p| p.1).collect();
        let index: Vec<u32> = tokens.iter().map(|&j| j as u32).collect();
        let index = Tensor::new(index.as_slice(), receiver.device()).ctx("target index")?;
        let layers = cache
            .layers
            .iter()
            .map(|l| {
                let k = l.k.index_select(&index, 2).ctx("target K rows")?;
                let k = rope.rotate(&rope.unrotate(&k, &tokens)?, &slots)?;
                let v = l.v.index_select(&index, 2).ctx("target V rows")?;
                Ok(LayerKv {
                    k: k.to_dtype(DType::F32).ctx("target K")?.detach(),
                    v: v.to_dtype(DType::F32).ctx("target V")?.detach(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { slots, layers })
    }

    /// The **oracle slots**: `base` (the filler's slot cache) with every layer's paired slots
    /// replaced by the receiver's own reading, what a perfect distillation would write (the
    /// slots no receiver token ends in keep the filler). The slot layout's ceiling, against
    /// which a fuser's slots are measured.
    pub fn oracle_slots(&self, base: &KvCache) -> Result<KvCache> {
        if base.layers.len() != self.layers.len() {
            return Err(FuserError::input(
                "oracle slots",
                format!(
                    "{} target layers for a cache of {}",
                    self.layers.len(),
                    base.layers.len()
                ),
            ));
        }
        let Some(&last) = self.slots.last() else {
            return Err(FuserError::input("oracle slots", "no paired slots"));
        };
        if last >= base.seq_len() {
            return Err(FuserError::input(
                "oracle slots",
                format!("slot {last} of a cache of {} slots", base.seq_len()),
            ));
        }
        let put = |into: &Tensor, rows: &Tensor| -> Result<Tensor> {
            let rows = rows.to_dtype(into.dtype()).ctx("target dtype")?;
            Ok(c2c::fuse::put_rows(into, &rows, &self.slots)?)
        };
        let layers = base
            .layers
            .iter()
            .zip(&self.layers)
            .map(|(own, target)| {
                Ok(LayerKv {
                    k: put(&own.k, &target.k)?,
                    v: put(&own.v, &target.v)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache { layers })
    }

    /// The targets with independent Gaussian noise added to every K and V entry, scaled per
    /// layer and per K/V so that the expected [`distill_loss`] of the noisy rows against these
    /// targets is `relative` (noise variance `relative * mean(t^2)`): oracle slots degraded to a
    /// given distillation error, to ask how close a fuser must come.
    pub fn with_noise<R: rand::Rng>(&self, relative: f64, rng: &mut R) -> Result<Self> {
        if !(relative.is_finite() && relative >= 0.0) {
            return Err(FuserError::input(
                "oracle noise",
                format!("relative error {relative} (need a finite value >= 0)"),
            ));
        }
        let mut noisy = |t: &Tensor| -> Result<Tensor> {
            let power = f64::from(
                t.sqr()
                    .and_then(|s| s.mean_all())
                    .and_then(|s| s.to_scalar::<f32>())
                    .ctx("target power")?,
            );
            let std = (relative * power).sqrt();
            let values: Vec<f32> = (0..t.elem_count())
                .map(|_| (std * standard_normal(rng)) as f32)
                .collect();
            let noise = Tensor::from_vec(values, t.dims(), t.device()).ctx("noise")?;
            (t + noise).ctx("noisy target")
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerKv {
                    k: noisy(&l.k)?,
                    v: noisy(&l.v)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots: self.slots.clone(),
            layers,
        })
    }
}

/// One draw of N(0, 1) (Box-Muller).
fn standard_normal<R: rand::Rng>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The relative squared error of the fused slot cache against `targets`, averaged over
/// `layers` (receiver layer indices, the fuser's linked ones) and over K and V.
pub fn distill_loss(fused: &KvCache, targets: &SlotTargets, layers: &[usize]) -> Result<Tensor> {
    if layers.is_empty() {
        return Err(FuserError::input("slot distillation", "no linked layers"));
    }
    let last = targets.slots.last().copied().unwrap_or(0);
    if last >= fused.seq_len() {
        return Err(FuserError::input(
            "slot distillation",
            format!("slot {last} of a cache of {} slots", fused.seq_len()),
        ));
    }
    let ids: Vec<u32> = targets.slots.iter().map(|&i| i as u32).collect();
    let device = fused.layers[0].k.device();
    let index = Tensor::new(ids.as_slice(), device).ctx("slot index")?;
    let mut terms = Vec::with_capacity(2 * layers.len());
    for &l in layers {
        let (Some(own), Some(target)) = (fused.layers.get(l), targets.layers.get(l)) else {
            return Err(FuserError::input(
                "slot distillation",
                format!("layer {l} is not in both caches"),
            ));
        };
        for (x, t) in [(&own.k, &target.k), (&own.v, &target.v)] {
            let x = x
                .index_select(&index, 2)
                .and_then(|x| x.to_dtype(DType::F32))
                .ctx("fused slot rows")?;
            terms.push(relative_error(&x, t)?);
        }
    }
    Tensor::stack(&terms, 0)
        .and_then(|t| t.mean_all())
        .ctx("distillation loss")
}

/// `mean((x - t)^2) / mean(t^2)` (the denominator floored, so an all-zero target is plain
/// MSE); computed on the device, no host round trip.
fn relative_error(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let scale = t
        .sqr()
        .and_then(|s| s.mean_all())
        .and_then(|s| s.maximum(1e-6f32))
        .ctx("target scale")?
        .detach();
    (x - t)
        .and_then(|d| d.sqr())
        .and_then(|d| d.mean_all())
        .and_then(|d| d.div(&scale))
        .ctx("relative error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oracle_slots_hold_the_targets_at_the_paired_slots_and_the_filler_elsewhere() {
        use candle_core::Device;
        let dev = Device::Cpu;
        let layer = |fill: f32| LayerKv {
            k: Tensor::full(fill, (1, 2, 4, 3), &dev).unwrap(),
            v: Tensor::full(fill + 1.0, (1, 2, 4, 3), &dev).unwrap(),
        };
        let base = KvCache {
            layers: vec![layer(0.0), layer(0.0)],
        };
        let targets = SlotTargets {
            slots: vec![1, 3],
            layers: vec![
                LayerKv {
                    k: Tensor::full(5f32, (1, 2, 2, 3), &dev).unwrap(),
                    v: Tensor::full(6f32, (1, 2, 2, 3), &dev).unwrap(),
                },
                LayerKv {
                    k: Tensor::full(9f32, (1, 2, 2, 3), &dev).unwrap(),
                    v: Tensor::full(10f32, (1, 2, 2, 3), &dev).unwrap(),
                },
            ],
        };
        let oracle = targets.oracle_slots(&base).unwrap();
        let column = |t: &Tensor| -> Vec<f32> {
            t.narrow(1, 1, 1)
                .unwrap()
                .narrow(3, 2, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        assert_eq!(column(&oracle.layers[0].k), vec![0.0, 5.0, 0.0, 5.0]);
        assert_eq!(column(&oracle.layers[0].v), vec![1.0, 6.0, 1.0, 6.0]);
        assert_eq!(column(&oracle.layers[1].k), vec![0.0, 9.0, 0.0, 9.0]);
        // The base is left as it was; a slot past the cache and a wrong layer count are refused.
        assert_eq!(column(&base.layers[0].k), vec![0.0; 4]);
        let far = SlotTargets {
            slots: vec![1, 4],
            layers: targets.layers.clone(),
        };
        assert!(far.oracle_slots(&base).is_err());
        let short = KvCache {
            layers: vec![layer(0.0)],
        };
        assert!(targets.oracle_slots(&short).is_err());
    }

    #[test]
    fn noisy_targets_are_off_by_the_relative_error_asked_for() {
        use candle_core::Device;
        use rand::SeedableRng;
        let dev = Device::Cpu;
        let values: Vec<f32> = (0..2 * 64 * 8)
            .map(|i| ((i % 13) as f32 - 6.0) * 0.5)
            .collect();
        let t = Tensor::from_vec(values, (1, 2, 64, 8), &dev).unwrap();
        let targets = SlotTargets {
            slots: (0..64).collect(),
            layers: vec![LayerKv {
                k: t.clone(),
                v: t.affine(3.0, 1.0).unwrap(),
            }],
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for relative in [0.0, 0.1, 0.5] {
            let noisy = targets.with_noise(relative, &mut rng).unwrap();
            let cache = KvCache {
                layers: noisy.layers.clone(),
            };
            let err = distill_loss(&cache, &targets, &[0])
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                (f64::from(err) - relative).abs() < 0.05 * relative + 1e-6,
                "asked {relative}, got {err}"
            );
        }
        assert!(targets.with_noise(-1.0, &mut rng).is_err());
        assert!(targets.with_noise(f64::NAN, &mut rng).is_err());
    }

    #[test]
    fn a_slot_takes_the_last_receiver_token_ending_in_it() {
        // Receiver tokens 0,1 end in slot 0; 2 in slot 2; 3,4 in slot 3. Slot 1 has none.
        assert_eq!(slot_pairs(&[0, 0, 2, 3, 3]), vec![(0, 1), (2, 2), (3, 4)]);
        assert_eq!(slot_pairs(&[0, 1, 2]), vec![(0, 0), (1, 1), (2, 2)]);
        assert!(slot_pairs(&[]).is_empty());
    }
}
