//! KVWire quantization where the cache lives: candle tensor ops on the cache's device (a GPU),
//! so only the packed payload and the scale bits cross PCIe, with the same bytes as kvwire's
//! CPU quantizer (`kvwire::quant`). The ops are the same on CPU and CUDA, so the CPU tests
//! (`tests/device_quant.rs`) check the op graph the GPU runs.
//!
//! Step by step, for a `[B, H, T, D]` tensor widened to f32 (exact from f16 and bf16):
//! - absmax per scale group as `max(max(x), -min(x))` (two reductions, no |x| copy) per row,
//!   then over the group's rows; exact;
//! - `scale = max(absmax / qmax, 1e-6)` with a true f32 division by a qmax tensor (candle's
//!   `tensor / f64` multiplies by the reciprocal, which is not kvwire's rounding);
//! - `y = x / scale` (IEEE f32 division, broadcast over the group), then `y + 1.5 * 2^23`
//!   (`affine(1, magic)`: one rounding, half to even, also when the GPU fuses it into an FMA
//!   with multiplier 1), after clamping `y` to `±qmax` as kvwire does. With finite values the
//!   clamp changes nothing: the scale comes from the group's own absmax, so
//!   `|y| <= qmax * (1 + 2^-23)` and it rounds to at most `qmax` in magnitude either way (for
//!   int4 never -8). With a NaN in the group the reductions may skip it and the rows beside it
//!   (candle's max keeps its first operand against a NaN), so `y` is unbounded there: the
//!   frame falls back to the host (below), and the clamp keeps the integer steps from
//!   overflowing on the way;
//! - the sum of `y` over the tensor is finite exactly when every value is (|y| <= 128 cannot
//!   overflow): otherwise, and when a scale overflows fp16, the caller falls back to kvwire's
//!   own quantizer on the host, which reports the typed error (`NonFinite`, `ScaleOverflow`);
//! - `y + magic` is an integer `M + q` in [2^23, 2^24); cast to u32 (exact) and then to u8
//!   (truncation, mod 256) it is the two's-complement byte of `q`, as kvwire takes it;
//! - int4 packs element 2i in the low nibble and 2i+1 in the high one over the flattened tensor
//!   (an odd count pads a zero high nibble): in u32, `(lo + 16 * hi) - 16 * (lo / 16)` is
//!   `(lo mod 16) + 16 * hi`, whose low byte (the u8 cast) is the packed byte;
//! - fp16 scales are rounded on the device (`to_dtype(F16)`, nearest even both on CPU and in
//!   CUDA's `__float2half`); bf16 scales, which kvwire truncates rather than rounds, come back
//!   as f32 and are truncated on the host (4 bytes per scale instead of 2).
//!
//! [`pack_on_device`] queues these ops; [`DevicePacked::download`] then fetches the finiteness
//! sum, the scales and the payload. Empty tensors go through kvwire's quantizer (there is
//! nothing to move).

use std::sync::Once;

use half::f16;
use kvwire::quant::{QuantParams, ROUND_MAGIC, SCALE_FLOOR, quantize_tensor, scale_to_bits};
use kvwire::v2::{
    FrameOptions, Payload, PrequantizedLayer, QuantizedTensor, encode_frame,
    encode_prequantized_frame,
};
use kvwire::{Granularity, HostLayer, KvData, QuantMode, ScaleDtype};
use model_runtime::LayerKv;
use model_runtime::candle_core::{self, DType, Device, Result as CandleResult, Tensor};

use crate::error::SharerError;

/// One tensor as it goes on the wire: payload bytes and scale bits (see
/// [`kvwire::v2::QuantizedTensor`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// int8 bytes, packed int4, or little-endian fp16.
    pub payload: Vec<u8>,
    /// Scale bits in the granularity's order (none for fp16).
    pub scales: Vec<u16>,
}

impl Packed {
    /// The view kvwire's pre-quantized frame encoder takes.
    pub fn as_wire(&self) -> QuantizedTensor<'_> {
        QuantizedTensor {
            payload: &self.payload,
            scales: &self.scales,
        }
    }
}

/// Quantizes `x` (`[B, H, T, D]`, rows in wire order, any float dtype, on any device) as
/// kvwire would, and downloads the payload and the scale bits. `Ok(None)` when a value is not
/// finite or a scale overflows its dtype: kvwire's quantizer on the host names the error.
pub fn quantize_on_device(
    x: &Tensor,
    payload: Payload,
    granularity: Granularity,
    scale_dtype: ScaleDtype,
) -> CandleResult<Option<Packed>> {
    if payload.quant_mode().is_some() && x.elem_count() == 0 {
        let shape = x.dims4()?.into();
        return Ok(quantize_on_host(&[], shape, payload, granularity, scale_dtype).ok());
    }
    pack_on_device(x, payload, granularity, scale_dtype)?.download()
}

/// A tensor packed on its device, not downloaded yet.
#[derive(Debug)]
pub struct DevicePacked {
    /// u8 payload (int8, int4) or F16 values (fp16 payload).
    payload: Tensor,
    /// F16 scales (fp16 scale dtype) or F32 (bf16, truncated on the host); none for fp16.
    scales: Option<(Tensor, ScaleDtype)>,
    /// The sum of the quotients: finite exactly when every value is.
    finite: Option<Tensor>,
}

/// Every op of [`quantize_on_device`] that runs on the device, without waiting for them (a
/// GPU runs them asynchronously): `x` must hold at least one value.
pub fn pack_on_device(
    x: &Tensor,
    payload: Payload,
    granularity: Granularity,
    scale_dtype: ScaleDtype,
) -> CandleResult<DevicePacked> {
    let (b, h, t, d) = x.dims4()?;
    let x = x.to_dtype(DType::F32)?;
    let Some(mode) = payload.quant_mode() else {
        return Ok(DevicePacked {
            payload: x.to_dtype(DType::F16)?.flatten_all()?,
            scales: None,
            finite: None,
        });
    };
    let n = b * h * t * d;
    if n == 0 {
        return Err(candle_core::Error::Msg(
            "pack_on_device needs at least one value".into(),
        ));
    }
    let dev = x.device();
    // Row absmax first, then over the group's rows: CUDA reduces each output in one thread
    // block, so a whole-head or whole-tensor reduction in one step would run on one SM.
    let rows = x.max_keepdim(3)?.maximum(&x.min_keepdim(3)?.neg()?)?;
    let absmax = match granularity {
        Granularity::PerBlock => rows,
        Granularity::PerHead => rows.max_keepdim(2)?,
        Granularity::PerTensor | Granularity::PerLayer => {
            rows.flatten_all()?.max_keepdim(0)?.reshape((1, 1, 1, 1))?
        }
    };
    let scale = absmax
        .broadcast_div(&scalar(mode.qmax(), dev)?)?
        .broadcast_maximum(&scalar(SCALE_FLOOR, dev)?)?;
    let y = x.broadcast_div(&scale)?;
    let qmax = f64::from(mode.qmax());
    let q = y
        .clamp(-qmax, qmax)?
        .affine(1.0, f64::from(ROUND_MAGIC))?
        .to_dtype(DType::U32)?;
    let payload = match mode {
        QuantMode::Int8 => q.to_dtype(DType::U8)?.flatten_all()?,
        QuantMode::Int4 => pack_int4(&q.flatten_all()?)?,
    };
    let scales = match scale_dtype {
        ScaleDtype::Fp16 => scale.to_dtype(DType::F16)?,
        ScaleDtype::Bf16 => scale,
    };
    Ok(DevicePacked {
        payload,
        scales: Some((scales.flatten_all()?, scale_dtype)),
        // In two steps, as the absmax.
        finite: Some(y.sum_keepdim(3)?.sum_all()?),
    })
}

impl DevicePacked {
    /// Downloads the payload and the scale bits; `None` when a value was not finite or a scale
    /// does not fit its dtype (nothing more is downloaded then).
    pub fn download(&self) -> CandleResult<Option<Packed>> {
        if let Some(sum) = &self.finite
            && !sum.to_scalar::<f32>()?.is_finite()
        {
            return Ok(None);
        }
        let scales = match &self.scales {
            None => Vec::new(),
            Some((scales, dtype)) => match scale_bits(scales, *dtype)? {
                Some(bits) => bits,
                None => return Ok(None),
            },
        };
        let payload = match self.payload.dtype() {
            DType::F16 => self
                .payload
                .to_vec1::<f16>()?
                .iter()
                .flat_map(|v| v.to_bits().to_le_bytes())
                .collect(),
            _ => self.payload.to_vec1::<u8>()?,
        };
        Ok(Some(Packed { payload, scales }))
    }
}

/// A one-element f32 tensor (broadcasts against any shape).
fn scalar(v: f32, dev: &Device) -> CandleResult<Tensor> {
    Tensor::new(&[v], dev)
}

/// The scale bits as kvwire stores them (from F16 scales, or F32 ones truncated to bf16), or
/// `None` when one is not finite in its dtype (an infinite or NaN absmax, an fp16 overflow).
fn scale_bits(scale: &Tensor, dtype: ScaleDtype) -> CandleResult<Option<Vec<u16>>> {
    Ok(match dtype {
        ScaleDtype::Fp16 => {
            let bits: Vec<u16> = scale
                .to_vec1::<f16>()?
                .iter()
                .map(|s| s.to_bits())
                .collect();
            bits.iter().all(|b| b & 0x7c00 != 0x7c00).then_some(bits)
        }
        ScaleDtype::Bf16 => scale
            .to_vec1::<f32>()?
            .into_iter()
            .map(|s| scale_to_bits(s, dtype))
            .collect(),
    })
}

/// Packs `M + q` values (u32, flattened) into int4 bytes: element 2i in the low nibble.
fn pack_int4(q: &Tensor) -> CandleResult<Tensor> {
    let dev = q.device();
    let n = q.elem_count();
    let even = if n % 2 == 1 {
        // A pad of q = 0 (`M` is a multiple of 16): the last high nibble stays 0.
        Tensor::cat(&[q, &Tensor::new(&[ROUND_MAGIC as u32], dev)?], 0)?
    } else {
        q.clone()
    };
    let pairs = even.reshape((n.div_ceil(2), 2))?;
    let (lo, hi) = (pairs.narrow(1, 0, 1)?, pairs.narrow(1, 1, 1)?);
    let sixteen = Tensor::new(&[16u32], dev)?;
    // (lo + 16 * hi) - 16 * (lo / 16) = (lo mod 16) + 16 * hi, whose low byte is the packed
    // byte. Every value is `M + q` (< 2^24) or 0 (a NaN quotient, whose bytes are discarded), so
    // nothing wraps: `16 * hi < 2^28` and the subtrahend is at most `lo`.
    let whole = lo.add(&hi.broadcast_mul(&sixteen)?)?;
    let floor = lo.broadcast_div(&sixteen)?.broadcast_mul(&sixteen)?;
    whole.sub(&floor)?.to_dtype(DType::U8)?.flatten_all()
}

/// kvwire's quantizer (or, for an fp16 payload, kvwire's f16 rounding) on host f32 values of
/// `shape` with rows in wire order: the host reference of [`quantize_on_device`].
pub fn quantize_on_host(
    x: &[f32],
    shape: [usize; 4],
    payload: Payload,
    granularity: Granularity,
    scale_dtype: ScaleDtype,
) -> Result<Packed, kvwire::EncodeError> {
    let Some(mode) = payload.quant_mode() else {
        let payload = x
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes())
            .collect();
        return Ok(Packed {
            payload,
            scales: Vec::new(),
        });
    };
    let params = QuantParams {
        mode,
        granularity,
        scale_dtype,
    };
    let order: Vec<usize> = (0..shape[2]).collect();
    let (mut payload, mut scales) = (Vec::new(), Vec::new());
    quantize_tensor(
        KvData::F32(x),
        shape,
        &order,
        params,
        "x",
        &mut payload,
        &mut scales,
    )?;
    Ok(Packed { payload, scales })
}

/// One layer's frame, quantized on the layer's device: K and V `[B, H, T, D]` whose T rows are
/// at `indices` (any order; empty means `0..T`), as [`kvwire::v2::encode_frame`] would encode
/// them from host values. The rows are put in ascending position order on the device; where a
/// value is not finite or a scale overflows, the layer goes through `encode_frame` on the host,
/// which returns kvwire's typed error.
pub fn encode_frame_on_device(
    layer: &LayerKv,
    indices: &[u32],
    opts: &FrameOptions,
) -> Result<Vec<u8>, SharerError> {
    let (b, h, t, d) = layer.k.dims4().map_err(model_runtime::RuntimeError::from)?;
    let shape = [b, h, t, d];
    let (positions, order) = kvwire::layer::sort_positions(indices, t);
    if order.len() != t || layer.v.dims() != layer.k.dims() {
        // kvwire names the mismatch.
        return encode_on_host(layer, indices, opts);
    }
    let in_order = |x: &Tensor| -> CandleResult<Tensor> {
        if order.iter().enumerate().all(|(i, &o)| i == o) {
            return Ok(x.clone());
        }
        let rows: Vec<u32> = order.iter().map(|&o| o as u32).collect();
        x.index_select(&Tensor::new(rows.as_slice(), x.device())?, 2)
    };
    let quantize = |x: &Tensor| -> CandleResult<Option<Packed>> {
        quantize_on_device(
            &in_order(x)?,
            opts.payload,
            opts.granularity,
            opts.scale_dtype,
        )
    };
    let packed = |x: &Tensor| quantize(x).map_err(model_runtime::RuntimeError::from);
    let Some(k) = packed(&layer.k)? else {
        return encode_on_host(layer, indices, opts);
    };
    let Some(v) = packed(&layer.v)? else {
        return encode_on_host(layer, indices, opts);
    };
    let wire = PrequantizedLayer {
        k: k.as_wire(),
        v: v.as_wire(),
        shape,
        positions: &positions,
    };
    Ok(encode_prequantized_frame(&wire, opts)?)
}

/// The layer exported to host f32 and encoded by kvwire.
fn encode_on_host(
    layer: &LayerKv,
    indices: &[u32],
    opts: &FrameOptions,
) -> Result<Vec<u8>, SharerError> {
    encode_host_rows(&layer.to_host()?, layer.k.dims(), indices, opts)
}

/// Host rows of `dims` (`[B, H, T, D]`) encoded by kvwire.
fn encode_host_rows(
    host: &HostLayer,
    dims: &[usize],
    indices: &[u32],
    opts: &FrameOptions,
) -> Result<Vec<u8>, SharerError> {
    let shape: [usize; 4] = dims
        .try_into()
        .map_err(|_| SharerError::Worker(format!("a KV tensor of shape {dims:?} is not 4-D")))?;
    let kv = kvwire::LayerKv {
        k: KvData::F32(&host.k),
        v: KvData::F32(&host.v),
        shape,
        indices,
    };
    Ok(encode_frame(&kv, opts)?)
}

/// The rows of one frame: on the host already, or a layer of a cache still on its device.
#[derive(Debug)]
pub enum FrameRows {
    /// Host f32 values, `[1, heads, T, head_dim]`.
    Host(HostLayer),
    /// A layer on an accelerator, quantized there.
    Device(LayerKv),
}

impl FrameRows {
    /// A layer of a device cache: on the CPU exported to host f32 now (kvwire's vector
    /// quantizer is faster there than candle's ops); elsewhere kept on its device.
    pub fn of(layer: &LayerKv) -> Result<Self, SharerError> {
        if layer.k.device().is_cpu() {
            log_path_once(false);
            Ok(FrameRows::Host(layer.to_host()?))
        } else {
            log_path_once(true);
            Ok(FrameRows::Device(layer.clone()))
        }
    }

    /// The frame of these rows, `[1, heads, T, head_dim]` at `indices`.
    pub fn encode(
        &self,
        heads: usize,
        head_dim: usize,
        indices: &[u32],
        opts: &FrameOptions,
    ) -> Result<Vec<u8>, SharerError> {
        match self {
            FrameRows::Host(host) => {
                let dims = [1, heads, indices.len(), head_dim];
                encode_host_rows(host, &dims, indices, opts)
            }
            FrameRows::Device(layer) => encode_frame_on_device(layer, indices, opts),
        }
    }
}

/// Says once per process where KV frames are quantized.
fn log_path_once(device: bool) {
    static DEVICE: Once = Once::new();
    static HOST: Once = Once::new();
    if device {
        DEVICE.call_once(|| {
            tracing::info!(
                "KV quantization on the cache's device (candle ops): only payload and scales are downloaded"
            );
        });
    } else {
        HOST.call_once(|| {
            tracing::info!("KV quantization on the host (kvwire's vector quantizer)");
        });
    }
}
