//! The gates of a training run: the gating of the arguments, the gate each training step
//! samples, and the per-layer gate rows of `gates.csv` (the `gating.json` record and the gate
//! evaluation uses are `fuser::gating`'s, shared with the receiver's C2C fuser).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use c2c::checkpoint::Fuser;
use candle_core::Device;
use fuser::gating::{GateNoise, Gating};
use fuser::train::SoftGates;

use crate::train_cmd::TrainArgs;

/// The gating of a run's arguments.
pub fn gating_of(args: &TrainArgs) -> Result<Gating> {
    let fraction = args.anneal_fraction;
    anyhow::ensure!(
        (0.0..=1.0).contains(&fraction),
        "--anneal-fraction {fraction} is not in [0, 1]"
    );
    for t in [args.initial_temperature, args.final_temperature] {
        anyhow::ensure!(t.is_finite() && t > 0.0, "gate temperature {t} is not > 0");
    }
    Ok(Gating {
        noise: args.gate_noise,
        initial_temperature: args.initial_temperature,
        final_temperature: args.final_temperature,
        anneal_steps: (args.steps as f64 * fraction).round() as usize,
    })
}

/// The gates of training step `step` (`seed` drives the Gumbel noise).
pub fn training_gates(gating: &Gating, seed: u64, step: usize, device: &Device) -> SoftGates {
    let t = gating.temperature(step);
    match gating.noise {
        GateNoise::Gumbel => SoftGates::new(seed, t, device),
        GateNoise::None => SoftGates::without_noise(t, device),
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
