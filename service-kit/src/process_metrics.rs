//! Process metrics (resident memory, CPU seconds, threads, open descriptors) read from Linux's
//! `/proc/self`, published as gauges under Prometheus' standard `process_*` names by a sampler
//! thread that runs beside the Prometheus exporter. Elsewhere than Linux (no `/proc`) the
//! sampler publishes nothing; a read that fails leaves the last value in place.

use std::path::Path;
use std::time::Duration;

use crate::metrics_catalog::{PROCESS_CPU, PROCESS_OPEN_FDS, PROCESS_RSS, PROCESS_THREADS};

/// The kernel's clock tick for the CPU times in `/proc/<pid>/stat` (`USER_HZ`): 100 on every
/// Linux architecture this runs on (x86-64, aarch64); `sysconf` would need `unsafe`.
const USER_HZ: f64 = 100.0;

/// How often the sampler reads `/proc`.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessSample {
    /// Resident set size, bytes (`VmRSS`).
    pub rss_bytes: u64,
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    /// Threads.
    pub threads: u64,
    /// Open file descriptors.
    pub open_fds: u64,
}

/// Reads the process whose `/proc` folder is `proc_dir` (`/proc/self`, `/proc/1234`); `None`
/// when its files cannot be read or do not parse.
pub fn read(proc_dir: &Path) -> Option<ProcessSample> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    let rss_kib = field("VmRSS:")?;
    let threads = field("Threads:")?;
    let open_fds = std::fs::read_dir(proc_dir.join("fd")).map_or(0, |d| d.count() as u64);
    Some(ProcessSample {
        rss_bytes: rss_kib * 1024,
        cpu_seconds: cpu_seconds(&stat)?,
        threads,
        open_fds,
    })
}

/// `utime + stime` of a `/proc/<pid>/stat` line, in seconds. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so fields are counted after the
/// last `)`: utime and stime are fields 14 and 15, the 12th and 13th after it.
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Publishes one reading of this process.
fn publish(sample: &ProcessSample) {
    metrics::gauge!(PROCESS_RSS).set(sample.rss_bytes as f64);
    metrics::gauge!(PROCESS_CPU).set(sample.cpu_seconds);
    metrics::gauge!(PROCESS_THREADS).set(sample.threads as f64);
    metrics::gauge!(PROCESS_OPEN_FDS).set(sample.open_fds as f64);
}

/// Starts the sampler thread (once per process, next to the exporter): it publishes a reading
/// of this process every [`SAMPLE_INTERVAL`] for the life of the process. Without `/proc` it
/// ends at once. A thread rather than a task: it needs no runtime and never blocks one.
pub fn spawn_sampler() -> std::io::Result<()> {
    let me = Path::new("/proc/self");
    if read(me).is_none() {
        tracing::info!("process metrics off: /proc/self is not readable here");
        return Ok(());
    }
    std::thread::Builder::new()
        .name("process-metrics".into())
        .spawn(move || {
            loop {
                if let Some(sample) = read(me) {
                    publish(&sample);
                }
                std::thread::sleep(SAMPLE_INTERVAL);
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        // A command name with a space and a parenthesis; utime 250, stime 50 ticks.
        let stat = "42 (we ird) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 1 1";
        assert_eq!(cpu_seconds(stat), Some(3.0));
        assert_eq!(cpu_seconds("42 (x) S 1"), None);
        assert_eq!(cpu_seconds("no parenthesis"), None);
    }

    #[test]
    fn this_process_reads_as_alive() {
        if !Path::new("/proc/self/status").exists() {
            eprintln!("skipped: no /proc on this system");
            return;
        }
        let before = read(Path::new("/proc/self")).expect("read /proc/self");
        // Burn some CPU and hold 64 MiB so both move.
        let held = vec![1u8; 64 << 20];
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_add(held[x as usize % held.len()] as u64 + 1);
        }
        let after = read(Path::new("/proc/self")).expect("read /proc/self");
        assert!(x > 0);
        assert!(
            after.rss_bytes >= before.rss_bytes + (60 << 20),
            "{before:?} {after:?}"
        );
        assert!(
            after.cpu_seconds > before.cpu_seconds,
            "{before:?} {after:?}"
        );
        assert!(after.threads >= 1 && after.open_fds >= 3, "{after:?}");
        drop(held);
    }
}
