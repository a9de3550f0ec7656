//! Building blocks of projector training (the train command itself lives with the model
//! runtime): a trainable projector in a `VarMap` with seeded initialisation, Gumbel noise for the
//! soft gate, the gate temperature annealing (1.0 -> 0.001, exponential as upstream), a linear
//! warm-up/decay learning-rate schedule, and gradient clipping by global norm.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::{FORMAT, Fuser, FuserConfig};
use crate::error::{C2cError, Result, TensorContext};
use crate::layer_map::LayerMap;
use crate::projector::{Projector, ProjectorDims};

/// Gate temperature at `step`: `t0 * (t1 / t0) ^ min(step / anneal_steps, 1)`.
pub fn gate_temperature(step: usize, anneal_steps: usize, t0: f64, t1: f64) -> f64 {
    let ratio = if anneal_steps == 0 {
        1.0
    } else {
        (step as f64 / anneal_steps as f64).min(1.0)
    };
    t0 * (t1 / t0).powf(ratio)
}

/// Linear warm-up to `base` over `warmup` steps, then linear decay to 0 at `total` steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub base: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Total steps.
    pub total: usize,
}

impl LrSchedule {
    /// The paper's recipe: 10% warm-up.
    pub fn with_warmup_fraction(base: f64, total: usize, fraction: f64) -> Self {
        Self {
            base,
            warmup: (total as f64 * fraction).round() as usize,
            total,
        }
    }

    /// Learning rate at `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.base * step as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        self.base * (self.total.saturating_sub(step) as f64 / span).clamp(0.0, 1.0)
    }
}

/// Gumbel noise `-ln(-ln(u + 1e-20) + 1e-20)`, `u ~ U[0, 1)`, shape `[n, heads]`, from `rng`.
pub fn gumbel_noise(
    rng: &mut ChaCha8Rng,
    n: usize,
    heads: usize,
    device: &Device,
) -> Result<Tensor> {
    let data: Vec<f32> = (0..n * heads)
        .map(|_| {
            let u: f64 = rng.random();
            (-(-(u + 1e-20).ln() + 1e-20).ln()) as f32
        })
        .collect();
    Tensor::from_vec(data, (n, heads), device).ctx("building Gumbel noise")
}

/// A projector whose weights live in `varmap` (under `prefix`), initialised from `seed`:
/// linear weights and biases uniform in +-1/sqrt(fan_in) (PyTorch's `nn.Linear` default), norm
/// weights 1, gate logits 0 (upstream's initial value).
pub fn trainable_projector(
    dims: ProjectorDims,
    varmap: &VarMap,
    prefix: &str,
    seed: u64,
    device: &Device,
) -> Result<Projector> {
    let vb = VarBuilder::from_varmap(varmap, DType::F32, device);
    let vb = if prefix.is_empty() { vb } else { vb.pp(prefix) };
    let projector = Projector::new(dims, vb)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = varmap.data().lock().map_err(|_| C2cError::Config {
        path: "varmap".into(),
        message: "lock poisoned".into(),
    })?;
    let mut names: Vec<&String> = data.keys().filter(|n| n.starts_with(prefix)).collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let fan_in = if name.ends_with(".weight") && var.rank() == 2 {
            Some(var.dims()[1])
        } else if name.ends_with(".bias") {
            let weight = format!("{}.weight", name.trim_end_matches(".bias"));
            data.get(&weight).map(|w| w.dims()[1])
        } else {
            None
        };
        if let Some(fan_in) = fan_in {
            let bound = 1.0 / (fan_in as f64).sqrt();
            let values: Vec<f32> = (0..var.elem_count())
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect();
            let t = Tensor::from_vec(values, var.shape(), device).ctx("seeded init")?;
            var.set(&t).ctx("setting initial weights")?;
        }
    }
    Ok(projector)
}

/// A trainable fuser: one projector per receiver layer (`projector.{i}` in `varmap`, projector
/// i seeded with `seed * 1_000_003 + i`), the last-aligned layer map, our checkpoint format.
pub fn trainable_fuser(
    dims: ProjectorDims,
    receiver_layers: usize,
    sharer_layers: usize,
    varmap: &VarMap,
    seed: u64,
    device: &Device,
) -> Result<Fuser> {
    let projectors = (0..receiver_layers)
        .map(|i| {
            trainable_projector(
                dims,
                varmap,
                &format!("projector.{i}"),
                seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
                device,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Fuser {
        config: FuserConfig {
            format: FORMAT.into(),
            receiver_layers,
            sharer_layers,
            projectors: vec![dims; receiver_layers],
            layer_map: LayerMap::last_aligned(receiver_layers, sharer_layers),
        },
        projectors,
    })
}

/// Sets every gate logit in `varmap` (names ending in `gate_logit`) to `value` (the gate
/// initialisation; 0, upstream's, is a closed hard gate); returns how many were set.
pub fn init_gate_logits(varmap: &VarMap, value: f64) -> Result<usize> {
    if !value.is_finite() {
        return Err(C2cError::Range {
            what: "gate logit initialisation",
            value,
            range: "finite",
        });
    }
    let data = varmap.data().lock().map_err(|_| C2cError::Config {
        path: "varmap".into(),
        message: "lock poisoned".into(),
    })?;
    let mut n = 0;
    for (name, var) in data.iter() {
        if name.ends_with("gate_logit") {
            let t = (var.ones_like().ctx("gate init")? * value).ctx("gate init")?;
            var.set(&t).ctx("setting gate logit")?;
            n += 1;
        }
    }
    Ok(n)
}

/// Scales the gradients of `vars` so their global L2 norm is at most `max_norm`; returns the norm
/// before clipping.
pub fn clip_grad_norm(vars: &[Var], grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    let mut total = 0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            let s = g
                .sqr()
                .and_then(|s| s.sum_all())
                .and_then(|s| s.to_dtype(DType::F64))
                .and_then(|s| s.to_scalar::<f64>())
                .ctx("gradient norm")?;
            total += s;
        }
    }
    let norm = total.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let scaled = (g * scale).ctx("scaling gradient")?;
                grads.insert(v.as_tensor(), scaled);
            }
        }
    }
    Ok(norm)
}
