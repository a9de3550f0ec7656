//! The KV cache of one layer as an explicit value, and the reshapes between the cache layout
//! `[B, H, T, D]` and the projector's per-token layout `[B*T, H*D]` (heads concatenated).

use candle_core::Tensor;

use crate::error::{C2cError, Result, TensorContext};

/// Keys and values of one attention layer, each `[B, H, T, D]` (K after RoPE and k_norm).
#[derive(Debug, Clone)]
pub struct KvLayer {
    /// Keys `[B, H, T, D]`.
    pub k: Tensor,
    /// Values `[B, H, T, D]`.
    pub v: Tensor,
}

impl KvLayer {
    /// Builds a layer after checking that K and V are rank 4 with equal shapes.
    pub fn new(k: Tensor, v: Tensor) -> Result<Self> {
        let layer = Self { k, v };
        layer.dims()?;
        Ok(layer)
    }

    /// `(B, H, T, D)` of this layer; errors when K and V disagree or are not rank 4.
    pub fn dims(&self) -> Result<(usize, usize, usize, usize)> {
        let k = self.k.dims();
        let v = self.v.dims();
        if k.len() != 4 || k != v {
            return Err(C2cError::Shape {
                what: "KV layer (V must match K, both [B,H,T,D])".into(),
                expected: k.to_vec(),
                got: v.to_vec(),
            });
        }
        Ok((k[0], k[1], k[2], k[3]))
    }

    /// Keeps only the token rows at `positions` (along T), in the given order.
    pub fn gather_tokens(&self, positions: &[usize]) -> Result<Self> {
        let (_, _, t, _) = self.dims()?;
        let idx = index_tensor(positions, t, "gather positions", self.k.device())?;
        Ok(Self {
            k: self.k.index_select(&idx, 2).ctx("gathering K rows")?,
            v: self.v.index_select(&idx, 2).ctx("gathering V rows")?,
        })
    }
}

/// `[B, H, T, D]` -> `[B*T, H*D]`: one row per token, heads concatenated.
pub fn to_token_rows(x: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4().ctx("reading cache dims")?;
    x.transpose(1, 2)
        .and_then(|x| x.contiguous())
        .and_then(|x| x.reshape((b * t, h * d)))
        .ctx("flattening heads")
}

/// `[B*T, H*D]` -> `[B, H, T, D]`, the inverse of [`to_token_rows`].
pub fn from_token_rows(x: &Tensor, b: usize, h: usize, t: usize, d: usize) -> Result<Tensor> {
    x.reshape((b, t, h, d))
        .and_then(|x| x.transpose(1, 2))
        .and_then(|x| x.contiguous())
        .ctx("unflattening heads")
}

/// A u32 index tensor after checking every position is `< limit`.
pub(crate) fn index_tensor(
    positions: &[usize],
    limit: usize,
    what: &'static str,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let mut idx = Vec::with_capacity(positions.len());
    for (index, &position) in positions.iter().enumerate() {
        if position >= limit || position > u32::MAX as usize {
            return Err(C2cError::Position {
                what,
                index,
                position,
                limit,
            });
        }
        idx.push(position as u32);
    }
    Tensor::from_vec(idx, positions.len(), device).ctx("building index tensor")
}

/// Checks that positions are strictly increasing and below `limit`.
pub fn check_positions(positions: &[usize], limit: usize, what: &'static str) -> Result<()> {
    for (index, &position) in positions.iter().enumerate() {
        if position >= limit {
            return Err(C2cError::Position {
                what,
                index,
                position,
                limit,
            });
        }
        if index > 0 && positions[index - 1] >= position {
            return Err(C2cError::Position {
                what,
                index,
                position,
                limit: positions[index - 1],
            });
        }
    }
    Ok(())
}
