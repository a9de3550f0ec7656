//! `coordinator bench`: latency, bytes and memory of every method with `sharer-svc` and
//! `receiver-svc` as two separate processes talking real gRPC over loopback
//! (docs/BENCHMARK.md).
//!
//! Two phases, one after the other, each with its own pair of processes: `same-model` (the
//! receiver's model as its own sharer, identity fuser: receiver-only and KV at fp16/int8/int4)
//! and `pair` (the sharer model; a C2C fuser when one is given or initialised at random: C2C at
//! fp16/int8/int4, and T2T). Per prompt length T (exact receiver tokens, [`prompt`]) and
//! method: warm-up calls, then measured calls one at a time; p50/p95 of every stage the reply
//! carries and of the client's end-to-end time, median bytes, and per phase each process's peak
//! RSS and (on CUDA, with `nvidia-smi`) peak GPU memory. Written as `bench.json` and `bench.md`.

pub mod config;
pub mod error;
pub mod gpu_memory;
pub mod markdown;
pub mod methods;
pub mod models;
pub mod phase;
pub mod process;
pub mod prompt;
pub mod random_fuser;
pub mod report;
pub mod stats;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::BenchError;
pub use methods::{Method, Phase};
pub use phase::Progress;
pub use report::BenchReport;

use config::{Placement, ReceiverFuser};
use models::SpecInfo;
use phase::{Items, PhasePlan};
use process::{Role, binary_in};
use report::{FuserRecord, LengthResult, Machine, MethodResult, Setup};

/// Tokens of room above the longest T in the services' prompt limits (the T2T message comes
/// before the receiver's prompt; the sharer's hint prompt wraps the question).
const PROMPT_HEADROOM: usize = 1024;

/// Where the C2C fuser comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum FuserSource {
    /// No fuser: the C2C methods are not run.
    None,
    /// A trained fuser folder (`fuser.safetensors` + `fuser.json`).
    Dir(PathBuf),
    /// Initialised at random by the bench at the pair's shapes (timing only).
    Random {
        /// Projector width (1024 for the released C2C fuser's shapes).
        hidden: usize,
        /// Initialisation seed.
        seed: u64,
    },
}

/// Everything a benchmark run needs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Folder holding `sharer-svc` and `receiver-svc`.
    pub bin_dir: PathBuf,
    /// Output folder (`bench.json`, `bench.md`, and `work/` with configs and service logs).
    pub out: PathBuf,
    /// Receiver model spec.
    pub receiver: String,
    /// Sharer model spec (C2C, T2T).
    pub sharer: String,
    /// Sharer of the same-model KV methods (default: the receiver's spec).
    pub same_model_sharer: Option<String>,
    /// `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// `f32`, `bf16`, `f16`.
    pub dtype: String,
    /// Prompt lengths, receiver tokens.
    pub prompt_tokens: Vec<usize>,
    /// Warm-up calls per method and length.
    pub warmup: usize,
    /// Measured calls per method and length.
    pub requests: usize,
    /// Seed of the synthetic items.
    pub seed: u64,
    /// The C2C fuser.
    pub fuser: FuserSource,
    /// Methods to run (`None`: all that the set-up allows).
    pub methods: Option<Vec<Method>>,
    /// Longest wait for a service to become healthy.
    pub ready_timeout: Duration,
    /// Deadline of one evaluation in the receiver, seconds.
    pub request_timeout_secs: u64,
    /// The command line, for the report.
    pub command_line: String,
}

const LAYOUT: &str = "shared-prompt layout (both models read the whole prompt, as in the C2C \
    paper; the sharer sends every prompt position but the last), rank scoring (the OLMES \
    context `Question: ...\\nAnswer:` of exactly T receiver tokens, seeded filler words, and 4 \
    one-word choices); KV methods: selection all, per-block scales";

const T2T: &str = "the text method with a generated hint: the sharer prefills its hint prompt \
    (the question and choices in its chat template) and generates up to 64 tokens greedily; the \
    receiver prefills the message before its prompt and scores. Its `transfer` stage is the whole \
    Message call (generation included) and its `score` stage adds the sharer's generation to the \
    receiver's scoring";

/// The methods to run, checked against the fuser.
fn methods(options: &BenchOptions) -> Result<Vec<Method>, BenchError> {
    let has_fuser = options.fuser != FuserSource::None;
    match &options.methods {
        None => Ok(Method::all()
            .into_iter()
            .filter(|m| has_fuser || !matches!(m, Method::C2c(_)))
            .collect()),
        Some(list) => {
            if let Some(m) = list.iter().find(|m| matches!(m, Method::C2c(_)))
                && !has_fuser
            {
                return Err(BenchError::Invalid(format!(
                    "{m} needs a fuser: --fuser DIR or --random-fuser HIDDEN"
                )));
            }
            Ok(Method::all()
                .into_iter()
                .filter(|m| list.contains(m))
                .collect())
        }
    }
}

fn check(options: &BenchOptions) -> Result<(), BenchError> {
    if options.requests == 0 {
        return Err(BenchError::Invalid("--requests must be at least 1".into()));
    }
    if options.prompt_tokens.is_empty() || options.prompt_tokens.contains(&0) {
        return Err(BenchError::Invalid(
            "--prompt-tokens needs one or more lengths above 0".into(),
        ));
    }
    let mut sorted = options.prompt_tokens.clone();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(BenchError::Invalid(
            "--prompt-tokens names a length twice".into(),
        ));
    }
    Ok(())
}

/// The items of every length: `warmup + requests` each, seeded by (seed, T, index).
fn items(options: &BenchOptions, receiver: &SpecInfo) -> Result<Items, BenchError> {
    let tokenizer = receiver.tokenizer()?;
    let per_length = options.warmup + options.requests;
    let mut lengths = Vec::new();
    for &t in &options.prompt_tokens {
        let list = (0..per_length)
            .map(|i| {
                let seed = options
                    .seed
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                    .wrapping_add((t as u64) << 20)
                    .wrapping_add(i as u64);
                prompt::item_of_length(&tokenizer, t, seed, &format!("bench-t{t}-{i}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        lengths.push((t, list));
    }
    Ok(Items {
        lengths,
        warmup: options.warmup,
    })
}

/// The receiver fuser of the pair phase, and its record.
fn pair_fuser(
    options: &BenchOptions,
    receiver: &SpecInfo,
    work: &Path,
) -> Result<(ReceiverFuser, Option<FuserRecord>), BenchError> {
    let (dir, random) = match &options.fuser {
        FuserSource::None => return Ok((ReceiverFuser::None, None)),
        FuserSource::Dir(dir) => {
            let config = dir.join("fuser.json");
            if !config.is_file() {
                return Err(BenchError::Invalid(format!(
                    "--fuser {}: no fuser.json there",
                    dir.display()
                )));
            }
            (dir.clone(), None)
        }
        FuserSource::Random { hidden, seed } => {
            let sharer = SpecInfo::read(&options.sharer)?;
            let dir = work.join("fuser-random");
            let made = random_fuser::write(&dir, &receiver.config, &sharer.config, *hidden, *seed)?;
            (dir, Some(made))
        }
    };
    let sharer_tokenizer = SpecInfo::read(&options.sharer)?.tokenizer_file(work)?;
    let record = FuserRecord {
        kind: if random.is_some() { "random" } else { "dir" }.into(),
        dir: dir.display().to_string(),
        random,
    };
    let fuser = ReceiverFuser::C2c {
        dir: dir.display().to_string(),
        sharer_tokenizer: sharer_tokenizer.display().to_string(),
    };
    Ok((fuser, Some(record)))
}

/// Runs the benchmark and writes `bench.json` and `bench.md` into `options.out`.
pub async fn run(
    options: &BenchOptions,
    progress: &dyn Progress,
) -> Result<BenchReport, BenchError> {
    check(options)?;
    let sharer_bin = binary_in(&options.bin_dir, Role::Sharer)?;
    let receiver_bin = binary_in(&options.bin_dir, Role::Receiver)?;
    let methods = methods(options)?;
    let work = options.out.join("work");
    std::fs::create_dir_all(&work).map_err(BenchError::io("creating", &work))?;
    let work = work
        .canonicalize()
        .map_err(BenchError::io("resolving", &work))?;
    let receiver = SpecInfo::read(&options.receiver)?;
    let items = items(options, &receiver)?;
    let same_sharer = options
        .same_model_sharer
        .clone()
        .unwrap_or_else(|| options.receiver.clone());
    let needs_pair = methods.iter().any(|m| m.phase() == Phase::Pair);
    let (pair_fuser, fuser_record) = if needs_pair {
        pair_fuser(options, &receiver, &work)?
    } else {
        (ReceiverFuser::None, None)
    };
    let longest = options.prompt_tokens.iter().max().copied().unwrap_or(0);
    let placement = Placement {
        device: options.device.clone(),
        dtype: options.dtype.clone(),
        max_prompt_tokens: longest + PROMPT_HEADROOM,
        timeout_secs: options.request_timeout_secs,
    };
    let phases = [
        (
            Phase::SameModel,
            same_sharer.as_str(),
            ReceiverFuser::Identity,
        ),
        (Phase::Pair, options.sharer.as_str(), pair_fuser),
    ];
    let calls_per_method = (items.lengths.len() * (options.warmup + options.requests)) as u64;
    progress.begin(calls_per_method * methods.len() as u64);
    let mut records = Vec::new();
    let mut summaries = Vec::new();
    for (phase, sharer_model, fuser) in phases {
        let phase_methods: Vec<Method> = methods
            .iter()
            .copied()
            .filter(|m| m.phase() == phase)
            .collect();
        if phase_methods.is_empty() {
            continue;
        }
        let plan = PhasePlan {
            phase,
            sharer_model,
            receiver_model: &options.receiver,
            fuser,
            methods: phase_methods,
            placement: &placement,
            binaries: (&sharer_bin, &receiver_bin),
            work: &work,
            ready_timeout: options.ready_timeout,
        };
        let (record, s) = phase::run(plan, &items, progress).await?;
        records.push(record);
        summaries.extend(s);
    }
    let results = assemble(options, &methods, summaries);
    let report = BenchReport {
        machine: Machine::collect(),
        command_line: options.command_line.clone(),
        setup: Setup {
            receiver: options.receiver.clone(),
            sharer: options.sharer.clone(),
            same_model_sharer: same_sharer,
            device: options.device.clone(),
            dtype: options.dtype.clone(),
            prompt_tokens: options.prompt_tokens.clone(),
            warmup: options.warmup,
            requests: options.requests,
            seed: options.seed,
            methods: methods.iter().map(Method::to_string).collect(),
            layout: LAYOUT.into(),
            t2t: T2T.into(),
            fuser: fuser_record,
        },
        phases: records,
        ratios: report::ratios(&results),
        results,
    };
    report.write_json(&options.out)?;
    let md = options.out.join("bench.md");
    std::fs::write(&md, markdown::render(&report)).map_err(BenchError::io("writing", &md))?;
    Ok(report)
}

/// Per length, the methods in report order.
fn assemble(
    options: &BenchOptions,
    methods: &[Method],
    summaries: Vec<(usize, Method, stats::Summary)>,
) -> Vec<LengthResult> {
    options
        .prompt_tokens
        .iter()
        .map(|&t| LengthResult {
            prompt_tokens: t,
            methods: methods
                .iter()
                .filter_map(|m| {
                    let (_, _, s) = summaries.iter().find(|(st, sm, _)| *st == t && sm == m)?;
                    Some(MethodResult {
                        method: m.to_string(),
                        phase: m.phase().label().into(),
                        requests: options.requests,
                        summary: s.clone(),
                    })
                })
                .collect(),
        })
        .collect()
}
