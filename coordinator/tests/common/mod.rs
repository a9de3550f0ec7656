//! What the tests that run the `coordinator` binary share: a tiny-model grid over a local items
//! file, the binary itself, and result rows compared apart from their timings.

#![allow(dead_code)] // each test file uses its own part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use coordinator::registry::RunDir;

pub mod collector;

/// A grid over random tiny models (timing only; rows are still deterministic) and the items
/// of `items` (all of them): receiver-only, KV at fp16 and int4, raw text at a cap.
pub fn grid(name: &str, items: &Path) -> String {
    format!(
        r#"
name = "{name}"
scoring = ["rank"]
[[pairs]]
label = "tiny<-tiny"
sharer = {{ model = "random:tiny-llama:3" }}
receiver = {{ model = "random:tiny-llama:3" }}
[[datasets]]
name = "arc_easy"
split = "test"
file = "{}"
[[methods]]
kind = "receiver_only"
[[methods]]
kind = "kv"
precision = "fp16"
[[methods]]
kind = "kv"
precision = "int4"
[[methods]]
kind = "text"
mode = "raw"
cap_bytes = 64
[limits]
sample_timeout_s = 120
[retry]
attempts = 3
backoff_ms = 100
"#,
        items.display()
    )
}

/// Writes `n` ARC-style items and the grid `name` into `dir`; returns the grid file.
pub fn write_grid(dir: &Path, name: &str, n: usize) -> PathBuf {
    let items = dir.join("items.jsonl");
    let mut text = String::new();
    for i in 0..n {
        let item = serde_json::json!({
            "id": format!("item-{i}"),
            "question": format!("Which of these numbers is the largest, case {i}?"),
            "choices": {"text": [format!("{i}"), "70", "700", "0.7"], "label": ["A", "B", "C", "D"]},
            "answerKey": "C",
        });
        text.push_str(&item.to_string());
        text.push('\n');
    }
    std::fs::write(&items, text).unwrap();
    let grid = dir.join(format!("{name}.toml"));
    std::fs::write(&grid, self::grid(name, &items)).unwrap();
    grid
}

/// The `coordinator` binary with `args`, from the repository root (for the git commit).
pub fn coordinator(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coordinator"));
    cmd.args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    cmd
}

/// The folder of the coordinator binary under test, which must also hold the two service
/// binaries. `cargo test --workspace` builds them there (the services' own integration tests
/// need them); when one is missing (`cargo test -p coordinator` alone) it is built here. An
/// existing one is used as it is: after changing a service, `cargo build -p sharer-svc -p
/// receiver-svc` refreshes it. (Building from the test every time would rebuild the shared
/// dependencies at another feature set than the test build's, at every run.)
pub fn bin_dir() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_coordinator"));
    let dir = exe.parent().expect("the binary has a folder").to_path_buf();
    let present = ["sharer-svc", "receiver-svc"]
        .iter()
        .all(|b| dir.join(b).is_file());
    if present {
        println!("using the service binaries in {}", dir.display());
        return dir;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "sharer-svc", "-p", "receiver-svc"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the service binaries failed");
    dir
}

/// Runs the binary and returns its output, failing the test with its stderr on an error.
pub fn ok(args: &[&str]) -> Output {
    let out = coordinator(args)
        .output()
        .expect("the coordinator binary runs");
    assert!(
        out.status.success(),
        "coordinator {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A row as JSON without what depends on the clock: stage timings, wall time, finish time, and
/// the TCP bytes between receiver and sharer. Those carry HTTP/2 control frames (window updates,
/// pings, settings acknowledgements, 9 bytes and up each) as the connection's timing has them,
/// and the request carries the time left of its deadline (`grpc-timeout`), whose text is a byte
/// longer or shorter from call to call; the gRPC message and KVWire bytes are compared.
fn without_timings(row: &coordinator::ResultRow) -> serde_json::Value {
    const CLOCK: [&str; 5] = [
        "timings_ms",
        "coordinator_wall_ms",
        "finished_at_unix_ms",
        "transport_bytes_read",
        "transport_bytes_written",
    ];
    let mut v = serde_json::to_value(row).unwrap();
    let obj = v.as_object_mut().unwrap();
    for key in CLOCK {
        obj.remove(key);
    }
    if let Some(rounds) = obj.get_mut("rounds").and_then(|r| r.as_array_mut()) {
        for round in rounds {
            let round = round.as_object_mut().unwrap();
            for key in CLOCK {
                round.remove(key);
            }
        }
    }
    v
}

/// Every row of a run folder by (cell, sample, attempt), without timings; panics on a key seen
/// twice (a duplicated row).
pub fn rows(dir: &Path) -> BTreeMap<(String, String, u32), serde_json::Value> {
    let run = RunDir::open(dir).unwrap();
    let mut all = BTreeMap::new();
    for plan in run.read_plans().unwrap() {
        for row in run.read_rows(&plan.cell.id).unwrap().rows {
            let key = (row.cell_id.clone(), row.sample_id.clone(), row.attempt);
            let again = all.insert(key.clone(), without_timings(&row));
            assert!(
                again.is_none(),
                "row {key:?} appears twice in {}",
                dir.display()
            );
        }
    }
    all
}

/// `results/summary.csv` of a run folder without its latency columns (the `_ms` ones) and the
/// TCP byte columns (the bytes [`rows`] leaves out).
pub fn summary_without_timings(dir: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("results/summary.csv")).unwrap();
    let mut lines = text.lines().map(|l| l.split(',').map(str::to_string));
    let header: Vec<String> = lines.next().unwrap().collect();
    let keep: Vec<bool> = header
        .iter()
        .map(|h| !h.contains("_ms") && !h.starts_with("tcp_bytes"))
        .collect();
    std::iter::once(header)
        .chain(lines.map(|l| l.collect()))
        .map(|l| {
            l.into_iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(v, _)| v)
                .collect()
        })
        .collect()
}

/// Panics with the first row that differs between two runs' [`rows`], field by field.
pub fn assert_same_rows(
    got: &BTreeMap<(String, String, u32), serde_json::Value>,
    want: &BTreeMap<(String, String, u32), serde_json::Value>,
) {
    let got_keys: Vec<_> = got.keys().collect();
    let want_keys: Vec<_> = want.keys().collect();
    assert_eq!(
        got_keys, want_keys,
        "the runs hold different (cell, sample, try) rows"
    );
    for (key, w) in want {
        let g = &got[key];
        if g != w {
            let (g, w) = (g.as_object().unwrap(), w.as_object().unwrap());
            let fields: Vec<String> = w
                .iter()
                .filter(|(k, v)| g.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: {v} vs {:?}", g.get(k)))
                .collect();
            panic!("row {key:?} differs: {fields:#?}");
        }
    }
}
