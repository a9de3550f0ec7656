//! `coordinator bench`: the command line of [`coordinator::bench`], a progress bar on stderr,
//! Ctrl-C and SIGTERM stopping the service processes, and the markdown report on stdout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use coordinator::bench::{self, BenchError, BenchOptions, FuserSource, Method, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// Options of `coordinator bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Receiver model spec (`random:qwen3-0.6b:1`, `random:tiny-qwen3:1`, `gguf:<asset>`, ...).
    #[arg(long)]
    receiver: String,
    /// Sharer model spec for C2C and T2T (`random:qwen2.5-0.5b:1`, ...).
    #[arg(long)]
    sharer: String,
    /// Sharer of the same-model KV methods; the receiver's spec by default.
    #[arg(long)]
    same_model_sharer: Option<String>,
    /// Receiver prompt lengths in tokens, comma-separated (exact: see docs/BENCHMARK.md).
    #[arg(long, value_delimiter = ',', default_value = "160,1024")]
    prompt_tokens: Vec<usize>,
    /// Warm-up Evaluate calls per method and length (not measured).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Measured Evaluate calls per method and length, one at a time.
    #[arg(long, default_value_t = 20)]
    requests: usize,
    /// Device of both services: `cpu`, `cuda` or `cuda:N` (binaries built with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Dtype of both services: `f32`, `bf16` or `f16`.
    #[arg(long)]
    dtype: Option<String>,
    /// A trained C2C fuser folder (`fuser.safetensors` + `fuser.json`) for the pair.
    #[arg(long, conflicts_with = "random_fuser")]
    fuser: Option<PathBuf>,
    /// Initialise a random C2C fuser at the pair's shapes with this projector width (1024: the
    /// released fuser's shapes); timing only, labelled random in the report.
    #[arg(long, value_name = "HIDDEN")]
    random_fuser: Option<usize>,
    /// Methods to run, comma-separated (receiver-only, kv-fp16, kv-int8, kv-int4, c2c-fp16,
    /// c2c-int8, c2c-int4, t2t); all that the fuser allows by default.
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<Method>>,
    /// Folder of `sharer-svc` and `receiver-svc`; the coordinator's own folder by default.
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Output folder: bench.json, bench.md, work/ (configs, service logs, a random fuser).
    #[arg(long, default_value = "runs/bench")]
    out: PathBuf,
    /// Seed of the synthetic prompts (and of a random fuser).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds to wait for a service to load its model and report healthy.
    #[arg(long, default_value_t = 900)]
    ready_timeout: u64,
    /// Deadline of one evaluation in the receiver, seconds.
    #[arg(long, default_value_t = 600)]
    request_timeout: u64,
    /// Hide the progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// The progress bar (or nothing).
struct Bar(Option<ProgressBar>);

impl Progress for Bar {
    fn begin(&self, total: u64) {
        if let Some(bar) = &self.0 {
            bar.set_length(total);
        }
    }
    fn advance(&self, what: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(what.to_string());
            bar.inc(1);
        }
    }
    fn note(&self, line: &str) {
        match &self.0 {
            Some(bar) => bar.println(format!("bench: {line}")),
            None => eprintln!("bench: {line}"),
        }
    }
}

fn bar(hidden: bool) -> Bar {
    if hidden {
        return Bar(None);
    }
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    Bar(Some(bar))
}

fn options(args: BenchArgs) -> anyhow::Result<BenchOptions> {
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()
            .context("locating the coordinator's own executable")?
            .parent()
            .map(PathBuf::from)
            .context("the coordinator's executable has no folder")?,
    };
    let dtype = args
        .dtype
        .unwrap_or_else(|| if args.device == "cpu" { "f32" } else { "bf16" }.to_string());
    let fuser = match (args.fuser, args.random_fuser) {
        (Some(dir), _) => FuserSource::Dir(dir),
        (None, Some(hidden)) => FuserSource::Random {
            hidden,
            seed: args.seed,
        },
        (None, None) => FuserSource::None,
    };
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    Ok(BenchOptions {
        bin_dir,
        out: args.out,
        receiver: args.receiver,
        sharer: args.sharer,
        same_model_sharer: args.same_model_sharer,
        device: args.device,
        dtype,
        prompt_tokens: args.prompt_tokens,
        warmup: args.warmup,
        requests: args.requests,
        seed: args.seed,
        fuser,
        methods: args.methods,
        ready_timeout: Duration::from_secs(args.ready_timeout),
        request_timeout_secs: args.request_timeout,
        command_line,
    })
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Runs `coordinator bench`.
pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let hidden = args.no_progress;
    let options = options(args)?;
    let progress = bar(hidden);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(async {
        tokio::select! {
            r = bench::run(&options, &progress) => r,
            () = interrupted() => Err(BenchError::Interrupted),
        }
    });
    if let Some(bar) = &progress.0 {
        bar.finish_and_clear();
    }
    let report = result?;
    print!("{}", bench::markdown::render(&report));
    println!(
        "\nwritten: {} and {}",
        options.out.join("bench.json").display(),
        options.out.join("bench.md").display()
    );
    Ok(())
}
