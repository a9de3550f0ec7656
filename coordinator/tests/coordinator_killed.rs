//! Fault: the coordinator is killed (SIGKILL) in the middle of a grid and run again with the
//! same command. No row is lost and none is duplicated (the resumed folder holds the rows of an
//! uninterrupted run of the same grid, apart from timings), and the registry is consistent: every
//! cell has its done marker with its sample and try counts, no results file keeps a torn line,
//! and `status` reports every cell done. Through the binary, embedded services, tiny models.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_same_rows, coordinator, ok, rows, write_grid};
use coordinator::registry::RunDir;

/// Complete rows written so far under `run/results`, and done markers.
fn progress(run: &Path) -> (usize, usize) {
    let Ok(entries) = std::fs::read_dir(run.join("results")) else {
        return (0, 0);
    };
    let (mut lines, mut done) = (0, 0);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".done.json") {
            done += 1;
        } else if name.ends_with(".jsonl") {
            let bytes = std::fs::read(entry.path()).unwrap_or_default();
            lines += bytes.iter().filter(|&&b| b == b'\n').count();
        }
    }
    (lines, done)
}

#[test]
fn a_killed_coordinator_resumes_without_losing_or_duplicating_a_row() {
    const ITEMS: usize = 40;
    let tmp = tempfile::tempdir().unwrap();
    let grid = write_grid(tmp.path(), "killed", ITEMS);
    let grid = grid.to_str().unwrap();
    let out = |p: &str| tmp.path().join(p).to_str().unwrap().to_string();
    ok(&["run", grid, "--out", &out("whole"), "--no-progress"]);
    let whole = rows(&tmp.path().join("whole/killed"));
    assert_eq!(whole.len(), 4 * ITEMS);

    // One call at a time, killed once the first cell is done and the second under way.
    let run = tmp.path().join("resumed/killed");
    let mut child = coordinator(&["run", grid, "--out", &out("resumed"), "--no-progress"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let at_kill = loop {
        let (lines, done) = progress(&run);
        if lines >= ITEMS + 5 && done >= 1 {
            break (lines, done);
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed (at {lines} rows)"
        );
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before it was killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let (lines, done) = progress(&run);
    assert!(
        lines < 4 * ITEMS && done < 4,
        "killed mid-grid: {lines} rows, {done} cells done (at the kill: {at_kill:?})"
    );
    let dir = RunDir::open(&run).unwrap();
    assert!(
        std::fs::read_dir(dir.manifests()).unwrap().next().is_none(),
        "a killed run writes no manifest"
    );

    // The same command again.
    ok(&["run", grid, "--out", &out("resumed"), "--no-progress"]);
    assert_same_rows(&rows(&run), &whole);
    let plans = dir.read_plans().unwrap();
    assert_eq!(plans.len(), 4);
    for plan in &plans {
        let cell = dir.read_rows(&plan.cell.id).unwrap();
        assert_eq!(cell.torn_tail_bytes, 0, "cell {}", plan.cell.id);
        let marker = dir
            .done_marker(&plan.cell.id)
            .unwrap()
            .expect("a done marker");
        assert_eq!((marker.samples, marker.attempts), (ITEMS, cell.rows.len()));
        assert!(cell.rows.iter().all(|r| r.is_ok() && r.attempt == 1));
    }
    let status = ok(&["status", run.to_str().unwrap()]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("4/4 cells done"), "{status}");
}
