//! Prefill time, peak host memory and achieved FLOP/s against prompt length, chunked and
//! unchunked (docs/GPU.md, "Chunked prefill").
//!
//! ```text
//! cargo run --release -p model-runtime --example prefill_scaling -- \
//!     --model random:qwen3-0.6b:1 --device cpu --dtype f32 \
//!     --tokens 512,2048,4096 --chunks 0,512 --repeats 3 --warmup 1 --json prefill.json
//! ```
//! `--model` is `random:<preset>:<seed>` (qwen3-0.6b, qwen2.5-0.5b, qwen3-8b, qwen2.5-7b,
//! tiny-qwen3, ...) or `gguf:<file>` (dequantized); `--chunks 0` is the one-pass forward.
//! Every (T, chunk) pair runs in a fresh child process (this binary with `--one T C`) so that
//! its peak RSS is its own: the child resets `VmHWM` after loading (`/proc/self/clear_refs`)
//! and reports the peak minus the resident size before the first prefill. Times are the
//! median of `--repeats` prefills after `--warmup` ones; each reads the last logits back and
//! synchronises the device before the clock stops. On CUDA candle keeps no allocator
//! statistics: each child prints its pid to stderr for `nvidia-smi --query-compute-apps=...`.
//!
//! FLOPs per prefill (stated, not counted): `2 * P * T` for the layers' weight matmuls (`P`:
//! q, k, v, o, gate, up and down weights of every layer), `2 * hidden * vocab` for the output
//! head at the last position, and `4 * layers * heads * head_dim * T^2 / 2` for causal
//! attention (scores and probabilities x V).

use model_runtime::candle_core::{DType, Device};
use model_runtime::{LoadOptions, Model, ModelConfig, WeightsMode};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Instant;

type Error = Box<dyn std::error::Error>;

const USAGE: &str = "usage: prefill_scaling [--model random:<preset>:<seed> | gguf:<file>] \
[--device cpu|cuda|cuda:N] [--dtype f32|bf16|f16] [--tokens 512,2048,4096] [--chunks 0,512] \
[--repeats 3] [--warmup 1] [--json FILE]";

/// The command line.
#[derive(Debug, Clone)]
struct Args {
    model: String,
    device: String,
    dtype: String,
    tokens: Vec<usize>,
    chunks: Vec<usize>,
    repeats: usize,
    warmup: usize,
    json: Option<String>,
    /// Child mode: one (T, chunk) pair.
    one: Option<(usize, usize)>,
}

fn list(value: &str) -> Result<Vec<usize>, Error> {
    Ok(value
        .split(',')
        .map(|v| v.trim().parse::<usize>())
        .collect::<Result<_, _>>()?)
}

fn parse_args(raw: &[String]) -> Result<Args, Error> {
    let mut args = Args {
        model: "random:qwen3-0.6b:1".into(),
        device: "cpu".into(),
        dtype: "f32".into(),
        tokens: vec![512, 2048, 4096],
        chunks: vec![0, 512],
        repeats: 3,
        warmup: 1,
        json: None,
        one: None,
    };
    let mut it = raw.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--model" => args.model = value()?.clone(),
            "--device" => args.device = value()?.clone(),
            "--dtype" => args.dtype = value()?.clone(),
            "--tokens" => args.tokens = list(value()?)?,
            "--chunks" => args.chunks = list(value()?)?,
            "--repeats" => args.repeats = value()?.parse()?,
            "--warmup" => args.warmup = value()?.parse()?,
            "--json" => args.json = Some(value()?.clone()),
            "--one" => {
                let pair = list(value()?)?;
                match pair.as_slice() {
                    [t, c] => args.one = Some((*t, *c)),
                    _ => return Err(format!("--one takes T,CHUNK\n{USAGE}").into()),
                }
            }
            _ => return Err(format!("unknown argument {flag}\n{USAGE}").into()),
        }
    }
    if args.repeats == 0 || args.tokens.contains(&0) {
        return Err(format!("--repeats and every --tokens value must be positive\n{USAGE}").into());
    }
    Ok(args)
}

fn device_and_dtype(args: &Args) -> Result<(Device, DType), Error> {
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0)?,
        other => match other.strip_prefix("cuda:") {
            Some(n) => Device::new_cuda(n.parse()?)?,
            None => return Err(format!("unknown device {other}\n{USAGE}").into()),
        },
    };
    let dtype = match args.dtype.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => return Err(format!("unknown dtype {other}\n{USAGE}").into()),
    };
    Ok((device, dtype))
}

/// The shapes of a random preset, with room for `max_t` positions.
fn preset(name: &str, max_t: usize) -> Result<ModelConfig, Error> {
    let mut config = match name {
        "qwen3-0.6b" => ModelConfig::qwen3_0_6b(),
        "qwen2.5-0.5b" => ModelConfig::qwen2_5_0_5b(),
        "qwen3-8b" => ModelConfig::qwen3_8b(),
        "qwen2.5-7b" => ModelConfig::qwen2_5_7b(),
        "tiny-qwen3" => ModelConfig::tiny(model_runtime::Arch::Qwen3),
        "tiny-llama" => ModelConfig::tiny(model_runtime::Arch::Llama),
        _ => return Err(format!("unknown random preset {name}\n{USAGE}").into()),
    };
    config.max_position = config.max_position.max(max_t);
    Ok(config)
}

fn load(args: &Args, max_t: usize) -> Result<Model, Error> {
    let (device, dtype) = device_and_dtype(args)?;
    if let Some(path) = args.model.strip_prefix("gguf:") {
        let opts = LoadOptions {
            device,
            dtype,
            weights: WeightsMode::Dequantized,
        };
        return Ok(Model::from_gguf(std::path::Path::new(path), &opts)?);
    }
    let spec: Vec<&str> = args.model.splitn(3, ':').collect();
    match spec.as_slice() {
        ["random", name, seed] => Ok(Model::random(
            &preset(name, max_t)?,
            seed.parse()?,
            &device,
            dtype,
        )?),
        _ => Err(format!("unknown model spec {}\n{USAGE}", args.model).into()),
    }
}

/// The stated FLOPs of one prefill of `t` tokens (module docs).
fn prefill_flops(c: &ModelConfig, t: usize) -> f64 {
    let per_layer = c.hidden_size * (c.q_dim() + 2 * c.kv_dim())
        + c.q_dim() * c.hidden_size
        + 3 * c.hidden_size * c.intermediate_size;
    let (t, layers) = (t as f64, c.n_layers as f64);
    let matmuls = 2.0 * per_layer as f64 * layers * t;
    let head = 2.0 * (c.hidden_size * c.vocab_size) as f64;
    let attention = 4.0 * layers * (c.n_heads * c.head_dim) as f64 * t * t / 2.0;
    matmuls + head + attention
}

/// A `/proc/self/status` field in KiB (0 where there is none, e.g. not on Linux).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Child mode: loads the model, runs one (T, chunk) pair and prints its JSON result.
fn run_one(args: &Args, t: usize, chunk: usize) -> Result<(), Error> {
    eprintln!(
        "pid {} T={t} chunk={chunk} (GPU memory: nvidia-smi --query-compute-apps=pid,used_memory --format=csv -lms 200)",
        std::process::id()
    );
    let model = load(args, t)?.with_prefill_chunk_tokens(chunk);
    let vocab = model.config().vocab_size as u32;
    let ids: Vec<u32> = (0..t as u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let input = model.ids_tensor(&ids)?;
    // Peak from here on: resets VmHWM to the current RSS (Linux >= 4.0).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_before = status_kib("VmRSS:");
    let mut secs = Vec::new();
    for i in 0..args.warmup + args.repeats {
        let start = Instant::now();
        let (logits, cache) = model.prefill(&input)?;
        let _ = logits.to_vec2::<f32>()?;
        model.device().synchronize()?;
        let elapsed = start.elapsed().as_secs_f64();
        drop(cache);
        if i >= args.warmup {
            secs.push(elapsed);
        }
    }
    secs.sort_by(f64::total_cmp);
    let median = secs[secs.len() / 2];
    let flops = prefill_flops(model.config(), t);
    let peak = status_kib("VmHWM:");
    let result = json!({
        "tokens": t,
        "chunk": chunk,
        "median_s": median,
        "min_s": secs[0],
        "max_s": secs[secs.len() - 1],
        "runs": secs.len(),
        "flops": flops,
        "gflops_per_s": flops / median / 1e9,
        "rss_before_mib": rss_before as f64 / 1024.0,
        "peak_rss_mib": peak as f64 / 1024.0,
        "peak_delta_mib": if reset { Some(peak.saturating_sub(rss_before) as f64 / 1024.0) } else { None },
        "pid": std::process::id(),
    });
    println!("RESULT {result}");
    Ok(())
}

/// Runs `--one T,C` in a fresh process and parses its `RESULT` line.
fn spawn_one(raw: &[String], t: usize, chunk: usize) -> Result<Value, Error> {
    let out = Command::new(std::env::current_exe()?)
        .args(raw)
        .args(["--one", &format!("{t},{chunk}")])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("RESULT "));
    match (out.status.success(), line) {
        (true, Some(line)) => Ok(serde_json::from_str(line)?),
        _ => Err(format!("T={t} chunk={chunk} failed ({}): {stdout}", out.status).into()),
    }
}

/// The machine and its load, for the report.
fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown".to_string(), |s| s.trim().to_string());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({
        "cpu": cpu,
        "threads": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "loadavg": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

fn cell(row: &Value, key: &str, scale: f64) -> String {
    row.get(key)
        .and_then(Value::as_f64)
        .map_or("-".to_string(), |v| format!("{:.1}", v * scale))
}

fn main() -> Result<(), Error> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let args = parse_args(&raw)?;
    if let Some((t, chunk)) = args.one {
        return run_one(&args, t, chunk);
    }
    let before = machine();
    let mut rows = Vec::new();
    println!("| T | chunk | median s | GFLOP/s | peak RSS delta MiB | peak RSS MiB |");
    println!("|---|---|---|---|---|---|");
    for &t in &args.tokens {
        for &chunk in &args.chunks {
            let row = spawn_one(&raw, t, chunk)?;
            println!(
                "| {t} | {} | {} | {} | {} | {} |",
                if chunk == 0 {
                    "none".to_string()
                } else {
                    chunk.to_string()
                },
                cell(&row, "median_s", 1.0),
                cell(&row, "gflops_per_s", 1.0),
                cell(&row, "peak_delta_mib", 1.0),
                cell(&row, "peak_rss_mib", 1.0),
            );
            rows.push(row);
        }
    }
    let report = json!({
        "model": args.model,
        "device": args.device,
        "dtype": args.dtype,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "machine_before": before,
        "machine_after": machine(),
        "flops_formula": "2*P_layers*T + 2*hidden*vocab + 4*layers*heads*head_dim*T^2/2",
        "results": rows,
    });
    let text = serde_json::to_string_pretty(&report)?;
    match &args.json {
        Some(path) => std::fs::write(path, text)?,
        None => println!("{text}"),
    }
    Ok(())
}
