//! The regime map (`coordinator regime-map`, docs/REGIME_MAP.md): where sending the sharer's
//! cache beats sending text, per (pair, task, link, byte budget), from the rows of one or more
//! run folders.
//!
//! - A **regime** is (pair, dataset with its context length, link); its **budgets** are the
//!   caps its cells were run at, and `uncapped`.
//! - At budget B a cell **fits** when its cap is at most B, or when it has no cap and sent at
//!   most B bytes per sample on average; at `uncapped` every cell fits.
//! - Among the fitting cells of each **kind** (cache: KV and C2C; text: every text method) the
//!   **best** is the one with the highest accuracy, then the lowest mean end-to-end latency,
//!   then the fewest mean bytes, then the method label and cell id (deterministic; each tie that
//!   decided something is written down).
//! - The best cache and the best text meet on the items answered by both: the paired accuracy
//!   difference with its 95% bootstrap interval, and the paired mean latency difference with
//!   its interval. The **verdict**: the kind whose accuracy is higher when the interval excludes
//!   zero; otherwise the kind that is faster when that interval excludes zero; otherwise a tie.
//!
//! Latency is the receiver's measured `end_to_end` per sample on the row's own link (sharer
//! compute, the transfer over the link and the receiver's compute, as they happened); nothing
//! is composed here. Statistics come from `eval_harness` (Wilson, paired bootstrap).

use std::collections::BTreeMap;
use std::path::PathBuf;

use eval_harness::{mean, paired_difference_ci, paired_mean_difference_ci, wilson_95};

use crate::error::RegistryError;
use crate::method::MethodSpec;
use crate::plot::points::family;
use crate::registry::RunDir;
use crate::summary::dataset_label;

/// Bootstrap resamples and seed of every interval of the map.
pub const RESAMPLES: usize = 10_000;
const SEED: u64 = 0;

/// A budget as people write it: `256 B`, `32 KiB`, `uncapped`.
pub fn budget_label(budget: Option<u64>) -> String {
    match budget {
        None => "uncapped".into(),
        Some(b) if b >= 1024 && b % 1024 == 0 => format!("{} KiB", b / 1024),
        Some(b) => format!("{b} B"),
    }
}

/// What a method sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Nothing (receiver alone) or the sharer's answer: the floor, not a contender.
    Alone,
    /// A KV cache (KV or C2C).
    Cache,
    /// Text.
    Text,
}

impl Kind {
    fn of(method: &MethodSpec) -> Kind {
        match method {
            MethodSpec::Kv(_) | MethodSpec::C2c(_) => Kind::Cache,
            MethodSpec::Text(_) => Kind::Text,
            MethodSpec::ReceiverOnly(_) | MethodSpec::SharerOnly(_) => Kind::Alone,
        }
    }
}

/// One cell's answered samples, as the map uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct CellView {
    /// The run folder.
    pub run: PathBuf,
    /// Cell id.
    pub cell_id: String,
    /// Pair label.
    pub pair: String,
    /// Dataset label (with its context length).
    pub dataset: String,
    /// Link profile (`loopback` when the cell names none).
    pub link: String,
    /// Method label and its family (the label without `@cap`).
    pub method: String,
    /// Family of the label.
    pub family: String,
    /// Kind.
    pub kind: Kind,
    /// Cap.
    pub cap: Option<u64>,
    /// Seed of the dataset subset and the shard, as `seed S` / `seed S, shard I/N`.
    pub slice: String,
    /// Correctness by sample id.
    pub correct: BTreeMap<String, bool>,
    /// End-to-end latency by sample id, ms.
    pub e2e_ms: BTreeMap<String, f64>,
    /// Mean measured bytes per sample.
    pub mean_bytes: f64,
    /// Mean transfer time per sample (all rounds), ms, when the method transfers: the
    /// receiver's `transfer` stage (KV: first to last frame; text: the whole `Message` call).
    pub transfer_ms: Option<f64>,
    /// Mean time of the sharer calls per sample, ms: request to the last byte of the reply,
    /// `first_frame_wait + transfer` (for text, where `first_frame_wait` is 0, the same as
    /// `transfer_ms`). The like-for-like figure between cache and text methods.
    pub sharer_call_ms: Option<f64>,
    /// Samples in the cell's plan (answered or not).
    pub planned: usize,
}

impl CellView {
    /// Whether every sample of the cell's plan is answered: only such cells enter the map (a
    /// cell stopped part-way would be judged on another, smaller set of items than its rivals).
    pub fn is_complete(&self) -> bool {
        self.n() >= self.planned
    }

    /// Answered samples.
    pub fn n(&self) -> usize {
        self.correct.len()
    }

    /// Accuracy over the answered samples.
    pub fn accuracy(&self) -> f64 {
        let k = self.correct.values().filter(|c| **c).count();
        k as f64 / self.n().max(1) as f64
    }

    /// Wilson 95% interval of the accuracy.
    pub fn accuracy_ci(&self) -> (f64, f64) {
        let k = self.correct.values().filter(|c| **c).count();
        wilson_95(k, self.n()).unwrap_or((0.0, 1.0))
    }

    /// Mean end-to-end latency, ms.
    pub fn e2e_mean_ms(&self) -> f64 {
        mean(&self.e2e_ms.values().copied().collect::<Vec<_>>()).unwrap_or(f64::NAN)
    }

    /// Whether the cell fits budget `budget` (`None`: uncapped).
    pub fn fits(&self, budget: Option<u64>) -> bool {
        match (budget, self.cap) {
            (None, _) => true,
            (Some(b), Some(cap)) => cap <= b,
            (Some(b), None) => self.mean_bytes <= b as f64,
        }
    }
}

/// Reads every cell with an answered sample from `runs`.
pub fn load(runs: &[PathBuf]) -> Result<Vec<CellView>, RegistryError> {
    let mut out = Vec::new();
    for run in runs {
        let dir = RunDir::open(run)?;
        for plan in dir.read_plans()? {
            let rows = dir.read_rows(&plan.cell.id)?;
            let c = &plan.cell.config;
            let answered = rows.answered();
            let ok: Vec<_> = answered
                .into_iter()
                .filter(|(_, r)| r.correct.is_some())
                .collect();
            if ok.is_empty() {
                continue;
            }
            let transfers: Vec<f64> = ok
                .iter()
                .filter_map(|(_, r)| r.timings_ms.get("transfer").copied())
                .collect();
            let sharer_calls: Vec<f64> = ok
                .iter()
                .filter_map(|(_, r)| {
                    let transfer = r.timings_ms.get("transfer")?;
                    let wait = r.timings_ms.get("first_frame_wait").unwrap_or(&0.0);
                    Some(transfer + wait)
                })
                .collect();
            let bytes: Vec<f64> = ok
                .iter()
                .map(|(_, r)| r.bytes.bytes_measured_total as f64)
                .collect();
            out.push(CellView {
                run: run.clone(),
                cell_id: plan.cell.id.clone(),
                pair: c.pair.label.clone(),
                dataset: dataset_label(&c.dataset),
                link: c.link.clone().unwrap_or_else(|| "loopback".into()),
                family: family(&c.method_label).to_string(),
                method: c.method_label.clone(),
                kind: Kind::of(&c.method),
                cap: c.budget_cap_bytes,
                slice: match c.dataset.shard {
                    Some(s) => format!("seed {}, shard {}/{}", c.dataset.seed, s.index, s.count),
                    None => format!("seed {}", c.dataset.seed),
                },
                correct: ok
                    .iter()
                    .map(|(id, r)| (id.to_string(), r.correct == Some(true)))
                    .collect(),
                e2e_ms: ok
                    .iter()
                    .map(|(id, r)| {
                        let ms = r.timings_ms.get("end_to_end").copied();
                        (id.to_string(), ms.unwrap_or(r.coordinator_wall_ms))
                    })
                    .collect(),
                mean_bytes: mean(&bytes).unwrap_or(0.0),
                transfer_ms: mean(&transfers),
                sharer_call_ms: mean(&sharer_calls),
                planned: plan.sample_ids.len(),
            });
        }
    }
    Ok(out)
}

/// (pair, dataset, link).
pub type RegimeKey = (String, String, String);

/// The best cell of one kind at one budget, and the ties that decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct Best<'a> {
    /// The cell.
    pub cell: &'a CellView,
    /// How it was chosen when another cell had the same accuracy (empty when none had).
    pub tie_break: String,
}

/// The best of `cells` (of one kind, all fitting): accuracy, then latency, then bytes, then
/// label and id.
pub fn best<'a>(cells: &[&'a CellView]) -> Option<Best<'a>> {
    let mut sorted: Vec<&CellView> = cells.to_vec();
    sorted.sort_by(|a, b| {
        b.accuracy()
            .total_cmp(&a.accuracy())
            .then(a.e2e_mean_ms().total_cmp(&b.e2e_mean_ms()))
            .then(a.mean_bytes.total_cmp(&b.mean_bytes))
            .then(a.method.cmp(&b.method))
            .then(a.cell_id.cmp(&b.cell_id))
    });
    let first = *sorted.first()?;
    let tie_break = match sorted.get(1) {
        Some(second) if second.accuracy() == first.accuracy() => {
            let by = if second.e2e_mean_ms() != first.e2e_mean_ms() {
                "latency"
            } else if second.mean_bytes != first.mean_bytes {
                "bytes"
            } else {
                "label"
            };
            format!("same accuracy as {}; chosen by {by}", second.method_cap())
        }
        _ => String::new(),
    };
    Some(Best {
        cell: first,
        tie_break,
    })
}

impl CellView {
    /// `method` or `method (cap C)` when the label does not carry the cap.
    pub fn method_cap(&self) -> String {
        match self.cap {
            Some(c) if self.family == self.method => format!("{}@{c}", self.method),
            _ => self.method.clone(),
        }
    }
}

/// Who wins a regime cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The cache is more accurate (interval above zero).
    CacheAccuracy,
    /// Same accuracy within the interval; the cache is faster (interval below zero).
    CacheLatency,
    /// The text is more accurate.
    TextAccuracy,
    /// Same accuracy; the text is faster.
    TextLatency,
    /// Neither difference excludes zero.
    Tie,
    /// Only a text method fits the budget.
    OnlyText,
    /// Only a cache method fits the budget.
    OnlyCache,
}

impl Verdict {
    /// Stable name, as in the CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::CacheAccuracy => "cache (accuracy)",
            Verdict::CacheLatency => "cache (latency)",
            Verdict::TextAccuracy => "text (accuracy)",
            Verdict::TextLatency => "text (latency)",
            Verdict::Tie => "tie",
            Verdict::OnlyText => "only text fits",
            Verdict::OnlyCache => "only cache fits",
        }
    }
}

/// A paired difference and its 95% interval.
pub type Paired = (f64, (f64, f64));

/// One row of the map.
#[derive(Debug, Clone, PartialEq)]
pub struct RegimeRow<'a> {
    /// (pair, dataset, link).
    pub key: RegimeKey,
    /// The budget (`None`: uncapped).
    pub budget: Option<u64>,
    /// The receiver alone, when the regime has it.
    pub alone: Option<&'a CellView>,
    /// Best cache-family cell.
    pub cache: Option<Best<'a>>,
    /// Best text cell.
    pub text: Option<Best<'a>>,
    /// Items answered by both.
    pub n_paired: usize,
    /// Cache minus text accuracy, paired.
    pub accuracy_delta: Option<Paired>,
    /// Cache minus text mean end-to-end latency (ms), paired.
    pub latency_delta_ms: Option<Paired>,
    /// Who wins.
    pub verdict: Verdict,
}

/// Paired accuracy and latency differences of `a - b` on the items both answered.
pub fn paired(a: &CellView, b: &CellView) -> (usize, Option<Paired>, Option<Paired>) {
    let common: Vec<&String> = a
        .correct
        .keys()
        .filter(|k| b.correct.contains_key(*k))
        .collect();
    let acc = |c: &CellView| -> Vec<bool> { common.iter().map(|k| c.correct[*k]).collect() };
    let lat = |c: &CellView| -> Vec<f64> { common.iter().map(|k| c.e2e_ms[*k]).collect() };
    let interval = |(d, ci): (f64, eval_harness::Interval)| (d, (ci.low, ci.high));
    (
        common.len(),
        paired_difference_ci(&acc(a), &acc(b), RESAMPLES, SEED).map(interval),
        paired_mean_difference_ci(&lat(a), &lat(b), RESAMPLES, SEED).map(interval),
    )
}

fn verdict(acc: Option<Paired>, lat: Option<Paired>) -> Verdict {
    match (acc, lat) {
        (Some((_, (lo, _))), _) if lo > 0.0 => Verdict::CacheAccuracy,
        (Some((_, (_, hi))), _) if hi < 0.0 => Verdict::TextAccuracy,
        (_, Some((_, (_, hi)))) if hi < 0.0 => Verdict::CacheLatency,
        (_, Some((_, (lo, _)))) if lo > 0.0 => Verdict::TextLatency,
        _ => Verdict::Tie,
    }
}

/// Every regime, in first-seen order, with its cells.
pub fn regimes(cells: &[CellView]) -> Vec<(RegimeKey, Vec<&CellView>)> {
    let mut out: Vec<(RegimeKey, Vec<&CellView>)> = Vec::new();
    for c in cells {
        let key = (c.pair.clone(), c.dataset.clone(), c.link.clone());
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(c),
            None => out.push((key, vec![c])),
        }
    }
    out
}

/// The map: one row per regime and budget (ascending caps, then uncapped). Budgets where no
/// contender fits are left out.
pub fn map(cells: &[CellView]) -> Vec<RegimeRow<'_>> {
    let mut rows = Vec::new();
    for (key, members) in regimes(cells) {
        let mut budgets: Vec<Option<u64>> =
            members.iter().filter_map(|c| c.cap).map(Some).collect();
        budgets.sort();
        budgets.dedup();
        budgets.push(None);
        let alone = members.iter().copied().find(|c| c.kind == Kind::Alone);
        for budget in budgets {
            let of = |kind: Kind| -> Vec<&CellView> {
                members
                    .iter()
                    .copied()
                    .filter(|c| c.kind == kind && c.fits(budget))
                    .collect()
            };
            let (cache, text) = (best(&of(Kind::Cache)), best(&of(Kind::Text)));
            let (n_paired, accuracy_delta, latency_delta_ms, verdict) = match (&cache, &text) {
                (Some(c), Some(t)) => {
                    let (n, acc, lat) = paired(c.cell, t.cell);
                    (n, acc, lat, verdict(acc, lat))
                }
                (Some(_), None) => (0, None, None, Verdict::OnlyCache),
                (None, Some(_)) => (0, None, None, Verdict::OnlyText),
                (None, None) => continue,
            };
            rows.push(RegimeRow {
                key: key.clone(),
                budget,
                alone,
                cache,
                text,
                n_paired,
                accuracy_delta,
                latency_delta_ms,
                verdict,
            });
        }
    }
    rows
}

/// The fewest mean bytes per sample with which a cell of `kind` in the regime reaches
/// `target` accuracy, and that cell.
pub fn bytes_to_reach<'a>(
    members: &[&'a CellView],
    kind: Kind,
    target: f64,
) -> Option<&'a CellView> {
    members
        .iter()
        .copied()
        .filter(|c| c.kind == kind && c.accuracy() >= target - 1e-12)
        .min_by(|a, b| {
            a.mean_bytes
                .total_cmp(&b.mean_bytes)
                .then(a.method.cmp(&b.method))
        })
}

/// The default accuracy target of a regime: halfway between the receiver alone and the best
/// accuracy of any cell (the best alone when there is no receiver-alone cell).
pub fn default_target(members: &[&CellView]) -> f64 {
    let best = members.iter().map(|c| c.accuracy()).fold(0.0, f64::max);
    match members.iter().find(|c| c.kind == Kind::Alone) {
        Some(a) => (a.accuracy() + best) / 2.0,
        None => best,
    }
}

#[cfg(test)]
#[path = "regime_tests.rs"]
mod tests;
