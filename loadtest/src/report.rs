//! The report of a load run: throughput, latency percentiles of successful calls, error
//! counts by gRPC status code, the same per kind of call, and the services' sampled memory
//! and CPU.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::resources::ResourceSummary;

/// What one call did.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Call latency.
    pub latency: Duration,
    /// `Ok`, or the gRPC status code name (`Unavailable`, ...).
    pub status: String,
    /// Payload bytes the call moved (frames or reply), when known.
    pub bytes: u64,
    /// What the call was (`kv-int8/rank`, `text-summary/letter`, `share-int8`).
    pub kind: String,
}

/// Calls of one kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindStats {
    /// Calls made.
    pub requests: usize,
    /// Calls that succeeded.
    pub ok: usize,
    /// Median latency of its successful calls, ms.
    pub p50_ms: Option<f64>,
}

/// Summary of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Calls made.
    pub requests: usize,
    /// Calls that succeeded.
    pub ok: usize,
    /// Calls by status code name (`Ok` included).
    pub by_status: BTreeMap<String, usize>,
    /// Wall time of the run, s.
    pub wall_s: f64,
    /// Successful calls per second.
    pub throughput_rps: f64,
    /// Payload bytes per second over successful calls.
    pub payload_bytes_per_s: f64,
    /// Latency of successful calls, ms: p50, p95, p99, max.
    pub latency_ms: BTreeMap<String, f64>,
    /// Calls by kind.
    pub by_kind: BTreeMap<String, KindStats>,
    /// gRPC connections the calls shared.
    pub connections: usize,
    /// The services' memory and CPU over the run, by service name (empty when not sampled).
    pub resources: BTreeMap<String, ResourceSummary>,
}

impl Report {
    /// Builds the report of `outcomes` recorded over `wall`.
    pub fn of(outcomes: &[Outcome], wall: Duration) -> Report {
        let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
        for o in outcomes {
            *by_status.entry(o.status.clone()).or_default() += 1;
        }
        let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == "Ok").collect();
        let lat: Vec<f64> = ok.iter().map(|o| o.latency.as_secs_f64() * 1e3).collect();
        let mut latency_ms = BTreeMap::new();
        for (name, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)] {
            if let Some(v) = eval_harness::percentile(&lat, q) {
                latency_ms.insert(name.to_string(), v);
            }
        }
        let mut by_kind: BTreeMap<String, KindStats> = BTreeMap::new();
        let mut kinds: Vec<&str> = outcomes.iter().map(|o| o.kind.as_str()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            let of: Vec<&Outcome> = outcomes.iter().filter(|o| o.kind == kind).collect();
            let ok: Vec<f64> = of
                .iter()
                .filter(|o| o.status == "Ok")
                .map(|o| o.latency.as_secs_f64() * 1e3)
                .collect();
            let stats = KindStats {
                requests: of.len(),
                ok: ok.len(),
                p50_ms: eval_harness::percentile(&ok, 0.5),
            };
            by_kind.insert(kind.to_string(), stats);
        }
        let secs = wall.as_secs_f64().max(f64::MIN_POSITIVE);
        Report {
            requests: outcomes.len(),
            ok: ok.len(),
            by_status,
            wall_s: wall.as_secs_f64(),
            throughput_rps: ok.len() as f64 / secs,
            payload_bytes_per_s: ok.iter().map(|o| o.bytes).sum::<u64>() as f64 / secs,
            latency_ms,
            by_kind,
            connections: 1,
            resources: BTreeMap::new(),
        }
    }

    /// A few human-readable lines.
    pub fn render(&self) -> String {
        let lat = |k: &str| {
            self.latency_ms
                .get(k)
                .map_or("-".into(), |v| format!("{v:.1}"))
        };
        let statuses: Vec<String> = self
            .by_status
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut out = format!(
            "requests {} ({}) in {:.1} s over {} connection(s)\nthroughput {:.2} ok/s, payload \
             {:.0} B/s\nlatency ms p50 {} p95 {} p99 {} max {}\n",
            self.requests,
            statuses.join(" "),
            self.wall_s,
            self.connections,
            self.throughput_rps,
            self.payload_bytes_per_s,
            lat("p50"),
            lat("p95"),
            lat("p99"),
            lat("max"),
        );
        for (kind, k) in &self.by_kind {
            let p50 = k.p50_ms.map_or("-".into(), |v| format!("{v:.1}"));
            out.push_str(&format!(
                "  {kind}: {} ok of {}, p50 {p50} ms\n",
                k.ok, k.requests
            ));
        }
        for (service, r) in &self.resources {
            let slope = r
                .rss_slope_mib_per_min
                .map_or("-".into(), |v| format!("{v:+.3}"));
            out.push_str(&format!(
                "{service}: RSS MiB first {:.1}, after warm-up {:.1}, last {:.1}, max {:.1}; \
                 slope after warm-up {slope} MiB/min; CPU {:.1} s; {} samples ({} failed)\n",
                r.rss_first_mib,
                r.rss_after_warmup_mib,
                r.rss_last_mib,
                r.rss_max_mib,
                r.cpu_s,
                r.samples,
                r.failed_samples,
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(ms: u64, status: &str) -> Outcome {
        Outcome {
            latency: Duration::from_millis(ms),
            status: status.into(),
            bytes: 100,
            kind: if ms.is_multiple_of(2) { "even" } else { "odd" }.into(),
        }
    }

    #[test]
    fn report_counts_statuses_and_ranks_only_successes() {
        let mut outcomes: Vec<Outcome> = (1..=100).map(|i| o(i, "Ok")).collect();
        outcomes.push(o(5000, "Unavailable"));
        outcomes.push(o(1, "DeadlineExceeded"));
        let r = Report::of(&outcomes, Duration::from_secs(10));
        assert_eq!((r.requests, r.ok), (102, 100));
        assert_eq!(r.by_status["Unavailable"], 1);
        assert_eq!(r.by_status["DeadlineExceeded"], 1);
        assert!((r.throughput_rps - 10.0).abs() < 1e-9);
        assert!((r.latency_ms["p50"] - 50.5).abs() < 1e-9);
        assert!((r.latency_ms["p99"] - 99.01).abs() < 1e-9);
        assert_eq!(r.latency_ms["max"], 100.0);
        assert!(r.render().contains("Unavailable=1"));
        assert_eq!((r.by_kind["even"].requests, r.by_kind["even"].ok), (51, 50));
        assert_eq!((r.by_kind["odd"].requests, r.by_kind["odd"].ok), (51, 50));
        assert_eq!(r.by_kind["odd"].p50_ms, Some(50.0));
    }

    #[test]
    fn empty_run_has_no_percentiles() {
        let r = Report::of(&[], Duration::from_secs(1));
        assert!(r.latency_ms.is_empty());
        assert_eq!(r.throughput_rps, 0.0);
    }
}
