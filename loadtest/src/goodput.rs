//! `loadtest goodput`: how fast the services' gRPC transport moves KV frames on loopback,
//! against a raw TCP stream of the same bytes in the same run.
//!
//! Three transports carry the same Share stream (a session header and one KVWire frame per
//! layer, [`goodput_frames`](crate::goodput_frames)) `shares` times per repetition, each on its
//! own persistent loopback connection: raw TCP ([`crate::goodput_tcp`]), gRPC with the
//! services' HTTP/2 settings, and gRPC at tonic's defaults ([`crate::goodput_grpc`]). One
//! warm-up repetition is dropped; then the repetitions alternate the order of the three. Each
//! repetition's gRPC goodput is divided by the raw TCP goodput of the same repetition, and the
//! report gives median, min and max of the MB/s and of those paired ratios.
//!
//! Wall-clock goodput on a shared machine moves with whatever else runs; the report also gives
//! each transport's CPU time per byte (all threads of this process, from
//! `/proc/self/task/*/schedstat`, Linux only), which does not, and its paired ratio.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use eval_harness::percentile;
use kvwire::v2::Payload;
use serde::Serialize;
use service_kit::transport::http2::{Http2Settings, Http2Tuning};

use crate::goodput_frames::{FrameSet, FrameShape};
use crate::goodput_grpc::GrpcPair;
use crate::goodput_tcp::RawTcp;

/// What to measure.
#[derive(Debug, Clone)]
pub struct GoodputOptions {
    /// Frame shapes and prompt length.
    pub shape: FrameShape,
    /// Frame payload.
    pub payload: Payload,
    /// Bytes each transport moves per repetition (rounded up to whole shares).
    pub bytes: u64,
    /// Measured repetitions (after one warm-up).
    pub repetitions: usize,
    /// The services' HTTP/2 settings, or others to try.
    pub tuned: Http2Settings,
}

/// Median, min and max of a series.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Self {
        let at = |q| percentile(values, q).unwrap_or(f64::NAN);
        Self {
            median: at(0.5),
            min: at(0.0),
            max: at(1.0),
        }
    }
}

/// One transport's results.
#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    /// `tcp`, `grpc-tuned`, `grpc-tonic-defaults`.
    pub name: &'static str,
    /// Its settings, in words.
    pub settings: String,
    /// MB/s (10^6 bytes) of each repetition.
    pub mb_per_s: Vec<f64>,
    /// Of `mb_per_s`.
    pub spread: Spread,
    /// Goodput / raw TCP goodput of the same repetition (absent for TCP itself).
    pub ratio_to_tcp: Option<Spread>,
    /// CPU milliseconds (all threads, both ends) per 10^9 bytes moved, each repetition
    /// (empty where `/proc/self/task` cannot be read).
    pub cpu_ms_per_gb: Vec<f64>,
    /// Raw TCP's CPU time per byte / this transport's, paired by repetition.
    pub cpu_ratio_to_tcp: Option<Spread>,
    /// Connections the client opened.
    pub connections: u64,
}

/// The whole measurement.
#[derive(Debug, Clone, Serialize)]
pub struct GoodputReport {
    /// CPU model and logical CPUs; every transport is loopback in one process.
    pub machine: String,
    /// Frame shapes.
    pub shape: FrameShape,
    /// `fp16`, `int8`, `int4`.
    pub payload: String,
    /// Each frame's length (session header first).
    pub frame_bytes: Vec<usize>,
    /// Bytes of one Share stream.
    pub share_bytes: u64,
    /// Share streams per repetition.
    pub shares_per_repetition: u64,
    /// Measured repetitions.
    pub repetitions: usize,
    /// TCP, tuned gRPC, gRPC at tonic's defaults.
    pub variants: Vec<Variant>,
}

/// Runs the measurement.
pub async fn measure(o: &GoodputOptions) -> anyhow::Result<GoodputReport> {
    let set = FrameSet::encode(o.shape, o.payload).context("encoding frames")?;
    let share_bytes = set.bytes();
    let shares = o.bytes.div_ceil(share_bytes).max(1);
    let frames = Arc::new(set.frames.clone());
    let tuned = Http2Tuning::Tuned(o.tuned);
    let mut tcp = RawTcp::start(frames.clone()).await.context("raw TCP")?;
    let mut grpc_tuned = GrpcPair::start(frames.clone(), tuned).await?;
    let mut grpc_default = GrpcPair::start(frames, Http2Tuning::TonicDefaults).await?;
    let mut times: [Vec<f64>; 3] = Default::default();
    let mut cpu: [Vec<f64>; 3] = Default::default();
    for rep in 0..=o.repetitions {
        let order: [usize; 3] = if rep % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for v in order {
            let cpu_before = cpu_ns();
            let (bytes, took) = match v {
                0 => tcp.transfer(shares).await.context("raw TCP transfer")?,
                1 => grpc_tuned.transfer(shares).await.context("tuned gRPC")?,
                _ => grpc_default
                    .transfer(shares)
                    .await
                    .context("default gRPC")?,
            };
            anyhow::ensure!(
                bytes == shares * share_bytes,
                "variant {v} moved {bytes} bytes, not {}",
                shares * share_bytes
            );
            if rep > 0 {
                times[v].push(mb_per_s(bytes, took));
                if let (Some(b), Some(a)) = (cpu_before, cpu_ns()) {
                    cpu[v].push(a.saturating_sub(b) as f64 / 1e6 / (bytes as f64 / 1e9));
                }
            }
        }
    }
    let connections = [1, grpc_tuned.connections(), grpc_default.connections()];
    tcp.stop().await.context("raw TCP server")?;
    grpc_tuned.stop().await?;
    grpc_default.stop().await?;
    let names = ["tcp", "grpc-tuned", "grpc-tonic-defaults"];
    let settings = [
        "one loopback connection, one write a frame, 1 MiB reused read buffer".to_string(),
        tuned.to_string(),
        Http2Tuning::TonicDefaults.to_string(),
    ];
    let variants = (0..3)
        .map(|v| Variant {
            name: names[v],
            settings: settings[v].clone(),
            spread: Spread::of(&times[v]),
            ratio_to_tcp: (v > 0).then(|| paired(&times[v], &times[0])),
            cpu_ratio_to_tcp: (v > 0 && !cpu[v].is_empty()).then(|| paired(&cpu[0], &cpu[v])),
            mb_per_s: times[v].clone(),
            cpu_ms_per_gb: cpu[v].clone(),
            connections: connections[v],
        })
        .collect();
    Ok(GoodputReport {
        machine: machine(),
        shape: o.shape,
        payload: format!("{:?}", o.payload).to_lowercase(),
        frame_bytes: set.sizes(),
        share_bytes,
        shares_per_repetition: shares,
        repetitions: o.repetitions,
        variants,
    })
}

/// Median, min and max of `a[i] / b[i]`.
fn paired(a: &[f64], b: &[f64]) -> Spread {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    Spread::of(&r)
}

/// CPU nanoseconds of every thread of this process so far (the first field of each thread's
/// `schedstat`); `None` where that cannot be read. Threads that ended are not counted, so the
/// difference over a repetition is only meaningful while the thread set is stable (the
/// runtime's worker threads).
fn cpu_ns() -> Option<u64> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()? {
        let path = entry.ok()?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(path) else {
            continue; // the thread ended meanwhile
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64().max(1e-9) / 1e6
}

/// The CPU model (from `/proc/cpuinfo` where there is one) and the logical CPUs.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{model}, {cpus} logical CPUs, loopback, one process")
}

impl GoodputReport {
    /// One markdown table row per gRPC variant: payload, frames, MB/s of gRPC and TCP, the
    /// ratio (median, min-max), repetitions.
    pub fn markdown(&self) -> String {
        let tcp = &self.variants[0].spread;
        let layer = self.frame_bytes.get(1).copied().unwrap_or(0);
        let mut out = String::from(
            "| transport | payload | tokens | frame KiB | MB/s (median, min-max) | raw TCP MB/s | \
             ratio to TCP (median, min-max) | CPU-time ratio to TCP | reps |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for v in &self.variants[1..] {
            let r = v.ratio_to_tcp.unwrap_or(v.spread);
            let cpu = v.cpu_ratio_to_tcp.map_or("n/a".into(), |c| {
                format!("{:.2} ({:.2}-{:.2})", c.median, c.min, c.max)
            });
            out.push_str(&format!(
                "| {} | {} | {} | {:.0} | {:.0} ({:.0}-{:.0}) | {:.0} ({:.0}-{:.0}) | {:.2} ({:.2}-{:.2}) | {cpu} | {} |\n",
                v.name,
                self.payload,
                self.shape.tokens,
                layer as f64 / 1024.0,
                v.spread.median,
                v.spread.min,
                v.spread.max,
                tcp.median,
                tcp.min,
                tcp.max,
                r.median,
                r.min,
                r.max,
                self.repetitions
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_transport_moves_the_same_bytes_and_reports_paired_ratios() {
        let o = GoodputOptions {
            shape: FrameShape::smollm2_135m(8),
            payload: Payload::Int4,
            bytes: 1,
            repetitions: 2,
            tuned: Http2Settings::default(),
        };
        let r = measure(&o).await.unwrap();
        // One share per repetition (1 byte rounds up), 31 frames each.
        assert_eq!(r.shares_per_repetition, 1);
        assert_eq!(r.frame_bytes.len(), 31);
        assert_eq!(r.share_bytes, r.frame_bytes.iter().sum::<usize>() as u64);
        let names: Vec<_> = r.variants.iter().map(|v| v.name).collect();
        assert_eq!(names, ["tcp", "grpc-tuned", "grpc-tonic-defaults"]);
        for v in &r.variants {
            assert_eq!(v.mb_per_s.len(), 2, "{}", v.name);
            assert!(v.mb_per_s.iter().all(|x| *x > 0.0), "{}", v.name);
            assert_eq!(v.ratio_to_tcp.is_some(), v.name != "tcp");
        }
        // The pooled channel carried every call of a pair on one connection.
        assert_eq!(r.variants[1].connections, 1);
        assert_eq!(r.variants[2].connections, 1);
        assert_eq!(r.markdown().lines().count(), 4);
    }
}
