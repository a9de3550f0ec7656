//! Resume across invocations against the embedded services: samples that failed in one
//! invocation (retries off) are tried again by the next one, with their failed tries kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use coordinator::cell::{Cell, expand};
use coordinator::grid::Grid;
use coordinator::registry::{CellPlan, RunDir};
use coordinator::retry::RetryPolicy;
use coordinator::runner::{ReadyCell, RunOptions, receiver_channel, run};
use coordinator::stop::{StopReason, StopSignal};
use coordinator::wire::RequestTemplate;
use kvwire_proto::v1 as pb;

use crate::embedded::{Embedded, ServicePlacement};
use crate::log::RunLog;

const GRID: &str = r#"
    name = "retry"
    [[pairs]]
    label = "tiny<-tiny"
    sharer = { model = "random:tiny-llama:0" }
    receiver = { model = "random:tiny-llama:0" }
    [[datasets]]
    name = "arc_easy"
    split = "test"
    [[methods]]
    kind = "kv"
    precision = "int8"
    [limits]
    sample_timeout_s = 60
"#;

fn examples() -> BTreeMap<String, pb::Example> {
    (0..3)
        .map(|i| {
            let ex = pb::Example {
                id: format!("q{i}"),
                question: format!("Which number is the largest of these, case {i}?"),
                choices: vec!["1".into(), "20".into(), "300".into(), "4".into()],
                gold: "C".into(),
                passage: String::new(),
            };
            (ex.id.clone(), ex)
        })
        .collect()
}

/// The cell ready to run against the embedded receiver, its receiver told to call `sharer`.
fn ready_cell(
    cell: &Cell,
    services: &Embedded,
    examples: Arc<BTreeMap<String, pb::Example>>,
    sharer: String,
) -> ReadyCell {
    ReadyCell {
        plan: CellPlan {
            cell: cell.clone(),
            sample_ids: examples.keys().cloned().collect(),
        },
        template: RequestTemplate::of(&cell.config).unwrap(),
        examples,
        receiver: receiver_channel(
            &services
                .receiver_url(&cell.config.pair.receiver.model, None)
                .unwrap(),
            &Default::default(),
        )
        .unwrap(),
        sharer_endpoint: sharer,
    }
}

/// Real services (random tiny models) on loopback; the first pass points the receiver at
/// a sharer port nobody listens on (not one of its embedded sharers, so its allow-list
/// refuses it), so every sample fails; the second pass retries them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_samples_become_rows_and_a_retry_replaces_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path().join("run")).unwrap();
    let log = RunLog::open(&tmp.path().join("log"), false).unwrap();
    let cell = expand(&Grid::from_toml(GRID).unwrap()).remove(0);
    let placement = ServicePlacement::default();
    let services = Embedded::start(
        std::slice::from_ref(&cell.config.pair),
        &placement,
        &[],
        &log,
    )
    .await
    .unwrap();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let examples = Arc::new(examples());
    // One try per invocation: the resume path, not the in-run retry, is under test here.
    let options = RunOptions {
        concurrency: 2,
        progress: false,
        stop: StopSignal::new(),
        retry: RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        },
    };
    let ready = ready_cell(&cell, &services, examples, dead);

    let first = run(&dir, vec![ready.clone()], options.clone())
        .await
        .unwrap();
    assert_eq!((first.answered, first.failed), (0, 3));
    let rows = dir.read_rows(&cell.id).unwrap();
    assert!(rows.rows.iter().all(|r| {
        !r.is_ok()
            && r.error.as_ref().is_some_and(|e| {
                e.kind == "PermissionDenied"
                    && e.error_type.as_deref() == Some("sharer_not_allowed")
                    && e.retry_after_ms.is_none()
            })
    }));
    assert!(!dir.is_done(&cell.id));

    let good = ReadyCell {
        sharer_endpoint: services.sharer_url(&cell.config.pair.sharer.model).unwrap(),
        ..ready
    };
    let second = run(&dir, vec![good.clone()], options.clone())
        .await
        .unwrap();
    assert_eq!((second.answered, second.failed), (3, 0));
    assert!(dir.is_done(&cell.id));
    let rows = dir.read_rows(&cell.id).unwrap();
    assert_eq!(
        rows.rows.len(),
        6,
        "three failed tries on record, three retries"
    );
    let latest = rows.latest();
    assert_eq!(latest.len(), 3);
    for row in latest.values() {
        assert!(row.is_ok() && row.attempt == 2, "{row:?}");
        let b = row.bytes;
        assert!(b.bytes_measured_total > 0);
        assert!(b.grpc_message_bytes > b.bytes_measured_total, "{b:?}");
        // gRPC message bytes count both directions; so must the socket's (a reused connection
        // no longer carries the handshake that used to cover the request bytes in `read`).
        assert!(
            b.transport_bytes_read + b.transport_bytes_written > b.grpc_message_bytes,
            "{b:?}"
        );
    }

    let third = run(&dir, vec![good], options).await.unwrap();
    assert_eq!(
        (third.cells_skipped, third.answered, third.failed),
        (1, 0, 0)
    );
    services.shutdown().await;
}

/// A run whose stop was given starts no sample, writes no row and leaves the cell open; the
/// next run answers every sample once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_starts_nothing_and_the_next_run_does_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RunDir::create(tmp.path().join("run")).unwrap();
    let log = RunLog::open(&tmp.path().join("log"), false).unwrap();
    let cell = expand(&Grid::from_toml(GRID).unwrap()).remove(0);
    let services = Embedded::start(
        std::slice::from_ref(&cell.config.pair),
        &ServicePlacement::default(),
        &[],
        &log,
    )
    .await
    .unwrap();
    let examples = Arc::new(examples());
    let sharer = services.sharer_url(&cell.config.pair.sharer.model).unwrap();
    let ready = ready_cell(&cell, &services, examples, sharer);
    let stopped = StopSignal::new();
    stopped.stop(StopReason::TimeLimit);
    let options = RunOptions {
        concurrency: 2,
        progress: false,
        stop: stopped,
        retry: RetryPolicy::default(),
    };
    let first = run(&dir, vec![ready.clone()], options.clone())
        .await
        .unwrap();
    assert_eq!((first.answered, first.failed, first.not_run), (0, 0, 3));
    assert!(dir.read_rows(&cell.id).unwrap().rows.is_empty());
    assert!(!dir.is_done(&cell.id));

    let options = RunOptions {
        stop: StopSignal::new(),
        ..options
    };
    let second = run(&dir, vec![ready], options).await.unwrap();
    assert_eq!((second.answered, second.not_run), (3, 0));
    assert!(dir.is_done(&cell.id));
    assert_eq!(dir.read_rows(&cell.id).unwrap().rows.len(), 3);
    services.shutdown().await;
}
