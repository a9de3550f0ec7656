//! Peak GPU memory per process: `nvidia-smi --query-compute-apps=pid,used_memory` polled about
//! every 100 ms on a thread of its own while a phase runs, keeping each pid's largest reading
//! (MiB, as nvidia-smi reports it). Without `nvidia-smi` nothing is measured, and the report
//! says so.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Time between two polls.
const INTERVAL: Duration = Duration::from_millis(100);

/// One `nvidia-smi` reading: used MiB per pid; `None` when the command cannot run.
fn query() -> Option<HashMap<u32, u64>> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// Parses `pid, MiB` lines; lines that do not parse (`[N/A]`) are skipped.
pub fn parse(text: &str) -> HashMap<u32, u64> {
    text.lines()
        .filter_map(|l| {
            let (pid, mib) = l.split_once(',')?;
            Some((pid.trim().parse().ok()?, mib.trim().parse().ok()?))
        })
        .collect()
}

/// `nvidia-smi -L`-style names of the GPUs, when the command runs.
pub fn gpu_names() -> Vec<String> {
    Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total,driver_version",
            "--format=csv,noheader",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// A running poller.
#[derive(Debug)]
pub struct GpuPoller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<HashMap<u32, u64>>>,
}

impl GpuPoller {
    /// Starts polling, or `None` when `nvidia-smi` does not run here.
    pub fn start() -> Option<GpuPoller> {
        query()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak: HashMap<u32, u64> = HashMap::new();
            while !flag.load(Ordering::Relaxed) {
                for (pid, mib) in query().unwrap_or_default() {
                    let e = peak.entry(pid).or_insert(0);
                    *e = (*e).max(mib);
                }
                std::thread::sleep(INTERVAL);
            }
            peak
        });
        Some(GpuPoller {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops polling; the peak MiB of every pid seen.
    pub fn finish(mut self) -> HashMap<u32, u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for GpuPoller {
    /// A poller dropped without [`GpuPoller::finish`] (an error) stops polling too.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_parse_and_odd_lines_are_skipped() {
        let m = parse("1234, 5678\n99, [N/A]\n\n42,10\n");
        assert_eq!(m.len(), 2);
        assert_eq!(m[&1234], 5678);
        assert_eq!(m[&42], 10);
    }
}
