//! Tests of the figures on a hand-made run folder: grouping into figures, curves and bounds,
//! the CSV's numbers, the files written, and the errors for folders with nothing to plot.

use std::path::Path;

use super::points::{by_figure, family, load};
use super::render::fmt_bytes;
use super::*;
use crate::cell::{Cell, expand};
use crate::grid::Grid;
use crate::registry::{CellPlan, RunDir};
use crate::row::{ByteBreakdown, ResultRow};
use crate::testutil::row;

const GRID: &str = r#"
    name = "ctx"
    layout = "context"
    scoring = ["rank"]
    [[pairs]]
    label = "s<-s"
    sharer = { model = "gguf:m" }
    receiver = { model = "gguf:m" }
    [[datasets]]
    name = "passkey"
    split = "synthetic"
    n = 4
    passage_words = 50
    [[datasets]]
    name = "sciq_context"
    split = "validation"
    n = 4
    [[methods]]
    kind = "receiver_only"
    [[methods]]
    kind = "text"
    mode = "passage"
    label = "text-passage"
    [[methods]]
    kind = "text"
    mode = "passage"
    cap_bytes = 256
    [[methods]]
    kind = "kv"
    precision = "int8"
"#;

/// The grid's cells plus the kv-int8 cells again at two caps (as a `budgets` axis makes them).
fn cells() -> Vec<Cell> {
    let mut cells = expand(&Grid::from_toml(GRID).unwrap());
    let kv: Vec<Cell> = cells
        .iter()
        .filter(|c| c.config.method_label == "kv-int8")
        .cloned()
        .collect();
    cells.retain(|c| c.config.method_label != "kv-int8");
    for cap in [4000, 1000] {
        for cell in &kv {
            let mut config = cell.config.clone();
            config.budget_cap_bytes = Some(cap);
            cells.push(Cell {
                id: config.id(),
                config,
            });
        }
    }
    cells
}

/// Bytes per sample of a cell's answered rows: nothing for receiver-only, else by cap.
fn bytes_of(cell: &Cell) -> ByteBreakdown {
    let total = match (
        cell.config.method_label.as_str(),
        cell.config.budget_cap_bytes,
    ) {
        ("receiver-only", _) => 0,
        (_, Some(cap)) => cap * 9 / 10,
        (_, None) => 400,
    };
    if cell.config.method_label.starts_with("kv") {
        ByteBreakdown {
            headers: 40,
            indices: 10,
            payload: total - 150,
            scales: 100,
            request: 0,
        }
    } else {
        ByteBreakdown {
            payload: total,
            ..ByteBreakdown::default()
        }
    }
}

/// Four samples per cell, the first correct only in its retried second try (its failed first
/// try must not count), half of the samples correct.
fn rows_of(cell: &Cell) -> Vec<ResultRow> {
    let c = &cell.config;
    let breakdown = bytes_of(cell);
    let mut rows = Vec::new();
    for (i, sample) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let attempts: &[(u32, bool)] = if i == 0 {
            &[(1, false), (2, true)]
        } else {
            &[(1, true)]
        };
        for &(attempt, ok) in attempts {
            let mut r = row(&cell.id, sample, attempt, ok);
            r.pair = c.pair.label.clone();
            r.dataset = c.dataset.name.clone();
            r.method = c.method_label.clone();
            r.budget_cap_bytes = c.budget_cap_bytes;
            if ok {
                r.correct = Some(i % 2 == 0);
                r.bytes.bytes_measured_breakdown = breakdown;
                r.bytes.bytes_measured_total = breakdown.total();
            }
            rows.push(r);
        }
    }
    rows
}

/// A finished run folder with every cell's rows; `with_rows` false leaves the results empty.
fn run_folder(root: &Path, with_rows: bool) -> RunDir {
    let dir = RunDir::create(root).unwrap();
    let plans: Vec<CellPlan> = cells()
        .into_iter()
        .map(|cell| CellPlan {
            cell,
            sample_ids: ["a", "b", "c", "d"].map(String::from).to_vec(),
        })
        .collect();
    dir.write_plans(&plans).unwrap();
    if with_rows {
        for plan in &plans {
            let mut appender = dir.appender(&plan.cell.id).unwrap();
            for r in rows_of(&plan.cell) {
                appender.append(&r).unwrap();
            }
        }
    }
    dir
}

#[test]
fn a_family_is_the_label_without_a_numeric_cap() {
    assert_eq!(family("text-passage@256"), "text-passage");
    assert_eq!(family("text-raw@1024"), "text-raw");
    assert_eq!(family("kv-int8"), "kv-int8");
    assert_eq!(family("odd@label"), "odd@label");
    assert_eq!(family("trailing@"), "trailing@");
}

#[test]
fn points_group_into_figures_curves_and_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = run_folder(tmp.path(), true);
    let (points, empty) = load(&dir).unwrap();
    assert!(empty.is_empty());
    assert_eq!(points.len(), 10);
    // The latest try of each sample: 4 answered, samples a and c correct.
    assert!(points.iter().all(|p| (p.n, p.n_correct) == (4, 2)));

    let figures = by_figure(&points);
    let keys: Vec<String> = figures.iter().map(|f| f.key.title()).collect();
    assert_eq!(keys, ["s<-s | passkey (50 words)", "s<-s | sciq_context"]);
    assert_eq!(figures[0].key.stem(), "s--s_passkey_50w");

    let fig = &figures[0];
    let bounds: Vec<(&str, Role)> = fig
        .bounds()
        .iter()
        .map(|p| (p.method.as_str(), p.role))
        .collect();
    assert_eq!(
        bounds,
        [
            ("receiver-only", Role::LowerBound),
            ("text-passage", Role::UpperBound)
        ]
    );
    /// A family with the (cap, mean bytes) of its points.
    type Curve = (String, Vec<(Option<u64>, f64)>);
    let curves: Vec<Curve> = fig
        .curves()
        .into_iter()
        .map(|(family, pts)| (family, pts.iter().map(|p| (p.cap, p.mean_bytes)).collect()))
        .collect();
    assert_eq!(
        curves,
        [
            (
                "text-passage".to_string(),
                vec![(Some(256), 230.0), (None, 400.0)]
            ),
            (
                "kv-int8".to_string(),
                vec![(Some(1000), 900.0), (Some(4000), 3600.0)]
            ),
        ]
    );
}

#[test]
fn the_context_length_comes_from_the_dataset_spec() {
    use super::points::ContextLength;
    let long = serde_json::json!({"name": "sciq_context_long", "context_tokens": 2048});
    assert_eq!(
        ContextLength::from_json(&long),
        Some(ContextLength::Tokens(2048))
    );
    let passkey = serde_json::json!({"name": "passkey", "passage_words": 200});
    let length = ContextLength::from_json(&passkey).unwrap();
    assert_eq!(length.to_string(), "200 words");
    assert_eq!(
        ContextLength::from_json(&serde_json::json!({"name": "arc_easy"})),
        None
    );
}

#[test]
fn points_on_one_spot_share_a_label() {
    let tmp = tempfile::tempdir().unwrap();
    let (points, _) = load(&run_folder(tmp.path(), true)).unwrap();
    let find = |method: &str| {
        points
            .iter()
            .find(|p| p.method == method && p.dataset == "passkey")
            .unwrap()
            .clone()
    };
    let (capped, uncapped) = (find("text-passage@256"), find("text-passage"));
    // A cap above the passage's length sends the whole passage: the uncapped point's spot.
    let mut above = capped.clone();
    above.cap = Some(1024);
    above.mean_bytes = uncapped.mean_bytes;
    let labels: Vec<String> = accuracy::curve_labels(&[&capped, &above, &uncapped])
        .into_iter()
        .map(|(_, _, label)| label)
        .collect();
    assert_eq!(labels, ["@256", "@1024, uncapped"]);

    // The cap-free end of a budgets curve (a grid's `uncapped = true`) is named; a family's
    // lone cap-free point is not (the legend names it).
    let kv = points
        .iter()
        .find(|p| p.method == "kv-int8" && p.cap == Some(1000))
        .unwrap()
        .clone();
    let mut end = kv.clone();
    end.cap = None;
    end.mean_bytes *= 10.0;
    let label_texts = |pts: &[&Point]| -> Vec<String> {
        accuracy::curve_labels(pts)
            .into_iter()
            .map(|(_, _, label)| label)
            .collect()
    };
    assert_eq!(label_texts(&[&kv, &end]), ["@1000", "uncapped"]);
    assert!(label_texts(&[&end]).is_empty());
}

#[test]
fn the_csv_has_one_row_per_point_with_the_summary_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let (points, _) = load(&run_folder(tmp.path(), true)).unwrap();
    let text = csv::render(&points);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + points.len());
    let header: Vec<&str> = lines[0].split(',').collect();
    assert_eq!(header, csv::COLUMNS);
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let row = lines
        .iter()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|v| {
            (v[col("method")], v[col("cap_bytes")], v[col("dataset")])
                == ("kv-int8", "4000", "passkey")
        })
        .unwrap();
    let at = |name: &str| row[col(name)];
    assert_eq!(
        (
            at("pair"),
            at("context_length"),
            at("context_unit"),
            at("family"),
            at("role")
        ),
        ("s<-s", "50", "words", "kv-int8", "curve")
    );
    assert_eq!(
        (at("n"), at("n_correct"), at("accuracy")),
        ("4", "2", "0.500000")
    );
    let (lo, hi) = eval_harness::wilson_95(2, 4).unwrap();
    assert_eq!(at("ci95_low"), format!("{lo:.6}"));
    assert_eq!(at("ci95_high"), format!("{hi:.6}"));
    assert_eq!(at("mean_bytes"), "3600.000");
    assert_eq!(
        [
            at("headers"),
            at("indices"),
            at("payload"),
            at("scales"),
            at("request")
        ],
        ["40.000", "10.000", "3450.000", "100.000", "0.000"]
    );
    let lower = lines.iter().find(|l| l.contains("receiver-only")).unwrap();
    assert!(lower.contains(",lower_bound,"), "{lower}");
}

#[test]
fn plot_run_writes_every_figure_as_png_and_svg_and_the_csv() {
    let tmp = tempfile::tempdir().unwrap();
    run_folder(tmp.path(), true);
    let out = tmp.path().join("plots");
    let report = plot_run(tmp.path(), &out).unwrap();
    assert_eq!((report.figures, report.points), (2, 10));
    // Two figures, each accuracy and bytes, each PNG and SVG, then the CSV.
    assert_eq!(report.files.len(), 2 * 2 * 2 + 1);
    for file in &report.files {
        let bytes = std::fs::read(file).unwrap();
        assert!(!bytes.is_empty(), "{} is empty", file.display());
        match file.extension().and_then(|e| e.to_str()) {
            Some("png") => assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n"),
            Some("svg") => assert!(String::from_utf8(bytes).unwrap().contains("<svg")),
            _ => assert_eq!(file.file_name().unwrap(), "points.csv"),
        }
    }
    let svg = std::fs::read_to_string(out.join("s--s_passkey_50w.accuracy.svg")).unwrap();
    for text in ["kv-int8", "text-passage", "receiver-only (lower bound)"] {
        assert!(svg.contains(text), "the accuracy figure lacks {text:?}");
    }
    let bars = std::fs::read_to_string(out.join("s--s_passkey_50w.bytes.svg")).unwrap();
    for text in ["payload", "scales", "kv-int8@4000", "3.6 kB"] {
        assert!(bars.contains(text), "the bytes figure lacks {text:?}");
    }
}

#[test]
fn folders_with_nothing_to_plot_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("plots");
    let missing = tmp.path().join("no-such-run");
    assert!(matches!(
        plot_run(&missing, &out),
        Err(PlotError::NotARunFolder { .. })
    ));
    std::fs::create_dir_all(tmp.path().join("bare/results")).unwrap();
    assert!(matches!(
        plot_run(&tmp.path().join("bare"), &out),
        Err(PlotError::NotARunFolder { .. })
    ));
    run_folder(&tmp.path().join("empty"), false);
    assert!(matches!(
        plot_run(&tmp.path().join("empty"), &out),
        Err(PlotError::NoAnsweredRows { cells: 10, .. })
    ));
    assert!(
        !out.exists(),
        "nothing is written when there is nothing to plot"
    );
}

#[test]
fn byte_labels_and_the_log_range() {
    assert_eq!(fmt_bytes(950.0), "950 B");
    assert_eq!(fmt_bytes(1000.0), "1 kB");
    assert_eq!(fmt_bytes(12_345.0), "12.3 kB");
    assert_eq!(fmt_bytes(1_702_385.0), "1.7 MB");
    assert_eq!(fmt_bytes(6_010_865.0), "6.01 MB");
    let (lo, hi) = accuracy::byte_range([223.0, 360.0, 0.0, 6_010_865.0].into_iter());
    assert_eq!((lo, hi), (100.0, 1e7));
    assert_eq!(
        accuracy::byte_range([210.0, 246.0].into_iter()),
        (10.0, 1e3)
    );
    assert_eq!(accuracy::byte_range(std::iter::empty()), (1.0, 1e3));
}
