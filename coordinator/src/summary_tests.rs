//! Tests of the per-cell summary and its renderings.

use super::*;
use crate::cell::expand;
use crate::grid::Grid;
use crate::registry::CellRows;
use crate::testutil::row;

fn cell() -> Cell {
    let grid = Grid::from_toml(
        r#"
        name = "g"
        [[pairs]]
        label = "s<-s"
        sharer = { model = "gguf:m" }
        receiver = { model = "gguf:m" }
        [[datasets]]
        name = "arc_easy"
        split = "test"
        [[methods]]
        kind = "kv"
        precision = "int8"
        "#,
    )
    .unwrap();
    expand(&grid).remove(0)
}

fn rows() -> CellRows {
    let mut rows = vec![
        row("c", "a", 1, false),
        row("c", "a", 2, true),
        row("c", "b", 1, true),
        row("c", "c", 1, true),
        row("c", "d", 1, false),
    ];
    rows[2].correct = Some(false);
    rows[3].bytes.bytes_measured_total = 3000;
    rows[3].bytes.bytes_estimated_total = 2700;
    rows[3].timings_ms.insert("transfer".into(), 4.0);
    CellRows {
        rows,
        torn_tail_bytes: 0,
    }
}

#[test]
fn summary_uses_the_latest_try_of_each_sample() {
    let s = CellSummary::of(&cell(), &rows());
    assert_eq!((s.n_ok, s.n_failed, s.attempts, s.n_correct), (3, 1, 5, 2));
    assert!((s.accuracy.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    let (lo, hi) = s.accuracy_ci95.unwrap();
    assert!(lo < 2.0 / 3.0 && hi > 2.0 / 3.0);
    assert!((s.blob_bytes.mean.unwrap() - 5000.0 / 3.0).abs() < 1e-9);
    assert_eq!(s.blob_bytes.p50, Some(1000.0));
    assert_eq!(s.tcp_bytes.p50, Some(1500.0));
    assert!((s.max_estimate_drift.unwrap() - 0.1).abs() < 1e-12);
    assert_eq!(s.stages_ms["end_to_end"].p50, Some(12.5));
    assert_eq!(s.stages_ms["transfer"].p50, Some(4.0));
}

#[test]
fn renderings_carry_every_cell_and_stage() {
    let s = CellSummary::of(&cell(), &rows());
    let text = render_text(std::slice::from_ref(&s));
    assert!(
        text.contains("kv-int8") && text.contains("66.7 ["),
        "{text}"
    );
    assert!(text.contains("transfer p50/p95 ms"));
    let md = render_markdown(std::slice::from_ref(&s));
    assert!(md.contains("| kv-int8 |") || md.contains("kv-int8 |"));
    let csv = render_csv(std::slice::from_ref(&s));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2);
    let header: Vec<&str> = lines[0].split(',').collect();
    let values: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(header.len(), values.len());
    let at = |name: &str| values[header.iter().position(|h| *h == name).unwrap()];
    assert_eq!(at("n_ok"), "3");
    assert_eq!(at("transfer_ms_p50"), "4.000");
    assert_eq!(at("budget_cap_bytes"), "");
}

#[test]
fn an_empty_cell_renders_dashes() {
    let s = CellSummary::of(&cell(), &CellRows::default());
    assert_eq!(s.accuracy, None);
    assert!(render_text(&[s]).contains(" - "));
}

#[test]
fn rank_accuracy_is_reported_per_normalisation() {
    use crate::row::RankRecord;
    let mut rows = rows();
    let record = |normalization: &str, correct: bool| RankRecord {
        normalization: normalization.into(),
        prediction: if correct { "A" } else { "B" }.into(),
        correct,
        margin: 0.1,
        scores: vec![-1.0, -1.1],
    };
    // Answered latest rows: a@2, b@1, c@1.
    for (i, per_char) in [(1, true), (2, false), (3, true)] {
        rows.rows[i].rank = vec![record("raw", false), record("per_char", per_char)];
    }
    let s = CellSummary::of(&cell(), &rows);
    assert_eq!(s.rank_accuracy["raw"], 0.0);
    assert!((s.rank_accuracy["per_char"] - 2.0 / 3.0).abs() < 1e-12);
    let text = render_text(std::slice::from_ref(&s));
    assert!(text.contains("0.0/-/66.7"), "{text}");
    assert!(render_csv(&[s]).contains(",0.000000,,0.666667,"));
}
