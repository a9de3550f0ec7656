//! End-to-end: the sharer dies mid-stream during a coordinator run. The coordinator must write
//! a failed row for the cut try (with the receiver's typed error), retry under the grid's
//! policy, and write an answered row once a new sharer serves the same address.

use std::time::Duration;

use coordinator::registry::RunDir;
use coordinator::row::RowStatus;
use coordinator::runner::run;
use e2e_tests::one_cell::{ready_cell, run_options, tiny_kv_grid};
use e2e_tests::{
    TINY_MODEL, dying_sharer, example, rebind, share_blob_bytes, start_receiver_allowing,
    start_sharer, start_sharer_on,
};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;

const LIMITS_AND_RETRY: &str = r#"
    [limits]
    sample_timeout_s = 60
    [retry]
    attempts = 8
    backoff_ms = 200
    backoff_factor = 2.0
    max_backoff_ms = 2000
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sharer_killed_mid_stream_gives_a_failed_row_then_a_retried_answer() {
    let first = start_sharer(TINY_MODEL).await;
    let full = share_blob_bytes(&first.endpoint(), example("e1"), pb::Payload::Fp16).await;
    // The sharer as the receiver reaches it: dies after half of one transfer's blob bytes.
    let (addr, died) = dying_sharer(first.addr, full / 2).await;
    // No default sharer: every request names its own (the one it allows).
    let receiver = start_receiver_allowing(TINY_MODEL, "", &[format!("http://{addr}")]).await;

    let grid = tiny_kv_grid("sharer-dies", "", LIMITS_AND_RETRY);
    let sharer = format!("http://{addr}");
    let ready = ready_cell(&grid, &receiver.endpoint(), &sharer, &["e1", "e2"]);
    let cell = ready.plan.cell.clone();
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path().join("run")).unwrap();
    let options = run_options(&grid);
    let run_dir = dir.clone();
    let coordinator = tokio::spawn(async move { run(&run_dir, vec![ready], options).await });

    // The sharer dies mid-stream; a new instance comes up on the same address.
    tokio::time::timeout(Duration::from_secs(60), died)
        .await
        .expect("the first transfer must reach the cut")
        .unwrap();
    first.stop().await.unwrap();
    let second = start_sharer_on(TINY_MODEL, rebind(addr).await).await;

    let counts = tokio::time::timeout(Duration::from_secs(120), coordinator)
        .await
        .expect("the run must end")
        .unwrap()
        .unwrap();
    assert_eq!((counts.answered, counts.failed), (2, 0), "{counts:?}");
    assert!(dir.is_done(&cell.id));

    let rows = dir.read_rows(&cell.id).unwrap().rows;
    for r in &rows {
        let e = r.error.as_ref();
        eprintln!(
            "{} try {}: {:?} {} {} retry_after_ms={:?}",
            r.sample_id,
            r.attempt,
            r.status,
            e.map_or("-", |e| e.kind.as_str()),
            e.and_then(|e| e.error_type.as_deref()).unwrap_or("-"),
            e.and_then(|e| e.retry_after_ms)
        );
    }
    let failed: Vec<_> = rows
        .iter()
        .filter(|r| r.status == RowStatus::Failed)
        .collect();
    assert_eq!(
        counts.retried,
        failed.len(),
        "every failed try is on record"
    );
    // The cut try: a failed row with the receiver's typed error and the planned back-off.
    let cut = failed
        .iter()
        .find(|r| {
            r.error
                .as_ref()
                .is_some_and(|e| e.error_type.as_deref() == Some("sharer_stream_broken"))
        })
        .unwrap_or_else(|| panic!("no sharer_stream_broken row in {rows:#?}"));
    let e = cut.error.as_ref().unwrap();
    assert_eq!(e.kind, "Unavailable", "{e:?}");
    assert!(e.retry_after_ms.is_some_and(|ms| ms >= 200), "{e:?}");
    assert!(cut.prediction.is_none() && cut.bytes.bytes_measured_total == 0);
    // Tries between the death and the new sharer found nobody listening.
    for r in &failed {
        let e = r.error.as_ref().unwrap();
        assert_eq!(e.kind, "Unavailable", "{r:?}");
        assert!(
            ["sharer_stream_broken", "sharer_unreachable"]
                .contains(&e.error_type.as_deref().unwrap_or("")),
            "{r:?}"
        );
    }
    // Every sample's tries are numbered 1.. with only the last one answered, and the answer
    // carries the whole transfer from the second sharer.
    for id in ["e1", "e2"] {
        let tries: Vec<_> = rows.iter().filter(|r| r.sample_id == id).collect();
        let attempts: Vec<u32> = tries.iter().map(|r| r.attempt).collect();
        assert_eq!(attempts, (1..=tries.len() as u32).collect::<Vec<_>>());
        let (last, earlier) = tries.split_last().unwrap();
        assert!(earlier.iter().all(|r| !r.is_ok()), "{tries:#?}");
        assert!(last.is_ok() && last.prediction.is_some(), "{last:?}");
        assert!(last.error.is_none());
        assert!(last.bytes.bytes_measured_total > 0);
    }
    let cut_answer = rows.iter().rfind(|r| r.sample_id == cut.sample_id).unwrap();
    assert!(cut_answer.attempt > cut.attempt);
    // Every example has the same question text (only ids differ): the whole transfer arrived.
    assert_eq!(cut_answer.bytes.bytes_measured_total, full as u64);
    // This receiver has no default sharer: a KV request that names none is refused clearly.
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let status = client
        .evaluate(pb::EvaluateRequest {
            example: Some(example("e3")),
            method: pb::Method::Kv as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("sharer_endpoint"), "{status:?}");
    drop(receiver);
    second.stop().await.unwrap();
}
