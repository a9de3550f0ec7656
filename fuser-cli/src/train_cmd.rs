//! `fuser train`: both models frozen, the projectors trained on the receiver's response
//! cross-entropy given the fused prompt cache.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use c2c::checkpoint::Fuser;
use c2c::projector::ProjectorDims;
use c2c::train::{LrSchedule, clip_grad_norm, init_gate_logits, trainable_fuser};
use candle_nn::VarMap;
use clap::{Args, ValueEnum};
use fuser::fused::GateSource;
use fuser::qat;
use fuser::train::{AdamW, AdamWConfig};
use indicatif::{ProgressBar, ProgressStyle};
use model_runtime::{KvCache, Model};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::context_data::ContextData;
use crate::context_task::{ContextTask, FillerArg};
use crate::gating::{gating_of, log_gates, log_loss, training_gates};
use crate::pair::{OpenPair, PairArgs};
use crate::shared_task::SharedTask;
use fuser::gating::{GATING_FILE, GateNoise, Gating};

/// Where the sharer cache comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SharerInput {
    /// The sharer reads the same prompt (C2C).
    SamePrompt,
    /// The sharer reads a different, randomly drawn training prompt (the control: same shapes,
    /// no information about this question); in the context layout another item's passage.
    #[value(alias = "random-passage")]
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

/// Where the sharer's K/V go in the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Both models read the same prompt; the fuser writes into the receiver's own rows.
    Shared,
    /// The sharer read a passage the receiver lacks; the fuser writes into context slots
    /// before the receiver's question.
    Context,
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
    /// Gate temperature at step 0.
    #[arg(long, default_value_t = 1.0)]
    pub initial_temperature: f64,
    /// Gate temperature at the end of the anneal (exponential from --initial-temperature).
    #[arg(long, default_value_t = 0.001)]
    pub final_temperature: f64,
    /// Fraction of --steps over which the temperature anneals; it stays at
    /// --final-temperature afterwards (the end of training runs with the evaluation gating).
    #[arg(long, default_value_t = 1.0)]
    pub anneal_fraction: f64,
    /// Gate noise during training: `gumbel` (evaluation then uses the hard gate) or `none`
    /// (evaluation uses the noise-free gate at --final-temperature).
    #[arg(long, default_value = "gumbel")]
    pub gate_noise: GateNoise,
    /// Initial gate logit of every projector branch (0, upstream's, is closed under the hard
    /// gate).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub gate_init: f64,
    /// Peak learning rate of the gate logits (same schedule; default: --lr).
    #[arg(long)]
    pub gate_lr: Option<f64>,
    /// Where the sharer's K/V go.
    #[arg(long, value_enum, default_value = "shared")]
    pub layout: Layout,
    /// Training data of the context layout (split by item id; see docs/FUSER.md).
    #[arg(long, value_enum, default_value = "boolq")]
    pub data: ContextData,
    /// The receiver's input in the context slots.
    #[arg(long, value_enum, default_value = "space")]
    pub filler: FillerArg,
    /// Context layout: longest passage kept (sharer tokens).
    #[arg(long, default_value_t = 384)]
    pub max_passage_tokens: usize,
    /// Context layout: keep every item's sharer cache after its first prefill (the sharer is
    /// frozen) instead of prefilling the passage at every visit; memory grows to one cache per
    /// item (Qwen2.5-0.5B f32: about 25 KB per passage token).
    #[arg(long)]
    pub cache_sharer: bool,
    /// Context layout: weight of slot distillation (fuser::slot_distill: every slot pulled
    /// towards the receiver's own reading of the passage) added to the answer's cross-entropy
    /// in training steps; validation loss stays the cross-entropy alone. 0: off. With
    /// `--cache-sharer` the targets are kept too (SmolLM2-135M f32: about 46 KB per slot).
    #[arg(long, default_value_t = 0.0)]
    pub distill_weight: f64,
    /// Context layout: the first N steps minimise slot distillation alone (no answer
    /// cross-entropy, so no receiver pass: a step costs the fuse and its backward), then
    /// `CE + --distill-weight * distill` for the rest of --steps. One learning-rate schedule
    /// over all steps; validation loss stays the cross-entropy.
    #[arg(long, default_value_t = 0)]
    pub distill_only_steps: usize,
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
    /// Stop (and checkpoint) after the first step that ends more than S seconds after training
    /// began (the models and data loaded), keeping the schedule of --steps: a long run in chunks
    /// that fit a machine's time limit, continued with --resume.
    #[arg(long)]
    pub time_limit: Option<f64>,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// Start from the projector weights of this checkpoint folder (its fuser.safetensors, same
    /// pair and projector shape) instead of a fresh initialisation: a new run with its own
    /// schedule and optimiser state, e.g. cross-entropy steps after a distillation-only run.
    /// With --resume the checkpoint in --out wins (the run was initialised before it).
    #[arg(long)]
    pub init_from: Option<PathBuf>,
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

/// The command line as typed, the program named by its file name (a binary's folder is a
/// machine path, kept out of provenance).
fn command_line() -> String {
    let mut args = std::env::args();
    let program = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map_or(p.clone(), |n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "fuser".into());
    std::iter::once(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
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

/// The two parts of a task's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskPart {
    /// Training items.
    Train,
    /// Validation items.
    Val,
}

/// What the trainer trains on: the items of a layout, their loss and their provenance.
pub trait Task {
    /// Items in `part`.
    fn len(&self, part: TaskPart) -> usize;
    /// The id of item `index` of `part`.
    fn id(&self, part: TaskPart, index: usize) -> &str;
    /// The loss of item `index` of `part` through `model`: fused with `fuser` under `gates`, or
    /// the receiver alone (`fused = false`). `rng` draws the control's other item.
    #[allow(clippy::too_many_arguments)]
    fn loss(
        &self,
        model: &Model,
        fuser: &Fuser,
        part: TaskPart,
        index: usize,
        fused: bool,
        rng: &mut ChaCha8Rng,
        gates: &mut dyn GateSource,
    ) -> Result<candle_core::Tensor>;
    /// What provenance.json says about the data.
    fn provenance(&self) -> serde_json::Value;
    /// Files written beside the checkpoint (name, JSON).
    fn extra_files(&self) -> Vec<(&'static str, serde_json::Value)> {
        Vec::new()
    }
    /// Terms of the training loss besides the answer's cross-entropy, as (name, mean over the
    /// items since the last call): logged with each step.
    fn take_step_terms(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    /// Called before the training losses of step `step` (0-based): tasks whose loss changes
    /// with the phase of training set it here.
    fn begin_step(&self, _step: usize) {}
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
    /// Fresh projectors for the pair's shapes (gate logits at `--gate-init`, their learning
    /// rate `--gate-lr`), or the checkpoint in `--out` with `--resume`.
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
        init_gate_logits(&varmap, args.gate_init)?;
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
        if let Some(gate_lr) = args.gate_lr {
            anyhow::ensure!(
                args.lr > 0.0 && gate_lr >= 0.0,
                "--gate-lr {gate_lr} needs --lr > 0"
            );
            opt.scale_lr("gate_logit", gate_lr / args.lr);
        }
        let resuming = args.resume && folder.weights.exists();
        if let Some(dir) = args.init_from.as_ref().filter(|_| !resuming) {
            let weights = dir.join("fuser.safetensors");
            varmap
                .load(&weights)
                .with_context(|| format!("--init-from: loading {}", weights.display()))?;
            eprintln!("projectors initialised from {}", weights.display());
        }
        let mut start_step = 0;
        if resuming {
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

/// One training run: the models, the task, the projectors and the run folder.
struct Trainer<'a> {
    args: &'a TrainArgs,
    pair: &'a OpenPair,
    task: &'a dyn Task,
    gating: Gating,
    /// The receiver with differentiable kernels (gradients reach the projectors through it).
    receiver_ag: Model,
    projectors: Projectors,
    folder: RunFolder,
    log: File,
    started: Instant,
    /// The commit of the code, read when the run starts (the tree may move on while it trains).
    commit: String,
    /// With `--init-from`: the folder and the provenance of the run that wrote the starting
    /// weights, read when the run starts.
    initialised_from: Option<serde_json::Value>,
}

/// What one optimiser step did.
struct StepStats {
    loss: f64,
    lr: f64,
    temperature: f64,
    grad_norm: f64,
    terms: Vec<(&'static str, f64)>,
}

impl Trainer<'_> {
    /// Mean validation loss under the evaluation gating: fused, or the receiver alone.
    fn validate(&self, fused: bool) -> Result<f64> {
        let n = self.task.len(TaskPart::Val);
        let mut vrng = ChaCha8Rng::seed_from_u64(self.args.seed ^ 0x5eed);
        let mut gates = self.gating.evaluation(&self.pair.device);
        let model = &self.pair.receiver.model;
        let fuser = &self.projectors.fuser;
        let mut total = 0.0;
        for i in 0..n {
            let loss = self.task.loss(
                model,
                fuser,
                TaskPart::Val,
                i,
                fused,
                &mut vrng,
                gates.as_mut(),
            )?;
            total += f64::from(loss.to_scalar::<f32>()?);
        }
        Ok(total / n as f64)
    }

    /// One optimiser step over `--batch` items with this step's training gates.
    fn step(&mut self, step: usize, schedule: &LrSchedule) -> Result<StepStats> {
        let args = self.args;
        let n = self.task.len(TaskPart::Train);
        // Deterministic per step, so a resumed run continues the same sequence.
        let mut srng = ChaCha8Rng::seed_from_u64(args.seed.wrapping_add(0x9e37 * step as u64 + 1));
        let mut gates = training_gates(&self.gating, srng.random(), step, &self.pair.device);
        self.task.begin_step(step);
        let mut losses = Vec::with_capacity(args.batch);
        for b in 0..args.batch {
            let index = (step * args.batch + b) % n;
            let loss = self
                .task
                .loss(
                    &self.receiver_ag,
                    &self.projectors.fuser,
                    TaskPart::Train,
                    index,
                    true,
                    &mut srng,
                    &mut gates,
                )
                .with_context(|| format!("item {}", self.task.id(TaskPart::Train, index)))?;
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
            temperature: gates.temperature,
            grad_norm,
            terms: self.task.take_step_terms(),
        })
    }

    /// Whether `--time-limit` has passed.
    fn past_time_limit(&self) -> bool {
        self.args
            .time_limit
            .is_some_and(|limit| self.started.elapsed().as_secs_f64() >= limit)
    }

    /// Writes the projectors, the optimiser state, provenance.json, gating.json and the task's
    /// own files.
    fn save(&self, step: usize, val_loss: Option<f64>) -> Result<()> {
        let (args, pair, folder) = (self.args, self.pair, &self.folder);
        c2c::checkpoint::save(&self.projectors.fuser, &folder.weights, &folder.config)?;
        self.projectors.opt.save(&folder.optimizer)?;
        let mut provenance = json!({
            "command": command_line(),
            "args": args,
            "pair": pair.config.name,
            "receiver": pair.receiver.source,
            "sharer": pair.sharer.source,
            "receiver_weights_sha256": pair.receiver.weights_sha256,
            "sharer_weights_sha256": pair.sharer.weights_sha256,
            "commit": self.commit,
            "steps_done": step,
            "seed": args.seed,
            "projector_params": self.projectors.n_params,
            "gating": &self.gating,
            "last_val_loss": val_loss,
            "seconds": self.started.elapsed().as_secs_f64(),
        });
        if let (Some(p), serde_json::Value::Object(task)) =
            (provenance.as_object_mut(), self.task.provenance())
        {
            p.extend(task);
        }
        if let Some(start) = &self.initialised_from {
            provenance["initialised_from"] = start.clone();
        }
        let write = |name: &str, value: &serde_json::Value| -> Result<()> {
            std::fs::write(args.out.join(name), serde_json::to_string_pretty(value)?)
                .with_context(|| format!("writing {name}"))
        };
        write("provenance.json", &provenance)?;
        write(GATING_FILE, &json!(&self.gating))?;
        for (name, value) in self.task.extra_files() {
            write(name, &value)?;
        }
        Ok(())
    }

    /// A validation: loss under the evaluation gating, gate rows, log lines.
    fn checkpoint_validation(&mut self, done: usize, bar: &ProgressBar) -> Result<f64> {
        let v = self.validate(true)?;
        let fuser = &self.projectors.fuser;
        let gates = gate_summary(fuser)?;
        bar.println(format!(
            "step {done}: val loss {v:.4} (evaluation gating), open gates K {}/{} V {}/{}",
            gates.0, gates.2, gates.1, gates.2
        ));
        let logits = fuser
            .projectors
            .iter()
            .map(|p| p.gate_logits())
            .collect::<c2c::Result<Vec<_>>>()?;
        writeln!(
            self.log,
            "{}",
            json!({"step": done, "val_loss": v, "open_key_gates": gates.0,
                "open_value_gates": gates.1, "gate_logits": logits})
        )?;
        log_gates(&self.args.out, done, fuser, &self.gating)?;
        Ok(v)
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
            log_loss(&args.out, 0, None, Some(base))?;
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
        let mut end = args.stop_at_step.unwrap_or(args.steps).min(args.steps);
        for step in start_step..end {
            let s = self.step(step, &schedule)?;
            ema = Some(ema.map_or(s.loss, |e| 0.98 * e + 0.02 * s.loss));
            let mut line = json!({"step": step + 1, "loss": s.loss, "lr": s.lr, "temperature": s.temperature, "grad_norm": s.grad_norm});
            for (name, value) in &s.terms {
                line[*name] = json!(value);
            }
            writeln!(self.log, "{line}")?;
            bar.set_message(format!(
                "loss {:.3} lr {:.1e} T {:.3}",
                ema.unwrap_or(s.loss),
                s.lr,
                s.temperature
            ));
            bar.inc(1);
            let done = step + 1;
            let mut val = None;
            if done % args.val_every == 0 || done == end {
                val = Some(self.checkpoint_validation(done, &bar)?);
                last_val = val;
            }
            log_loss(&args.out, done, Some(s.loss), val)?;
            if done % args.ckpt_every == 0 || done == end {
                self.save(done, last_val)?;
            }
            if done < end && self.past_time_limit() {
                bar.println(format!(
                    "time limit reached after step {done} of {}: checkpointing; --resume continues",
                    args.steps
                ));
                end = done;
                break;
            }
        }
        bar.finish_and_clear();
        self.save(end, last_val)?;
        Ok(end)
    }
}

/// Trains on `task` into `--out` (fresh, or resumed with `--resume`); returns the steps run.
pub fn train_with(args: &TrainArgs, pair: &OpenPair, task: &dyn Task) -> Result<usize> {
    let started = Instant::now();
    let folder = RunFolder::create(args)?;
    let projectors = Projectors::new(args, pair, &folder)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(args.out.join("train_log.jsonl"))?;
    let start_step = projectors.start_step;
    let mut trainer = Trainer {
        args,
        pair,
        task,
        gating: gating_of(args)?,
        receiver_ag: pair.receiver.model.clone().with_autograd(true),
        projectors,
        folder,
        log,
        started,
        commit: git_commit(),
        initialised_from: args.init_from.as_ref().map(|dir| {
            let start = std::fs::read_to_string(dir.join("provenance.json"))
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
            json!({"folder": dir, "provenance": start})
        }),
    };
    let end = trainer.train()?;
    eprintln!(
        "trained {} steps in {:.0} s; checkpoint in {}",
        end.saturating_sub(start_step),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(end.saturating_sub(start_step))
}

/// Runs `fuser train`.
pub fn run(args: TrainArgs) -> Result<()> {
    gating_of(&args)?;
    if args.layout == Layout::Context && args.data == ContextData::SciqContext {
        bail!("--data sciq-context is evaluation-only (its items are never trained on)");
    }
    if args.layout == Layout::Shared && (args.distill_weight != 0.0 || args.distill_only_steps > 0)
    {
        bail!("slot distillation (--distill-weight, --distill-only-steps) needs --layout context");
    }
    let pair = args.models.open()?;
    match args.layout {
        Layout::Shared => {
            let task = SharedTask::load(&pair.store, &pair, &args)?;
            train_with(&args, &pair, &task)?;
        }
        Layout::Context => {
            let task = ContextTask::load(&pair.store, &pair, &args)?;
            train_with(&args, &pair, &task)?;
        }
    }
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

#[cfg(test)]
mod command_line_tests {
    #[test]
    fn the_recorded_command_names_the_program_without_its_folder() {
        let line = super::command_line();
        let program = line.split(' ').next().unwrap();
        assert!(!program.is_empty() && !program.contains('/'), "{line}");
    }
}
