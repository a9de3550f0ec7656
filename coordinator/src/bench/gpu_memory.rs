//! Peak GPU memory: `nvidia-smi --query-compute-apps=pid,used_memory` (per process) and
//! `--query-gpu=index,memory.used` (per card) polled about every 100 ms on a thread of its own
//! while a phase runs, keeping each pid's and each card's largest reading (MiB, as nvidia-smi
//! reports them), and the cards' use before the phase's processes started. The card's figure
//! stands in where the driver reports other pids than ours (a container with its own pid
//! namespace). Without `nvidia-smi` nothing is measured, and the report says so.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// Time between two polls.
const INTERVAL: Duration = Duration::from_millis(100);

/// One `nvidia-smi` query (`--query-compute-apps=pid,used_memory` or
/// `--query-gpu=index,memory.used`): MiB by pid or card index; `None` when the command cannot
/// run.
fn query(what: &str) -> Option<HashMap<u32, u64>> {
    let out = Command::new("nvidia-smi")
        .args([what, "--format=csv,noheader,nounits"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(parse(&String::from_utf8_lossy(&out.stdout)))
}

const PER_PROCESS: &str = "--query-compute-apps=pid,used_memory";
const PER_CARD: &str = "--query-gpu=index,memory.used";

/// Parses `key, MiB` lines; lines that do not parse (`[N/A]`) are skipped.
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

/// Peaks seen by a poller, MiB.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuPeaks {
    /// By process id.
    pub by_pid: HashMap<u32, u64>,
    /// By card index.
    pub by_card: HashMap<u32, u64>,
    /// By card index, before polling started.
    pub before: HashMap<u32, u64>,
}

fn keep_max(peak: &mut HashMap<u32, u64>, reading: HashMap<u32, u64>) {
    for (key, mib) in reading {
        let e = peak.entry(key).or_insert(0);
        *e = (*e).max(mib);
    }
}

/// A running poller.
#[derive(Debug)]
pub struct GpuPoller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<GpuPeaks>>,
}

impl GpuPoller {
    /// Starts polling, or `None` when `nvidia-smi` does not run here.
    pub fn start() -> Option<GpuPoller> {
        let before = query(PER_CARD)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peaks = GpuPeaks {
                before,
                ..GpuPeaks::default()
            };
            while !flag.load(Ordering::Relaxed) {
                keep_max(&mut peaks.by_pid, query(PER_PROCESS).unwrap_or_default());
                keep_max(&mut peaks.by_card, query(PER_CARD).unwrap_or_default());
                std::thread::sleep(INTERVAL);
            }
            peaks
        });
        Some(GpuPoller {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops polling; the peaks seen.
    pub fn finish(mut self) -> GpuPeaks {
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
