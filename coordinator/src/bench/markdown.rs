//! `bench.md`: the machine and command, one table per prompt length (method, client end to end
//! p50/p95, the p50 of every stage that ran, bytes, peak memory of the phase's processes), and
//! the ratios.

use std::fmt::Write;

use super::report::{BenchReport, LengthResult, PhaseRecord};
use super::stats::stage_names;

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("n/a".into(), |b| {
        format!("{:.0}", b as f64 / (1 << 20) as f64)
    })
}

const NOT_MEASURED: &str = "not measured";

fn gpu(mib: Option<u64>) -> String {
    mib.map_or(NOT_MEASURED.into(), |m| m.to_string())
}

/// `sharer / receiver` of a phase's processes through `f`; one value when both are the same
/// (`not measured`).
fn pair(
    phase: Option<&PhaseRecord>,
    f: impl Fn(&super::report::ProcessRecord) -> String,
) -> String {
    let Some(phase) = phase else {
        return "n/a".into();
    };
    let mut values: Vec<String> = phase.processes.iter().map(f).collect();
    if values.windows(2).all(|w| w[0] == w[1]) && values.first().is_some_and(|v| v == NOT_MEASURED)
    {
        values.truncate(1);
    }
    values.join(" / ")
}

/// Stage columns (pipeline order) that ran (a non-zero median) for some method at this length.
fn stage_columns(length: &LengthResult) -> Vec<String> {
    stage_names()
        .into_iter()
        .filter(|name| {
            length
                .methods
                .iter()
                .any(|m| m.summary.stages_ms.get(*name).is_some_and(|q| q.p50 > 0.0))
        })
        .map(str::to_string)
        .collect()
}

fn table(out: &mut String, report: &BenchReport, length: &LengthResult) {
    let stages = stage_columns(length);
    let _ = writeln!(out, "\n### T = {} receiver tokens\n", length.prompt_tokens);
    let mut header = vec![
        "method".to_string(),
        "e2e p50 ms".into(),
        "e2e p95 ms".into(),
    ];
    header.extend(stages.iter().map(|s| format!("{s} p50")));
    header.extend([
        "wire B (KVWire/text)".into(),
        "gRPC B".into(),
        "TCP B".into(),
        "peak RSS MiB (s / r)".into(),
        "peak GPU MiB (s / r)".into(),
    ]);
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for m in &length.methods {
        let s = &m.summary;
        let phase = report.phases.iter().find(|p| p.phase == m.phase);
        let mut row = vec![
            m.method.clone(),
            format!("{:.1}", s.client_end_to_end_ms.p50),
            format!("{:.1}", s.client_end_to_end_ms.p95),
        ];
        row.extend(
            stages
                .iter()
                .map(|name| format!("{:.2}", s.stages_ms.get(name).map_or(0.0, |q| q.p50))),
        );
        row.extend([
            s.bytes.measured.to_string(),
            s.bytes.grpc.to_string(),
            s.bytes.tcp.to_string(),
            pair(phase, |p| mib(p.peak_rss_bytes)),
            pair(phase, |p| gpu(p.peak_gpu_mib)),
        ]);
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
}

/// The markdown report.
pub fn render(report: &BenchReport) -> String {
    let mut out = String::from("# kvwire-c2c bench\n\n");
    let m = &report.machine;
    let _ = writeln!(
        out,
        "- machine: {} ({} cores, {:.0} GiB), {}",
        m.system.cpu_model,
        m.system.cores,
        m.system.memory_bytes as f64 / (1u64 << 30) as f64,
        m.system.os
    );
    let gpus = if m.gpus.is_empty() {
        "none seen (no nvidia-smi)".to_string()
    } else {
        m.gpus.join("; ")
    };
    let _ = writeln!(out, "- GPU: {gpus}");
    let _ = writeln!(out, "- commit: {}", m.git.commit);
    let _ = writeln!(out, "- command: `{}`", report.command_line);
    let s = &report.setup;
    let _ = writeln!(
        out,
        "- receiver `{}`, sharer `{}` (same-model KV: `{}`), {} {}",
        s.receiver, s.sharer, s.same_model_sharer, s.device, s.dtype
    );
    let _ = writeln!(
        out,
        "- {} warm-up + {} measured requests per method and length, one at a time; {}",
        s.warmup, s.requests, s.layout
    );
    let _ = writeln!(out, "- T2T: {}", s.t2t);
    if let Some(f) = &s.fuser {
        let what = match &f.random {
            Some(r) => format!(
                "random-initialised (timing only): {} projectors, hidden {}, {} parameters, seed {}",
                r.projectors, r.hidden, r.parameters, r.seed
            ),
            None => format!("from {}", f.dir),
        };
        let _ = writeln!(out, "- C2C fuser: {what}");
    }
    for p in &report.phases {
        let card = p.card.map_or(String::new(), |c| {
            format!(
                "; card {}: {} MiB used before, {} MiB peak",
                c.index, c.before_mib, c.peak_mib
            )
        });
        let _ = writeln!(
            out,
            "- phase {}: receiver fuser {}, services healthy after {:.1} s; GPU memory {}{card}",
            p.phase, p.receiver_fuser, p.startup_s, p.gpu_memory
        );
    }
    let _ = writeln!(
        out,
        "\nTimes in ms (p50 unless named); e2e is the bench client's Evaluate wall time; stage \
         columns are the receiver's per-stage report (only stages that ran); bytes are medians."
    );
    for length in &report.results {
        table(&mut out, report, length);
    }
    if !report.ratios.is_empty() {
        out.push_str("\n### Ratios (client e2e p50 over p50, same run)\n\n| T | ratio | value |\n|---|---|---|\n");
        for r in &report.ratios {
            let _ = writeln!(
                out,
                "| {} | {} / {} | {:.2} |",
                r.prompt_tokens, r.numerator, r.denominator, r.value
            );
        }
    }
    out
}
