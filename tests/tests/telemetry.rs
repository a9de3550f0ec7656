//! Telemetry end to end: a sharer and a receiver in this process behind a real Prometheus
//! exporter. After one KV evaluation and one call for a method the receiver does not serve,
//! the `/metrics` page holds the receiver's frames and link bytes, the process metrics, the
//! low latency buckets and the refused call; every call wrote one log line, and the sharer's
//! line of the evaluation's Share carries the receiver's trace id.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_tests::{TINY_MODEL, example, install_metrics_exporter, start_receiver, start_sharer};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use loadtest::scrape;

/// Log lines written by the subscriber this test installs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_page_and_request_log_cover_a_kv_evaluation() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let metrics_addr = install_metrics_exporter();

    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let request = pb::EvaluateRequest {
        example: Some(example("t1")),
        method: pb::Method::Kv as i32,
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Int8 as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let reply = client.evaluate(request).await.unwrap().into_inner();
    let frames = reply.total.unwrap().frames;
    // A Sharer method asked of the receiver: refused by the status layer, no handler runs.
    let refused = SharerClient::connect(receiver.endpoint())
        .await
        .unwrap()
        .info(pb::InfoRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    // The process sampler and the transport reporter publish once a second.
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let page = scrape::fetch(metrics_addr, Duration::from_secs(5))
        .await
        .unwrap();
    let get = |name: &str, labels: &[(&str, &str)]| scrape::value(&page, name, labels);
    let receiver_label = [("service", "receiver")];
    assert_eq!(
        get("kvwire_frames_total", &receiver_label),
        Some(f64::from(frames)),
        "{page}"
    );
    assert!(get("kvwire_frames_total", &[("service", "sharer")]).unwrap() > 0.0);
    for level in [
        "link_read",
        "link_written",
        "transport_read",
        "transport_written",
    ] {
        let bytes = get(
            "kvwire_bytes_total",
            &[("service", "receiver"), ("level", level)],
        );
        assert!(bytes.is_some_and(|b| b > 0.0), "{level}: {page}");
    }
    assert!(get("process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(get("process_cpu_seconds_total", &[]).unwrap() > 0.0);
    assert!(get("process_threads", &[]).unwrap() >= 1.0);
    let refused_count = get(
        "kvwire_rpc_requests_total",
        &[
            ("service", "receiver"),
            ("method", "unserved"),
            ("status", "unimplemented"),
        ],
    );
    assert_eq!(refused_count, Some(1.0), "{page}");
    // The lowest bucket exists for the sub-millisecond stages.
    let decode_low = get(
        "kvwire_stage_duration_seconds_bucket",
        &[
            ("service", "receiver"),
            ("stage", "decode"),
            ("le", "0.000025"),
        ],
    );
    assert!(decode_low.is_some(), "{page}");

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let line_of = |what: &str| {
        text.lines()
            .find(|l| l.contains("kvwire::request") && l.contains(what))
            .unwrap_or_else(|| panic!("no request line for {what}:\n{text}"))
            .to_string()
    };
    let evaluate = line_of("method=/kvwire.c2c.v1.Receiver/Evaluate");
    let share = line_of("method=/kvwire.c2c.v1.Sharer/Share");
    let unserved = line_of("method=/kvwire.c2c.v1.Sharer/Info");
    for line in [&evaluate, &share] {
        assert!(line.contains("status=ok"), "{line}");
        assert!(line.contains("latency_ms="), "{line}");
        assert!(!line.contains("response_bytes=0 "), "{line}");
    }
    assert!(unserved.contains("status=unimplemented"), "{unserved}");
    let trace_of = |line: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix("trace_id="))
            .map(str::to_string)
    };
    assert!(
        trace_of(&evaluate).is_some_and(|t| t.len() == 32),
        "{evaluate}"
    );
    assert_eq!(trace_of(&evaluate), trace_of(&share));
}
