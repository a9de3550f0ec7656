//! One decoder layer (pre-norm attention with RoPE and GQA, then a SwiGLU MLP), and the
//! RoPE tables. The layer reads and extends the caller's [`LayerKv`].

use crate::cache::LayerKv;
use crate::config::{ModelConfig, RopeStyle};
use crate::error::Result;
use crate::weights::Linear;
use candle_core::{D, DType, Device, IndexOp, Tensor};

/// Precomputed RoPE cos/sin tables, `[max_position, head_dim / 2]`.
#[derive(Debug, Clone)]
pub(crate) struct Rope {
    cos: Tensor,
    sin: Tensor,
    style: RopeStyle,
}

impl Rope {
    pub(crate) fn new(cfg: &ModelConfig, dtype: DType, dev: &Device) -> Result<Self> {
        let d = cfg.head_dim;
        // Frequencies in f32 exactly as candle's GGUF models compute them.
        let theta = cfg.rope_theta as f32;
        let inv_freq: Vec<f32> = (0..d)
            .step_by(2)
            .map(|i| 1f32 / theta.powf(i as f32 / d as f32))
            .collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, d / 2), dev)?;
        let positions = Tensor::arange(0u32, cfg.max_position as u32, dev)?
            .to_dtype(DType::F32)?
            .reshape((cfg.max_position, 1))?;
        let freqs = positions.matmul(&inv_freq)?;
        Ok(Self {
            cos: freqs.cos()?.to_dtype(dtype)?,
            sin: freqs.sin()?.to_dtype(dtype)?,
            style: cfg.rope_style,
        })
    }

    /// The cos/sin rows of the new tokens of one forward pass: `offset..offset+T` for one
    /// run of tokens (a view of the tables), or, for packed segments, each segment's
    /// positions `offset..offset+len` one after the other (gathered once per forward).
    pub(crate) fn at(&self, offset: usize, segments: &[usize]) -> Result<RopeAt> {
        let (cos, sin) = match segments {
            [t] => (
                self.cos.narrow(0, offset, *t)?,
                self.sin.narrow(0, offset, *t)?,
            ),
            _ => {
                let positions: Vec<u32> = segments
                    .iter()
                    .flat_map(|&len| (offset..offset + len).map(|p| p as u32))
                    .collect();
                let index = Tensor::new(positions, self.cos.device())?;
                (
                    self.cos.index_select(&index, 0)?,
                    self.sin.index_select(&index, 0)?,
                )
            }
        };
        Ok(RopeAt {
            cos,
            sin,
            style: self.style,
        })
    }
}

/// The rotary rows of one forward pass's new tokens, `[T, head_dim / 2]` each.
#[derive(Debug, Clone)]
pub(crate) struct RopeAt {
    cos: Tensor,
    sin: Tensor,
    style: RopeStyle,
}

impl RopeAt {
    /// Rotates `x` of `[B, H, T, D]`, token `i` by row `i` of the tables. `autograd` picks
    /// candle's composite (differentiable) kernel over the fused one.
    fn apply(&self, x: &Tensor, autograd: bool) -> Result<Tensor> {
        let (cos, sin) = (&self.cos, &self.sin);
        let x = x.contiguous()?;
        use candle_nn::rotary_emb as re;
        Ok(match (self.style, autograd) {
            (RopeStyle::Half, false) => re::rope(&x, cos, sin)?,
            (RopeStyle::Half, true) => re::rope_slow(&x, cos, sin)?,
            (RopeStyle::Interleaved, false) => re::rope_i(&x, cos, sin)?,
            (RopeStyle::Interleaved, true) => re::rope_i_slow(&x, cos, sin)?,
        })
    }
}

/// Weights of one decoder layer.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) attn_norm: Tensor,
    pub(crate) q: Linear,
    pub(crate) k: Linear,
    pub(crate) v: Linear,
    pub(crate) o: Linear,
    pub(crate) q_norm: Option<Tensor>,
    pub(crate) k_norm: Option<Tensor>,
    pub(crate) mlp_norm: Tensor,
    pub(crate) gate: Linear,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
}

/// Shapes a layer needs at run time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) n_heads: usize,
    pub(crate) n_kv_heads: usize,
    pub(crate) head_dim: usize,
    pub(crate) eps: f32,
    /// Use differentiable composite ops (RMSNorm, softmax, RoPE) instead of candle's fused
    /// kernels, which have no backward pass.
    pub(crate) autograd: bool,
}

impl Layer {
    /// Runs the layer on `x` `[B, T, H]` at the positions of `shared.rope`.
    /// `past` holds the cached K/V before this call (if any); returns the new hidden
    /// states and the extended K/V.
    pub(crate) fn forward(
        &self,
        x: &Tensor,
        past: Option<&LayerKv>,
        shared: &Shared<'_>,
        probe: Option<&mut AttentionProbe>,
    ) -> Result<(Tensor, LayerKv)> {
        let Shared { mask, rope, dims } = *shared;
        let (b, t, _) = x.dims3()?;
        let h = rms_norm(x, &self.attn_norm, dims.eps, dims.autograd)?;
        let q = self
            .q
            .forward(&h)?
            .reshape((b, t, dims.n_heads, dims.head_dim))?;
        let k = self
            .k
            .forward(&h)?
            .reshape((b, t, dims.n_kv_heads, dims.head_dim))?;
        let v = self
            .v
            .forward(&h)?
            .reshape((b, t, dims.n_kv_heads, dims.head_dim))?;
        let q = match &self.q_norm {
            Some(w) => rms_norm(&q.contiguous()?, w, dims.eps, dims.autograd)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(w) => rms_norm(&k.contiguous()?, w, dims.eps, dims.autograd)?,
            None => k,
        };
        let q = rope.apply(&q.transpose(1, 2)?, dims.autograd)?;
        let k = rope.apply(&k.transpose(1, 2)?, dims.autograd)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let (k, v) = match past {
            Some(p) => (Tensor::cat(&[&p.k, &k], 2)?, Tensor::cat(&[&p.v, &v], 2)?),
            None => (k, v),
        };
        let kv = LayerKv {
            k: k.clone(),
            v: v.clone(),
        };
        let groups = dims.n_heads / dims.n_kv_heads;
        let k = repeat_kv(k, groups)?;
        let v = repeat_kv(v, groups)?;
        let att = (q.matmul(&k.t()?)? / (dims.head_dim as f64).sqrt())?;
        let att = match mask {
            Some(m) => att.broadcast_add(m)?,
            None => att,
        };
        let att = if dims.autograd {
            candle_nn::ops::softmax(&att, D::Minus1)?
        } else {
            candle_nn::ops::softmax_last_dim(&att)?
        };
        if let Some(probe) = probe {
            probe.add(&att)?;
        }
        let y = att.matmul(&v.contiguous()?)?;
        let y = y
            .transpose(1, 2)?
            .reshape((b, t, dims.n_heads * dims.head_dim))?;
        let x = (self.o.forward(&y)? + x)?;

        let h = rms_norm(&x, &self.mlp_norm, dims.eps, dims.autograd)?;
        let gate = candle_nn::ops::silu(&self.gate.forward(&h)?)?;
        let mlp = self.down.forward(&(gate * self.up.forward(&h)?)?)?;
        Ok(((mlp + x)?, kv))
    }
}

/// What every layer of one forward pass uses alike: the causal mask (none for one query),
/// the rotary rows of the new tokens and the model's dimensions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shared<'a> {
    pub(crate) mask: Option<&'a Tensor>,
    pub(crate) rope: &'a RopeAt,
    pub(crate) dims: Dims,
}

/// Attention probabilities on the first `keys` cached positions, summed over layers, heads
/// and query tokens, `[B, keys]` in f32 (the observation-window score of SnapKV).
pub(crate) struct AttentionProbe {
    keys: usize,
    sum: Option<Tensor>,
}

impl AttentionProbe {
    /// A probe of the first `keys` key positions.
    pub(crate) fn new(keys: usize) -> Self {
        Self { keys, sum: None }
    }

    /// Adds one layer's probabilities `[B, H, T_q, T_k]`.
    fn add(&mut self, att: &Tensor) -> Result<()> {
        let mass = att
            .narrow(3, 0, self.keys)?
            .to_dtype(DType::F32)?
            .sum(2)?
            .sum(1)?;
        self.sum = Some(match self.sum.take() {
            Some(sum) => (sum + mass)?,
            None => mass,
        });
        Ok(())
    }

    /// The summed mass of batch row 0, one value per probed position.
    pub(crate) fn into_scores(self) -> Result<Vec<f32>> {
        match self.sum {
            Some(sum) => Ok(sum.i(0)?.to_vec1::<f32>()?),
            None => Ok(vec![0.0; self.keys]),
        }
    }
}

/// Repeats each KV head `n` times along the head axis: `[B, Hkv, T, D] -> [B, Hkv*n, T, D]`.
fn repeat_kv(x: Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x);
    }
    let (b, h, t, d) = x.dims4()?;
    Ok(Tensor::cat(&vec![&x; n], 2)?.reshape((b, h * n, t, d))?)
}

/// Additive causal mask `[T, past + T]` for new tokens packed as `segments` (their lengths,
/// summing to T; one segment is an ordinary run): a query of a segment sees every cached
/// entry and the new keys of its own segment up to itself, never another segment's. `None`
/// for a single query.
pub(crate) fn causal_mask(
    segments: &[usize],
    past: usize,
    dtype: DType,
    dev: &Device,
) -> Result<Option<Tensor>> {
    let t: usize = segments.iter().sum();
    if t <= 1 {
        return Ok(None);
    }
    let total = past + t;
    let mut values = vec![f32::NEG_INFINITY; t * total];
    let mut start = 0;
    for &len in segments {
        for i in 0..len {
            let row = &mut values[(start + i) * total..(start + i + 1) * total];
            row[..past].fill(0.0);
            row[past + start..=past + start + i].fill(0.0);
        }
        start += len;
    }
    Ok(Some(
        Tensor::from_vec(values, (t, total), dev)?.to_dtype(dtype)?,
    ))
}

/// RMSNorm over the last axis: candle's fused kernel, or its composite form (which has a
/// backward pass) when `autograd` is set.
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f32, autograd: bool) -> Result<Tensor> {
    Ok(if autograd {
        candle_nn::ops::rms_norm_slow(x, w, eps)?
    } else {
        candle_nn::ops::rms_norm(x, w, eps)?
    })
}

/// Log-softmax over the last axis in f32.
pub(crate) fn log_softmax(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::log_softmax(
        &x.to_dtype(DType::F32)?,
        D::Minus1,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_mask_keeps_segments_apart() {
        // One cached entry, then segments of 2 and 1 new tokens.
        let mask = causal_mask(&[2, 1], 1, DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        let open: Vec<Vec<bool>> = mask
            .to_vec2::<f32>()
            .unwrap()
            .iter()
            .map(|row| row.iter().map(|v| *v == 0.0).collect())
            .collect();
        let expected = [
            [true, true, false, false],
            [true, true, true, false],
            [true, false, false, true],
        ];
        assert_eq!(open, expected.map(|r| r.to_vec()).to_vec());
        // One segment is the ordinary causal mask; a single query needs none.
        let whole = causal_mask(&[3], 1, DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        let rows = whole.to_vec2::<f32>().unwrap();
        assert!(rows[0][2].is_infinite() && rows[1][2] == 0.0 && rows[2][3] == 0.0);
        assert!(
            causal_mask(&[1], 4, DType::F32, &Device::Cpu)
                .unwrap()
                .is_none()
        );
    }
}
