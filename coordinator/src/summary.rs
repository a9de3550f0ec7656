//! Per-cell summaries of result rows: accuracy with n and a 95% interval, mean/p50/p95 bytes
//! at each level (blob, gRPC message, TCP), p50/p95 latency per stage, and the estimate drift;
//! rendered as a terminal table, CSV (for plotting) and Markdown.

use std::collections::BTreeMap;

use eval_harness::{mean, percentile, wilson_95};
use serde::Serialize;

use crate::cell::Cell;
use crate::registry::CellRows;

/// Mean, median and 95th percentile of a quantity.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Dist {
    /// Mean.
    pub mean: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
}

impl Dist {
    /// The distribution of `values`.
    pub fn of(values: &[f64]) -> Dist {
        Dist {
            mean: mean(values),
            p50: percentile(values, 0.5),
            p95: percentile(values, 0.95),
        }
    }
}

/// Summary of one cell, over the latest try of each sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellSummary {
    /// Cell id.
    pub cell_id: String,
    /// Pair label.
    pub pair: String,
    /// Dataset name.
    pub dataset: String,
    /// Method label.
    pub method: String,
    /// Scoring mode.
    pub scoring: String,
    /// Byte cap, if any.
    pub budget_cap_bytes: Option<u64>,
    /// Answered samples.
    pub n_ok: usize,
    /// Samples whose latest try failed.
    pub n_failed: usize,
    /// Tries, retries included.
    pub attempts: usize,
    /// Correct answers among the answered.
    pub n_correct: usize,
    /// Accuracy over the answered samples.
    pub accuracy: Option<f64>,
    /// Wilson 95% interval of the accuracy.
    pub accuracy_ci95: Option<(f64, f64)>,
    /// Rank scoring: accuracy under each normalisation (`raw`, `per_token`, `per_char`) over
    /// the answered samples that report it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub rank_accuracy: BTreeMap<String, f64>,
    /// KVWire blob (or message) bytes per sample.
    pub blob_bytes: Dist,
    /// gRPC message bytes per sample.
    pub grpc_bytes: Dist,
    /// TCP bytes read plus written per sample.
    pub tcp_bytes: Dist,
    /// Estimated bytes per sample.
    pub estimated_bytes: Dist,
    /// Largest |measured - estimated| / measured over samples (drift of the size formula).
    pub max_estimate_drift: Option<f64>,
    /// Latency per stage, ms.
    pub stages_ms: BTreeMap<String, Dist>,
}

impl CellSummary {
    /// Summarises the latest try of each sample of a cell.
    pub fn of(cell: &Cell, rows: &CellRows) -> CellSummary {
        let latest = rows.latest();
        let ok: Vec<_> = latest.values().filter(|r| r.is_ok()).collect();
        let n_correct = ok.iter().filter(|r| r.correct == Some(true)).count();
        let col = |f: &dyn Fn(&crate::row::ResultRow) -> f64| -> Vec<f64> {
            ok.iter().map(|r| f(r)).collect()
        };
        let mut stage_values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for row in &ok {
            for (stage, ms) in &row.timings_ms {
                stage_values.entry(stage.clone()).or_default().push(*ms);
            }
        }
        let drift = ok
            .iter()
            .filter(|r| r.bytes.bytes_measured_total > 0)
            .map(|r| {
                let m = r.bytes.bytes_measured_total as f64;
                (m - r.bytes.bytes_estimated_total as f64).abs() / m
            })
            .fold(None, |acc: Option<f64>, d| {
                Some(acc.map_or(d, |a| a.max(d)))
            });
        let mut rank_counts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for row in &ok {
            for r in &row.rank {
                let (n, correct) = rank_counts.entry(r.normalization.clone()).or_default();
                *n += 1;
                *correct += usize::from(r.correct);
            }
        }
        CellSummary {
            rank_accuracy: rank_counts
                .into_iter()
                .map(|(k, (n, c))| (k, c as f64 / n as f64))
                .collect(),
            cell_id: cell.id.clone(),
            pair: cell.config.pair_link_label(),
            dataset: dataset_label(&cell.config.dataset),
            method: cell.config.method_label.clone(),
            scoring: cell.config.scoring.as_str().to_string(),
            budget_cap_bytes: cell.config.budget_cap_bytes,
            n_ok: ok.len(),
            n_failed: latest.len() - ok.len(),
            attempts: rows.rows.len(),
            n_correct,
            accuracy: (!ok.is_empty()).then(|| n_correct as f64 / ok.len() as f64),
            accuracy_ci95: wilson_95(n_correct, ok.len()),
            blob_bytes: Dist::of(&col(&|r| r.bytes.bytes_measured_total as f64)),
            grpc_bytes: Dist::of(&col(&|r| r.bytes.grpc_message_bytes as f64)),
            tcp_bytes: Dist::of(&col(&|r| {
                (r.bytes.transport_bytes_read + r.bytes.transport_bytes_written) as f64
            })),
            estimated_bytes: Dist::of(&col(&|r| r.bytes.bytes_estimated_total as f64)),
            max_estimate_drift: drift,
            stages_ms: stage_values
                .into_iter()
                .map(|(k, v)| (k, Dist::of(&v)))
                .collect(),
        }
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.decimals$}"))
}

/// A number for CSV: empty when absent, so plotting tools read it as missing.
/// The dataset's name, with its passage length when the spec sets one
/// (`sciq_context_long@2048tok`, `passkey@200w`): cells that differ only by length stay apart.
pub(crate) fn dataset_label(dataset: &crate::grid::DatasetSpec) -> String {
    match crate::plot::points::ContextLength::of(dataset) {
        Some(crate::plot::points::ContextLength::Tokens(n)) => format!("{}@{n}tok", dataset.name),
        Some(crate::plot::points::ContextLength::Words(n)) => format!("{}@{n}w", dataset.name),
        None => dataset.name.clone(),
    }
}

pub(crate) fn csv_num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(String::new, |x| format!("{x:.decimals$}"))
}

/// A text field for CSV, quoted when it holds a comma, a quote or a newline.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// `raw/per_token/per_char` rank accuracies in percent, or `-`.
fn rank_cell(s: &CellSummary) -> String {
    let parts: Vec<String> = ["raw", "per_token", "per_char"]
        .iter()
        .map(|k| num(s.rank_accuracy.get(*k).map(|a| a * 100.0), 1))
        .collect();
    if parts.iter().all(|p| p == "-") {
        "-".into()
    } else {
        parts.join("/")
    }
}

fn acc_cell(s: &CellSummary) -> String {
    match (s.accuracy, s.accuracy_ci95) {
        (Some(a), Some((lo, hi))) => {
            format!("{:.1} [{:.1},{:.1}]", a * 100.0, lo * 100.0, hi * 100.0)
        }
        _ => "-".into(),
    }
}

/// The stages present in any summary, `end_to_end` last.
fn stage_names(summaries: &[CellSummary]) -> Vec<String> {
    let mut names: Vec<String> = summaries
        .iter()
        .flat_map(|s| s.stages_ms.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if let Some(i) = names.iter().position(|n| n == "end_to_end") {
        let e2e = names.remove(i);
        names.push(e2e);
    }
    names
}

/// Header and rows of the bytes/accuracy table and of the latency table.
fn tables(summaries: &[CellSummary]) -> [(Vec<String>, Vec<Vec<String>>); 2] {
    let head = |extra: &[&str]| -> Vec<String> {
        ["cell", "pair", "dataset", "method", "cap"]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let ident = |s: &CellSummary| -> Vec<String> {
        vec![
            s.cell_id[..8.min(s.cell_id.len())].to_string(),
            s.pair.clone(),
            s.dataset.clone(),
            s.method.clone(),
            s.budget_cap_bytes.map_or("-".into(), |c| c.to_string()),
        ]
    };
    let bytes_head = head(&[
        "n",
        "fail",
        "acc% [95% CI]",
        "rank acc% raw/tok/char",
        "blob mean",
        "blob p50",
        "blob p95",
        "grpc mean",
        "grpc p50",
        "grpc p95",
        "tcp mean",
        "tcp p50",
        "tcp p95",
    ]);
    let bytes_rows = summaries
        .iter()
        .map(|s| {
            let mut row = ident(s);
            row.extend([
                s.n_ok.to_string(),
                s.n_failed.to_string(),
                acc_cell(s),
                rank_cell(s),
            ]);
            for d in [s.blob_bytes, s.grpc_bytes, s.tcp_bytes] {
                row.extend([num(d.mean, 0), num(d.p50, 0), num(d.p95, 0)]);
            }
            row
        })
        .collect();
    let stages = stage_names(summaries);
    let stage_cols: Vec<String> = stages.iter().map(|s| format!("{s} p50/p95 ms")).collect();
    let stage_refs: Vec<&str> = stage_cols.iter().map(String::as_str).collect();
    let lat_rows = summaries
        .iter()
        .map(|s| {
            let mut row = ident(s);
            row.extend(stages.iter().map(|st| match s.stages_ms.get(st) {
                Some(d) => format!("{}/{}", num(d.p50, 1), num(d.p95, 1)),
                None => "-".into(),
            }));
            row
        })
        .collect();
    [(bytes_head, bytes_rows), (head(&stage_refs), lat_rows)]
}

fn aligned(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    let mut out = line(header);
    out.push('\n');
    out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
    for row in rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out.push('\n');
    out
}

/// The two summary tables (accuracy and bytes; latency per stage) for a terminal.
pub fn render_text(summaries: &[CellSummary]) -> String {
    let [(h1, r1), (h2, r2)] = tables(summaries);
    format!(
        "Accuracy and bytes per sample (tcp = read + written on the receiver's connection)\n{}\n\
         Latency per stage, p50/p95 ms\n{}",
        aligned(&h1, &r1),
        aligned(&h2, &r2)
    )
}

/// The same tables as Markdown.
pub fn render_markdown(summaries: &[CellSummary]) -> String {
    let md = |header: &[String], rows: &[Vec<String>]| -> String {
        let mut out = format!("| {} |\n", header.join(" | "));
        out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
        for row in rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        out
    };
    let [(h1, r1), (h2, r2)] = tables(summaries);
    format!(
        "## Accuracy and bytes per sample\n\ntcp = bytes read + written on the receiver's \
         connection to the sharer; accuracy interval: Wilson 95%.\n\n{}\n## Latency per \
         stage (p50/p95 ms)\n\n{}",
        md(&h1, &r1),
        md(&h2, &r2)
    )
}

/// One CSV row per cell with every number (all stages, mean/p50/p95), for plotting.
pub fn render_csv(summaries: &[CellSummary]) -> String {
    let stages = stage_names(summaries);
    let mut header: Vec<String> = [
        "cell_id",
        "pair",
        "dataset",
        "method",
        "scoring",
        "budget_cap_bytes",
        "n_ok",
        "n_failed",
        "attempts",
        "n_correct",
        "accuracy",
        "ci95_low",
        "ci95_high",
        "rank_accuracy_raw",
        "rank_accuracy_per_token",
        "rank_accuracy_per_char",
        "max_estimate_drift",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for level in ["blob_bytes", "grpc_bytes", "tcp_bytes", "estimated_bytes"] {
        for stat in ["mean", "p50", "p95"] {
            header.push(format!("{level}_{stat}"));
        }
    }
    for st in &stages {
        header.push(format!("{st}_ms_p50"));
        header.push(format!("{st}_ms_p95"));
    }
    let quote = csv_field;
    let mut out = header.join(",");
    out.push('\n');
    for s in summaries {
        let mut row = vec![
            quote(&s.cell_id),
            quote(&s.pair),
            quote(&s.dataset),
            quote(&s.method),
            quote(&s.scoring),
            s.budget_cap_bytes.map_or(String::new(), |c| c.to_string()),
            s.n_ok.to_string(),
            s.n_failed.to_string(),
            s.attempts.to_string(),
            s.n_correct.to_string(),
            csv_num(s.accuracy, 6),
            csv_num(s.accuracy_ci95.map(|c| c.0), 6),
            csv_num(s.accuracy_ci95.map(|c| c.1), 6),
            csv_num(s.rank_accuracy.get("raw").copied(), 6),
            csv_num(s.rank_accuracy.get("per_token").copied(), 6),
            csv_num(s.rank_accuracy.get("per_char").copied(), 6),
            csv_num(s.max_estimate_drift, 6),
        ];
        for d in [s.blob_bytes, s.grpc_bytes, s.tcp_bytes, s.estimated_bytes] {
            row.extend([csv_num(d.mean, 3), csv_num(d.p50, 3), csv_num(d.p95, 3)]);
        }
        for st in &stages {
            let d = s.stages_ms.get(st).copied().unwrap_or_default();
            row.extend([csv_num(d.p50, 3), csv_num(d.p95, 3)]);
        }
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
#[path = "summary_tests.rs"]
mod tests;
