use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;

/// A cell whose items `0..n` are right where `right(i)` and take `ms` each.
fn cell(
    method: &str,
    kind: Kind,
    cap: Option<u64>,
    bytes: f64,
    ms: f64,
    right: &[bool],
) -> CellView {
    let ids: Vec<String> = (0..right.len()).map(|i| format!("q{i:02}")).collect();
    CellView {
        run: PathBuf::from("r"),
        cell_id: format!("{method}-{cap:?}"),
        pair: "s<-s".into(),
        dataset: "sciq_context".into(),
        link: "loopback".into(),
        family: crate::plot::points::family(method).to_string(),
        method: method.into(),
        kind,
        cap,
        slice: "seed 0".into(),
        correct: ids.iter().cloned().zip(right.iter().copied()).collect(),
        e2e_ms: ids
            .iter()
            .map(|id| (id.clone(), ms))
            .collect::<BTreeMap<_, _>>(),
        mean_bytes: bytes,
        transfer_ms: None,
        sharer_call_ms: None,
        planned: ids.len(),
    }
}

fn pattern(n: usize, k: usize) -> Vec<bool> {
    (0..n).map(|i| i < k).collect()
}

#[test]
fn budgets_pick_what_fits_and_the_verdict_follows_the_intervals() {
    let n = 40;
    let cells = vec![
        cell(
            "receiver-only",
            Kind::Alone,
            None,
            0.0,
            300.0,
            &pattern(n, 10),
        ),
        cell(
            "text-passage@256",
            Kind::Text,
            Some(256),
            250.0,
            500.0,
            &pattern(n, 20),
        ),
        // Uncapped text sent 900 B: it fits every budget of 1024 B and more.
        cell(
            "text-passage",
            Kind::Text,
            None,
            900.0,
            600.0,
            &pattern(n, 36),
        ),
        cell(
            "kv-int4",
            Kind::Cache,
            Some(32768),
            30_000.0,
            900.0,
            &pattern(n, 12),
        ),
        cell(
            "kv-int4",
            Kind::Cache,
            None,
            500_000.0,
            700.0,
            &pattern(n, 36),
        ),
    ];
    let rows = map(&cells);
    let at = |b: Option<u64>| rows.iter().find(|r| r.budget == b).unwrap();
    // 256 B: only text fits.
    assert_eq!(at(Some(256)).verdict, Verdict::OnlyText);
    assert_eq!(
        at(Some(256)).text.as_ref().unwrap().cell.method,
        "text-passage@256"
    );
    // 32 KiB: the uncapped passage (900 B) fits and beats capped KV by 24 points.
    let r = at(Some(32768));
    assert_eq!(r.text.as_ref().unwrap().cell.method, "text-passage");
    assert_eq!(r.verdict, Verdict::TextAccuracy);
    let (d, (lo, hi)) = r.accuracy_delta.unwrap();
    assert!(
        (d + 0.6).abs() < 1e-12 && hi < 0.0 && lo <= d,
        "{d} [{lo}, {hi}]"
    );
    // Uncapped: same accuracy on the same items, text faster by 100 ms on every item.
    let r = at(None);
    assert_eq!(r.verdict, Verdict::TextLatency);
    assert_eq!(r.n_paired, n);
    let (dl, _) = r.latency_delta_ms.unwrap();
    assert!((dl - 100.0).abs() < 1e-9);
    // The inverse view: halfway between 25% and 90% is 57.5%; text gets there with 900 B.
    let members: Vec<&CellView> = cells.iter().collect();
    assert!((default_target(&members) - 0.575).abs() < 1e-12);
    assert_eq!(
        bytes_to_reach(&members, Kind::Text, 0.575)
            .unwrap()
            .mean_bytes,
        900.0
    );
    assert_eq!(
        bytes_to_reach(&members, Kind::Cache, 0.575)
            .unwrap()
            .mean_bytes,
        500_000.0
    );
}

#[test]
fn a_cell_is_complete_only_when_every_planned_sample_is_answered() {
    let mut c = cell(
        "kv-int4",
        Kind::Cache,
        Some(16384),
        13_000.0,
        1.0,
        &pattern(7, 6),
    );
    assert!(c.is_complete());
    c.planned = 887;
    assert!(!c.is_complete());
    let md = crate::regime_report::summary_md(&[], &[], &[], &[c], &["run".into()]);
    assert!(
        md.contains("## Cells left out") && md.contains("(7 of 887 samples)"),
        "{md}"
    );
}

#[test]
fn ties_on_accuracy_are_broken_by_latency_then_bytes_and_written_down() {
    let right = pattern(10, 5);
    let a = cell("kv-int8", Kind::Cache, None, 2000.0, 500.0, &right);
    let b = cell("kv-int4", Kind::Cache, None, 1000.0, 400.0, &right);
    let c = cell("kv-fp16", Kind::Cache, None, 4000.0, 400.0, &right);
    let chosen = best(&[&a, &b, &c]).unwrap();
    assert_eq!(chosen.cell.method, "kv-int4");
    assert_eq!(
        chosen.tie_break,
        "same accuracy as kv-fp16; chosen by bytes"
    );
    let lone = best(&[&a]).unwrap();
    assert!(lone.tie_break.is_empty());
    // Identical accuracy and latency on the same items: a tie.
    let (n, acc, lat) = paired(&a, &b);
    assert_eq!(n, 10);
    assert_eq!(acc.unwrap().0, 0.0);
    assert_eq!(verdict(acc, lat), Verdict::TextLatency);
    assert_eq!(verdict(acc, Some((0.0, (-1.0, 1.0)))), Verdict::Tie);
}

/// A run folder of a context-layout grid on two links: text at 256 B right on 8 of 10 items,
/// KV uncapped right on 9 (the receiver alone on 5), each with its own bytes and latency.
fn run_folder(root: &std::path::Path) -> PathBuf {
    use crate::cell::expand;
    use crate::grid::Grid;
    use crate::registry::CellPlan;
    let grid = Grid::from_toml(
        r#"
        name = "regime"
        layout = "context"
        scoring = ["rank"]
        links = ["loopback", "100mbit-20ms"]
        [[pairs]]
        label = "s<-s"
        sharer = { model = "gguf:m" }
        receiver = { model = "gguf:m" }
        [[datasets]]
        name = "sciq_context"
        split = "validation"
        n = 10
        [[methods]]
        kind = "receiver_only"
        [[methods]]
        kind = "text"
        mode = "passage"
        cap_bytes = 256
        [[methods]]
        kind = "kv"
        precision = "int8"
        "#,
    )
    .unwrap();
    let dir = RunDir::create(root).unwrap();
    let ids: Vec<String> = (0..10).map(|i| format!("q{i}")).collect();
    let plans: Vec<CellPlan> = expand(&grid)
        .into_iter()
        .map(|cell| CellPlan {
            cell,
            sample_ids: ids.clone(),
        })
        .collect();
    dir.write_plans(&plans).unwrap();
    for plan in &plans {
        let c = &plan.cell.config;
        let (right, bytes, ms) = match c.method_label.as_str() {
            "receiver-only" => (5, 0, 300.0),
            "text-passage@256" => (8, 250, 600.0),
            _ => (9, 400_000, 900.0),
        };
        let mut appender = dir.appender(&plan.cell.id).unwrap();
        for (i, id) in ids.iter().enumerate() {
            let mut r = crate::testutil::row(&plan.cell.id, id, 1, true);
            r.correct = Some(i < right);
            r.link = c.link.clone();
            r.bytes.bytes_measured_total = bytes;
            r.timings_ms.insert("end_to_end".into(), ms + i as f64);
            appender.append(&r).unwrap();
        }
    }
    root.to_path_buf()
}

#[test]
fn a_run_folder_becomes_the_map_its_tables_and_its_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let run = run_folder(&tmp.path().join("run"));
    let cells = load(std::slice::from_ref(&run)).unwrap();
    assert_eq!(cells.len(), 6);
    let rows = map(&cells);
    // Per link: 256 B (only text fits) and uncapped (KV +10 points, not significant at n = 10;
    // KV slower by 300 ms on every item: text wins on latency).
    assert_eq!(rows.len(), 4);
    for r in &rows {
        match r.budget {
            Some(256) => assert_eq!(r.verdict, Verdict::OnlyText),
            None => {
                assert_eq!(r.verdict, Verdict::TextLatency, "{r:?}");
                let (d, _) = r.accuracy_delta.unwrap();
                assert!((d - 0.1).abs() < 1e-12);
            }
            other => panic!("budget {other:?}"),
        }
    }
    let links: Vec<&str> = rows.iter().map(|r| r.key.2.as_str()).collect();
    assert_eq!(
        links,
        ["loopback", "loopback", "100mbit-20ms", "100mbit-20ms"]
    );
    let targets = crate::regime_report::targets(&cells, None);
    let csv = crate::regime_report::table_csv(&rows);
    assert_eq!(csv.lines().count(), 5);
    assert!(
        csv.contains("only text fits") && csv.contains("text (latency)"),
        "{csv}"
    );
    let md = crate::regime_report::summary_md(&rows, &targets, &cells, &[], &["run".into()]);
    assert!(
        md.contains("## s<-s, sciq_context, link 100mbit-20ms"),
        "{md}"
    );
    assert!(
        md.contains("In short: text wins at uncapped; only text fits at 256 B."),
        "{md}"
    );
    // Halfway between 50% and 90% is 70%: text reaches it with 250 B.
    let t = crate::regime_report::targets_csv(&targets);
    assert!(
        t.contains("0.7000,midpoint,kv-int8,0.9000,400000.0,text-passage@256,0.8000,250.0"),
        "{t}"
    );
    let out = tmp.path().join("map");
    std::fs::create_dir_all(&out).unwrap();
    let files =
        crate::regime_plot::write_figures(&rows, std::slice::from_ref(&run), &[], &out).unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "heatmap.png",
        "heatmap.svg",
        "s_-s_sciq_context.frontier.png",
        "s_-s_sciq_context.bytes.svg",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    assert!(
        files
            .iter()
            .all(|f| std::fs::metadata(f).unwrap().len() > 1000)
    );
    // A cell left out of the map (not every sample answered) is not drawn either.
    let kv: Vec<CellView> = cells
        .iter()
        .filter(|c| c.family == "kv-int8")
        .cloned()
        .collect();
    assert!(!kv.is_empty());
    let out_left = tmp.path().join("map-left-out");
    std::fs::create_dir_all(&out_left).unwrap();
    crate::regime_plot::write_figures(&rows, &[run], &kv, &out_left).unwrap();
    let svg = |dir: &std::path::Path| {
        std::fs::read_to_string(dir.join("s_-s_sciq_context.bytes.svg")).unwrap()
    };
    assert!(svg(&out).contains("kv-int8"));
    assert!(!svg(&out_left).contains("kv-int8"), "{}", svg(&out_left));
}
