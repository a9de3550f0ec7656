//! The regime map's tables and its plain-words summary: `regime_table.csv`,
//! `bytes_to_target.csv` and `summary.md` (docs/REGIME_MAP.md says what each column means).

use std::fmt::Write as _;

use crate::plot::render::fmt_bytes;
use crate::regime::{
    Best, CellView, Kind, Paired, RegimeRow, Verdict, budget_label, bytes_to_reach, default_target,
    regimes,
};
use crate::summary::{csv_field, csv_num};

fn budget_text(b: Option<u64>) -> String {
    b.map_or_else(|| "uncapped".into(), |b| b.to_string())
}

/// A regime's (pair, dataset, link) as CSV fields.
fn key_fields((pair, dataset, link): &crate::regime::RegimeKey) -> Vec<String> {
    vec![csv_field(pair), csv_field(dataset), csv_field(link)]
}

/// The columns of a best cache or text method, in `best_fields`' order.
const BEST_COLUMNS: [&str; 10] = [
    "method",
    "n",
    "accuracy",
    "acc_lo",
    "acc_hi",
    "bytes",
    "e2e_ms",
    "transfer_ms",
    "sharer_call_ms",
    "tie_break",
];

fn best_fields(b: &Option<Best<'_>>) -> Vec<String> {
    match b {
        None => vec![String::new(); BEST_COLUMNS.len()],
        Some(b) => {
            let c = b.cell;
            let (lo, hi) = c.accuracy_ci();
            vec![
                csv_field(&c.method_cap()),
                c.n().to_string(),
                csv_num(Some(c.accuracy()), 4),
                csv_num(Some(lo), 4),
                csv_num(Some(hi), 4),
                csv_num(Some(c.mean_bytes), 1),
                csv_num(Some(c.e2e_mean_ms()), 1),
                csv_num(c.transfer_ms, 2),
                csv_num(c.sharer_call_ms, 2),
                csv_field(&b.tie_break),
            ]
        }
    }
}

fn paired_fields(p: Option<Paired>, decimals: usize) -> [String; 3] {
    match p {
        Some((d, (lo, hi))) => [
            csv_num(Some(d), decimals),
            csv_num(Some(lo), decimals),
            csv_num(Some(hi), decimals),
        ],
        None => [String::new(), String::new(), String::new()],
    }
}

/// `regime_table.csv`: one row per (pair, dataset, link, budget).
pub fn table_csv(rows: &[RegimeRow<'_>]) -> String {
    let mut header: Vec<String> = ["pair", "dataset", "link", "budget_bytes", "alone_accuracy"]
        .map(String::from)
        .to_vec();
    for kind in ["cache", "text"] {
        for col in BEST_COLUMNS {
            header.push(format!("{kind}_{col}"));
        }
    }
    header.extend(
        [
            "n_paired",
            "delta_accuracy",
            "delta_acc_lo",
            "delta_acc_hi",
            "delta_e2e_ms",
            "delta_e2e_lo",
            "delta_e2e_hi",
            "verdict",
        ]
        .map(String::from),
    );
    let mut out = header.join(",");
    out.push('\n');
    for r in rows {
        let mut f = key_fields(&r.key);
        f.extend([
            budget_text(r.budget),
            csv_num(r.alone.map(CellView::accuracy), 4),
        ]);
        f.extend(best_fields(&r.cache));
        f.extend(best_fields(&r.text));
        f.push(r.n_paired.to_string());
        f.extend(paired_fields(r.accuracy_delta, 4));
        f.extend(paired_fields(r.latency_delta_ms, 1));
        f.push(csv_field(r.verdict.as_str()));
        out.push_str(&f.join(","));
        out.push('\n');
    }
    out
}

/// One regime's accuracy target and the cheapest cell of each kind that reaches it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRow<'a> {
    /// (pair, dataset, link).
    pub key: crate::regime::RegimeKey,
    /// The target accuracy.
    pub target: f64,
    /// Whether it was given (`--target-accuracy`) or the default midpoint.
    pub given: bool,
    /// Cheapest cache cell reaching it.
    pub cache: Option<&'a CellView>,
    /// Cheapest text cell reaching it.
    pub text: Option<&'a CellView>,
}

/// The inverse view: bytes needed to reach a fixed accuracy, per regime.
pub fn targets(cells: &[CellView], target: Option<f64>) -> Vec<TargetRow<'_>> {
    regimes(cells)
        .into_iter()
        .map(|(key, members)| {
            let t = target.unwrap_or_else(|| default_target(&members));
            TargetRow {
                key,
                target: t,
                given: target.is_some(),
                cache: bytes_to_reach(&members, Kind::Cache, t),
                text: bytes_to_reach(&members, Kind::Text, t),
            }
        })
        .collect()
}

/// `bytes_to_target.csv`.
pub fn targets_csv(rows: &[TargetRow<'_>]) -> String {
    let mut out = String::from(
        "pair,dataset,link,target_accuracy,target_source,cache_method,cache_accuracy,cache_bytes,\
         text_method,text_accuracy,text_bytes\n",
    );
    let side = |c: Option<&CellView>| -> [String; 3] {
        match c {
            Some(c) => [
                csv_field(&c.method_cap()),
                csv_num(Some(c.accuracy()), 4),
                csv_num(Some(c.mean_bytes), 1),
            ],
            None => [String::new(), String::new(), String::new()],
        }
    };
    for r in rows {
        let mut f = key_fields(&r.key);
        f.extend([
            csv_num(Some(r.target), 4),
            if r.given { "given" } else { "midpoint" }.to_string(),
        ]);
        f.extend(side(r.cache));
        f.extend(side(r.text));
        out.push_str(&f.join(","));
        out.push('\n');
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn describe(b: &Best<'_>) -> String {
    let c = b.cell;
    let (lo, hi) = c.accuracy_ci();
    format!(
        "{} ({} [{}, {}], {} per sample, {:.0} ms end to end)",
        c.method_cap(),
        pct(c.accuracy()),
        pct(lo),
        pct(hi),
        fmt_bytes(c.mean_bytes),
        c.e2e_mean_ms()
    )
}

/// One sentence about a row of the map.
fn sentence(r: &RegimeRow<'_>) -> String {
    let budget = r.budget.map_or_else(
        || "With no cap".to_string(),
        |b| format!("At {} per sample", budget_label(Some(b))),
    );
    match (&r.cache, &r.text, r.accuracy_delta, r.latency_delta_ms) {
        (Some(c), Some(t), Some((da, (alo, ahi))), Some((dl, (llo, lhi)))) => format!(
            "{budget}: best cache {}; best text {}. Cache minus text on the same {} items: \
             accuracy {:+.1} points [{:+.1}, {:+.1}], latency {:+.0} ms [{:+.0}, {:+.0}]. \
             Verdict: **{}**.",
            describe(c),
            describe(t),
            r.n_paired,
            100.0 * da,
            100.0 * alo,
            100.0 * ahi,
            dl,
            llo,
            lhi,
            r.verdict.as_str()
        ),
        (Some(c), None, _, _) => format!("{budget}: only a cache fits: {}.", describe(c)),
        (None, Some(t), _, _) => format!("{budget}: only text fits: {}.", describe(t)),
        _ => format!("{budget}: {}", r.verdict.as_str()),
    }
}

/// The plain-words headline of a regime: where each kind wins.
fn headline(rows: &[&RegimeRow<'_>]) -> String {
    let budgets = |want: &[Verdict]| -> Vec<String> {
        rows.iter()
            .filter(|r| want.contains(&r.verdict))
            .map(|r| budget_label(r.budget))
            .collect()
    };
    let mut parts = Vec::new();
    for (what, verdicts) in [
        (
            "the cache wins",
            &[Verdict::CacheAccuracy, Verdict::CacheLatency][..],
        ),
        (
            "text wins",
            &[Verdict::TextAccuracy, Verdict::TextLatency][..],
        ),
        ("neither is distinguishable", &[Verdict::Tie][..]),
        ("only text fits", &[Verdict::OnlyText][..]),
        ("only a cache fits", &[Verdict::OnlyCache][..]),
    ] {
        let b = budgets(verdicts);
        if !b.is_empty() {
            parts.push(format!("{what} at {}", b.join(", ")));
        }
    }
    parts.join("; ")
}

/// `summary.md`: the regimes in words, the inverse view, and the appendix of slices.
pub fn summary_md(
    rows: &[RegimeRow<'_>],
    targets: &[TargetRow<'_>],
    cells: &[CellView],
    left_out: &[CellView],
    runs: &[String],
) -> String {
    let mut s = String::from("# Regime map\n\n");
    let _ = writeln!(
        s,
        "Runs: {}. A regime is (pair, task, link); at each byte budget the best cache method \
         and the best text method that fit it (by accuracy, then mean end-to-end latency, then \
         bytes) meet on the same items. Intervals: Wilson 95% for one accuracy, 95% paired \
         bootstrap ({} resamples) for differences. Latency is the receiver's measured end to \
         end on the row's link (sharer and receiver compute and the transfer over the link, as \
         they happened; nothing is composed). \"Wins\" means the interval of the accuracy \
         difference excludes zero, or, when it does not, that of the latency difference does.\n",
        runs.join(", "),
        crate::regime::RESAMPLES
    );
    let mut keys: Vec<&crate::regime::RegimeKey> = Vec::new();
    for r in rows {
        if !keys.contains(&&r.key) {
            keys.push(&r.key);
        }
    }
    for key in keys {
        let mine: Vec<&RegimeRow<'_>> = rows.iter().filter(|r| &r.key == key).collect();
        let (pair, dataset, link) = key;
        let _ = writeln!(s, "## {pair}, {dataset}, link {link}\n");
        let _ = writeln!(s, "In short: {}.\n", headline(&mine));
        if let Some(a) = mine.first().and_then(|r| r.alone) {
            let (lo, hi) = a.accuracy_ci();
            let _ = writeln!(
                s,
                "The receiver alone: {} [{}, {}] (n = {}), {:.0} ms.\n",
                pct(a.accuracy()),
                pct(lo),
                pct(hi),
                a.n(),
                a.e2e_mean_ms()
            );
        }
        for r in &mine {
            let _ = writeln!(s, "- {}", sentence(r));
        }
        if let Some(t) = targets.iter().find(|t| &t.key == key) {
            let reach = |c: Option<&CellView>| {
                c.map_or_else(
                    || "not reached".to_string(),
                    |c| format!("{} with {}", fmt_bytes(c.mean_bytes), c.method_cap()),
                )
            };
            let _ = writeln!(
                s,
                "\nTo reach {} accuracy ({}): cache {}, text {}.\n",
                pct(t.target),
                if t.given {
                    "given"
                } else {
                    "halfway between the receiver alone and the best cell"
                },
                reach(t.cache),
                reach(t.text)
            );
        }
    }
    s.push_str(&appendix(rows, cells));
    s.push_str(&left_out_md(left_out));
    s
}

/// The cells left out of the map because not every sample of theirs was answered.
fn left_out_md(left_out: &[CellView]) -> String {
    if left_out.is_empty() {
        return String::new();
    }
    let mut s = String::from(
        "
## Cells left out

Not every sample answered (a run stopped part-way): a partial \
         cell would meet its rivals on fewer items, so it is not in the map.

",
    );
    for c in left_out {
        let _ = writeln!(
            s,
            "- {} | {} | {}: {} ({} of {} samples)",
            c.pair,
            c.dataset,
            c.link,
            c.method_cap(),
            c.n(),
            c.planned
        );
    }
    s
}

/// Seeds and shards of every cell, and the uncapped comparison on each half of the items
/// (even and odd positions in sample-id order) as a stability check.
fn appendix(rows: &[RegimeRow<'_>], cells: &[CellView]) -> String {
    let mut s = String::from("## Appendix: slices and stability\n\n");
    let mut slices: Vec<(String, String)> = cells
        .iter()
        .map(|c| (c.dataset.clone(), c.slice.clone()))
        .collect();
    slices.sort();
    slices.dedup();
    for (dataset, slice) in slices {
        let _ = writeln!(s, "- {dataset}: {slice}");
    }
    s.push_str(
        "\nUncapped cache minus text accuracy on each half of the items (95% paired bootstrap):\n\n\
         | pair | task | link | cache | text | half | n | delta (points) | 95% CI |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows.iter().filter(|r| r.budget.is_none()) {
        let (Some(c), Some(t)) = (&r.cache, &r.text) else {
            continue;
        };
        for half in 0..2 {
            let keep = |cv: &CellView| -> CellView {
                let mut cv = cv.clone();
                let ids: Vec<String> = cv.correct.keys().cloned().collect();
                for (i, id) in ids.iter().enumerate() {
                    if i % 2 != half {
                        cv.correct.remove(id);
                        cv.e2e_ms.remove(id);
                    }
                }
                cv
            };
            let (n, acc, _) = crate::regime::paired(&keep(c.cell), &keep(t.cell));
            if let Some((d, (lo, hi))) = acc {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {n} | {:+.1} | [{:+.1}, {:+.1}] |",
                    r.key.0,
                    r.key.1,
                    r.key.2,
                    c.cell.method_cap(),
                    t.cell.method_cap(),
                    half + 1,
                    100.0 * d,
                    100.0 * lo,
                    100.0 * hi
                );
            }
        }
    }
    s
}
