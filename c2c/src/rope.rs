//! Rotary position embeddings (RoPE) of one model's K, applied and undone at given positions.
//!
//! The context layout (`crate::context`) moves sharer K, which carries the sharer's RoPE at the
//! sharer's positions, into receiver slots, which need the receiver's RoPE at the slot
//! positions: the sharer K is un-rotated with the sharer's [`RopeSpec`], projected, and the
//! projected K rotated with the receiver's. The tables are computed as `model-runtime` computes
//! them (f32 `inv_freq[i] = 1 / theta^(2i / D)`, angle = position * inv_freq in f32), and the
//! rotation uses candle's differentiable composite kernels, so gradients pass through it.

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{C2cError, Result, TensorContext};

/// How RoPE pairs the dimensions of a head (as `model_runtime::RopeStyle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RopePairing {
    /// Dimension i rotates with i + D/2 (Hugging Face checkpoints, Qwen GGUFs).
    Half,
    /// Dimension 2i rotates with 2i + 1 (llama.cpp's layout of Llama-family GGUFs).
    Interleaved,
}

/// One model's RoPE: base frequency, head width and dimension pairing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RopeSpec {
    /// Base frequency (`rope_theta`).
    pub theta: f64,
    /// Head width D (even).
    pub head_dim: usize,
    /// Dimension pairing.
    pub pairing: RopePairing,
}

impl RopeSpec {
    /// Checks the spec: an even head width and a positive, finite base.
    pub fn validate(&self) -> Result<()> {
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(C2cError::Range {
                what: "RoPE head width",
                value: self.head_dim as f64,
                range: "even and > 0",
            });
        }
        if !(self.theta.is_finite() && self.theta > 0.0) {
            return Err(C2cError::Range {
                what: "RoPE theta",
                value: self.theta,
                range: "finite and > 0",
            });
        }
        Ok(())
    }

    /// cos/sin tables `[T, D/2]` (f32) of `positions`.
    fn tables(&self, positions: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        self.validate()?;
        let d = self.head_dim;
        let theta = self.theta as f32;
        let inv_freq: Vec<f32> = (0..d)
            .step_by(2)
            .map(|i| 1f32 / theta.powf(i as f32 / d as f32))
            .collect();
        let mut cos = Vec::with_capacity(positions.len() * d / 2);
        let mut sin = Vec::with_capacity(positions.len() * d / 2);
        for &p in positions {
            for &f in &inv_freq {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let shape = (positions.len(), d / 2);
        Ok((
            Tensor::from_vec(cos, shape, device).ctx("RoPE cos table")?,
            Tensor::from_vec(sin, shape, device).ctx("RoPE sin table")?,
        ))
    }

    /// Rotates `k` `[B, H, T, D]`, token row `i` by the angle of `positions[i]`; `inverse`
    /// rotates by the opposite angle (undoes the rotation).
    fn apply(&self, k: &Tensor, positions: &[usize], inverse: bool) -> Result<Tensor> {
        let (_, _, t, d) = k.dims4().ctx("reading K dims")?;
        if t != positions.len() {
            return Err(C2cError::Mismatch {
                what: "K rows vs RoPE positions",
                left: t,
                right: positions.len(),
            });
        }
        if d != self.head_dim {
            return Err(C2cError::Mismatch {
                what: "K head width vs RoPE head width",
                left: d,
                right: self.head_dim,
            });
        }
        if t == 0 {
            return Ok(k.clone());
        }
        let (cos, sin) = self.tables(positions, k.device())?;
        let sin = if inverse {
            sin.neg().ctx("negating sin")?
        } else {
            sin
        };
        let dtype = k.dtype();
        let x = k
            .to_dtype(DType::F32)
            .and_then(|x| x.contiguous())
            .ctx("casting K")?;
        let out = match self.pairing {
            RopePairing::Half => candle_nn::rotary_emb::rope_slow(&x, &cos, &sin),
            RopePairing::Interleaved => candle_nn::rotary_emb::rope_i_slow(&x, &cos, &sin),
        }
        .ctx("rotating K")?;
        out.to_dtype(dtype).ctx("casting rotated K")
    }

    /// K `[B, H, T, D]` rotated to `positions` (row `i` at `positions[i]`), from position-free
    /// K (what the model has before RoPE).
    pub fn rotate(&self, k: &Tensor, positions: &[usize]) -> Result<Tensor> {
        self.apply(k, positions, false)
    }

    /// The position-free K of rows that carry this RoPE at `positions` (the inverse of
    /// [`RopeSpec::rotate`], up to float rounding).
    pub fn unrotate(&self, k: &Tensor, positions: &[usize]) -> Result<Tensor> {
        self.apply(k, positions, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pairing: RopePairing) -> RopeSpec {
        RopeSpec {
            theta: 10_000.0,
            head_dim: 8,
            pairing,
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn a_known_rotation_matches_by_hand_and_round_trips() {
        // One head, one row at position 3: pair (x0, x_{D/2}) in the half layout rotates by
        // 3 * inv_freq[0] = 3 rad.
        let mut data = vec![0f32; 8];
        data[0] = 1.0;
        let k = Tensor::from_vec(data, (1, 1, 1, 8), &Device::Cpu).unwrap();
        let half = spec(RopePairing::Half);
        let r = half.rotate(&k, &[3]).unwrap();
        let got = r.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((got[0] - 3f32.cos()).abs() < 1e-6, "{got:?}");
        assert!((got[4] - 3f32.sin()).abs() < 1e-6, "{got:?}");
        let inter = spec(RopePairing::Interleaved);
        let got = inter
            .rotate(&k, &[3])
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((got[1] - 3f32.sin()).abs() < 1e-6, "{got:?}");
        for s in [half, inter] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, 5, 8), &Device::Cpu).unwrap();
            let positions = [0, 7, 100, 4095, 12];
            let back = s
                .unrotate(&s.rotate(&x, &positions).unwrap(), &positions)
                .unwrap();
            assert!(max_diff(&x, &back) < 1e-5);
            // Position 0 is the identity.
            assert!(max_diff(&s.rotate(&x, &[0; 5]).unwrap(), &x) < 1e-7);
        }
    }

    #[test]
    fn bad_shapes_and_specs_are_errors() {
        let k = Tensor::zeros((1, 1, 2, 8), DType::F32, &Device::Cpu).unwrap();
        let s = spec(RopePairing::Half);
        assert!(s.rotate(&k, &[0]).is_err());
        let odd = RopeSpec { head_dim: 7, ..s };
        assert!(odd.validate().is_err());
        let wide = RopeSpec { head_dim: 16, ..s };
        assert!(wide.rotate(&k, &[0, 1]).is_err());
        let zero = RopeSpec { theta: 0.0, ..s };
        assert!(zero.rotate(&k, &[0, 1]).is_err());
    }
}
