//! Training of the projectors: the loss of one example, stochastic gates, and AdamW with a
//! state that can be saved and resumed.
//!
//! Both models are frozen. The loss is the receiver's next-token cross-entropy on the response
//! tokens, given the fused prompt cache: the receiver runs `[last prompt token, response[..-1]]`
//! on the fused cache of positions `0..n-1` and predicts `response`. Gradients reach the
//! projectors through the receiver's attention over the fused K/V, so the receiver must run with
//! differentiable kernels ([`model_runtime::Model::with_autograd`]) and dense weights.

use std::collections::HashMap;
use std::path::Path;

use c2c::GateMode;
use c2c::checkpoint::Fuser;
use c2c::fuse::SharerLayer;
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use model_runtime::{KvCache, Model};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Ctx, FuserError, Result};
use crate::fused::{GateSource, fuse_prompt};
use crate::prompt::AlignedPrompt;

/// One training example: an aligned prompt and the receiver tokens of the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainItem {
    /// The prompt on both sides.
    pub prompt: AlignedPrompt,
    /// Receiver token ids of the response (what the loss predicts).
    pub response: Vec<u32>,
}

/// Gumbel-sigmoid gates with a fresh noise sample per layer and call, or the noise-free gate
/// `sigmoid(gate_logit / T)` (whose limit as T falls is the hard gate).
#[derive(Debug)]
pub struct SoftGates {
    rng: Option<ChaCha8Rng>,
    /// Current temperature.
    pub temperature: f64,
    device: Device,
}

impl SoftGates {
    /// Seeded Gumbel-sigmoid gates at `temperature`.
    pub fn new(seed: u64, temperature: f64, device: &Device) -> Self {
        Self {
            rng: Some(ChaCha8Rng::seed_from_u64(seed)),
            temperature,
            device: device.clone(),
        }
    }

    /// Noise-free gates `sigmoid(gate_logit / temperature)` (deterministic).
    pub fn without_noise(temperature: f64, device: &Device) -> Self {
        Self {
            rng: None,
            temperature,
            device: device.clone(),
        }
    }
}

impl GateSource for SoftGates {
    fn gate(&mut self, _layer: usize, rows: usize, heads: usize) -> Result<GateMode> {
        let mut noise = || match &mut self.rng {
            Some(rng) => Ok(c2c::train::gumbel_noise(rng, rows, heads, &self.device)?),
            None => Tensor::zeros((rows, heads), DType::F32, &self.device).ctx("zero gate noise"),
        };
        Ok(GateMode::Soft {
            temperature: self.temperature,
            key_noise: noise()?,
            value_noise: noise()?,
        })
    }
}

/// Mean cross-entropy of `item.response` given the fused prompt cache.
///
/// `own` is the receiver's own cache of `item.prompt.receiver[..n-1]` (a constant: computed
/// once per example without gradients); `sharer` the aligned sharer rows; `receiver` runs with
/// autograd.
pub fn item_loss(
    receiver: &Model,
    fuser: &Fuser,
    own: &KvCache,
    sharer: &[Option<SharerLayer>],
    item: &TrainItem,
    gates: &mut dyn GateSource,
) -> Result<Tensor> {
    let n = item.prompt.receiver.len();
    let m = item.response.len();
    if n < 2 || m == 0 {
        return Err(FuserError::input(
            "training item",
            format!("prompt of {n} and response of {m} tokens (need >= 2 and >= 1)"),
        ));
    }
    let mut cache = fuse_prompt(fuser, sharer, own, gates)?;
    let mut ids = Vec::with_capacity(m);
    ids.push(item.prompt.receiver[n - 1]);
    ids.extend_from_slice(&item.response[..m - 1]);
    let logits = receiver.forward_all(&receiver.ids_tensor(&ids)?, n - 1, &mut cache)?;
    let logits = logits.squeeze(0).ctx("dropping batch axis")?;
    let targets = Tensor::new(item.response.as_slice(), logits.device()).ctx("targets")?;
    candle_nn::loss::cross_entropy(&logits, &targets).ctx("cross-entropy")
}

/// AdamW hyper-parameters (PyTorch defaults except the learning rate, set per step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW over named variables, whose moments can be saved and restored (resume).
#[derive(Debug)]
pub struct AdamW {
    config: AdamWConfig,
    vars: Vec<(String, Var)>,
    /// Per-variable factor on the learning rate (1 unless set).
    lr_scale: Vec<f64>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: usize,
}

impl AdamW {
    /// An optimiser over `vars` (sorted by name, so state files are stable).
    pub fn new(vars: HashMap<String, Var>, config: AdamWConfig) -> Result<Self> {
        let mut vars: Vec<(String, Var)> = vars.into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |v: &Var| v.zeros_like().ctx("optimizer state");
        let m = vars.iter().map(|(_, v)| zeros(v)).collect::<Result<_>>()?;
        let v = vars.iter().map(|(_, v)| zeros(v)).collect::<Result<_>>()?;
        let lr_scale = vec![1.0; vars.len()];
        Ok(Self {
            config,
            vars,
            lr_scale,
            m,
            v,
            step: 0,
        })
    }

    /// Multiplies the learning rate (and with it the decoupled decay) of the variables whose
    /// name ends with `suffix` by `scale`; returns how many there are.
    pub fn scale_lr(&mut self, suffix: &str, scale: f64) -> usize {
        let mut n = 0;
        for (i, (name, _)) in self.vars.iter().enumerate() {
            if name.ends_with(suffix) {
                self.lr_scale[i] = scale;
                n += 1;
            }
        }
        n
    }

    /// The variables, in state order.
    pub fn vars(&self) -> Vec<Var> {
        self.vars.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Optimiser steps taken.
    pub fn steps(&self) -> usize {
        self.step
    }

    /// One update at learning rate `lr`. Variables without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let lr = lr * self.lr_scale[i];
            let m =
                ((&self.m[i] * c.beta1).ctx("m")? + (g * (1.0 - c.beta1)).ctx("m")?).ctx("m")?;
            let v = ((&self.v[i] * c.beta2).ctx("v")? + (g.sqr().ctx("v")? * (1.0 - c.beta2)))
                .ctx("v")?;
            let update = ((&m / bc1).ctx("m hat")?)
                .div(&(((&v / bc2).ctx("v hat")?.sqrt().ctx("sqrt")? + c.eps).ctx("eps")?))
                .ctx("adam ratio")?;
            let decayed = (var.as_tensor() * (1.0 - lr * c.weight_decay)).ctx("decay")?;
            let next = (decayed - (update * lr).ctx("lr")?).ctx("update")?;
            var.set(&next).ctx("writing parameter")?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Writes the moments (safetensors) and the step count (JSON beside it).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            tensors.insert(format!("m.{name}"), self.m[i].clone());
            tensors.insert(format!("v.{name}"), self.v[i].clone());
        }
        let err = |message: String| FuserError::State {
            path: path.to_path_buf(),
            message,
        };
        candle_core::safetensors::save(&tensors, path).map_err(|e| err(e.to_string()))?;
        let meta = serde_json::json!({ "step": self.step, "config": self.config });
        std::fs::write(path.with_extension("json"), meta.to_string())
            .map_err(|e| err(e.to_string()))
    }

    /// Restores moments and step count written by [`AdamW::save`]; every variable must be there
    /// with its shape.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let err = |message: String| FuserError::State {
            path: path.to_path_buf(),
            message,
        };
        let device = self
            .vars
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(Device::Cpu);
        let tensors =
            candle_core::safetensors::load(path, &device).map_err(|e| err(e.to_string()))?;
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (kind, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{kind}.{name}");
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| err(format!("missing {key}")))?;
                if t.dims() != var.dims() {
                    return Err(err(format!(
                        "{key}: shape {:?}, parameter is {:?}",
                        t.dims(),
                        var.dims()
                    )));
                }
                *slot = t.to_dtype(DType::F32).ctx("optimizer state dtype")?;
            }
        }
        let meta =
            std::fs::read_to_string(path.with_extension("json")).map_err(|e| err(e.to_string()))?;
        let meta: serde_json::Value =
            serde_json::from_str(&meta).map_err(|e| err(e.to_string()))?;
        self.step = meta["step"]
            .as_u64()
            .ok_or_else(|| err("no step count".into()))? as usize;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adamw_minimises_a_quadratic_and_resumes_bit_for_bit() {
        let run = |steps: usize, resume_at: Option<usize>| {
            let dir = tempfile::tempdir().unwrap();
            let x = Var::new(&[3.0f32, -2.0], &Device::Cpu).unwrap();
            let mut opt = AdamW::new(
                HashMap::from([("x".to_string(), x.clone())]),
                AdamWConfig::default(),
            )
            .unwrap();
            for s in 0..steps {
                if resume_at == Some(s) {
                    let path = dir.path().join("opt.safetensors");
                    opt.save(&path).unwrap();
                    let mut fresh = AdamW::new(
                        HashMap::from([("x".to_string(), x.clone())]),
                        AdamWConfig::default(),
                    )
                    .unwrap();
                    fresh.load(&path).unwrap();
                    assert_eq!(fresh.steps(), s);
                    opt = fresh;
                }
                let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
                let grads = loss.backward().unwrap();
                opt.step(&grads, 0.1).unwrap();
            }
            x.as_tensor().to_vec1::<f32>().unwrap()
        };
        let straight = run(200, None);
        assert!(straight.iter().all(|v| v.abs() < 0.1), "{straight:?}");
        assert_eq!(straight, run(200, Some(77)));
    }
}

#[cfg(test)]
mod loss_tests {
    use super::*;
    use crate::fused::{gather_sharer_rows, receiver_prompt_cache, sharer_cache};
    use c2c::projector::ProjectorDims;
    use candle_nn::VarMap;
    use model_runtime::{Arch, ModelConfig};

    #[test]
    fn autograd_kernels_match_fused_ones() {
        let cfg = ModelConfig::tiny(Arch::Qwen3);
        let fast = Model::random(&cfg, 5, &Device::Cpu, DType::F32).unwrap();
        let slow = fast.clone().with_autograd(true);
        let ids = fast.ids_tensor(&[4, 8, 15, 16, 23, 42]).unwrap();
        let a = fast.prefill(&ids).unwrap().0;
        let b = slow.prefill(&ids).unwrap().0;
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-4);
    }

    #[test]
    fn training_steps_lower_the_loss_through_the_receiver() {
        let rc = ModelConfig::tiny(Arch::Llama);
        let sc = ModelConfig::tiny(Arch::Qwen2);
        let dev = Device::Cpu;
        let receiver = Model::random(&rc, 1, &dev, DType::F32)
            .unwrap()
            .with_autograd(true);
        let sharer = Model::random(&sc, 2, &dev, DType::F32).unwrap();
        let dims = ProjectorDims {
            sharer_heads: sc.n_kv_heads,
            sharer_head_dim: sc.head_dim,
            receiver_heads: rc.n_kv_heads,
            receiver_head_dim: rc.head_dim,
            hidden: 32,
            intermediate: 32,
            proj_blocks: 1,
        };
        let varmap = VarMap::new();
        let fuser =
            c2c::train::trainable_fuser(dims, rc.n_layers, sc.n_layers, &varmap, 7, &dev).unwrap();
        let item = TrainItem {
            prompt: AlignedPrompt {
                receiver: vec![3, 9, 4, 7, 1, 12],
                sharer: vec![3, 9, 4, 7, 1, 12],
                map: (0..6).collect(),
            },
            response: vec![250, 251, 252],
        };
        let own = receiver_prompt_cache(&receiver, &item.prompt.receiver).unwrap();
        let s = sharer_cache(&sharer, &item.prompt.sharer).unwrap();
        let rows = gather_sharer_rows(&s, &item.prompt.map, 5).unwrap();
        let vars = varmap.data().lock().unwrap().clone();
        let mut opt = AdamW::new(vars, AdamWConfig::default()).unwrap();
        let mut gates = SoftGates::new(0, 1.0, &dev);
        let mut losses = Vec::new();
        for _ in 0..40 {
            let loss = item_loss(&receiver, &fuser, &own, &rows, &item, &mut gates).unwrap();
            losses.push(loss.to_scalar::<f32>().unwrap());
            let mut grads = loss.backward().unwrap();
            let norm = c2c::train::clip_grad_norm(&opt.vars(), &mut grads, 1.0).unwrap();
            assert!(norm > 0.0, "no gradient reached the projectors");
            opt.step(&grads, 3e-3).unwrap();
        }
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(last < 0.5 * first, "loss {first} -> {last}");
    }
}
