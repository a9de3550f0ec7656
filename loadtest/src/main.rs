//! `loadtest`: sends bounded load to a running receiver (`Evaluate`) or sharer (`Share`) on
//! loopback and prints throughput, latency percentiles, errors by status code, the same per
//! kind of call, and (with `--sharer-metrics`/`--receiver-metrics`) each service's RSS and
//! CPU sampled from its `/metrics` page, with the RSS slope after warm-up.
//!
//! `--soak` is the soak preset: 64 calls in flight for 10 minutes, resources sampled every
//! 10 s, and exit status 1 when any call failed. Any option given explicitly wins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use loadtest::run::{Calls, Driver, run};
use loadtest::workload::{Method, Scoring, TextKind, Workload, builtin_example, load_examples};
use loadtest::{LoadPlan, Stop};

mod goodput_cli;

/// mimalloc rather than glibc's malloc: 1.4-1.5x the gRPC goodput, 0.66-0.80x the CPU per byte
/// (`loadtest goodput`; `service_kit::alloc`; docs/OPERATIONS.md, "Transport tuning").
#[global_allocator]
static GLOBAL: service_kit::alloc::Allocator = service_kit::alloc::Allocator;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    target: Target,
    /// Calls in flight (default 4; 64 with --soak).
    #[arg(short, long, global = true)]
    concurrency: Option<usize>,
    /// gRPC connections the calls share.
    #[arg(long, default_value_t = 4, global = true)]
    connections: usize,
    /// Stop after this many calls.
    #[arg(long, global = true, conflicts_with = "duration_s")]
    requests: Option<u64>,
    /// Stop starting calls after this many seconds (600 with --soak).
    #[arg(long, global = true)]
    duration_s: Option<u64>,
    /// Deadline of one call, seconds.
    #[arg(long, default_value_t = 120, global = true)]
    timeout_s: u64,
    /// Soak preset: 64 in flight, 600 s, samples every 10 s, exit 1 on any failed call.
    #[arg(long, global = true)]
    soak: bool,
    /// JSON-lines examples (`coordinator export-items` output, or any file the harness
    /// loads); calls take them in turn. Default: one built-in example.
    #[arg(long, global = true)]
    examples: Option<PathBuf>,
    /// Methods, used in turn.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kv-int8",
        global = true
    )]
    methods: Vec<Method>,
    /// Scorings, used in turn after each round of methods (Evaluate only).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "letter",
        global = true
    )]
    scoring: Vec<Scoring>,
    /// Text message kinds of the text method, used in turn.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "raw",
        global = true
    )]
    text_kinds: Vec<TextKind>,
    /// Refinement of KV calls: ask for round 2 when the round-1 margin is below this.
    #[arg(long, global = true)]
    refine_margin: Option<f32>,
    /// Payload of the round-2 upgrade.
    #[arg(long, value_enum, default_value_t = Method::KvFp16, global = true)]
    refine_payload: Method,
    /// The sharer's Prometheus listener (`127.0.0.1:9101`): its RSS and CPU are sampled.
    #[arg(long, global = true)]
    sharer_metrics: Option<SocketAddr>,
    /// The receiver's Prometheus listener: its RSS and CPU are sampled.
    #[arg(long, global = true)]
    receiver_metrics: Option<SocketAddr>,
    /// Seconds between resource samples (default 5; 10 with --soak).
    #[arg(long, global = true)]
    sample_s: Option<u64>,
    /// Seconds of warm-up left out of the RSS slope (default: a tenth of the run).
    #[arg(long, global = true)]
    warmup_s: Option<u64>,
    /// Print the report as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Target {
    /// Receiver `Evaluate` calls.
    Evaluate {
        /// Receiver URL (loopback only).
        #[arg(long, default_value = "http://127.0.0.1:50052")]
        receiver: String,
        /// Sharer URL the receiver should call; empty means the receiver's default.
        #[arg(long, default_value = "")]
        sharer: String,
    },
    /// Sharer `Share` streams of the KV methods (frames are read and counted, not decoded).
    Share {
        /// Sharer URL (loopback only).
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        sharer: String,
    },
    /// gRPC KV goodput on loopback against a raw TCP stream of the same bytes (no services
    /// needed: it serves its own transport-only sharer; the load options do not apply).
    Goodput(goodput_cli::GoodputArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let stop = match (cli.requests, cli.duration_s, cli.soak) {
        (Some(n), _, _) => Stop::Requests(n),
        (None, Some(s), _) => Stop::Duration(Duration::from_secs(s)),
        (None, None, true) => Stop::Duration(Duration::from_secs(600)),
        (None, None, false) => Stop::Requests(100),
    };
    let concurrency = cli.concurrency.unwrap_or(if cli.soak { 64 } else { 4 });
    let (url, sharer, shares) = match &cli.target {
        Target::Evaluate { receiver, sharer } => (receiver.clone(), sharer.clone(), false),
        Target::Share { sharer } => (sharer.clone(), String::new(), true),
        Target::Goodput(args) => return goodput_cli::run(args).await,
    };
    let plan = LoadPlan::new(&url, concurrency, stop)?;
    let examples = match &cli.examples {
        Some(path) => load_examples(path)?,
        None => vec![builtin_example()],
    };
    let workload = Workload {
        examples,
        methods: cli.methods.clone(),
        scorings: cli.scoring.clone(),
        text_kinds: cli.text_kinds.clone(),
        refine: cli.refine_margin.map(|m| (m, cli.refine_payload)),
        sharer,
    };
    workload.validate()?;
    let metrics: Vec<(String, SocketAddr)> = [
        ("sharer", cli.sharer_metrics),
        ("receiver", cli.receiver_metrics),
    ]
    .into_iter()
    .filter_map(|(name, addr)| Some((name.to_string(), addr?)))
    .collect();
    let run_s = match stop {
        Stop::Duration(d) => d.as_secs(),
        Stop::Requests(_) => 0,
    };
    let driver = Driver {
        connections: cli.connections,
        timeout: Duration::from_secs(cli.timeout_s),
        metrics,
        sample_every: Duration::from_secs(cli.sample_s.unwrap_or(if cli.soak { 10 } else { 5 })),
        warmup: Duration::from_secs(cli.warmup_s.unwrap_or(run_s / 10)),
    };
    let calls = if shares {
        Calls::Share(workload)
    } else {
        Calls::Evaluate(workload)
    };
    eprintln!(
        "loadtest: {:?} against {}, {} in flight over {} connection(s), {} example(s)",
        plan.stop,
        plan.target,
        plan.concurrency,
        driver.connections,
        match &calls {
            Calls::Evaluate(w) | Calls::Share(w) => w.examples.len(),
        }
    );
    let report = run(&plan, &driver, calls)
        .await
        .with_context(|| format!("load against {}", plan.target))?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    if cli.soak && report.ok != report.requests {
        anyhow::bail!(
            "soak: {} of {} calls failed",
            report.requests - report.ok,
            report.requests
        );
    }
    Ok(())
}
