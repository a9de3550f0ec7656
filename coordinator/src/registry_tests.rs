//! Tests of the registry: resume, retries, torn lines, and a real kill of a writing process.

use super::*;
use crate::testutil::row;

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("ex-{i:05}")).collect()
}

#[test]
fn retry_replaces_a_failed_row_without_duplicating_the_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path()).unwrap();
    let wanted = ids(3);
    let mut app = dir.appender("c").unwrap();
    app.append(&row("c", "ex-00000", 1, true)).unwrap();
    app.append(&row("c", "ex-00001", 1, false)).unwrap();
    let rows = dir.read_rows("c").unwrap();
    assert_eq!(rows.pending(&wanted), vec!["ex-00001", "ex-00002"]);
    assert_eq!(rows.next_attempt("ex-00001"), 2);
    assert_eq!(rows.next_attempt("ex-00002"), 1);

    app.append(&row("c", "ex-00001", 2, true)).unwrap();
    let rows = dir.read_rows("c").unwrap();
    let latest = rows.latest();
    assert_eq!(latest.len(), 2);
    assert!(latest["ex-00001"].is_ok());
    assert_eq!(latest["ex-00001"].attempt, 2);
    assert_eq!(rows.rows.len(), 3, "the failed try stays on record");
}

#[test]
fn rows_of_another_cell_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path()).unwrap();
    let mut app = dir.appender("c").unwrap();
    assert!(matches!(
        app.append(&row("d", "x", 1, true)),
        Err(RegistryError::WrongCell { .. })
    ));
}

#[test]
fn torn_last_line_is_ignored_then_cut_before_appending() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path()).unwrap();
    dir.appender("c")
        .unwrap()
        .append(&row("c", "a", 1, true))
        .unwrap();
    let full = serde_json::to_string(&row("c", "b", 1, true)).unwrap();
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.rows_path("c"))
        .unwrap();
    f.write_all(&full.as_bytes()[..full.len() / 2]).unwrap();
    drop(f);

    let rows = dir.read_rows("c").unwrap();
    assert_eq!(rows.rows.len(), 1);
    assert_eq!(rows.torn_tail_bytes, full.len() / 2);

    dir.appender("c")
        .unwrap()
        .append(&row("c", "b", 1, true))
        .unwrap();
    let rows = dir.read_rows("c").unwrap();
    assert_eq!(rows.torn_tail_bytes, 0);
    assert_eq!(rows.latest().len(), 2);
}

#[test]
fn a_corrupt_complete_line_is_an_error_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path()).unwrap();
    dir.appender("c")
        .unwrap()
        .append(&row("c", "a", 1, true))
        .unwrap();
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.rows_path("c"))
        .unwrap();
    f.write_all(b"{not json}\n").unwrap();
    let err = dir.read_rows("c").unwrap_err();
    assert!(
        matches!(err, RegistryError::CorruptRow { line: 2, .. }),
        "{err}"
    );
}

#[test]
fn done_marker_is_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path()).unwrap();
    // A temp file left by a crash before the rename does not mark the cell done.
    fs::write(dir.done_path("c").with_extension("tmp-1"), b"{").unwrap();
    assert!(!dir.is_done("c"));
    let marker = DoneMarker {
        cell_id: "c".into(),
        samples: 3,
        attempts: 4,
        finished_at_unix_ms: 9,
    };
    dir.mark_done(&marker).unwrap();
    assert!(dir.is_done("c"));
    assert_eq!(dir.done_marker("c").unwrap(), Some(marker));
}

const CHILD_ENV: &str = "COORDINATOR_TEST_KILL_CHILD_DIR";
const KILL_SAMPLES: usize = 400;

/// Run only as the child of `killed_writer_resumes_without_lost_or_duplicate_rows`: appends
/// rows as fast as it can until it is killed.
#[test]
#[ignore = "child process of the kill test"]
fn kill_test_child_writer() {
    let Ok(root) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = RunDir::open(root).unwrap();
    let mut app = dir.appender("c").unwrap();
    for id in ids(KILL_SAMPLES) {
        let mut r = row("c", &id, 1, true);
        // Long rows make a kill inside a write more likely.
        r.timings_ms
            .extend((0..200).map(|i| (format!("stage_{i:03}"), i as f64)));
        app.append(&r).unwrap();
    }
}

#[test]
fn killed_writer_resumes_without_lost_or_duplicate_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path()).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "registry::tests::kill_test_child_writer",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, tmp.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once some rows are durable, while the child is still writing.
    let path = dir.rows_path("c");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while fs::metadata(&path).map_or(0, |m| m.len()) < 20_000 {
        assert!(std::time::Instant::now() < deadline, "child wrote nothing");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the child must die mid-run for this test to mean anything"
    );

    let wanted = ids(KILL_SAMPLES);
    let before = dir.read_rows("c").unwrap();
    assert!(!before.rows.is_empty());
    let done_before = before.latest().len();
    // Resume: append the pending samples only.
    let pending: Vec<String> = before
        .pending(&wanted)
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(pending.len(), KILL_SAMPLES - done_before);
    let mut app = dir.appender("c").unwrap();
    for id in &pending {
        app.append(&row("c", id, before.next_attempt(id), true))
            .unwrap();
    }
    let after = dir.read_rows("c").unwrap();
    assert_eq!(after.torn_tail_bytes, 0);
    assert_eq!(after.rows.len(), KILL_SAMPLES, "no duplicate rows");
    let latest = after.latest();
    assert_eq!(latest.len(), KILL_SAMPLES, "no lost samples");
    assert!(latest.values().all(|r| r.attempt == 1 && r.is_ok()));
    assert!(after.pending(&wanted).is_empty());
}

#[test]
fn a_refused_sample_is_settled_and_a_transient_failure_is_pending() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path()).unwrap();
    let wanted = ids(3);
    let mut app = dir.appender("c").unwrap();
    let mut refused = row("c", "ex-00000", 1, false);
    if let Some(e) = refused.error.as_mut() {
        e.kind = "FailedPrecondition".into();
        e.message = "byte cap 256 is below the smallest transfer (7385 bytes)".into();
    }
    app.append(&refused).unwrap();
    app.append(&row("c", "ex-00001", 1, false)).unwrap();
    app.append(&row("c", "ex-00002", 1, true)).unwrap();
    let rows = dir.read_rows("c").unwrap();
    assert!(rows.latest()["ex-00000"].is_refusal());
    assert!(!rows.latest()["ex-00001"].is_refusal());
    assert_eq!(rows.pending(&wanted), vec!["ex-00001"]);
}
