//! The residual FFN block of the C2C projector, h + W2 GELU_erf(W1 RMSNorm(h)) (upstream
//! `StandardFFNLayer`: RMSNorm eps 1e-6 with a weight, bias-free linears), and stacks of them
//! (upstream `RegularMLP.blocks`).

use candle_core::{Module, Tensor};
use candle_nn::{Init, Linear, VarBuilder};

use crate::error::{Result, TensorContext};

/// RMSNorm epsilon of the released projector.
pub const RMS_EPS: f64 = 1e-6;

/// One residual block: h + W2 GELU_erf(W1 RMSNorm(h)).
#[derive(Debug, Clone)]
pub(crate) struct FfnBlock {
    pub(crate) norm: Tensor,
    pub(crate) w1: Linear,
    pub(crate) w2: Linear,
}

impl FfnBlock {
    fn new(width: usize, inner: usize, vb: VarBuilder) -> Result<Self> {
        let norm = vb
            .get_with_hints(width, "norm.weight", Init::Const(1.0))
            .ctx("loading FFN norm")?;
        let w1 = candle_nn::linear_no_bias(width, inner, vb.pp("w1")).ctx("loading FFN w1")?;
        let w2 = candle_nn::linear_no_bias(inner, width, vb.pp("w2")).ctx("loading FFN w2")?;
        Ok(Self { norm, w1, w2 })
    }

    fn forward(&self, h: &Tensor) -> Result<Tensor> {
        let normed = rms_norm(h, &self.norm)?;
        let inner = self.w1.forward(&normed).ctx("FFN w1")?;
        let inner = inner.gelu_erf().ctx("FFN gelu")?;
        let out = self.w2.forward(&inner).ctx("FFN w2")?;
        (h + out).ctx("FFN residual")
    }
}

/// RMSNorm over the last dimension, written with differentiable primitives.
fn rms_norm(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let ms = x.sqr().and_then(|s| s.mean_keepdim(candle_core::D::Minus1));
    let inv = ms
        .and_then(|ms| ms + RMS_EPS)
        .and_then(|v| v.sqrt())
        .and_then(|v| v.recip())
        .ctx("RMSNorm statistics")?;
    x.broadcast_mul(&inv)
        .and_then(|x| x.broadcast_mul(weight))
        .ctx("RMSNorm scale")
}

pub(crate) fn ffn_stack(
    width: usize,
    inner: usize,
    blocks: usize,
    vb: VarBuilder,
) -> Result<Vec<FfnBlock>> {
    let vb = vb.pp("blocks");
    (0..blocks)
        .map(|j| FfnBlock::new(width, inner, vb.pp(j)))
        .collect()
}

pub(crate) fn run_stack(stack: &[FfnBlock], h: &Tensor) -> Result<Tensor> {
    let mut h = h.clone();
    for block in stack {
        h = block.forward(&h)?;
    }
    Ok(h)
}
