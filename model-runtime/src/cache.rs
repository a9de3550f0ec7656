//! The KV cache as an explicit value: one post-RoPE K and one V per layer, each
//! `[B, H_kv, T, D]`. A sharer exports it, a fuser rewrites it, a receiver injects it.

use crate::error::{Result, RuntimeError};
use candle_core::Tensor;

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

    /// Repeats a batch-1 cache `n` times along the batch axis (to score several
    /// continuations of one prompt in one forward).
    pub fn repeat_batch(&self, n: usize) -> Result<Self> {
        if self.batch_size() != 1 {
            return Err(RuntimeError::input(
                "cache",
                format!(
                    "repeat_batch needs batch 1, cache has {}",
                    self.batch_size()
                ),
            ));
        }
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerKv {
                    k: l.k.repeat((n, 1, 1, 1))?,
                    v: l.v.repeat((n, 1, 1, 1))?,
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
