//! `kvwire demo`: a seeded cache shaped like SmolLM2-135M's (30 layers, 3 KV heads x 64) encoded
//! in every format, decoded back, with measured bytes, error and time.

use std::io::Write as _;
use std::time::Instant;

use clap::Args;
use kvwire::v1::{self, IndexDtype, V1Options};
use kvwire::v2::{self, FrameOptions, Payload, SessionHeader, StreamItem};
use kvwire::{Breakdown, Granularity, KvData, LayerKv, QuantMode, ScaleDtype};

/// Arguments of `kvwire demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Layers.
    #[arg(long, default_value_t = 30)]
    layers: usize,
    /// KV heads.
    #[arg(long, default_value_t = 3)]
    heads: usize,
    /// Head dimension.
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Tokens.
    #[arg(long, default_value_t = 170)]
    tokens: usize,
    /// Seed of the synthetic cache.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Timing repetitions (the fastest is reported).
    #[arg(long, default_value_t = 5)]
    reps: usize,
}

/// SplitMix64 with Box-Muller normals.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

/// K has per-channel magnitudes with a few outlier channels (as real post-RoPE keys do);
/// V is closer to Gaussian with a per-head scale.
fn synthetic_layer(rng: &mut Rng, h: usize, t: usize, d: usize) -> (Vec<f32>, Vec<f32>) {
    let mut k = Vec::with_capacity(h * t * d);
    let mut v = Vec::with_capacity(h * t * d);
    for _ in 0..h {
        let chan: Vec<f32> = (0..d)
            .map(|i| (0.5 * rng.normal()).exp() * if i % 16 == 3 { 6.0 } else { 1.0 })
            .collect();
        let head_scale = (0.3 * rng.normal()).exp();
        for _ in 0..t {
            k.extend(chan.iter().map(|&c| c * rng.normal()));
            v.extend((0..d).map(|_| head_scale * rng.normal()));
        }
    }
    (k, v)
}

enum Format {
    V1(V1Options),
    V2(FrameOptions),
}

struct Row {
    name: String,
    bytes: Breakdown,
    max_err: f32,
    rel_mse: f64,
    enc_ms: f64,
    dec_ms: f64,
}

fn formats() -> Vec<(String, Format)> {
    let v1o = |mode, granularity| V1Options {
        mode,
        granularity,
        scale_dtype: ScaleDtype::Fp16,
        index_dtype: IndexDtype::Auto,
    };
    let v2o = |payload, granularity, entropy| FrameOptions {
        payload,
        granularity,
        entropy,
        ..FrameOptions::default()
    };
    let mut out = Vec::new();
    for (mode, g) in [
        (QuantMode::Int8, Granularity::PerBlock),
        (QuantMode::Int8, Granularity::PerHead),
        (QuantMode::Int8, Granularity::PerTensor),
        (QuantMode::Int4, Granularity::PerBlock),
        (QuantMode::Int4, Granularity::PerHead),
    ] {
        out.push((
            format!("v1 {} {}", mode.name(), g.name()),
            Format::V1(v1o(mode, g)),
        ));
    }
    for (p, g, e) in [
        (Payload::Fp16, Granularity::PerBlock, false),
        (Payload::Int8, Granularity::PerBlock, false),
        (Payload::Int8, Granularity::PerHead, false),
        (Payload::Int8, Granularity::PerTensor, false),
        (Payload::Int4, Granularity::PerBlock, false),
        (Payload::Int4, Granularity::PerHead, false),
        (Payload::Fp16, Granularity::PerBlock, true),
        (Payload::Int8, Granularity::PerBlock, true),
        (Payload::Int4, Granularity::PerBlock, true),
    ] {
        let gname = if p == Payload::Fp16 { "-" } else { g.name() };
        let name = format!(
            "v2 {} {}{}",
            p.name(),
            gname,
            if e { " +entropy" } else { "" }
        );
        out.push((name, Format::V2(v2o(p, g, e))));
    }
    out
}

fn measure(
    name: String,
    format: &Format,
    cache: &[(Vec<f32>, Vec<f32>)],
    shape: [usize; 4],
    session: &SessionHeader,
    reps: usize,
) -> anyhow::Result<Row> {
    let layer = |i: usize| LayerKv {
        k: KvData::F32(&cache[i].0),
        v: KvData::F32(&cache[i].1),
        shape,
        indices: &[],
    };
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut enc_best = f64::INFINITY;
    for _ in 0..reps {
        let start = Instant::now();
        blobs.clear();
        match format {
            Format::V1(o) => {
                for i in 0..cache.len() {
                    blobs.push(v1::encode(&layer(i), o)?);
                }
            }
            Format::V2(o) => {
                let mut stream = session.encode()?;
                for i in 0..cache.len() {
                    v2::encode_frame_into(
                        &layer(i),
                        &FrameOptions {
                            layer: i as u16,
                            ..*o
                        },
                        &mut stream,
                    )?;
                }
                blobs.push(stream);
            }
        }
        enc_best = enc_best.min(start.elapsed().as_secs_f64());
    }
    let mut dec_best = f64::INFINITY;
    let mut decoded: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
    let mut bytes = Breakdown::default();
    for _ in 0..reps {
        let start = Instant::now();
        decoded.clear();
        bytes = Breakdown::default();
        match format {
            Format::V1(_) => {
                for b in &blobs {
                    let blob = v1::decode(b)?;
                    bytes += blob.breakdown();
                    decoded.push(blob.dequantize());
                }
            }
            Format::V2(_) => {
                let mut dec = v2::StreamDecoder::new();
                dec.push(&blobs[0]);
                while let Some(item) = dec.next_item()? {
                    match item {
                        StreamItem::Session(s) => bytes.header += s.encoded_len() as u64,
                        StreamItem::Frame(f) => {
                            bytes += f.breakdown();
                            decoded.push(f.dequantize());
                        }
                    }
                }
                dec.finish()?;
            }
        }
        dec_best = dec_best.min(start.elapsed().as_secs_f64());
    }
    anyhow::ensure!(
        bytes.total() == blobs.iter().map(|b| b.len() as u64).sum::<u64>(),
        "breakdown does not add up"
    );
    let (mut max_err, mut err2, mut sig2) = (0f32, 0f64, 0f64);
    for ((k, v), (dk, dv)) in cache.iter().zip(&decoded) {
        for (x, y) in k.iter().zip(dk).chain(v.iter().zip(dv)) {
            let e = (x - y).abs();
            max_err = max_err.max(e);
            err2 += f64::from(e) * f64::from(e);
            sig2 += f64::from(*x) * f64::from(*x);
        }
    }
    Ok(Row {
        name,
        bytes,
        max_err,
        rel_mse: err2 / sig2,
        enc_ms: enc_best * 1e3,
        dec_ms: dec_best * 1e3,
    })
}

/// `kvwire demo`.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let shape = [1, args.heads, args.tokens, args.head_dim];
    let mut rng = Rng(args.seed);
    let cache: Vec<_> = (0..args.layers)
        .map(|_| synthetic_layer(&mut rng, args.heads, args.tokens, args.head_dim))
        .collect();
    let session = SessionHeader {
        sharer_model: "synthetic-smollm2-shape".into(),
        receiver_model: "none".into(),
        layers: args.layers as u16,
        kv_heads: args.heads as u16,
        head_dim: args.head_dim as u16,
        tokens: args.tokens as u32,
        round: 1,
        frames: args.layers as u32,
        ..SessionHeader::default()
    };
    let fp16_raw = (args.layers * 2 * shape.iter().product::<usize>() * 2) as f64;
    writeln!(
        out,
        "synthetic cache: {} layers x [B=1, H={}, T={}, D={}] K and V, f32, seed {} (raw fp16 {} bytes); positions 0..T",
        args.layers, args.heads, args.tokens, args.head_dim, args.seed, fp16_raw
    )?;
    writeln!(
        out,
        "times: fastest of {} runs, whole cache, one thread (encode = quantize+serialize; decode = parse+CRC+dequantize to f32)\n",
        args.reps
    )?;
    writeln!(
        out,
        "{:<28} {:>9} {:>7} {:>7} {:>9} {:>7} {:>8} {:>7} {:>9} {:>10} {:>7} {:>7}",
        "format",
        "total B",
        "header",
        "indices",
        "payload",
        "scales",
        "B/token",
        "/fp16",
        "max|err|",
        "rel MSE",
        "enc ms",
        "dec ms"
    )?;
    for (name, format) in formats() {
        let r = measure(name, &format, &cache, shape, &session, args.reps.max(1))?;
        let b = r.bytes;
        writeln!(
            out,
            "{:<28} {:>9} {:>7} {:>7} {:>9} {:>7} {:>8.1} {:>7.3} {:>9.5} {:>10.3e} {:>7.2} {:>7.2}",
            r.name,
            b.total(),
            b.header,
            b.indices,
            b.payload,
            b.scales,
            b.total() as f64 / args.tokens as f64,
            b.total() as f64 / fp16_raw,
            r.max_err,
            r.rel_mse,
            r.enc_ms,
            r.dec_ms
        )?;
    }
    Ok(())
}
