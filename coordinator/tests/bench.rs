//! `coordinator bench` end to end on the CPU: the real `sharer-svc` and `receiver-svc` binaries
//! started as processes, tiny random presets (a tiny Qwen3 receiver, a tiny Qwen2 sharer, a
//! random-initialised fuser), T = 16 and 32, one warm-up and two measured requests per method.
//! Checks the JSON (every method at every length, every stage summarised over every request,
//! p50 <= p95, KV bytes where a cache moved and none for receiver-only), that the service
//! processes are gone afterwards, and that a missing binary is a clear error.

mod common;

use std::path::Path;

use common::{bin_dir, coordinator};
use coordinator::bench::BenchReport;
use coordinator::bench::stats::Quantiles;

const METHODS: [&str; 8] = [
    "receiver-only",
    "kv-fp16",
    "kv-int8",
    "kv-int4",
    "c2c-fp16",
    "c2c-int8",
    "c2c-int4",
    "t2t",
];

fn check_quantiles(q: &Quantiles, n: usize, what: &str) {
    assert_eq!(q.count, n, "{what}: count");
    assert!(q.p50 <= q.p95, "{what}: p50 {} > p95 {}", q.p50, q.p95);
    assert!(q.p50 >= 0.0, "{what}: negative");
}

fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn bench_runs_every_method_over_two_processes_and_cleans_up() {
    let bins = bin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bench");
    let output = coordinator(&[
        "bench",
        "--receiver",
        "random:tiny-qwen3:1",
        "--sharer",
        "random:tiny-qwen2:2",
        "--random-fuser",
        "16",
        "--prompt-tokens",
        "16,32",
        "--warmup",
        "1",
        "--requests",
        "2",
        "--no-progress",
        "--bin-dir",
        bins.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("### T = 16 receiver tokens"), "{stdout}");
    assert!(stdout.contains("c2c-fp16 / receiver-only"), "{stdout}");
    let text = std::fs::read_to_string(out.join("bench.json")).unwrap();
    let report: BenchReport = serde_json::from_str(&text).unwrap();
    assert!(out.join("bench.md").is_file());
    assert!(report.command_line.contains("--random-fuser 16"));
    let fuser = report.setup.fuser.as_ref().expect("a fuser record");
    assert_eq!(fuser.kind, "random");

    let lengths: Vec<usize> = report.results.iter().map(|r| r.prompt_tokens).collect();
    assert_eq!(lengths, [16, 32]);
    for length in &report.results {
        let names: Vec<&str> = length.methods.iter().map(|m| m.method.as_str()).collect();
        assert_eq!(names, METHODS, "T = {}", length.prompt_tokens);
        for m in &length.methods {
            let what = format!("{} at T = {}", m.method, length.prompt_tokens);
            let s = &m.summary;
            assert_eq!(m.requests, 2, "{what}");
            check_quantiles(&s.client_end_to_end_ms, 2, &what);
            assert!(s.client_end_to_end_ms.p50 > 0.0, "{what}");
            assert_eq!(s.stages_ms.len(), 12, "{what}");
            for (stage, q) in &s.stages_ms {
                check_quantiles(q, 2, &format!("{what}, {stage}"));
            }
            assert!(s.stages_ms["receiver_prefill"].p50 > 0.0, "{what}");
            if m.method == "receiver-only" {
                assert_eq!(s.bytes.measured, 0, "{what}: KV bytes");
                assert_eq!(s.bytes.grpc, 0, "{what}: gRPC bytes");
            } else {
                assert!(s.bytes.grpc > 0, "{what}: gRPC bytes");
                assert!(s.bytes.tcp > 0, "{what}: TCP bytes");
            }
            if m.method.starts_with("kv-") || m.method.starts_with("c2c-") {
                assert!(s.bytes.measured > 0, "{what}: KVWire bytes");
                assert!(s.stages_ms["sharer_prefill"].p50 > 0.0, "{what}");
            }
        }
    }
    assert!(
        report
            .ratios
            .iter()
            .any(|r| r.numerator == "t2t" && r.denominator == "c2c-fp16" && r.value > 0.0)
    );

    let phases: Vec<&str> = report.phases.iter().map(|p| p.phase.as_str()).collect();
    assert_eq!(phases, ["same-model", "pair"]);
    for phase in &report.phases {
        assert_eq!(phase.processes.len(), 2);
        for p in &phase.processes {
            assert!(
                !pid_exists(p.pid),
                "{} {} still runs",
                phase.phase,
                p.service
            );
            assert!(p.peak_rss_bytes.is_some_and(|b| b > 0), "{p:?}");
            assert_eq!(p.peak_gpu_mib, None, "no GPU memory on the CPU");
        }
    }
}

#[test]
fn a_missing_service_binary_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("no-binaries");
    std::fs::create_dir_all(&empty).unwrap();
    let output = coordinator(&[
        "bench",
        "--receiver",
        "random:tiny-qwen3:1",
        "--sharer",
        "random:tiny-qwen2:2",
        "--prompt-tokens",
        "16",
        "--bin-dir",
        empty.to_str().unwrap(),
        "--out",
        tmp.path().join("out").to_str().unwrap(),
        "--no-progress",
    ])
    .output()
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no executable"), "{stderr}");
    assert!(stderr.contains("sharer-svc"), "{stderr}");
    assert!(!tmp.path().join("out").join("bench.json").exists());
}
