//! `encode` from `.npy` files and `decode` to `.npy` files.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use clap::{Args, ValueEnum};
use half::f16;
use kvwire::npy::{NpyArray, NpyData};
use kvwire::quant::{QuantMode, int4_hi, int4_lo};
use kvwire::v1::{self, IndexDtype, V1Blob, V1Options};
use kvwire::v2::{self, FrameKind, FrameOptions, Payload, StreamItem};
use kvwire::{Decoded, Granularity, KvData, LayerKv, ScaleDtype, decode_any};

use crate::WireVersion;

/// Payload quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QuantArg {
    /// 8-bit symmetric.
    Int8,
    /// 4-bit symmetric.
    Int4,
    /// Unquantized half floats (v2 only).
    Fp16,
}

/// Scale granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[allow(clippy::enum_variant_names)]
pub enum GranularityArg {
    /// One scale per (b, h, t).
    #[value(name = "per_block", alias = "per-block")]
    PerBlock,
    /// One scale per (b, h).
    #[value(name = "per_head", alias = "per-head")]
    PerHead,
    /// One scale per tensor.
    #[value(name = "per_tensor", alias = "per-tensor")]
    PerTensor,
    /// One scale per layer.
    #[value(name = "per_layer", alias = "per-layer")]
    PerLayer,
}

impl From<GranularityArg> for Granularity {
    fn from(g: GranularityArg) -> Self {
        match g {
            GranularityArg::PerBlock => Granularity::PerBlock,
            GranularityArg::PerHead => Granularity::PerHead,
            GranularityArg::PerTensor => Granularity::PerTensor,
            GranularityArg::PerLayer => Granularity::PerLayer,
        }
    }
}

/// Scale dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ScaleDtypeArg {
    /// IEEE half.
    Fp16,
    /// bfloat16 (truncated f32).
    Bf16,
}

/// Index dtype (v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IndexDtypeArg {
    /// uint16 unless a position needs uint32.
    Auto,
    /// uint16 (error if a position does not fit).
    U16,
    /// uint32.
    U32,
}

/// Arguments of `kvwire encode`.
#[derive(Debug, Args)]
pub struct EncodeArgs {
    /// Keys, [B,H,T,D] or [H,T,D], f32 or f16.
    #[arg(long)]
    k: PathBuf,
    /// Values, same shape and dtype as K.
    #[arg(long)]
    v: PathBuf,
    /// Token positions, 1-D of length T, any integer dtype (default 0..T).
    #[arg(long)]
    indices: Option<PathBuf>,
    /// Wire format version.
    #[arg(long, value_enum, default_value = "v2")]
    version: WireVersion,
    /// Quantization of the payload.
    #[arg(long, value_enum, default_value = "int8")]
    quant: QuantArg,
    /// Scale granularity.
    #[arg(long, value_enum, default_value = "per_block")]
    granularity: GranularityArg,
    /// Scale dtype.
    #[arg(long, value_enum, default_value = "fp16")]
    scale_dtype: ScaleDtypeArg,
    /// Index dtype (v1; v2 picks contiguous/uint16/uint32 itself).
    #[arg(long, value_enum, default_value = "auto")]
    index_dtype: IndexDtypeArg,
    /// Layer number written in a v2 frame.
    #[arg(long, default_value_t = 0)]
    layer: u16,
    /// Round written in a v2 frame.
    #[arg(long, default_value_t = 1)]
    round: u8,
    /// Mark the v2 frame as a residual (precision upgrade).
    #[arg(long)]
    residual: bool,
    /// Entropy-code the v2 payload.
    #[arg(long)]
    entropy: bool,
    /// Output file.
    #[arg(short, long)]
    out: PathBuf,
}

fn read_npy(path: &Path) -> anyhow::Result<NpyArray> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    NpyArray::from_bytes(&bytes).with_context(|| format!("parsing {}", path.display()))
}

fn shape4(a: &NpyArray, name: &str) -> anyhow::Result<[usize; 4]> {
    match a.shape.as_slice() {
        &[b, h, t, d] => Ok([b, h, t, d]),
        &[h, t, d] => Ok([1, h, t, d]),
        other => bail!("{name} must be [B,H,T,D] or [H,T,D], got {other:?}"),
    }
}

fn positions(a: &NpyArray) -> anyhow::Result<Vec<u32>> {
    ensure!(a.shape.len() == 1, "indices must be 1-D, got {:?}", a.shape);
    let wide: Vec<i64> = match &a.data {
        NpyData::U8(v) => v.iter().map(|&x| i64::from(x)).collect(),
        NpyData::U16(v) => v.iter().map(|&x| i64::from(x)).collect(),
        NpyData::U32(v) => v.iter().map(|&x| i64::from(x)).collect(),
        NpyData::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
        NpyData::I64(v) => v.clone(),
        other => bail!("indices must be an integer array, got {}", other.descr()),
    };
    wide.iter()
        .enumerate()
        .map(|(i, &p)| {
            u32::try_from(p).with_context(|| format!("index {i} = {p} is not a u32 position"))
        })
        .collect()
}

/// `kvwire encode`.
pub fn encode(args: &EncodeArgs) -> anyhow::Result<()> {
    let (k, v) = (read_npy(&args.k)?, read_npy(&args.v)?);
    let shape = shape4(&k, "K")?;
    ensure!(
        shape4(&v, "V")? == shape,
        "K {:?} and V {:?} differ in shape",
        k.shape,
        v.shape
    );
    let indices = match &args.indices {
        Some(p) => positions(&read_npy(p)?)?,
        None => Vec::new(),
    };
    let (kd, vd) = match (&k.data, &v.data) {
        (NpyData::F32(k), NpyData::F32(v)) => (KvData::F32(k), KvData::F32(v)),
        (NpyData::F16(k), NpyData::F16(v)) => (KvData::F16(k), KvData::F16(v)),
        (a, b) => bail!(
            "K and V must both be <f4 or both <f2, got {} and {}",
            a.descr(),
            b.descr()
        ),
    };
    let layer = LayerKv {
        k: kd,
        v: vd,
        shape,
        indices: &indices,
    };
    let scale_dtype = match args.scale_dtype {
        ScaleDtypeArg::Fp16 => ScaleDtype::Fp16,
        ScaleDtypeArg::Bf16 => ScaleDtype::Bf16,
    };
    let bytes = match args.version {
        WireVersion::V1 => {
            let mode = match args.quant {
                QuantArg::Int8 => QuantMode::Int8,
                QuantArg::Int4 => QuantMode::Int4,
                QuantArg::Fp16 => bail!("v1 has no fp16 payload; use --version v2"),
            };
            ensure!(
                !args.entropy && !args.residual,
                "--entropy and --residual are v2 options"
            );
            let index_dtype = match args.index_dtype {
                IndexDtypeArg::Auto => IndexDtype::Auto,
                IndexDtypeArg::U16 => IndexDtype::U16,
                IndexDtypeArg::U32 => IndexDtype::U32,
            };
            let opts = V1Options {
                mode,
                granularity: args.granularity.into(),
                scale_dtype,
                index_dtype,
            };
            v1::encode(&layer, &opts)?
        }
        WireVersion::V2 => {
            ensure!(
                args.index_dtype == IndexDtypeArg::Auto,
                "--index-dtype applies to v1 only"
            );
            let payload = match args.quant {
                QuantArg::Int8 => Payload::Int8,
                QuantArg::Int4 => Payload::Int4,
                QuantArg::Fp16 => Payload::Fp16,
            };
            let opts = FrameOptions {
                payload,
                granularity: args.granularity.into(),
                scale_dtype,
                layer: args.layer,
                group: 0,
                round: args.round,
                kind: if args.residual {
                    FrameKind::Residual
                } else {
                    FrameKind::Base
                },
                entropy: args.entropy,
            };
            v2::encode_frame(&layer, &opts)?
        }
    };
    std::fs::write(&args.out, &bytes).with_context(|| format!("writing {}", args.out.display()))?;
    writeln!(
        std::io::stdout(),
        "wrote {} ({} bytes)",
        args.out.display(),
        bytes.len()
    )?;
    Ok(())
}

/// Unpacks a quantized payload to one i8 per element.
pub fn unpack(mode: QuantMode, payload: &[u8], n: usize) -> Vec<i8> {
    match mode {
        QuantMode::Int8 => payload.iter().map(|&b| b as i8).collect(),
        QuantMode::Int4 => (0..n)
            .map(|i| {
                if i % 2 == 0 {
                    int4_lo(payload[i / 2])
                } else {
                    int4_hi(payload[i / 2])
                }
            })
            .collect(),
    }
}

struct Writer<'a> {
    dir: &'a Path,
    written: Vec<String>,
}

impl Writer<'_> {
    fn put(&mut self, name: String, shape: &[usize], data: NpyData) -> anyhow::Result<()> {
        let path = self.dir.join(&name);
        let array = NpyArray {
            shape: shape.to_vec(),
            data,
        };
        std::fs::write(&path, array.to_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        self.written.push(name);
        Ok(())
    }
}

/// The dtype `decode` writes dequantized values in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ValueDtype {
    /// `<f4`.
    F32,
    /// `<f2`, each f32 value rounded to nearest even.
    F16,
}

impl ValueDtype {
    /// Dequantized f32 values as this dtype.
    fn npy(self, values: Vec<f32>) -> NpyData {
        match self {
            ValueDtype::F32 => NpyData::F32(values),
            ValueDtype::F16 => NpyData::F16(values.iter().map(|&x| f16::from_f32(x)).collect()),
        }
    }
}

/// `kvwire decode`.
pub fn decode(file: &Path, out_dir: &Path, dtype: ValueDtype) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let decoded = decode_any(&bytes).with_context(|| format!("decoding {}", file.display()))?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut w = Writer {
        dir: out_dir,
        written: Vec::new(),
    };
    match decoded {
        Decoded::V1(blob) => write_v1(&mut w, &blob, dtype)?,
        Decoded::V2(items) => {
            let frames: Vec<_> = items
                .into_iter()
                .filter_map(|i| {
                    if let StreamItem::Frame(f) = i {
                        Some(f)
                    } else {
                        None
                    }
                })
                .collect();
            let single = frames.len() == 1;
            for (i, f) in frames.iter().enumerate() {
                let h = f.header();
                let prefix = if single {
                    String::new()
                } else {
                    format!("frame{i:03}_layer{}_g{}_r{}_", h.layer, h.group, h.round)
                };
                write_v2_frame(&mut w, &prefix, f, dtype)?;
            }
        }
    }
    writeln!(
        std::io::stdout(),
        "wrote {} files to {}: {}",
        w.written.len(),
        out_dir.display(),
        w.written.join(" ")
    )?;
    Ok(())
}

/// A v1 blob's indices, quantized values, scales and dequantized K/V.
fn write_v1(w: &mut Writer<'_>, blob: &V1Blob, dtype: ValueDtype) -> anyhow::Result<()> {
    let h = &blob.header;
    let (ks, vs) = blob.scales_f32();
    let (k, v) = blob.dequantize();
    let (nk, nv) = (k.len(), v.len());
    w.put(
        "indices.npy".into(),
        &[blob.indices.len()],
        NpyData::U32(blob.indices.clone()),
    )?;
    w.put(
        "k_quant.npy".into(),
        &h.k_shape,
        NpyData::I8(unpack(h.mode, &blob.k_quant, nk)),
    )?;
    w.put(
        "v_quant.npy".into(),
        &h.v_shape,
        NpyData::I8(unpack(h.mode, &blob.v_quant, nv)),
    )?;
    w.put(
        "k_scales.npy".into(),
        &h.granularity.scale_shape(h.k_shape),
        NpyData::F32(ks),
    )?;
    w.put(
        "v_scales.npy".into(),
        &h.granularity.scale_shape(h.v_shape),
        NpyData::F32(vs),
    )?;
    w.put("k.npy".into(), &h.k_shape, dtype.npy(k))?;
    w.put("v.npy".into(), &h.v_shape, dtype.npy(v))
}

/// One v2 frame's indices, stored payload (quantized values and scales, or fp16) and
/// dequantized K/V, each file name starting with `p`.
fn write_v2_frame(
    w: &mut Writer<'_>,
    p: &str,
    f: &v2::Frame,
    dtype: ValueDtype,
) -> anyhow::Result<()> {
    let h = f.header();
    let shape = h.shape;
    let n = h.elements();
    let indices = f.indices().into_owned();
    w.put(
        format!("{p}indices.npy"),
        &[indices.len()],
        NpyData::U32(indices),
    )?;
    match h.payload.quant_mode() {
        Some(mode) => {
            let sshape = h.granularity.scale_shape(shape);
            let to_f32 = |s: &[u16]| {
                s.iter()
                    .map(|&b| kvwire::quant::scale_from_bits(b, h.scale_dtype))
                    .collect()
            };
            w.put(
                format!("{p}k_quant.npy"),
                &shape,
                NpyData::I8(unpack(mode, f.k_payload(), n)),
            )?;
            w.put(
                format!("{p}v_quant.npy"),
                &shape,
                NpyData::I8(unpack(mode, f.v_payload(), n)),
            )?;
            w.put(
                format!("{p}k_scales.npy"),
                &sshape,
                NpyData::F32(to_f32(f.k_scales())),
            )?;
            w.put(
                format!("{p}v_scales.npy"),
                &sshape,
                NpyData::F32(to_f32(f.v_scales())),
            )?;
        }
        None => {
            let halves = |b: &[u8]| {
                b.chunks_exact(2)
                    .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                    .collect()
            };
            w.put(
                format!("{p}k_fp16.npy"),
                &shape,
                NpyData::F16(halves(f.k_payload())),
            )?;
            w.put(
                format!("{p}v_fp16.npy"),
                &shape,
                NpyData::F16(halves(f.v_payload())),
            )?;
        }
    }
    let (k, v) = f.dequantize();
    w.put(format!("{p}k.npy"), &shape, dtype.npy(k))?;
    w.put(format!("{p}v.npy"), &shape, dtype.npy(v))
}
