//! Whole-tensor quantization and dequantization over `[B, H, T, D]` with a row permutation.
//! Over 400 lines on purpose: quantize and dequantize, for every granularity and both output
//! types, share the row-permutation and scale-layout walk here, and must stay bit-identical to
//! each other; splitting them would split that walk.

use half::f16;
use half::slice::HalfFloatSliceExt as _;

use super::kernels::{
    absmax_checked, dequantize_row, dequantize_row_int4, f16_to_f32_row, pack_int4, quantize_row,
    quantize_row_int4,
};
use super::{
    Granularity, QuantMode, QuantParams, ScaleDtype, compute_scale, scale_from_bits, scale_to_bits,
};
use crate::error::{DecodeError, EncodeError};
use crate::layer::KvData;
use crate::scalar::{int4_hi, int4_lo};

/// Returns a row of f32, converting from f16 into `buf` when needed.
fn load_row<'s>(data: &'s KvData<'_>, start: usize, buf: &'s mut [f32]) -> &'s [f32] {
    match data {
        KvData::F32(s) => &s[start..start + buf.len()],
        KvData::F16(s) => {
            f16_to_f32_row(s[start..start + buf.len()].reinterpret_cast(), buf);
            buf
        }
    }
}

/// Quantizes a `[B, H, T, D]` tensor whose output row `t` of each (b, h) is source row
/// `order[t]`. Appends the payload (`mode.payload_bytes(n)` bytes) to `out` and the scale bits
/// (in `granularity.scale_shape` order) to `scales`; on an error `out` and `scales` keep their
/// lengths.
///
/// Lengths are checked (`ShapeMismatch`); `order` should be a permutation of `0..T` (entries
/// out of range are refused, repeats duplicate rows).
pub fn quantize_tensor(
    data: KvData<'_>,
    shape: [usize; 4],
    order: &[usize],
    params: QuantParams,
    field: &'static str,
    out: &mut Vec<u8>,
    scales: &mut Vec<u16>,
) -> Result<(), EncodeError> {
    let [_, _, t, d] = shape;
    let n = crate::layer::checked_elements(shape).ok_or(EncodeError::TooLarge {
        field: "elements",
        value: u64::MAX,
        max: crate::limits::MAX_TENSOR_ELEMENTS as u64,
    })?;
    let checks = [(field, n, data.len()), ("order", t, order.len())];
    for (field, expected, found) in checks {
        if expected != found {
            return Err(EncodeError::ShapeMismatch {
                field,
                expected,
                found,
            });
        }
    }
    // Branch-free folds (they vectorize): whether the order is 0..T (the common case, in range
    // by construction), else its largest entry.
    let identity = order
        .iter()
        .zip(0..)
        .fold(true, |all, (&o, i)| all & (o == i));
    if !identity
        && let Some(&largest) = order.iter().max()
        && largest >= t
    {
        return Err(EncodeError::ShapeMismatch {
            field: "order entry",
            expected: t,
            found: largest,
        });
    }
    let (at, scales_at) = (out.len(), scales.len());
    // Both paths append scales as they go (the kernel a chunk of rows at a time): a fault
    // after the first leaves some, which an error takes back with the payload.
    let undo = |out: &mut Vec<u8>, scales: &mut Vec<u16>| {
        out.truncate(at);
        scales.truncate(scales_at);
    };
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = crate::simd::Avx2::get()
        && params.granularity == Granularity::PerBlock
        && d > 0
        && d % 32 == 0
    {
        let source = (data, shape, order);
        return quantize_fused(k, source, identity, params, field, out, scales)
            .inspect_err(|_| undo(out, scales));
    }
    out.resize(at + params.mode.payload_bytes(n), 0);
    quantize_rows((data, shape, order), params, field, &mut out[at..], scales)
        .inspect_err(|_| undo(out, scales))
}

/// A validated tensor: data, `[B, H, T, D]`, the row order within each (b, h).
pub(crate) type Source<'a> = (KvData<'a>, [usize; 4], &'a [usize]);

/// per_block through the whole-tensor vector kernel (`crate::simd::block`), bit-identical to
/// [`quantize_rows`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
fn quantize_fused(
    k: crate::simd::Avx2,
    (data, shape, order): Source<'_>,
    identity: bool,
    params: QuantParams,
    field: &'static str,
    out: &mut Vec<u8>,
    scales: &mut Vec<u16>,
) -> Result<(), EncodeError> {
    use crate::simd::{QuantizeJob, RowFault, Rows};
    let [b, h, t, d] = shape;
    let src = match data {
        KvData::F32(s) => Rows::F32(s),
        KvData::F16(s) => Rows::F16(s.reinterpret_cast()),
    };
    let job = QuantizeJob {
        src,
        d,
        int4: params.mode == QuantMode::Int4,
        bf16_scales: params.scale_dtype == ScaleDtype::Bf16,
    };
    let rows = b * h * t;
    let at = out.len();
    let result = if identity {
        // Rows in source order (sorted positions, the common case): a plain stride.
        k.quantize_per_block(&job, rows, (0..rows).map(|r| r * d), out, scales)
    } else {
        let starts = (0..b * h).flat_map(|bh| order.iter().map(move |&o| (bh * t + o) * d));
        k.quantize_per_block(&job, rows, starts, out, scales)
    };
    // Every row has a start (`order.len() == t`), so every row was written (a fault writes
    // none).
    let written = if result.is_ok() { rows * d } else { 0 };
    debug_assert_eq!(out.len() - at, params.mode.payload_bytes(written));
    result.map_err(|(group, fault)| match fault {
        RowFault::NonFinite => EncodeError::NonFinite { field, group },
        RowFault::ScaleOverflow(scale) => EncodeError::ScaleOverflow {
            field,
            group,
            scale,
        },
    })
}

/// The row-by-row path: every granularity, any D (odd-D int4 through an unpacked buffer).
pub(crate) fn quantize_rows(
    (data, shape, order): Source<'_>,
    params: QuantParams,
    field: &'static str,
    payload: &mut [u8],
    scales: &mut Vec<u16>,
) -> Result<(), EncodeError> {
    let [b, h, t, d] = shape;
    let rows = b * h * t;
    let qmax = params.mode.qmax();
    let gran = params.granularity;
    let mut buf = vec![0f32; d];
    // Group scales in f32; per_block is computed row by row in the main pass.
    let mut group_scale = Vec::new();
    if gran != Granularity::PerBlock {
        let groups = gran.scale_count(shape);
        let mut amax = vec![0f32; groups];
        for r in 0..rows {
            let g = gran.group_of_row(r, t);
            let x = load_row(&data, r * d, &mut buf);
            let a = absmax_checked(x).ok_or(EncodeError::NonFinite { field, group: g })?;
            if a > amax[g] {
                amax[g] = a;
            }
        }
        for (g, &a) in amax.iter().enumerate() {
            let s = compute_scale(a, qmax);
            let bits = scale_to_bits(s, params.scale_dtype).ok_or(EncodeError::ScaleOverflow {
                field,
                group: g,
                scale: s,
            })?;
            scales.push(bits);
            group_scale.push(s);
        }
    }
    let int4_rows = params.mode == QuantMode::Int4 && d % 2 == 0;
    let mut unpacked = vec![
        0u8;
        if params.mode == QuantMode::Int4 && !int4_rows {
            rows * d
        } else {
            0
        }
    ];
    for bh in 0..b * h {
        for (to, &src_t) in order.iter().enumerate() {
            let out_row = bh * t + to;
            let x = load_row(&data, (bh * t + src_t) * d, &mut buf);
            let s = if gran == Granularity::PerBlock {
                let a = absmax_checked(x).ok_or(EncodeError::NonFinite {
                    field,
                    group: out_row,
                })?;
                let s = compute_scale(a, qmax);
                let bits =
                    scale_to_bits(s, params.scale_dtype).ok_or(EncodeError::ScaleOverflow {
                        field,
                        group: out_row,
                        scale: s,
                    })?;
                scales.push(bits);
                s
            } else {
                group_scale[gran.group_of_row(out_row, t)]
            };
            match params.mode {
                QuantMode::Int8 => quantize_row(x, s, qmax, &mut payload[out_row * d..][..d]),
                QuantMode::Int4 if int4_rows => {
                    quantize_row_int4(x, s, &mut payload[out_row * d / 2..][..d / 2]);
                }
                QuantMode::Int4 => quantize_row(x, s, qmax, &mut unpacked[out_row * d..][..d]),
            }
        }
    }
    if !unpacked.is_empty() {
        pack_int4(&unpacked, payload);
    }
    Ok(())
}

/// Dequantizes a payload written by [`quantize_tensor`] into `out` (`B*H*T*D` f32), with
/// `scales` already converted to f32 (see [`scale_from_bits`]).
pub fn dequantize_tensor(
    mode: QuantMode,
    granularity: Granularity,
    shape: [usize; 4],
    payload: &[u8],
    scales: &[f32],
    out: &mut [f32],
) -> Result<(), DecodeError> {
    dequantize_with(mode, granularity, shape, payload, Scales::F32(scales), out)
}

/// [`dequantize_tensor`] with the scales as stored: little-endian fp16/bf16 bits, converted
/// row by row (no scale buffer).
pub(crate) fn dequantize_tensor_le(
    mode: QuantMode,
    granularity: Granularity,
    shape: [usize; 4],
    payload: &[u8],
    scales: (&[u8], ScaleDtype),
    out: &mut [f32],
) -> Result<(), DecodeError> {
    let (bytes, dtype) = scales;
    dequantize_with(
        mode,
        granularity,
        shape,
        payload,
        Scales::Le(bytes, dtype),
        out,
    )
}

/// [`dequantize_tensor_le`] rounded to fp16 (nearest, ties to even, as `f16::from_f32` of the
/// f32 result): a cache that arrived as fp16 goes back to fp16 without an f32 copy.
pub(crate) fn dequantize_tensor_le_f16(
    mode: QuantMode,
    granularity: Granularity,
    shape: [usize; 4],
    payload: &[u8],
    scales: (&[u8], ScaleDtype),
    out: &mut [f16],
) -> Result<(), DecodeError> {
    #[cfg(target_arch = "x86_64")]
    {
        let stored = Scales::Le(scales.0, scales.1);
        if let Some((k, rows)) = whole_tensor_kernel(mode, granularity, shape, payload, stored) {
            check_lengths(mode, granularity, shape, payload, stored, out.len())?;
            let out = crate::simd::Dequantized::F16(out.reinterpret_cast_mut());
            k.dequantize_per_block(rows, out);
            return Ok(());
        }
    }
    // Elsewhere through f32, then rounded.
    let mut wide = vec![0f32; out.len()];
    dequantize_tensor_le(mode, granularity, shape, payload, scales, &mut wide)?;
    out.convert_from_f32_slice(&wide);
    Ok(())
}

/// A caller's output buffer for a fused decode: f32, or fp16 (rounded as
/// [`dequantize_tensor_le_f16`]).
pub(crate) enum OutBuf<'a> {
    /// f32 values.
    F32(&'a mut [f32]),
    /// fp16 values.
    F16(&'a mut [f16]),
}

/// [`dequantize_tensor_le`] (or [`dequantize_tensor_le_f16`]) that also returns
/// `crc32c_append(crc, payload)`: in one pass over the payload where the CPU has the fused
/// per_block kernel, else the dequantization and then the checksum.
pub(crate) fn dequantize_tensor_le_crc(
    mode: QuantMode,
    granularity: Granularity,
    shape: [usize; 4],
    payload: &[u8],
    scales: (&[u8], ScaleDtype),
    out: OutBuf<'_>,
    crc: u32,
) -> Result<u32, DecodeError> {
    #[cfg(target_arch = "x86_64")]
    {
        let stored = Scales::Le(scales.0, scales.1);
        let kernel = whole_tensor_kernel(mode, granularity, shape, payload, stored);
        if let (Some((k, rows)), Some(clmul)) = (kernel, crate::simd::Clmul::get()) {
            let out = match out {
                OutBuf::F32(o) => {
                    check_lengths(mode, granularity, shape, payload, stored, o.len())?;
                    crate::simd::Dequantized::F32(o)
                }
                OutBuf::F16(o) => {
                    check_lengths(mode, granularity, shape, payload, stored, o.len())?;
                    crate::simd::Dequantized::F16(o.reinterpret_cast_mut())
                }
            };
            return Ok(k.dequantize_per_block_crc(clmul, rows, out, crc));
        }
    }
    match out {
        OutBuf::F32(o) => dequantize_tensor_le(mode, granularity, shape, payload, scales, o)?,
        OutBuf::F16(o) => dequantize_tensor_le_f16(mode, granularity, shape, payload, scales, o)?,
    }
    Ok(crate::checksum::crc32c_append(crc, payload))
}

/// Scales as f32 values or as stored bits.
#[derive(Clone, Copy)]
enum Scales<'a> {
    F32(&'a [f32]),
    Le(&'a [u8], ScaleDtype),
}

impl Scales<'_> {
    fn count(self) -> usize {
        match self {
            Scales::F32(s) => s.len(),
            // An odd byte count can never match (the decoders always pass whole scales).
            Scales::Le(b, _) if b.len() % 2 == 0 => b.len() / 2,
            Scales::Le(..) => usize::MAX,
        }
    }

    /// Scale of group `g` (`g < count()`).
    #[inline(always)]
    fn get(self, g: usize) -> f32 {
        match self {
            Scales::F32(s) => s[g],
            Scales::Le(b, dtype) => {
                scale_from_bits(u16::from_le_bytes([b[2 * g], b[2 * g + 1]]), dtype)
            }
        }
    }
}

/// The whole-tensor dequantize kernel and its view of the rows, where it applies: per_block
/// scales as stored, `D > 0` (even for int4), a CPU with AVX2 and F16C.
#[cfg(target_arch = "x86_64")]
fn whole_tensor_kernel<'a>(
    mode: QuantMode,
    granularity: Granularity,
    shape: [usize; 4],
    payload: &'a [u8],
    scales: Scales<'a>,
) -> Option<(crate::simd::Avx2, crate::simd::StoredRows<'a>)> {
    let Scales::Le(bytes, dtype) = scales else {
        return None;
    };
    let (d, int4) = (shape[3], mode == QuantMode::Int4);
    let fits = granularity == Granularity::PerBlock && d > 0 && (!int4 || d.is_multiple_of(2));
    let k = crate::simd::Avx2::get().filter(|_| fits)?;
    let rows = crate::simd::StoredRows {
        payload,
        scales: bytes,
        bf16: dtype == ScaleDtype::Bf16,
        d,
        int4,
    };
    Some((k, rows))
}

/// `out_len` values, the payload and the scales all match `shape`.
fn check_lengths(
    mode: QuantMode,
    granularity: Granularity,
    shape: [usize; 4],
    payload: &[u8],
    scales: Scales<'_>,
    out_len: usize,
) -> Result<(), DecodeError> {
    let n = shape.iter().product();
    let checks = [
        ("out", n, out_len),
        ("payload", mode.payload_bytes(n), payload.len()),
        ("scales", granularity.scale_count(shape), scales.count()),
    ];
    for (field, expected, found) in checks {
        if expected != found {
            return Err(DecodeError::LengthMismatch {
                field,
                offset: 0,
                expected: expected as u64,
                found: found as u64,
            });
        }
    }
    Ok(())
}

/// Checks the lengths, then dequantizes (stored per_block scales through the whole-tensor
/// vector kernel where the CPU has one).
fn dequantize_with(
    mode: QuantMode,
    granularity: Granularity,
    shape: [usize; 4],
    payload: &[u8],
    scales: Scales<'_>,
    out: &mut [f32],
) -> Result<(), DecodeError> {
    check_lengths(mode, granularity, shape, payload, scales, out.len())?;
    let [_, _, t, d] = shape;
    if d == 0 {
        return Ok(());
    }
    #[cfg(target_arch = "x86_64")]
    if let Some((k, rows)) = whole_tensor_kernel(mode, granularity, shape, payload, scales) {
        k.dequantize_per_block(rows, crate::simd::Dequantized::F32(out));
        return Ok(());
    }
    let scale_of = |g| scales.get(g);
    let rows = out.chunks_exact_mut(d).enumerate();
    match mode {
        QuantMode::Int8 => {
            for ((r, o), q) in rows.zip(payload.chunks_exact(d)) {
                dequantize_row(q, scale_of(granularity.group_of_row(r, t)), o);
            }
        }
        QuantMode::Int4 if d % 2 == 0 => {
            for ((r, o), q) in rows.zip(payload.chunks_exact(d / 2)) {
                dequantize_row_int4(q, scale_of(granularity.group_of_row(r, t)), o);
            }
        }
        QuantMode::Int4 => {
            for (i, o) in out.iter_mut().enumerate() {
                let byte = payload[i / 2];
                let q = if i % 2 == 0 {
                    int4_lo(byte)
                } else {
                    int4_hi(byte)
                };
                *o = f32::from(q) * scale_of(granularity.group_of_row(i / d, t));
            }
        }
    }
    Ok(())
}

/// Quantizes then dequantizes a `[B, H, T, D]` tensor (rows in place): what a receiver would
/// reconstruct. For selection and quantization-aware code elsewhere.
pub fn fake_quantize(
    values: &[f32],
    shape: [usize; 4],
    params: QuantParams,
) -> Result<Vec<f32>, EncodeError> {
    let n = crate::layer::checked_elements(shape).ok_or(EncodeError::TooLarge {
        field: "elements",
        value: u64::MAX,
        max: crate::limits::MAX_TENSOR_ELEMENTS as u64,
    })?;
    if values.len() != n {
        return Err(EncodeError::ShapeMismatch {
            field: "values",
            expected: n,
            found: values.len(),
        });
    }
    let order: Vec<usize> = (0..shape[2]).collect();
    let mut payload = Vec::with_capacity(params.mode.payload_bytes(n));
    let mut bits = Vec::new();
    quantize_tensor(
        KvData::F32(values),
        shape,
        &order,
        params,
        "values",
        &mut payload,
        &mut bits,
    )?;
    let scales: Vec<f32> = bits
        .iter()
        .map(|&b| scale_from_bits(b, params.scale_dtype))
        .collect();
    let mut out = vec![0f32; n];
    dequantize_tensor(
        params.mode,
        params.granularity,
        shape,
        &payload,
        &scales,
        &mut out,
    )
    .map_err(|_| EncodeError::Unsupported {
        what: "internal length mismatch",
    })?;
    Ok(out)
}
