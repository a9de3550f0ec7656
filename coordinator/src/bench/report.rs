//! `bench.json`: the machine, the exact command line, the set-up, per phase the service
//! processes with their peak memory, per prompt length and method the quantiles and bytes, and
//! the ratios the targets name (measured in the same run).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::BenchError;
use super::random_fuser::RandomFuser;
use super::stats::Summary;
use crate::manifest::{GitInfo, SystemInfo};

/// The machine the benchmark ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Host, CPU model, cores, memory, OS.
    pub system: SystemInfo,
    /// One line per GPU from `nvidia-smi` (index, name, memory, driver); empty without it.
    pub gpus: Vec<String>,
    /// The commit of the working directory (`unknown` outside a repository; set
    /// `KVWIRE_GIT_COMMIT` on a machine with binaries only).
    pub git: GitInfo,
}

impl Machine {
    /// Reads this machine.
    pub fn collect() -> Machine {
        Machine {
            system: SystemInfo::collect(),
            gpus: super::gpu_memory::gpu_names(),
            git: GitInfo::collect(Path::new(".")),
        }
    }
}

/// Where the C2C fuser came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FuserRecord {
    /// `random` (initialised by the bench: timing only) or `dir` (given with --fuser).
    pub kind: String,
    /// The folder the receiver loaded.
    pub dir: String,
    /// Shapes and seed of a random fuser.
    pub random: Option<RandomFuser>,
}

/// What was run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setup {
    /// Receiver model spec.
    pub receiver: String,
    /// Sharer model spec (C2C and T2T).
    pub sharer: String,
    /// Sharer of the same-model KV methods.
    pub same_model_sharer: String,
    /// Device of both services.
    pub device: String,
    /// Their dtype.
    pub dtype: String,
    /// Prompt lengths, receiver tokens.
    pub prompt_tokens: Vec<usize>,
    /// Warm-up requests per method and length (not measured).
    pub warmup: usize,
    /// Measured requests per method and length, one at a time.
    pub requests: usize,
    /// Seed of the synthetic items.
    pub seed: u64,
    /// The methods run.
    pub methods: Vec<String>,
    /// How prompts are laid out and scored, in words.
    pub layout: String,
    /// What T2T is, in words.
    pub t2t: String,
    /// The C2C fuser, when C2C ran.
    pub fuser: Option<FuserRecord>,
}

/// One service process of a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// `sharer` or `receiver`.
    pub service: String,
    /// Its model spec.
    pub model: String,
    /// Its process id.
    pub pid: u32,
    /// Peak resident memory (`VmHWM`), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Peak GPU memory from `nvidia-smi`, MiB; `None`: not measured.
    pub peak_gpu_mib: Option<u64>,
}

/// Memory use of the card a phase ran on (every process on it, ours and others), MiB.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CardMemory {
    /// The card's index (as nvidia-smi numbers them; `CUDA_VISIBLE_DEVICES` may renumber).
    pub index: u32,
    /// Used before the phase's processes started.
    pub before_mib: u64,
    /// The largest use seen during the phase.
    pub peak_mib: u64,
}

/// One set-up of services and the methods run on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRecord {
    /// `same-model` or `pair`.
    pub phase: String,
    /// The receiver's fuser (`identity`, `c2c`, `none`).
    pub receiver_fuser: String,
    /// The sharer and the receiver.
    pub processes: Vec<ProcessRecord>,
    /// `measured (nvidia-smi every 100 ms)` or why not.
    pub gpu_memory: String,
    /// The card's memory use before and during the phase, when measured.
    pub card: Option<CardMemory>,
    /// Seconds from spawn until both services were healthy (model loading).
    pub startup_s: f64,
}

/// One method at one prompt length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    /// `receiver-only`, `kv-int8`, `c2c-fp16`, `t2t`, ...
    pub method: String,
    /// The phase it ran in.
    pub phase: String,
    /// Measured requests.
    pub requests: usize,
    /// Quantiles and bytes.
    pub summary: Summary,
}

/// Every method at one prompt length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LengthResult {
    /// Receiver prompt tokens.
    pub prompt_tokens: usize,
    /// In method order.
    pub methods: Vec<MethodResult>,
}

/// A ratio of two methods' client end-to-end medians at one length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// Receiver prompt tokens.
    pub prompt_tokens: usize,
    /// The method above the line.
    pub numerator: String,
    /// The method below it.
    pub denominator: String,
    /// p50 over p50.
    pub value: f64,
}

/// The whole `bench.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The machine.
    pub machine: Machine,
    /// The command line, as typed (arguments joined by spaces).
    pub command_line: String,
    /// What was run.
    pub setup: Setup,
    /// The service set-ups, in run order.
    pub phases: Vec<PhaseRecord>,
    /// Per prompt length.
    pub results: Vec<LengthResult>,
    /// The targets' ratios.
    pub ratios: Vec<Ratio>,
}

/// The ratio pairs reported when both methods ran: every C2C payload against receiver-only,
/// T2T against every C2C payload, and same-model fp16 KV against receiver-only.
const RATIOS: [(&str, &str); 7] = [
    ("c2c-fp16", "receiver-only"),
    ("c2c-int8", "receiver-only"),
    ("c2c-int4", "receiver-only"),
    ("t2t", "c2c-fp16"),
    ("t2t", "c2c-int8"),
    ("t2t", "c2c-int4"),
    ("kv-fp16", "receiver-only"),
];

/// The ratios of `results` whose two methods ran.
pub fn ratios(results: &[LengthResult]) -> Vec<Ratio> {
    let mut out = Vec::new();
    for length in results {
        let p50 = |name: &str| {
            length
                .methods
                .iter()
                .find(|m| m.method == name)
                .map(|m| m.summary.client_end_to_end_ms.p50)
        };
        for (num, den) in RATIOS {
            if let (Some(a), Some(b)) = (p50(num), p50(den))
                && b > 0.0
            {
                out.push(Ratio {
                    prompt_tokens: length.prompt_tokens,
                    numerator: num.into(),
                    denominator: den.into(),
                    value: a / b,
                });
            }
        }
    }
    out
}

impl BenchReport {
    /// Writes `bench.json` into `dir`.
    pub fn write_json(&self, dir: &Path) -> Result<(), BenchError> {
        let path = dir.join("bench.json");
        let text =
            serde_json::to_string_pretty(self).map_err(|e| BenchError::Invalid(e.to_string()))?;
        std::fs::write(&path, text + "\n").map_err(BenchError::io("writing", &path))
    }
}
