//! The gates of a training run: the temperature schedule, the gate each training step samples,
//! the gating evaluation uses (the end of training's), `gating.json` beside the checkpoint
//! that tells `fuser eval` which one that is, and the per-layer gate rows of `gates.csv`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use c2c::checkpoint::Fuser;
use c2c::train::gate_temperature;
use candle_core::Device;
use fuser::fused::{GateSource, HardGate};
use fuser::train::SoftGates;
use serde::{Deserialize, Serialize};

use crate::train_cmd::{GateNoise, TrainArgs};

/// File name of the gating record beside a checkpoint.
pub const GATING_FILE: &str = "gating.json";

/// How a run gates: noise, temperatures and the anneal length.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Gating {
    /// `gumbel` or `none`.
    pub noise: GateNoise,
    /// Temperature at step 0.
    pub initial_temperature: f64,
    /// Temperature from the end of the anneal on.
    pub final_temperature: f64,
    /// Steps of the anneal.
    pub anneal_steps: usize,
}

impl Gating {
    /// The gating of a run's arguments.
    pub fn of(args: &TrainArgs) -> Result<Self> {
        let fraction = args.anneal_fraction;
        anyhow::ensure!(
            (0.0..=1.0).contains(&fraction),
            "--anneal-fraction {fraction} is not in [0, 1]"
        );
        for t in [args.initial_temperature, args.final_temperature] {
            anyhow::ensure!(t.is_finite() && t > 0.0, "gate temperature {t} is not > 0");
        }
        Ok(Self {
            noise: args.gate_noise,
            initial_temperature: args.initial_temperature,
            final_temperature: args.final_temperature,
            anneal_steps: (args.steps as f64 * fraction).round() as usize,
        })
    }

    /// Temperature at `step`: exponential from the initial to the final one over the anneal,
    /// then the final one.
    pub fn temperature(&self, step: usize) -> f64 {
        if step >= self.anneal_steps {
            return self.final_temperature;
        }
        gate_temperature(
            step,
            self.anneal_steps,
            self.initial_temperature,
            self.final_temperature,
        )
    }

    /// The gates of training step `step` (`seed` drives the Gumbel noise).
    pub fn training(&self, seed: u64, step: usize, device: &Device) -> SoftGates {
        let t = self.temperature(step);
        match self.noise {
            GateNoise::Gumbel => SoftGates::new(seed, t, device),
            GateNoise::None => SoftGates::without_noise(t, device),
        }
    }

    /// The gating evaluation and validation use: hard after Gumbel training, the noise-free
    /// gate at the final temperature otherwise (what the last training steps ran).
    pub fn evaluation(&self, device: &Device) -> Box<dyn GateSource> {
        match self.noise {
            GateNoise::Gumbel => Box::new(HardGate),
            GateNoise::None => Box::new(SoftGates::without_noise(self.final_temperature, device)),
        }
    }

    /// The evaluation gate of a logit (1 or 0 for hard gates, `sigmoid(logit / T_final)`).
    pub fn gate_value(&self, logit: f32) -> f64 {
        match self.noise {
            GateNoise::Gumbel => f64::from(u8::from(logit > 0.0)),
            GateNoise::None => 1.0 / (1.0 + (-f64::from(logit) / self.final_temperature).exp()),
        }
    }

    /// Reads `gating.json` of a checkpoint folder; a folder without one (older checkpoints)
    /// was trained with Gumbel noise and evaluates with hard gates.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(GATING_FILE);
        if !path.exists() {
            return Ok(Self {
                noise: GateNoise::Gumbel,
                initial_temperature: 1.0,
                final_temperature: 0.001,
                anneal_steps: 0,
            });
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// Appends one row per projector to `gates.csv` (header when new): step, projector, the key
/// and value gate logits and their evaluation gates.
pub fn log_gates(out: &Path, step: usize, fuser: &Fuser, gating: &Gating) -> Result<()> {
    let path = out.join("gates.csv");
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if new {
        writeln!(
            f,
            "step,projector,key_logit,value_logit,key_gate,value_gate"
        )?;
    }
    for (i, p) in fuser.projectors.iter().enumerate() {
        let (k, v) = p.gate_logits()?;
        writeln!(
            f,
            "{step},{i},{k},{v},{:.6},{:.6}",
            gating.gate_value(k),
            gating.gate_value(v)
        )?;
    }
    Ok(())
}

/// Appends a row to `loss.csv` (header when new): step, train loss (mean of the step's batch),
/// validation loss (empty between validations).
pub fn log_loss(out: &Path, step: usize, train: Option<f64>, val: Option<f64>) -> Result<()> {
    let mut f = append_csv(&out.join("loss.csv"), "step,train_loss,val_loss")?;
    let cell = |x: Option<f64>| x.map(|x| x.to_string()).unwrap_or_default();
    writeln!(f, "{step},{},{}", cell(train), cell(val))?;
    Ok(())
}

/// Opens a CSV file for appending, writing `header` first when the file is new.
fn append_csv(path: &Path, header: &str) -> Result<std::fs::File> {
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    if new {
        writeln!(f, "{header}")?;
    }
    Ok(f)
}
