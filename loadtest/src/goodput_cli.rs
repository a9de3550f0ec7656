//! The `loadtest goodput` command line: options, then the report printed as a markdown table
//! (and JSON with `--json`), and written to `--out` as `goodput.json` and `goodput.md`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kvwire::v2::Payload;
use loadtest::goodput::{GoodputOptions, measure};
use loadtest::goodput_frames::FrameShape;
use service_kit::transport::http2::Http2Settings;

/// KVWire payloads.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PayloadArg {
    /// fp16, no scales.
    Fp16,
    /// int8 with per-block fp16 scales.
    Int8,
    /// int4 with per-block fp16 scales.
    Int4,
}

/// `loadtest goodput` options.
#[derive(Debug, Clone, Args)]
pub struct GoodputArgs {
    /// Shared positions of the prompt (SmolLM2-135M shapes: 30 layers, 3 KV heads of 64).
    #[arg(long, default_value_t = 1024)]
    tokens: usize,
    /// Frame payload.
    #[arg(long, value_enum, default_value_t = PayloadArg::Int8)]
    payload: PayloadArg,
    /// MiB each transport moves per repetition (whole Share streams, rounded up).
    #[arg(long, default_value_t = 64)]
    mib: u64,
    /// Measured repetitions (alternating order; one warm-up before them).
    #[arg(long, default_value_t = 7)]
    repetitions: usize,
    /// HTTP/2 stream window of the tuned pair (default: the services' own).
    #[arg(long)]
    stream_window_bytes: Option<u32>,
    /// HTTP/2 connection window of the tuned pair.
    #[arg(long)]
    connection_window_bytes: Option<u32>,
    /// Largest HTTP/2 frame of the tuned pair.
    #[arg(long)]
    max_frame_bytes: Option<u32>,
    /// Folder for `goodput.json` and `goodput.md`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the JSON report rather than the table.
    #[arg(long)]
    json: bool,
}

/// Runs the measurement and reports it.
pub async fn run(a: &GoodputArgs) -> anyhow::Result<()> {
    anyhow::ensure!(a.repetitions >= 1, "--repetitions must be at least 1");
    anyhow::ensure!(a.tokens >= 1, "--tokens must be at least 1");
    let d = Http2Settings::default();
    let tuned = Http2Settings {
        stream_window_bytes: a.stream_window_bytes.unwrap_or(d.stream_window_bytes),
        connection_window_bytes: a
            .connection_window_bytes
            .unwrap_or(d.connection_window_bytes),
        max_frame_bytes: a.max_frame_bytes.unwrap_or(d.max_frame_bytes),
    };
    let mut problems = service_kit::config::Problems::new();
    tuned.check("goodput", &mut problems);
    problems.into_result().context("HTTP/2 settings")?;
    let options = GoodputOptions {
        shape: FrameShape::smollm2_135m(a.tokens),
        payload: match a.payload {
            PayloadArg::Fp16 => Payload::Fp16,
            PayloadArg::Int8 => Payload::Int8,
            PayloadArg::Int4 => Payload::Int4,
        },
        bytes: a.mib << 20,
        repetitions: a.repetitions,
        tuned,
    };
    let report = measure(&options).await?;
    let json = serde_json::to_string_pretty(&report)?;
    let md = format!(
        "{}\nMachine: {}. Share stream: {} frames, {} bytes; {} shares per repetition.\n",
        report.markdown(),
        report.machine,
        report.frame_bytes.len(),
        report.share_bytes,
        report.shares_per_repetition
    );
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("goodput.json"), &json)
            .with_context(|| format!("writing {}", dir.join("goodput.json").display()))?;
        std::fs::write(dir.join("goodput.md"), &md)
            .with_context(|| format!("writing {}", dir.join("goodput.md").display()))?;
    }
    if a.json {
        println!("{json}");
    } else {
        print!("{md}");
    }
    Ok(())
}
