//! Fault: the sharer goes down in the middle of a grid (after its first cell) and a new one
//! comes up on the same address while the coordinator is running the rest. The tries of the
//! dead period are rows on record, each labelled with the receiver's typed error (UNAVAILABLE,
//! `sharer_unreachable` / `sharer_transport` or `sharer_stream_broken`); every try after the
//! restart is answered, the samples that failed are answered by a later try, and every cell is
//! done. (tests/coordinator_retry.rs cuts one stream of one cell; this is the grid-level view:
//! three cells, the sharer gone between them.)

use std::time::Duration;

use coordinator::registry::RunDir;
use coordinator::runner::run;
use coordinator::timestamp::now_unix_ms;
use e2e_tests::one_cell::{ready_cell, run_options, tiny_kv_grid};
use e2e_tests::{TINY_MODEL, rebind, start_receiver_allowing, start_sharer, start_sharer_on};

const IDS: [&str; 6] = ["s1", "s2", "s3", "s4", "s5", "s6"];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sharer_restarted_mid_grid_leaves_labelled_rows_and_the_grid_finishes() {
    let first = start_sharer(TINY_MODEL).await;
    let addr = first.addr;
    let sharer = format!("http://{addr}");
    let receiver = start_receiver_allowing(TINY_MODEL, "", std::slice::from_ref(&sharer)).await;
    // Three cells (one setting apart), tried again after 300 ms, 600 ms, ... up to 8 times.
    let cells: Vec<_> = [60, 61, 62]
        .iter()
        .map(|timeout| {
            let tables = format!(
                "[limits]\nsample_timeout_s = {timeout}\n[retry]\nattempts = 8\nbackoff_ms = 300\n\
                 backoff_factor = 2.0\nmax_backoff_ms = 3000"
            );
            let grid = tiny_kv_grid("restart", "", &tables);
            (
                grid.clone(),
                ready_cell(&grid, &receiver.endpoint(), &sharer, &IDS),
            )
        })
        .collect();
    let options = run_options(&cells[0].0);
    let ids: Vec<String> = cells.iter().map(|(_, c)| c.plan.cell.id.clone()).collect();
    let ready: Vec<_> = cells.into_iter().map(|(_, c)| c).collect();
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path().join("run")).unwrap();
    // The first cell runs while the sharer is up ...
    let first_cell = run(&dir, ready[..1].to_vec(), options.clone())
        .await
        .unwrap();
    assert_eq!(first_cell.answered, IDS.len());
    // ... then the sharer goes (a graceful stop lets calls on an open connection finish, so it
    // goes between two cells: once stopped, nothing serves its address), and the grid goes on.
    let went = now_unix_ms();
    first.stop().await.unwrap();
    let run_dir = dir.clone();
    let coordinator = tokio::spawn(async move { run(&run_dir, ready, options).await });
    // A new sharer comes up on the address once a try has failed.
    tokio::time::timeout(Duration::from_secs(60), async {
        while !ids.iter().any(|id| {
            let rows = dir.read_rows(id).unwrap().rows;
            rows.iter().any(|r| !r.is_ok())
        }) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("a try fails while the sharer is down");
    let second = start_sharer_on(TINY_MODEL, rebind(addr).await).await;
    let back = now_unix_ms();

    let counts = tokio::time::timeout(Duration::from_secs(120), coordinator)
        .await
        .expect("the run ends")
        .unwrap()
        .unwrap();
    assert_eq!(
        (counts.cells_skipped, counts.answered, counts.failed),
        (1, 12, 0),
        "{counts:?}"
    );
    let mut failed = 0;
    for (c, id) in ids.iter().enumerate() {
        assert!(dir.is_done(id), "cell {c} done");
        let rows = dir.read_rows(id).unwrap();
        assert_eq!(rows.answered().len(), IDS.len());
        for r in &rows.rows {
            let Some(e) = &r.error else {
                continue;
            };
            failed += 1;
            // Labelled, and from the dead period.
            assert_eq!(e.kind, "Unavailable", "{r:?}");
            assert!(
                // docs/STATUS_CODES.md: refused connections are either of the first two.
                [
                    "sharer_unreachable",
                    "sharer_transport",
                    "sharer_stream_broken"
                ]
                .contains(&e.error_type.as_deref().unwrap_or("")),
                "{r:?}"
            );
            assert!(
                (went..=back).contains(&r.finished_at_unix_ms),
                "a failed try outside the dead period [{went}, {back}]: {r:?}"
            );
            assert!(
                e.retry_after_ms.is_some(),
                "every failed try was tried again"
            );
        }
        if c == 0 {
            assert!(rows.rows.iter().all(|r| r.is_ok() && r.attempt == 1));
        }
        // After the restart, every try is answered.
        assert!(
            rows.rows
                .iter()
                .filter(|r| r.finished_at_unix_ms > back)
                .all(|r| r.is_ok()),
            "cell {c}: a try failed after the restart"
        );
    }
    assert!(failed >= 1);
    eprintln!(
        "{failed} tries failed in the dead period ({} ms)",
        back - went
    );
    drop(receiver);
    second.stop().await.unwrap();
}
