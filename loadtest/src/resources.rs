//! The services' memory and CPU during a run: their `/metrics` pages are read every interval
//! (`process_resident_memory_bytes`, `process_cpu_seconds_total`), and the report gives, per
//! service, the RSS at the start, after warm-up and at the end, the least-squares slope of RSS
//! over time after warm-up (flat, near 0 MiB/min, means no growth), and the CPU seconds used.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::scrape;

/// One reading of one service.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Reading {
    /// Seconds since the run started.
    pub t_s: f64,
    /// Resident set size, MiB.
    pub rss_mib: f64,
    /// CPU seconds used so far.
    pub cpu_s: f64,
}

/// What one service did over the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceSummary {
    /// Readings taken.
    pub samples: usize,
    /// Readings that failed (the page could not be read or lacked the series).
    pub failed_samples: usize,
    /// RSS of the first reading, MiB.
    pub rss_first_mib: f64,
    /// RSS of the first reading after warm-up, MiB.
    pub rss_after_warmup_mib: f64,
    /// RSS of the last reading, MiB.
    pub rss_last_mib: f64,
    /// Largest RSS read, MiB.
    pub rss_max_mib: f64,
    /// Least-squares slope of RSS over the readings after warm-up, MiB per minute.
    pub rss_slope_mib_per_min: Option<f64>,
    /// CPU seconds used between the first and last reading.
    pub cpu_s: f64,
    /// Every reading.
    pub readings: Vec<Reading>,
}

/// Least-squares slope of `y` over `x`; `None` with fewer than two distinct `x`.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The summary of `readings` (in time order) with the first `warmup` excluded from the slope.
pub fn summarize(readings: Vec<Reading>, failed: usize, warmup: Duration) -> ResourceSummary {
    let warm = warmup.as_secs_f64();
    let after: Vec<(f64, f64)> = readings
        .iter()
        .filter(|r| r.t_s >= warm)
        .map(|r| (r.t_s / 60.0, r.rss_mib))
        .collect();
    let first = readings.first().copied();
    let last = readings.last().copied();
    ResourceSummary {
        samples: readings.len(),
        failed_samples: failed,
        rss_first_mib: first.map_or(0.0, |r| r.rss_mib),
        rss_after_warmup_mib: after.first().map_or(0.0, |p| p.1),
        rss_last_mib: last.map_or(0.0, |r| r.rss_mib),
        rss_max_mib: readings.iter().map(|r| r.rss_mib).fold(0.0, f64::max),
        rss_slope_mib_per_min: slope(&after),
        cpu_s: match (first, last) {
            (Some(f), Some(l)) => l.cpu_s - f.cpu_s,
            _ => 0.0,
        },
        readings,
    }
}

/// Reads each service's page every `interval` until `stop` resolves, then summarises.
pub async fn sample(
    services: Vec<(String, SocketAddr)>,
    interval: Duration,
    warmup: Duration,
    stop: impl std::future::Future<Output = ()>,
) -> BTreeMap<String, ResourceSummary> {
    let start = Instant::now();
    let mut readings: Vec<(Vec<Reading>, usize)> = vec![(Vec::new(), 0); services.len()];
    let mut tick = tokio::time::interval(interval);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = &mut stop => break,
        }
        for ((_, addr), (list, failed)) in services.iter().zip(readings.iter_mut()) {
            match read(*addr, start).await {
                Some(r) => list.push(r),
                None => *failed += 1,
            }
        }
    }
    // One last reading at the end of the run.
    for ((_, addr), (list, failed)) in services.iter().zip(readings.iter_mut()) {
        match read(*addr, start).await {
            Some(r) => list.push(r),
            None => *failed += 1,
        }
    }
    services
        .into_iter()
        .zip(readings)
        .map(|((name, _), (list, failed))| (name, summarize(list, failed, warmup)))
        .collect()
}

async fn read(addr: SocketAddr, start: Instant) -> Option<Reading> {
    let page = scrape::fetch(addr, Duration::from_secs(5)).await.ok()?;
    Some(Reading {
        t_s: start.elapsed().as_secs_f64(),
        rss_mib: scrape::value(&page, "process_resident_memory_bytes", &[])? / (1 << 20) as f64,
        cpu_s: scrape::value(&page, "process_cpu_seconds_total", &[])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(t_s: f64, rss_mib: f64, cpu_s: f64) -> Reading {
        Reading {
            t_s,
            rss_mib,
            cpu_s,
        }
    }

    #[test]
    fn slope_is_least_squares() {
        assert_eq!(slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]), Some(2.0));
        assert_eq!(slope(&[(0.0, 1.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
    }

    #[test]
    fn warm_up_is_left_out_of_the_slope() {
        // Growth in the first 60 s, flat after.
        let readings = vec![
            r(0.0, 10.0, 0.0),
            r(30.0, 50.0, 5.0),
            r(60.0, 80.0, 10.0),
            r(120.0, 80.0, 20.0),
            r(180.0, 80.0, 30.0),
        ];
        let s = summarize(readings, 1, Duration::from_secs(60));
        assert_eq!(s.rss_slope_mib_per_min, Some(0.0));
        assert_eq!((s.rss_first_mib, s.rss_after_warmup_mib), (10.0, 80.0));
        assert_eq!((s.rss_max_mib, s.cpu_s, s.failed_samples), (80.0, 30.0, 1));
    }
}
