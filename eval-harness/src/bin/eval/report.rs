//! The end-of-run summary: accuracy with n and 95% CI, per-normalisation rank accuracies,
//! skipped counts, mean prompt tokens and seconds per question.

use assets::Provenance;
use eval_harness::{
    Accuracy, DEFAULT_RESAMPLES, Interval, SkipCounts, accuracy, bootstrap_accuracy_ci,
};
use serde::Serialize;

use crate::runner::Row;

/// What was run.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub model: String,
    pub weights: String,
    pub asset: Provenance,
    pub dataset: String,
    pub mode: String,
    pub seed: u64,
    pub shard: Option<String>,
    pub loaded: usize,
    pub skipped: SkipCounts,
    pub load_seconds: f64,
}

/// Accuracy of one scoring rule.
#[derive(Debug, Clone, Serialize)]
pub struct RuleAccuracy {
    pub rule: String,
    pub accuracy: Accuracy,
    pub ci95: Option<Interval>,
}

/// Measured results of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub run: RunInfo,
    pub results: Vec<RuleAccuracy>,
    pub mean_prompt_tokens: f64,
    pub seconds_per_question: f64,
    pub answered: usize,
    /// Items whose prefill started from the shared chat prefix's cache, and its length.
    pub prefix_reused_items: usize,
    pub prefix_tokens: usize,
    /// How often each choice letter was predicted (A, B, ...), to spot constant answers.
    pub predicted_letters: Vec<usize>,
}

fn rule(name: &str, flags: &[bool]) -> RuleAccuracy {
    RuleAccuracy {
        rule: name.to_owned(),
        accuracy: accuracy(flags),
        ci95: bootstrap_accuracy_ci(flags, DEFAULT_RESAMPLES, 0),
    }
}

impl Summary {
    /// Summarises the rows of one run.
    pub fn build(run: &RunInfo, rows: &[Row]) -> Self {
        let n = rows.len().max(1) as f64;
        let mut results = Vec::new();
        if run.mode == "rank" {
            for (i, name) in ["rank_raw", "rank_per_token", "rank_per_char"]
                .into_iter()
                .enumerate()
            {
                let flags: Vec<bool> = rows
                    .iter()
                    .map(|r| r.rank.get(i).is_some_and(|s| Some(s.prediction) == r.gold))
                    .collect();
                results.push(rule(name, &flags));
            }
        } else {
            results.push(rule(
                &run.mode,
                &rows.iter().map(|r| r.correct).collect::<Vec<_>>(),
            ));
        }
        Summary {
            run: run.clone(),
            results,
            mean_prompt_tokens: rows.iter().map(|r| r.prompt_tokens as f64).sum::<f64>() / n,
            seconds_per_question: rows.iter().map(|r| r.seconds).sum::<f64>() / n,
            answered: rows
                .iter()
                .filter(|r| r.prediction.is_some() || r.extracted.is_some())
                .count(),
            prefix_reused_items: rows.iter().filter(|r| r.reused_prefix_tokens > 0).count(),
            prefix_tokens: rows
                .iter()
                .map(|r| r.reused_prefix_tokens)
                .max()
                .unwrap_or(0),
            predicted_letters: letter_histogram(rows),
        }
    }

    /// Prints the human-readable summary to stdout.
    ///
    /// Rank mode's histogram is of the per-char prediction.
    pub fn print(&self) {
        let r = &self.run;
        println!(
            "model {} ({}) | {} | mode {} | seed {} shard {}",
            r.model,
            r.weights,
            r.dataset,
            r.mode,
            r.seed,
            r.shard.as_deref().unwrap_or("-")
        );
        for res in &self.results {
            let ci = res.ci95.map_or("-".to_owned(), |c| {
                format!("[{:.1}, {:.1}]", 100.0 * c.low, 100.0 * c.high)
            });
            println!(
                "  {:<15} acc {:5.1}%  ({}/{})  95% CI {ci}",
                res.rule,
                100.0 * res.accuracy.value,
                res.accuracy.correct,
                res.accuracy.n
            );
        }
        println!(
            "  skipped {} of {} loaded {:?} | answered {} | mean prompt tokens {:.1} | {:.3} s/question | load {:.1} s",
            r.skipped.total(),
            r.loaded,
            r.skipped,
            self.answered,
            self.mean_prompt_tokens,
            self.seconds_per_question,
            r.load_seconds
        );
        if self.prefix_reused_items > 0 {
            println!(
                "  shared chat prefix of {} tokens prefilled once, reused on {} items",
                self.prefix_tokens, self.prefix_reused_items,
            );
        }
        if !self.predicted_letters.is_empty() {
            let hist: Vec<String> = self
                .predicted_letters
                .iter()
                .enumerate()
                .map(|(i, n)| format!("{}:{n}", char::from(b'A' + i as u8)))
                .collect();
            println!("  predicted letters {}", hist.join(" "));
        }
    }
}

/// Counts of predicted choice indices (empty when nothing was predicted).
fn letter_histogram(rows: &[Row]) -> Vec<usize> {
    let mut counts = Vec::new();
    for i in rows.iter().filter_map(|r| r.prediction) {
        if counts.len() <= i {
            counts.resize(i + 1, 0);
        }
        counts[i] += 1;
    }
    counts
}
