//! Paired comparisons inside a run folder: every cell against a baseline method on the same
//! items (docs/EVALUATION.md, "Paired comparisons").
//!
//! A cell is paired with the baseline cell of the same pair and dataset (and context length)
//! whose method label is the baseline's, at the cell's own cap when the baseline has cells at
//! caps, else the baseline's uncapped cell. Only samples answered in both cells count (the
//! latest try of each); the difference of accuracies comes with its 95% percentile-bootstrap
//! interval, items resampled jointly (eval_harness::paired_difference_ci), and the share of
//! items on which the two predicted the same choice.

use std::collections::BTreeMap;

use eval_harness::paired_difference_ci;

use crate::error::RegistryError;
use crate::registry::{CellPlan, RunDir};
use crate::row::ResultRow;
use crate::summary::{csv_field, csv_num};

/// Bootstrap resamples and seed of every interval.
const RESAMPLES: usize = 10_000;
const SEED: u64 = 0;

/// One cell against its baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The cell.
    pub cell_id: String,
    /// Its method label.
    pub method: String,
    /// Pair label.
    pub pair: String,
    /// Dataset name.
    pub dataset: String,
    /// The cell's cap.
    pub cap: Option<u64>,
    /// The baseline cell.
    pub baseline_cell_id: String,
    /// Items answered in both.
    pub n: usize,
    /// The cell's accuracy on them.
    pub accuracy: f64,
    /// The baseline's accuracy on them.
    pub baseline_accuracy: f64,
    /// `accuracy - baseline_accuracy`.
    pub difference: f64,
    /// 95% bootstrap interval of the difference.
    pub ci95: (f64, f64),
    /// Share of items with the same prediction.
    pub agreement: f64,
}

/// Compares every cell of `dir` (the baseline's own cells excepted) with the baseline method
/// labelled `baseline`. Cells without a baseline cell, or with no item answered in both, are
/// left out.
pub fn compare(dir: &RunDir, baseline: &str) -> Result<Vec<Comparison>, RegistryError> {
    let plans = dir.read_plans()?;
    let mut answered: BTreeMap<String, BTreeMap<String, ResultRow>> = BTreeMap::new();
    for plan in &plans {
        let rows = dir.read_rows(&plan.cell.id)?;
        let ok = rows
            .answered()
            .into_iter()
            .filter(|(_, r)| r.correct.is_some())
            .map(|(id, r)| (id.to_string(), r.clone()))
            .collect();
        answered.insert(plan.cell.id.clone(), ok);
    }
    let mut out = Vec::new();
    for plan in plans
        .iter()
        .filter(|p| p.cell.config.method_label != baseline)
    {
        let Some(base) = baseline_of(&plans, plan, baseline) else {
            continue;
        };
        if let Some(c) = paired(
            plan,
            base,
            &answered[&plan.cell.id],
            &answered[&base.cell.id],
        ) {
            out.push(c);
        }
    }
    Ok(out)
}

/// The baseline cell for `plan`: same pair, dataset and context; the same cap if the baseline
/// has a cell at it, else its uncapped cell.
fn baseline_of<'a>(plans: &'a [CellPlan], plan: &CellPlan, baseline: &str) -> Option<&'a CellPlan> {
    let c = &plan.cell.config;
    let candidates: Vec<&CellPlan> = plans
        .iter()
        .filter(|p| {
            let b = &p.cell.config;
            b.method_label == baseline
                && b.pair.label == c.pair.label
                && b.link == c.link
                && b.dataset == c.dataset
                && b.scoring == c.scoring
        })
        .collect();
    candidates
        .iter()
        .find(|p| p.cell.config.budget_cap_bytes == c.budget_cap_bytes)
        .or_else(|| {
            candidates
                .iter()
                .find(|p| p.cell.config.budget_cap_bytes.is_none())
        })
        .copied()
}

fn paired(
    plan: &CellPlan,
    base: &CellPlan,
    rows: &BTreeMap<String, ResultRow>,
    base_rows: &BTreeMap<String, ResultRow>,
) -> Option<Comparison> {
    let both: Vec<(&ResultRow, &ResultRow)> = rows
        .iter()
        .filter_map(|(id, r)| base_rows.get(id).map(|b| (r, b)))
        .collect();
    let correct = |r: &ResultRow| r.correct == Some(true);
    let a: Vec<bool> = both.iter().map(|(r, _)| correct(r)).collect();
    let b: Vec<bool> = both.iter().map(|(_, r)| correct(r)).collect();
    let (difference, ci) = paired_difference_ci(&a, &b, RESAMPLES, SEED)?;
    let n = both.len();
    let share = |k: usize| k as f64 / n as f64;
    let same = both
        .iter()
        .filter(|(r, b)| r.prediction == b.prediction)
        .count();
    let c = &plan.cell.config;
    Some(Comparison {
        cell_id: plan.cell.id.clone(),
        method: c.method_label.clone(),
        pair: c.pair_link_label(),
        dataset: c.dataset.name.clone(),
        cap: c.budget_cap_bytes,
        baseline_cell_id: base.cell.id.clone(),
        n,
        accuracy: share(a.iter().filter(|&&x| x).count()),
        baseline_accuracy: share(b.iter().filter(|&&x| x).count()),
        difference,
        ci95: (ci.low, ci.high),
        agreement: share(same),
    })
}

/// A fixed-width table, in percentage points.
pub fn render_text(baseline: &str, rows: &[Comparison]) -> String {
    // Columns as wide as their longest entry, so long labels (`sciq_context_long@2048tok`)
    // never run into the next column.
    let width = |header: &str, cell: fn(&Comparison) -> &str| {
        rows.iter()
            .map(|c| cell(c).len())
            .fold(header.len(), usize::max)
            + 2
    };
    let (dw, mw) = (
        width("dataset", |c| &c.dataset),
        width("method", |c| &c.method),
    );
    let mut s = format!(
        "Paired against {baseline} on the same items (percentage points; 95% bootstrap CI)\n\
         {:<10}{:<dw$}{:<mw$}{:>9}{:>6}{:>8}{:>8}{:>8}  {:<17}{:>6}\n",
        "cell", "dataset", "method", "cap", "n", "acc", "base", "diff", "95% CI", "same%"
    );
    for c in rows {
        s.push_str(&format!(
            "{:<10}{:<dw$}{:<mw$}{:>9}{:>6}{:>8.1}{:>8.1}{:>+8.1}  [{:+.1}, {:+.1}]{:>8.1}\n",
            &c.cell_id[..c.cell_id.len().min(8)],
            c.dataset,
            c.method,
            c.cap.map_or("-".to_string(), |v| v.to_string()),
            c.n,
            100.0 * c.accuracy,
            100.0 * c.baseline_accuracy,
            100.0 * c.difference,
            100.0 * c.ci95.0,
            100.0 * c.ci95.1,
            100.0 * c.agreement,
        ));
    }
    s
}

/// CSV, one row per comparison, fractions (not percentages).
pub fn render_csv(rows: &[Comparison]) -> String {
    let mut s = String::from(
        "cell_id,pair,dataset,method,cap,baseline_cell_id,n,accuracy,baseline_accuracy,difference,ci_lo,ci_hi,agreement\n",
    );
    for c in rows {
        let fields = [
            csv_field(&c.cell_id),
            csv_field(&c.pair),
            csv_field(&c.dataset),
            csv_field(&c.method),
            c.cap.map_or(String::new(), |v| v.to_string()),
            csv_field(&c.baseline_cell_id),
            c.n.to_string(),
            csv_num(Some(c.accuracy), 4),
            csv_num(Some(c.baseline_accuracy), 4),
            csv_num(Some(c.difference), 4),
            csv_num(Some(c.ci95.0), 4),
            csv_num(Some(c.ci95.1), 4),
            csv_num(Some(c.agreement), 4),
        ];
        s.push_str(&fields.join(","));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cell::{Cell, expand};
    use crate::grid::Grid;
    use crate::testutil::row;

    const GRID: &str = r#"
        name = "cmp"
        layout = "context"
        scoring = ["rank"]
        budgets = [1000]
        uncapped = true
        [[pairs]]
        label = "s<-s"
        sharer = { model = "gguf:m" }
        receiver = { model = "gguf:m" }
        [[datasets]]
        name = "sciq_context"
        split = "validation"
        n = 4
        [[methods]]
        kind = "receiver_only"
        [[methods]]
        kind = "kv"
        precision = "int4"
        [[methods]]
        kind = "kv"
        precision = "int8"
    "#;

    /// Which samples each cell gets right: int4 at the cap a, b; uncapped a, b, c; int8 at the
    /// cap a, b, c, d; int8 uncapped fails sample d (left out of its pairing); receiver-only a.
    fn correct(cell: &Cell, sample: &str) -> Option<bool> {
        let c = &cell.config;
        let right: &[&str] = match (c.method_label.as_str(), c.budget_cap_bytes) {
            ("receiver-only", _) => &["a"],
            ("kv-int4", Some(_)) => &["a", "b"],
            ("kv-int4", None) => &["a", "b", "c"],
            ("kv-int8", Some(_)) => &["a", "b", "c", "d"],
            _ if sample == "d" => return None,
            _ => &["a", "b", "c"],
        };
        Some(right.contains(&sample))
    }

    fn run_folder(root: &std::path::Path) -> RunDir {
        let dir = RunDir::create(root).unwrap();
        let plans: Vec<CellPlan> = expand(&Grid::from_toml(GRID).unwrap())
            .into_iter()
            .map(|cell| CellPlan {
                cell,
                sample_ids: ["a", "b", "c", "d"].map(String::from).to_vec(),
            })
            .collect();
        dir.write_plans(&plans).unwrap();
        for plan in &plans {
            let mut appender = dir.appender(&plan.cell.id).unwrap();
            for sample in ["a", "b", "c", "d"] {
                let answer = correct(&plan.cell, sample);
                let mut r = row(&plan.cell.id, sample, 1, answer.is_some());
                if let Some(ok) = answer {
                    r.correct = Some(ok);
                    r.prediction = Some(if ok { "A" } else { "B" }.into());
                }
                appender.append(&r).unwrap();
            }
        }
        dir
    }

    #[test]
    fn cells_meet_the_baseline_at_their_cap_on_the_items_answered_in_both() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = run_folder(tmp.path());
        let rows = compare(&dir, "kv-int4").unwrap();
        let find = |method: &str, cap: Option<u64>| {
            rows.iter()
                .find(|c| c.method == method && c.cap == cap)
                .unwrap_or_else(|| panic!("{method} {cap:?} missing"))
        };
        // int8 at the cap against int4 at the cap: 4/4 vs 2/4.
        let capped = find("kv-int8", Some(1000));
        assert_eq!(
            (capped.n, capped.accuracy, capped.baseline_accuracy),
            (4, 1.0, 0.5)
        );
        assert!((capped.difference - 0.5).abs() < 1e-12);
        assert_eq!(capped.agreement, 0.5);
        assert!(capped.ci95.0 <= 0.5 && 0.5 <= capped.ci95.1);
        // Uncapped int8 failed d: paired on a, b, c only, identical answers.
        let uncapped = find("kv-int8", None);
        assert_eq!(
            (uncapped.n, uncapped.difference, uncapped.agreement),
            (3, 0.0, 1.0)
        );
        assert_eq!(uncapped.ci95, (0.0, 0.0));
        // Receiver-only has no cap: it meets the uncapped baseline.
        let alone = find("receiver-only", None);
        assert!((alone.difference + 0.5).abs() < 1e-12);
        // The baseline's own cells are not compared with themselves.
        assert!(rows.iter().all(|c| c.method != "kv-int4"));
        assert_eq!(rows.len(), 3);
        let csv = render_csv(&rows);
        assert_eq!(csv.lines().count(), 4);
        assert!(render_text("kv-int4", &rows).contains("+50.0"));
    }
}
