//! OTLP trace export across three processes: `sharer-svc` and `receiver-svc` started as
//! processes (tiny random models, `[telemetry.otlp]` pointing at this test, log filter `warn`:
//! it governs log lines, not spans), and the
//! `coordinator` binary running a one-item grid against them with `--otlp-endpoint`. The test
//! is the collector (`common::collector`: a tonic server implementing OpenTelemetry's
//! `opentelemetry.proto.collector.trace.v1.TraceService`, the protocol's own protobufs from
//! `opentelemetry-proto`). The services are stopped with SIGTERM (they flush on shutdown).
//!
//! Every evaluation's trace is started by the coordinator and carries the receiver's spans, the
//! receiver's `Evaluate` server span a child of the coordinator's span; the KV evaluation's
//! trace also carries the sharer's spans, its `Share` server span a child of the receiver's
//! `Share` client span, and every stage span (sharer: prefill, select, encode, stream, gather,
//! quantize; receiver: decode, fuse, prefill, score) sits under its service's server span;
//! health probes are not traced; a second run sampled out at the coordinator (ratio 0) exports
//! nothing from any process. A broken propagation (a service starting its own trace, a span
//! losing its parent) fails it. The embedded services (in the coordinator's process) are
//! checked too.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use common::collector::{Collector, start_collector};
use common::{bin_dir, coordinator, write_grid};
use coordinator::bench::config::{self, Placement, ReceiverFuser};
use coordinator::bench::process::{Role, ServiceProcess, free_port};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const MODEL: &str = "random:tiny-llama:3";
const SHARER: &str = "sharer-svc";
const RECEIVER: &str = "receiver-svc";
const COORDINATOR: &str = "coordinator";

/// Starts a service binary with `table` as its config plus the OTLP endpoint (config and log
/// files in `dir`); waits for health.
async fn start(
    dir: &Path,
    role: Role,
    mut table: toml::Table,
    port: u16,
    endpoint: &str,
) -> ServiceProcess {
    let mut otlp = toml::Table::new();
    otlp.insert("endpoint".into(), endpoint.into());
    let mut telemetry = toml::Table::new();
    telemetry.insert("otlp".into(), otlp.into());
    // Quiet logs: the log filter governs log lines only, spans are exported all the same.
    telemetry.insert("log_filter".into(), "warn".into());
    table.insert("telemetry".into(), telemetry.into());
    let name = role.binary().to_string();
    let config = dir.join(format!("{name}.toml"));
    config::write(&table, &config).unwrap();
    let binary = bin_dir().join(role.binary());
    let log = dir.join(format!("{name}.log"));
    let mut process = ServiceProcess::spawn(role, name, &binary, &config, log, port).unwrap();
    process
        .wait_healthy(Duration::from_secs(120))
        .await
        .unwrap();
    process
}

/// A sharer and a receiver (identity fuser) with tiny random models, exporting to
/// `endpoint`.
async fn start_pair(dir: &Path, endpoint: &str) -> (ServiceProcess, ServiceProcess) {
    let placement = Placement {
        device: "cpu".into(),
        dtype: "f32".into(),
        max_prompt_tokens: 512,
        timeout_secs: 60,
    };
    let (sharer_port, receiver_port) = (free_port().unwrap(), free_port().unwrap());
    let sharer_table = config::sharer(MODEL, sharer_port, &placement);
    let sharer = start(dir, Role::Sharer, sharer_table, sharer_port, endpoint).await;
    let receiver_table = config::receiver(
        MODEL,
        receiver_port,
        sharer_port,
        &ReceiverFuser::Identity,
        &placement,
    );
    let receiver = start(dir, Role::Receiver, receiver_table, receiver_port, endpoint).await;

    (sharer, receiver)
}

/// SIGTERM, then waits for the exit (the exporter flushes on the way out).
async fn terminate(mut process: ServiceProcess) {
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &process.pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -TERM {}", process.pid);
    let start = Instant::now();
    while process.check_alive("stopped").is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} ignored SIGTERM",
            process.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    process.stop().await.unwrap();
}

/// Runs `grid` into `out` with the coordinator binary, `services` its endpoint options (none:
/// embedded services), exporting to `endpoint` at `ratio`.
fn run_grid(grid: &Path, out: &Path, services: &[&str], endpoint: &str, ratio: &str) {
    let mut args = vec![
        "run",
        grid.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
        "--otlp-endpoint",
        endpoint,
        "--otlp-sampling-ratio",
        ratio,
    ];
    args.extend_from_slice(services);
    let run = coordinator(&args).output().unwrap();
    assert!(
        run.status.success(),
        "coordinator failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

/// The spans of one trace, by span id.
struct Trace<'a> {
    spans: HashMap<&'a [u8], (&'a str, &'a Span)>,
}

impl<'a> Trace<'a> {
    fn of(spans: &'a [(String, Span)], trace_id: &[u8]) -> Self {
        let spans = spans
            .iter()
            .filter(|(_, span)| span.trace_id == trace_id)
            .map(|(s, span)| (span.span_id.as_slice(), (s.as_str(), span)))
            .collect();
        Self { spans }
    }

    /// The client span of a call to `method` in `caller` and its server span in `callee`, the
    /// server span a child of the client span.
    fn call(&self, caller: &str, callee: &str, method: &str) -> (&'a Span, &'a Span) {
        let of_kind = |service: &str, kind: SpanKind| {
            let found: Vec<_> = self
                .all(service, method)
                .into_iter()
                .filter(|s| s.kind == kind as i32)
                .collect();
            assert_eq!(found.len(), 1, "{service} {method}: {}", self.describe());
            found[0]
        };
        let (client, server) = (
            of_kind(caller, SpanKind::Client),
            of_kind(callee, SpanKind::Server),
        );
        assert_eq!(
            server.parent_span_id,
            client.span_id,
            "{method}: {}",
            self.describe()
        );
        (client, server)
    }

    fn services(&self) -> BTreeSet<&'a str> {
        self.spans.values().map(|(s, _)| *s).collect()
    }

    /// The one span of `service` named `name`.
    fn one(&self, service: &str, name: &str) -> &'a Span {
        let found: Vec<_> = self.all(service, name);
        assert_eq!(found.len(), 1, "{service} {name}: {}", self.describe());
        found[0]
    }

    fn all(&self, service: &str, name: &str) -> Vec<&'a Span> {
        self.spans
            .values()
            .filter(|(s, span)| *s == service && span.name == name)
            .map(|(_, span)| *span)
            .collect()
    }

    /// Whether `ancestor` is on `span`'s parent chain, in `span`'s own service.
    fn descends(&self, span: &Span, ancestor: &Span) -> bool {
        let mut parent = span.parent_span_id.as_slice();
        while let Some((_, p)) = self.spans.get(parent) {
            if p.span_id == ancestor.span_id {
                return true;
            }
            parent = p.parent_span_id.as_slice();
        }
        false
    }

    fn describe(&self) -> String {
        let mut names: Vec<String> = self
            .spans
            .values()
            .map(|(s, span)| format!("{s}:{}", span.name))
            .collect();
        names.sort();
        names.join(", ")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_id_spans_coordinator_receiver_and_sharer() {
    let collector = Collector::default();
    let endpoint = start_collector(collector.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let (sharer, receiver) = start_pair(tmp.path(), &endpoint).await;

    // One item, four methods: receiver-only, KV fp16 and int4, raw text.
    let grid = write_grid(tmp.path(), "otlp", 1);
    let services = ["--sharer", &sharer.url, "--receiver", &receiver.url];
    run_grid(&grid, &tmp.path().join("traced"), &services, &endpoint, "1");
    // Sampled out at the coordinator: the unsampled flag travels, nothing is exported.
    run_grid(
        &grid,
        &tmp.path().join("untraced"),
        &services,
        &endpoint,
        "0",
    );
    terminate(receiver).await;
    terminate(sharer).await;

    let spans = collector.0.lock().unwrap().clone();
    // The health probes of the start-up wait are not traced.
    assert!(
        spans.iter().all(|(_, s)| !s.name.starts_with("grpc.")),
        "a health or reflection call was traced"
    );
    let roots: Vec<&Span> = spans
        .iter()
        .filter(|(s, span)| s == COORDINATOR && span.name == "coordinator.evaluate")
        .map(|(_, span)| span)
        .collect();
    assert_eq!(roots.len(), 4, "one coordinator span per traced evaluation");
    let evaluates = spans
        .iter()
        .filter(|(_, s)| s.name == "kvwire.c2c.v1.Receiver/Evaluate")
        .count();
    assert_eq!(
        evaluates, 4,
        "one receiver Evaluate span per traced evaluation, none from the sampled-out run"
    );
    let mut kv_traces = 0;
    for root in &roots {
        assert!(
            root.parent_span_id.is_empty(),
            "the coordinator starts the trace"
        );
        assert_eq!(root.kind, SpanKind::Client as i32);
        let trace = Trace::of(&spans, &root.trace_id);
        let evaluate = trace.one(RECEIVER, "kvwire.c2c.v1.Receiver/Evaluate");
        assert_eq!(
            evaluate.parent_span_id,
            root.span_id,
            "{}",
            trace.describe()
        );
        assert_eq!(evaluate.kind, SpanKind::Server as i32);
        for stage in ["receiver.prefill", "receiver.score"] {
            for span in trace.all(RECEIVER, stage) {
                assert!(
                    trace.descends(span, evaluate),
                    "{stage}: {}",
                    trace.describe()
                );
            }
        }
        if trace.all(SHARER, "kvwire.c2c.v1.Sharer/Share").is_empty() {
            continue;
        }
        kv_traces += 1;
        let services = trace.services();
        assert_eq!(
            services,
            BTreeSet::from([COORDINATOR, RECEIVER, SHARER]),
            "{}",
            trace.describe()
        );
        check_kv_trace(&trace, evaluate);
    }
    assert_eq!(
        kv_traces, 2,
        "the fp16 and int4 KV evaluations reach the sharer"
    );
}

/// The KV evaluation: the receiver's Share client span under its Evaluate, the sharer's Share
/// server span under that, and every stage span under its service's server span.
fn check_kv_trace(trace: &Trace<'_>, evaluate: &Span) {
    let (call, share) = trace.call(RECEIVER, SHARER, "kvwire.c2c.v1.Sharer/Share");
    assert!(trace.descends(call, evaluate), "{}", trace.describe());
    for stage in [
        "sharer.prefill",
        "sharer.select",
        "sharer.encode",
        "sharer.stream",
    ] {
        let span = trace.one(SHARER, stage);
        assert!(trace.descends(span, share), "{stage}: {}", trace.describe());
    }
    let stream = trace.one(SHARER, "sharer.stream");
    let frames = stream
        .attributes
        .iter()
        .find(|a| a.key == "frames")
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            Value::IntValue(n) => usize::try_from(*n).ok(),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no frame count: {:?}", stream.attributes));
    assert!(frames > 0);
    for stage in ["sharer.gather", "sharer.quantize"] {
        let per_frame = trace.all(SHARER, stage);
        assert_eq!(per_frame.len(), frames, "{stage}: one per frame");
        for span in per_frame {
            assert_eq!(span.parent_span_id, stream.span_id, "{stage}");
        }
    }
    let decodes = trace.all(RECEIVER, "receiver.decode");
    assert_eq!(
        decodes.len(),
        frames + 1,
        "the session header and every frame"
    );
    for span in decodes {
        assert_eq!(span.parent_span_id, call.span_id, "receiver.decode");
    }
    for stage in ["receiver.fuse", "receiver.prefill", "receiver.score"] {
        let span = trace.one(RECEIVER, stage);
        assert!(
            trace.descends(span, evaluate),
            "{stage}: {}",
            trace.describe()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_services_export_under_the_coordinator_name() {
    let collector = Collector::default();
    let endpoint = start_collector(collector.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let grid = write_grid(tmp.path(), "otlp-embedded", 1);
    run_grid(&grid, &tmp.path().join("runs"), &[], &endpoint, "1");
    let spans = collector.0.lock().unwrap().clone();
    let (_, share) = spans
        .iter()
        .find(|(_, s)| s.name == "kvwire.c2c.v1.Sharer/Share")
        .expect("a Share call was traced");
    let trace = Trace::of(&spans, &share.trace_id);
    assert_eq!(trace.services(), BTreeSet::from([COORDINATOR]));
    let root = trace.one(COORDINATOR, "coordinator.evaluate");
    let evaluate = trace.one(COORDINATOR, "kvwire.c2c.v1.Receiver/Evaluate");
    assert_eq!(
        evaluate.parent_span_id,
        root.span_id,
        "{}",
        trace.describe()
    );
    let (call, share) = trace.call(COORDINATOR, COORDINATOR, "kvwire.c2c.v1.Sharer/Share");
    assert!(trace.descends(call, evaluate), "{}", trace.describe());
    let prefill = trace.one(COORDINATOR, "sharer.prefill");
    assert!(trace.descends(prefill, share), "{}", trace.describe());
}
