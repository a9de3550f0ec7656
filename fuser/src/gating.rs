//! The gating a trained fuser is evaluated and served with: `gating.json` beside a checkpoint
//! records how its training gated (noise, temperatures, anneal), and the gate evaluation uses is
//! the end of training's (docs/FUSER.md, "Gates that can learn"). `fuser eval` and the
//! receiver's C2C fuser read it here; the training schedule (`fuser train`) builds on it.

use std::path::Path;
use std::str::FromStr;

use c2c::train::gate_temperature;
use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::fused::{GateSource, HardGate};
use crate::train::SoftGates;

/// File name of the gating record beside a checkpoint.
pub const GATING_FILE: &str = "gating.json";

/// Gate noise during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateNoise {
    /// Gumbel-sigmoid, `sigmoid((logit + G) / T)`, G drawn per token, head, layer and step;
    /// evaluation uses the hard gate `1[logit > 0]`.
    Gumbel,
    /// `sigmoid(logit / T)`, deterministic; evaluation uses it at the final temperature (the
    /// gating of the last training step).
    None,
}

impl FromStr for GateNoise {
    type Err = String;

    /// `gumbel` or `none` (the command line's spelling, as `gating.json`'s).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "gumbel" => Ok(GateNoise::Gumbel),
            "none" => Ok(GateNoise::None),
            other => Err(format!("gate noise {other:?}: expected gumbel or none")),
        }
    }
}

/// How a run gates: noise, temperatures and the anneal length (`gating.json`).
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
    /// The gating of checkpoints written before `gating.json` existed: Gumbel training, hard
    /// gates at evaluation.
    pub const LEGACY: Gating = Gating {
        noise: GateNoise::Gumbel,
        initial_temperature: 1.0,
        final_temperature: 0.001,
        anneal_steps: 0,
    };

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

    /// The gating evaluation, validation and serving use: hard after Gumbel training, the
    /// noise-free gate at the final temperature otherwise (what the last training steps ran).
    /// Deterministic either way, so a fresh one per fused prompt gives the same gates.
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
    /// gets [`Gating::LEGACY`].
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(GATING_FILE);
        if !path.exists() {
            return Ok(Self::LEGACY);
        }
        crate::sidecar::read_json(&path, "gating", "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FuserError;

    #[test]
    fn gating_json_round_trips_and_a_missing_file_is_the_legacy_gating() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Gating::read(dir.path()).unwrap(), Gating::LEGACY);
        let g = Gating {
            noise: GateNoise::None,
            initial_temperature: 2.0,
            final_temperature: 0.5,
            anneal_steps: 10,
        };
        let text = serde_json::to_string(&g).unwrap();
        assert!(text.contains("\"none\""), "{text}");
        std::fs::write(dir.path().join(GATING_FILE), text).unwrap();
        assert_eq!(Gating::read(dir.path()).unwrap(), g);
        assert_eq!(g.temperature(10), 0.5);
        assert!((g.gate_value(0.0) - 0.5).abs() < 1e-12);
        std::fs::write(dir.path().join(GATING_FILE), "{").unwrap();
        assert!(matches!(
            Gating::read(dir.path()),
            Err(FuserError::Input { what: "gating", .. })
        ));
        assert_eq!("gumbel".parse::<GateNoise>(), Ok(GateNoise::Gumbel));
        assert!("soft".parse::<GateNoise>().is_err());
    }
}
