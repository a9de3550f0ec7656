//! Throughput of the sharer's device quantizer (`device_quant`, candle ops) against the
//! device's own copy bandwidth and the host path it replaces, in one run (issue 13: quantize +
//! pack at >= 50% of the card's copy bandwidth).
//!
//! One layer's K and V, `[1, heads, tokens, head_dim]` of random normal values in the cache
//! dtype, on the device. Per payload and granularity, the median over `--iters` runs of:
//! - `pack`: `pack_on_device` of K and of V, waited for (`Device::synchronize`): the device's
//!   quantize + pack, the figure the issue's target compares with the copy;
//! - `+ download`: `quantize_on_device` of K and of V: the same ops, then the payload and the
//!   scales downloaded (the sharer's whole path on a GPU, PCIe included);
//! - `host`: `LayerKv::to_host` (K and V as f32 on the host) then kvwire's quantizer (the path
//!   on the CPU, and on a GPU before this example's module);
//! - `copy`: a plain device-to-device copy of the same K and V (`Tensor::copy`).
//!
//! GB/s are bytes of K and V input (in the cache dtype) per second, 10^9 bytes; a copy reads
//! and writes, so its memory traffic is twice its figure. Each row checks that the device and
//! host paths made the same bytes; the example exits non-zero when any did not (after the table
//! and the JSON are written), which is how `scripts/gpu-smoke.sh` checks quantize parity.
//!
//! ```text
//! cargo run --release -p sharer-svc --example quant_throughput -- --device cpu|cuda[:N] \
//!     [--dtype f32|f16|bf16] [--heads 8] [--tokens 4096] [--head-dim 128] [--iters 10] \
//!     [--json FILE]
//! ```
//! `--device cuda` needs a build with `--features cuda`.

use std::time::Instant;

use anyhow::{Context, bail};
use kvwire::v2::Payload;
use kvwire::{Granularity, ScaleDtype};
use model_runtime::LayerKv;
use model_runtime::candle_core::{DType, Device, Tensor};
use serde_json::json;
use sharer_svc::device_quant::{pack_on_device, quantize_on_device, quantize_on_host};

/// Command-line options.
struct Args {
    device: String,
    dtype: DType,
    heads: usize,
    tokens: usize,
    head_dim: usize,
    iters: usize,
    json: Option<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        device: "cpu".into(),
        dtype: DType::F32,
        heads: 8,
        tokens: 4096,
        head_dim: 128,
        iters: 10,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .with_context(|| format!("{flag} {value}"))
        };
        match flag.as_str() {
            "--device" => args.device = value.clone(),
            "--dtype" => {
                args.dtype = match value.as_str() {
                    "f32" => DType::F32,
                    "f16" => DType::F16,
                    "bf16" => DType::BF16,
                    other => bail!("--dtype {other}: f32, f16 or bf16"),
                }
            }
            "--heads" => args.heads = number()?,
            "--tokens" => args.tokens = number()?,
            "--head-dim" => args.head_dim = number()?,
            "--iters" => args.iters = number()?.max(1),
            "--json" => args.json = Some(value.clone()),
            other => bail!("unknown option {other}"),
        }
    }
    Ok(args)
}

fn device(name: &str) -> anyhow::Result<Device> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match name.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("--device {name}: cpu, cuda or cuda:N"))?,
        None => bail!("--device {name}: cpu, cuda or cuda:N"),
    };
    Device::new_cuda(ordinal).context("CUDA device (is the example built with --features cuda?)")
}

/// Median seconds of `iters` runs of `f` (after one warm-up run), with its last output.
fn median_secs<T>(
    iters: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(f64, T)> {
    let mut out = f()?;
    let mut secs = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        out = f()?;
        secs.push(start.elapsed().as_secs_f64());
    }
    secs.sort_by(f64::total_cmp);
    Ok((secs[secs.len() / 2], out))
}

const CASES: [(Payload, Granularity); 5] = [
    (Payload::Int8, Granularity::PerBlock),
    (Payload::Int4, Granularity::PerBlock),
    (Payload::Int8, Granularity::PerHead),
    (Payload::Int4, Granularity::PerTensor),
    (Payload::Fp16, Granularity::PerBlock),
];

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dev = device(&args.device)?;
    let shape = [1, args.heads, args.tokens, args.head_dim];
    let random = || -> anyhow::Result<Tensor> {
        Ok(Tensor::randn(0f32, 1f32, &shape[..], &dev)?.to_dtype(args.dtype)?)
    };
    let layer = LayerKv {
        k: random()?,
        v: random()?,
    };
    let input_bytes = 2 * layer.k.elem_count() * args.dtype.size_in_bytes();
    let gbps = |secs: f64| input_bytes as f64 / secs / 1e9;
    let (copy_s, _) = median_secs(args.iters, || {
        let copies = (layer.k.copy()?, layer.v.copy()?);
        dev.synchronize()?;
        Ok(copies)
    })?;
    println!(
        "device {} | dtype {:?} | K and V [1, {}, {}, {}] | {:.1} MB in | median of {} runs",
        args.device,
        args.dtype,
        args.heads,
        args.tokens,
        args.head_dim,
        input_bytes as f64 / 1e6,
        args.iters
    );
    println!("copy (device to device): {:.2} GB/s\n", gbps(copy_s));
    println!(
        "| payload | granularity | pack GB/s | pack / copy | + download GB/s | host GB/s | (+ download) / host | same bytes |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for (payload, gran) in CASES {
        let (pack_s, _) = median_secs(args.iters, || {
            let p = |x: &Tensor| pack_on_device(x, payload, gran, ScaleDtype::Fp16);
            let packed = (p(&layer.k)?, p(&layer.v)?);
            dev.synchronize()?;
            Ok(packed)
        })?;
        let (device_s, on_device) = median_secs(args.iters, || {
            let q = |x: &Tensor| quantize_on_device(x, payload, gran, ScaleDtype::Fp16);
            Ok((q(&layer.k)?, q(&layer.v)?))
        })?;
        let (host_s, on_host) = median_secs(args.iters, || {
            let host = layer.to_host()?;
            let q = |x: &[f32]| quantize_on_host(x, shape, payload, gran, ScaleDtype::Fp16);
            Ok((q(&host.k)?, q(&host.v)?))
        })?;
        let same =
            on_device.0.as_ref() == Some(&on_host.0) && on_device.1.as_ref() == Some(&on_host.1);
        let (p, d, h) = (gbps(pack_s), gbps(device_s), gbps(host_s));
        println!(
            "| {} | {} | {p:.2} | {:.3} | {d:.2} | {h:.2} | {:.2} | {same} |",
            payload.name(),
            gran.name(),
            p / gbps(copy_s),
            d / h
        );
        rows.push(json!({
            "payload": payload.name(), "granularity": gran.name(), "pack_gbps": p,
            "pack_over_copy": p / gbps(copy_s), "pack_download_gbps": d, "host_gbps": h,
            "same_bytes": same,
        }));
    }
    if let Some(path) = args.json {
        let report = json!({
            "device": args.device, "dtype": format!("{:?}", args.dtype), "shape": shape,
            "input_bytes": input_bytes, "iters": args.iters, "copy_gbps": gbps(copy_s),
            "cases": rows,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {path}"))?;
    }
    let differing = rows.iter().filter(|r| r["same_bytes"] != true).count();
    if differing > 0 {
        bail!(
            "the device and host quantizers made different bytes in {differing} of {} cases",
            rows.len()
        );
    }
    Ok(())
}
