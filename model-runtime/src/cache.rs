//! The KV cache as an explicit value: one post-RoPE K and one V per layer, each
//! `[B, H_kv, T, D]`. A sharer exports it, a fuser rewrites it, a receiver injects it.

use crate::error::{Result, RuntimeError};
use candle_core::{DType, Device, Tensor};
use kvwire::HostLayer;

/// Keys and values of one layer, `[B, H_kv, T, D]` each. K is post-RoPE (and after
/// `k_norm` where the model has one).
#[derive(Debug, Clone)]
pub struct LayerKv {
    /// Keys, `[B, H_kv, T, D]`.
    pub k: Tensor,
    /// Values, `[B, H_kv, T, D]`.
    pub v: Tensor,
}

impl LayerKv {
    /// Number of cached positions.
    pub fn seq_len(&self) -> usize {
        self.k.dims().get(2).copied().unwrap_or(0)
    }

    /// K and V copied to host f32 (one download each), `[B, H, T, D]` flattened.
    pub fn to_host(&self) -> Result<HostLayer> {
        let host = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        Ok(HostLayer {
            k: host(&self.k)?,
            v: host(&self.v)?,
        })
    }
}

/// The keys or the values of a cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvPart {
    /// Keys.
    K,
    /// Values.
    V,
}

/// Per-layer KV cache. An empty cache (`layers` empty) means "nothing cached yet".
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// One entry per decoder layer, in order (empty before the first forward).
    pub layers: Vec<LayerKv>,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a cache from per-layer tensors, checking they agree with each other.
    pub fn from_layers(layers: Vec<LayerKv>) -> Result<Self> {
        let cache = Self { layers };
        cache.check_consistent()?;
        Ok(cache)
    }

    /// Number of cached positions (0 when empty).
    pub fn seq_len(&self) -> usize {
        self.layers.first().map_or(0, LayerKv::seq_len)
    }

    /// True when nothing has been cached.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Batch size of the cached tensors (0 when empty).
    pub fn batch_size(&self) -> usize {
        self.layers
            .first()
            .map_or(0, |l| l.k.dims().first().copied().unwrap_or(0))
    }

    /// Per-position L2 norm of the K (or V) rows over heads and head dims, summed over layers:
    /// one f32 per cached position, computed on the cache's device (batch 1). The `knorm` and
    /// `vnorm` selection scores.
    pub fn row_norms(&self, part: KvPart) -> Result<Vec<f32>> {
        if self.batch_size() > 1 {
            return Err(RuntimeError::input(
                "cache",
                format!("row norms take batch 1, got {}", self.batch_size()),
            ));
        }
        let mut sum: Option<Tensor> = None;
        for layer in &self.layers {
            let rows = match part {
                KvPart::K => &layer.k,
                KvPart::V => &layer.v,
            };
            let norm = rows.to_dtype(DType::F32)?.sqr()?.sum(3)?.sum(1)?.sqrt()?;
            sum = Some(match sum {
                Some(s) => (s + norm)?,
                None => norm,
            });
        }
        match sum {
            Some(s) => Ok(s.flatten_all()?.to_vec1::<f32>()?),
            None => Ok(Vec::new()),
        }
    }

    /// Keeps only the first `len` positions of every layer.
    pub fn truncate(&self, len: usize) -> Result<Self> {
        if len > self.seq_len() {
            return Err(RuntimeError::input(
                "len",
                format!(
                    "cannot truncate a cache of {} positions to {len}",
                    self.seq_len()
                ),
            ));
        }
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerKv {
                    k: l.k.narrow(2, 0, len)?,
                    v: l.v.narrow(2, 0, len)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// Keeps the positions listed in `positions` (in that order) of every layer, e.g. the
    /// tokens a sharer selected. Positions must be below `seq_len()`.
    pub fn select_positions(&self, positions: &[u32]) -> Result<Self> {
        let len = self.seq_len();
        if let Some(&bad) = positions.iter().find(|&&p| p as usize >= len) {
            return Err(RuntimeError::input(
                "positions",
                format!("position {bad} outside a cache of {len} positions"),
            ));
        }
        let Some(first) = self.layers.first() else {
            return Ok(Self::new());
        };
        let index = Tensor::new(positions, first.k.device())?;
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerKv {
                    k: l.k.index_select(&index, 2)?,
                    v: l.v.index_select(&index, 2)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }

    /// Total bytes held by the cached tensors.
    pub fn size_in_bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.k.elem_count() + l.v.elem_count()) * l.k.dtype().size_in_bytes())
            .sum()
    }

    /// Copies every layer's K and V to host f32 ([`LayerKv::to_host`] per layer).
    pub fn to_host(&self) -> Result<Vec<HostLayer>> {
        self.layers.iter().map(LayerKv::to_host).collect()
    }

    /// A batch-1 cache on `device` in `dtype` from host layers of `[1, heads, T, head_dim]`
    /// each (one upload per tensor); every layer must hold `heads * T * head_dim` values.
    pub fn from_host(
        layers: &[HostLayer],
        heads: usize,
        head_dim: usize,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let row = heads * head_dim;
        let tokens = layers.first().map_or(0, |l| l.k.len() / row.max(1));
        let shape = (1, heads, tokens, head_dim);
        let layers = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if l.k.len() != tokens * row || l.v.len() != tokens * row {
                    return Err(RuntimeError::input(
                        "host cache",
                        format!(
                            "layer {i} holds {} K and {} V values, expected {} ({tokens} x {heads} x {head_dim})",
                            l.k.len(),
                            l.v.len(),
                            tokens * row
                        ),
                    ));
                }
                let t = |data: &[f32]| Tensor::from_slice(data, shape, device)?.to_dtype(dtype);
                Ok(LayerKv {
                    k: t(&l.k)?,
                    v: t(&l.v)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::from_layers(layers)
    }

    /// Checks every layer has 4-D K and V of one shape and the same length.
    pub fn check_consistent(&self) -> Result<()> {
        let Some(first) = self.layers.first() else {
            return Ok(());
        };
        let reference = first.k.dims().to_vec();
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, t) in [("k", &layer.k), ("v", &layer.v)] {
                let dims = t.dims();
                if dims.len() != 4 || dims[0] != reference[0] || dims[2] != reference[2] {
                    return Err(RuntimeError::input(
                        "cache",
                        format!("layer {i} {name} has shape {dims:?}, layer 0 k has {reference:?}"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_round_trip_keeps_every_value_and_bad_lengths_are_refused() {
        let (heads, tokens, d) = (2, 3, 4);
        let n = heads * tokens * d;
        let layers: Vec<HostLayer> = (0..2)
            .map(|l| HostLayer {
                k: (0..n).map(|i| (l * 100 + i) as f32).collect(),
                v: (0..n).map(|i| -((l * 100 + i) as f32)).collect(),
            })
            .collect();
        let cache = KvCache::from_host(&layers, heads, d, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(cache.seq_len(), tokens);
        assert_eq!(cache.layers[1].k.dims(), &[1, heads, tokens, d]);
        assert_eq!(cache.to_host().unwrap(), layers);

        let mut short = layers.clone();
        short[1].v.pop();
        assert!(KvCache::from_host(&short, heads, d, &Device::Cpu, DType::F32).is_err());
    }

    #[test]
    fn row_norms_sum_each_layers_per_position_norm() {
        // 2 layers, 1 head, 2 tokens, D = 2. Layer 0 K rows [3, 4] and [0, 1]; layer 1 doubles.
        let layers: Vec<HostLayer> = [1.0f32, 2.0]
            .iter()
            .map(|&s| HostLayer {
                k: vec![3.0 * s, 4.0 * s, 0.0, s],
                v: vec![0.0, 0.0, 6.0 * s, 8.0 * s],
            })
            .collect();
        let cache = KvCache::from_host(&layers, 1, 2, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(cache.row_norms(KvPart::K).unwrap(), vec![15.0, 3.0]);
        assert_eq!(cache.row_norms(KvPart::V).unwrap(), vec![0.0, 30.0]);
        assert!(KvCache::new().row_norms(KvPart::K).unwrap().is_empty());
        let doubled = cache
            .layers
            .iter()
            .map(|l| LayerKv {
                k: Tensor::cat(&[&l.k, &l.k], 0).unwrap(),
                v: Tensor::cat(&[&l.v, &l.v], 0).unwrap(),
            })
            .collect();
        let batch2 = KvCache::from_layers(doubled).unwrap();
        assert!(batch2.row_norms(KvPart::K).is_err(), "batch 1 only");
    }
}
