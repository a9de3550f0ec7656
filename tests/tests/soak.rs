//! The CI version of the soak (the 10-minute run is `loadtest --soak`, README "Operations"):
//! 64 concurrent `Evaluate` sessions for 30 seconds over 8 connections against a sharer and a
//! receiver with tiny random models, examples from `loadtest/data/mc-sample.jsonl`, KV, text
//! and receiver-only methods with letter and rank scoring and refinement in turn. Every call
//! must succeed, and the process's RSS and CPU, sampled from the real `/metrics` page every
//! 5 s, must have been read. Memory growth is reported, not asserted (30 s is all warm-up).

use std::path::Path;
use std::time::Duration;

use e2e_tests::{TINY_MODEL, install_metrics_exporter, start_receiver_with, start_sharer_with};
use loadtest::run::{Calls, Driver, run};
use loadtest::workload::{Method, Scoring, TextKind, Workload, load_examples};
use loadtest::{LoadPlan, Stop};
use receiver_svc::ReceiverConfig;
use service_kit::transport::client::ClientTransport;
use sharer_svc::SharerConfig;

const CONCURRENCY: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_sessions_for_thirty_seconds_without_an_error() {
    let metrics_addr = install_metrics_exporter();
    // Every session may wait for the one model slot: the queues hold all 64.
    let mut sharer_config = SharerConfig {
        model: TINY_MODEL.into(),
        ..SharerConfig::default()
    };
    sharer_config.limits.max_queued_jobs = 2 * CONCURRENCY;
    let sharer = start_sharer_with(sharer_config, &ClientTransport::default()).await;
    let mut receiver_config = ReceiverConfig {
        model: TINY_MODEL.into(),
        sharer_endpoint: sharer.endpoint(),
        ..ReceiverConfig::default()
    };
    receiver_config.limits.max_queued_jobs = 2 * CONCURRENCY;
    let receiver = start_receiver_with(receiver_config).await;

    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadtest/data/mc-sample.jsonl");
    let workload = Workload {
        examples: load_examples(&examples).unwrap(),
        methods: vec![
            Method::KvInt8,
            Method::Text,
            Method::ReceiverOnly,
            Method::KvInt4,
        ],
        scorings: vec![Scoring::Letter, Scoring::Rank],
        text_kinds: vec![TextKind::Raw, TextKind::Summary],
        refine: Some((0.5, Method::KvFp16)),
        sharer: String::new(),
    };
    let plan = LoadPlan::new(
        &receiver.endpoint(),
        CONCURRENCY,
        Stop::Duration(Duration::from_secs(30)),
    )
    .unwrap();
    let driver = Driver {
        connections: 8,
        timeout: Duration::from_secs(120),
        metrics: vec![("both services".into(), metrics_addr)],
        sample_every: Duration::from_secs(5),
        warmup: Duration::from_secs(10),
    };
    let report = run(&plan, &driver, Calls::Evaluate(workload))
        .await
        .unwrap();
    println!("{}", report.render());
    assert!(report.requests >= CONCURRENCY, "{}", report.render());
    assert_eq!(report.ok, report.requests, "{}", report.render());
    assert!(report.by_kind.len() >= 6, "{:?}", report.by_kind.keys());
    let resources = &report.resources["both services"];
    assert!(resources.samples >= 6, "{resources:?}");
    assert_eq!(resources.failed_samples, 0);
    assert!(
        resources.rss_max_mib > 1.0 && resources.cpu_s > 0.0,
        "{resources:?}"
    );
}
