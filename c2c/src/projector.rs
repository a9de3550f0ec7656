//! The C2C projector of one receiver layer (docs/FUSER.md), as a candle module built from a
//! `VarBuilder`, so the same code serves inference (weights from a checkpoint) and training
//! (weights in a `VarMap`, gradients through candle's autograd).
//!
//! Per branch (K and V), per token: x = [s ; r]; h0 = W_in x + b_in; h1 = FFN_mlp1(h0);
//! P = W_out FFN_proj(h1) + b_out; w = sigmoid(W_s FFN_scalar(h1) + b_s) (one per receiver head);
//! output = r + g * w_h * P_h, with g = 1[gate_logit > 0] at inference.
//! FFN(h) = h + W2 GELU_erf(W1 RMSNorm(h)), RMSNorm eps 1e-6 with a weight, no biases.
//! Tensor names follow the released checkpoints (`key_in.weight`, `key_mlp1.blocks.0.norm.weight`,
//! ..., `key_gate_logit`).

use candle_core::{DType, Module, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::cache::{KvLayer, from_token_rows, to_token_rows};
use crate::error::{C2cError, Result, TensorContext};
use crate::ffn::{FfnBlock, ffn_stack, run_stack};

pub use crate::ffn::RMS_EPS;

/// Shapes of one projector. The released C2C projector uses `hidden = intermediate = 1024` and
/// one block in each FFN stack (`num_layers = 3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectorDims {
    /// Sharer KV heads.
    pub sharer_heads: usize,
    /// Sharer head dimension.
    pub sharer_head_dim: usize,
    /// Receiver KV heads.
    pub receiver_heads: usize,
    /// Receiver head dimension.
    pub receiver_head_dim: usize,
    /// Width of h0/h1.
    pub hidden: usize,
    /// Inner width of the mlp1 and proj FFN blocks (the scalar FFN's inner width is `hidden`).
    pub intermediate: usize,
    /// Number of FFN blocks in the proj stack (`num_layers - 2` upstream).
    pub proj_blocks: usize,
}

impl ProjectorDims {
    /// Sharer token width `Hs * Ds`.
    pub fn sharer_width(&self) -> usize {
        self.sharer_heads * self.sharer_head_dim
    }
    /// Receiver token width `Hr * Dr`.
    pub fn receiver_width(&self) -> usize {
        self.receiver_heads * self.receiver_head_dim
    }
    /// Rejects zero sizes.
    pub fn validate(&self) -> Result<()> {
        let all = [
            ("sharer_heads", self.sharer_heads),
            ("sharer_head_dim", self.sharer_head_dim),
            ("receiver_heads", self.receiver_heads),
            ("receiver_head_dim", self.receiver_head_dim),
            ("hidden", self.hidden),
            ("intermediate", self.intermediate),
            ("proj_blocks", self.proj_blocks),
        ];
        for (what, value) in all {
            if value == 0 {
                return Err(C2cError::Range {
                    what,
                    value: 0.0,
                    range: ">= 1",
                });
            }
        }
        Ok(())
    }
}

/// How the gate is applied.
#[derive(Debug, Clone)]
pub enum GateMode {
    /// Inference: g = 1 when the gate logit is > 0, else the receiver cache is returned untouched.
    Hard,
    /// Training: g = sigmoid((gate_logit + gumbel) / temperature), with Gumbel noise per token and
    /// receiver head, each `[N, Hr]` for the K and V branches (see `train::gumbel_noise`).
    Soft {
        /// Gumbel-sigmoid temperature (> 0).
        temperature: f64,
        /// Gumbel noise for the K branch, `[N, Hr]`.
        key_noise: Tensor,
        /// Gumbel noise for the V branch, `[N, Hr]`.
        value_noise: Tensor,
    },
}

/// One branch (K or V) of the projector.
#[derive(Debug, Clone)]
struct Branch {
    input: Linear,
    mlp1: Vec<FfnBlock>,
    scalar_mlp2: Vec<FfnBlock>,
    scalar_head: Linear,
    proj_mlp2: Vec<FfnBlock>,
    proj_out: Linear,
    gate_logit: Tensor,
}

/// What a branch computes for a batch of token rows, before gating.
#[derive(Debug, Clone)]
pub struct BranchParts {
    /// The projected rows P, `[N, Hr*Dr]`.
    pub projected: Tensor,
    /// The per-head weights w = sigmoid(...), `[N, Hr]`.
    pub weight: Tensor,
}

impl Branch {
    fn new(dims: &ProjectorDims, prefix: &str, vb: &VarBuilder) -> Result<Self> {
        let d = dims;
        let p = |suffix: &str| vb.pp(format!("{prefix}_{suffix}"));
        let in_width = d.sharer_width() + d.receiver_width();
        Ok(Self {
            input: candle_nn::linear(in_width, d.hidden, p("in")).ctx("loading _in")?,
            mlp1: ffn_stack(d.hidden, d.intermediate, 1, p("mlp1"))?,
            scalar_mlp2: ffn_stack(d.hidden, d.hidden, 1, p("scalar_mlp2"))?,
            scalar_head: candle_nn::linear(d.hidden, d.receiver_heads, p("scalar_head"))
                .ctx("loading _scalar_head")?,
            proj_mlp2: ffn_stack(d.hidden, d.intermediate, d.proj_blocks, p("proj_mlp2"))?,
            proj_out: candle_nn::linear(d.hidden, d.receiver_width(), p("proj_out"))
                .ctx("loading _proj_out")?,
            gate_logit: vb
                .get_with_hints((), &format!("{prefix}_gate_logit"), Init::Const(0.0))
                .ctx("loading gate logit")?,
        })
    }

    fn parts(&self, s: &Tensor, r: &Tensor) -> Result<BranchParts> {
        let x = Tensor::cat(&[s, r], 1).ctx("concatenating [s ; r]")?;
        let h0 = self.input.forward(&x).ctx("input projection")?;
        let h1 = run_stack(&self.mlp1, &h0)?;
        let projected = self
            .proj_out
            .forward(&run_stack(&self.proj_mlp2, &h1)?)
            .ctx("proj head")?;
        let logits = self
            .scalar_head
            .forward(&run_stack(&self.scalar_mlp2, &h1)?)
            .ctx("scalar head")?;
        let weight = candle_nn::ops::sigmoid(&logits).ctx("scalar sigmoid")?;
        Ok(BranchParts { projected, weight })
    }

    fn named(&self, prefix: &str, out: &mut Vec<(String, Tensor)>) {
        let ffn = |out: &mut Vec<(String, Tensor)>, stack: &str, blocks: &[FfnBlock]| {
            for (j, b) in blocks.iter().enumerate() {
                let p = format!("{prefix}_{stack}.blocks.{j}");
                out.push((format!("{p}.norm.weight"), b.norm.clone()));
                out.push((format!("{p}.w1.weight"), b.w1.weight().clone()));
                out.push((format!("{p}.w2.weight"), b.w2.weight().clone()));
            }
        };
        let linear = |out: &mut Vec<(String, Tensor)>, name: &str, l: &Linear| {
            out.push((format!("{prefix}_{name}.weight"), l.weight().clone()));
            if let Some(bias) = l.bias() {
                out.push((format!("{prefix}_{name}.bias"), bias.clone()));
            }
        };
        linear(out, "in", &self.input);
        ffn(out, "mlp1", &self.mlp1);
        ffn(out, "scalar_mlp2", &self.scalar_mlp2);
        linear(out, "scalar_head", &self.scalar_head);
        ffn(out, "proj_mlp2", &self.proj_mlp2);
        linear(out, "proj_out", &self.proj_out);
        out.push((format!("{prefix}_gate_logit"), self.gate_logit.clone()));
    }

    fn gate_logit(&self) -> Result<f32> {
        self.gate_logit
            .to_dtype(DType::F32)
            .and_then(|g| g.to_scalar::<f32>())
            .ctx("reading gate logit")
    }
}

/// The projector of one receiver layer: a K branch and a V branch.
#[derive(Debug, Clone)]
pub struct Projector {
    dims: ProjectorDims,
    dtype: DType,
    key: Branch,
    value: Branch,
}

impl Projector {
    /// Builds the projector from `vb` (a checkpoint or a `VarMap` for training); tensor names
    /// are the released ones, relative to `vb`'s prefix.
    pub fn new(dims: ProjectorDims, vb: VarBuilder) -> Result<Self> {
        dims.validate()?;
        Ok(Self {
            dims,
            dtype: vb.dtype(),
            key: Branch::new(&dims, "key", &vb)?,
            value: Branch::new(&dims, "value", &vb)?,
        })
    }

    /// The shapes of this projector.
    pub fn dims(&self) -> &ProjectorDims {
        &self.dims
    }

    /// Every tensor with its released name, in the order of [`tensor_shapes`].
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        self.key.named("key", &mut out);
        self.value.named("value", &mut out);
        out
    }

    /// `(key_gate_logit, value_gate_logit)`.
    pub fn gate_logits(&self) -> Result<(f32, f32)> {
        Ok((self.key.gate_logit()?, self.value.gate_logit()?))
    }

    /// P and w of the K and V branches for token rows `[N, Hs*Ds]` / `[N, Hr*Dr]`, before gating.
    pub fn parts(
        &self,
        ks: &Tensor,
        kr: &Tensor,
        vs: &Tensor,
        vr: &Tensor,
    ) -> Result<(BranchParts, BranchParts)> {
        self.check_rows(ks, kr)?;
        self.check_rows(vs, vr)?;
        let cast = |t: &Tensor| t.to_dtype(self.dtype).ctx("casting rows");
        let key = self.key.parts(&cast(ks)?, &cast(kr)?)?;
        let value = self.value.parts(&cast(vs)?, &cast(vr)?)?;
        Ok((key, value))
    }

    /// Fused rows `(K, V)`, each `[N, Hr*Dr]` in the receiver rows' dtype.
    pub fn forward_rows(
        &self,
        ks: &Tensor,
        kr: &Tensor,
        vs: &Tensor,
        vr: &Tensor,
        gate: &GateMode,
    ) -> Result<(Tensor, Tensor)> {
        self.check_rows(ks, kr)?;
        self.check_rows(vs, vr)?;
        let (k_noise, v_noise, temperature) = match gate {
            GateMode::Hard => (None, None, 0.0),
            GateMode::Soft {
                temperature,
                key_noise,
                value_noise,
            } => (Some(key_noise), Some(value_noise), *temperature),
        };
        let k = self.fuse_branch(&self.key, ks, kr, k_noise, temperature)?;
        let v = self.fuse_branch(&self.value, vs, vr, v_noise, temperature)?;
        Ok((k, v))
    }

    /// Fuses a sharer layer into a receiver layer of the same token count, both `[B, H, T, D]`.
    pub fn forward_cache(
        &self,
        sharer: &KvLayer,
        receiver: &KvLayer,
        gate: &GateMode,
    ) -> Result<KvLayer> {
        let (sb, _, st, _) = sharer.dims()?;
        let (b, h, t, d) = receiver.dims()?;
        if sb != b || st != t {
            return Err(C2cError::Shape {
                what: "sharer layer [B, Hs, T, Ds] vs receiver [B, Hr, T, Dr]".into(),
                expected: vec![b, 0, t, 0],
                got: sharer.k.dims().to_vec(),
            });
        }
        let (k, v) = self.forward_rows(
            &to_token_rows(&sharer.k)?,
            &to_token_rows(&receiver.k)?,
            &to_token_rows(&sharer.v)?,
            &to_token_rows(&receiver.v)?,
            gate,
        )?;
        Ok(KvLayer {
            k: from_token_rows(&k, b, h, t, d)?,
            v: from_token_rows(&v, b, h, t, d)?,
        })
    }

    fn fuse_branch(
        &self,
        branch: &Branch,
        s: &Tensor,
        r: &Tensor,
        noise: Option<&Tensor>,
        temperature: f64,
    ) -> Result<Tensor> {
        let hard = noise.is_none();
        if hard && branch.gate_logit()? <= 0.0 {
            // Closed gate: the receiver's own cache, bit for bit.
            return Ok(r.clone());
        }
        let out_dtype = r.dtype();
        let r = r.to_dtype(self.dtype).ctx("casting receiver rows")?;
        let s = s.to_dtype(self.dtype).ctx("casting sharer rows")?;
        let parts = branch.parts(&s, &r)?;
        let n = r.dim(0).ctx("reading token count")?;
        let (hr, dr) = (self.dims.receiver_heads, self.dims.receiver_head_dim);
        let mut w = parts.weight;
        if let Some(noise) = noise {
            if temperature.is_nan() || temperature <= 0.0 {
                return Err(C2cError::Range {
                    what: "gate temperature",
                    value: temperature,
                    range: "> 0",
                });
            }
            let gate = noise
                .to_dtype(self.dtype)
                .and_then(|g| g.broadcast_add(&branch.gate_logit))
                .and_then(|g| g / temperature)
                .and_then(|g| candle_nn::ops::sigmoid(&g))
                .ctx("Gumbel-sigmoid gate")?;
            w = (w * gate).ctx("gating weights")?;
        }
        let p = parts.projected.reshape((n, hr, dr)).ctx("P to heads")?;
        let w = w.reshape((n, hr, 1)).ctx("w to heads")?;
        let delta = p
            .broadcast_mul(&w)
            .and_then(|x| x.reshape((n, hr * dr)))
            .ctx("w * P")?;
        (r + delta)
            .and_then(|x| x.to_dtype(out_dtype))
            .ctx("R + g w P")
    }

    fn check_rows(&self, s: &Tensor, r: &Tensor) -> Result<()> {
        let (sw, rw) = (self.dims.sharer_width(), self.dims.receiver_width());
        let ok = s.rank() == 2
            && r.rank() == 2
            && s.dims()[1] == sw
            && r.dims()[1] == rw
            && s.dims()[0] == r.dims()[0];
        if !ok {
            return Err(C2cError::Shape {
                what: format!("projector rows: sharer {:?} vs receiver", s.dims()),
                expected: vec![0, rw],
                got: r.dims().to_vec(),
            });
        }
        Ok(())
    }
}

/// Names and shapes of every tensor a projector with `dims` holds (released key names).
pub fn tensor_shapes(dims: &ProjectorDims) -> Vec<(String, Vec<usize>)> {
    let d = dims;
    let mut out = Vec::new();
    for prefix in ["key", "value"] {
        let ffn = |out: &mut Vec<(String, Vec<usize>)>, stack: &str, inner: usize, blocks| {
            for j in 0..blocks {
                let b = format!("{prefix}_{stack}.blocks.{j}");
                out.push((format!("{b}.norm.weight"), vec![d.hidden]));
                out.push((format!("{b}.w1.weight"), vec![inner, d.hidden]));
                out.push((format!("{b}.w2.weight"), vec![d.hidden, inner]));
            }
        };
        let in_width = d.sharer_width() + d.receiver_width();
        out.push((format!("{prefix}_in.weight"), vec![d.hidden, in_width]));
        out.push((format!("{prefix}_in.bias"), vec![d.hidden]));
        ffn(&mut out, "mlp1", d.intermediate, 1);
        ffn(&mut out, "scalar_mlp2", d.hidden, 1);
        out.push((
            format!("{prefix}_scalar_head.weight"),
            vec![d.receiver_heads, d.hidden],
        ));
        out.push((format!("{prefix}_scalar_head.bias"), vec![d.receiver_heads]));
        ffn(&mut out, "proj_mlp2", d.intermediate, d.proj_blocks);
        out.push((
            format!("{prefix}_proj_out.weight"),
            vec![d.receiver_width(), d.hidden],
        ));
        out.push((format!("{prefix}_proj_out.bias"), vec![d.receiver_width()]));
        out.push((format!("{prefix}_gate_logit"), vec![]));
    }
    out
}
