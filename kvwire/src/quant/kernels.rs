//! Row kernels: absmax with a finiteness check, int8/int4 quantization and dequantization of
//! one row, f16 conversion, int4 nibble helpers.
//!
//! Each public kernel runs the AVX2 version from `crate::simd` when the CPU has it (x86-64,
//! detected at run time) and otherwise its `*_scalar` reference in `crate::scalar`, written so
//! that the compiler vectorizes it on the SSE2 baseline. The two give identical bits for finite input
//! (`simd` tests compare them).

use crate::scalar::{
    absmax_checked_scalar, dequantize_row_int4_scalar, dequantize_row_scalar,
    f16_to_f32_row_scalar, quantize_row_int4_scalar, quantize_row_scalar,
};

/// The AVX2 kernels when this CPU has them.
#[inline(always)]
#[cfg(target_arch = "x86_64")]
fn simd() -> Option<crate::simd::Avx2> {
    crate::simd::Avx2::get()
}

/// Largest |x| of a row, or `None` if any value is NaN or infinite.
pub fn absmax_checked(row: &[f32]) -> Option<f32> {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = simd() {
        return k.absmax_checked(row);
    }
    absmax_checked_scalar(row)
}

/// Quantizes a row to two's-complement bytes (`i8 as u8`); `dst.len() == src.len()`.
/// For finite values and a positive scale (a NaN quotient gives an unspecified byte).
pub fn quantize_row(src: &[f32], scale: f32, qmax: f32, dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = simd() {
        return k.quantize_row(src, scale, qmax, dst);
    }
    quantize_row_scalar(src, scale, qmax, dst);
}

/// Quantizes an even-length row straight to packed int4 (`dst.len() == src.len() / 2`).
/// For finite values and a positive scale.
pub fn quantize_row_int4(src: &[f32], scale: f32, dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = simd() {
        return k.quantize_row_int4(src, scale, dst);
    }
    quantize_row_int4_scalar(src, scale, dst);
}

/// Dequantizes int8 bytes: `out[i] = (q[i] as i8) as f32 * scale`; `out.len() == q.len()`.
pub fn dequantize_row(q: &[u8], scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = simd() {
        return k.dequantize_row(q, scale, out);
    }
    dequantize_row_scalar(q, scale, out);
}

/// Dequantizes packed int4 (low nibble first); `out.len() == 2 * q.len()`.
pub fn dequantize_row_int4(q: &[u8], scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = simd() {
        return k.dequantize_row_int4(q, scale, out);
    }
    dequantize_row_int4_scalar(q, scale, out);
}

/// Converts IEEE half bits to f32 (`dst.len() == src.len()`), exact; a NaN stays a NaN (the
/// F16C path may set its quiet bit).
pub fn f16_to_f32_row(src: &[u16], dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = simd() {
        return k.f16_to_f32(src, dst);
    }
    f16_to_f32_row_scalar(src, dst);
}

/// Packs 4-bit values: element 2i in the low nibble, 2i+1 in the high; `dst` is ceil(n/2).
pub fn pack_int4(src: &[u8], dst: &mut [u8]) {
    let pairs = src.chunks_exact(2);
    let odd = pairs.remainder().first().copied();
    for (d, p) in dst.iter_mut().zip(pairs) {
        *d = (p[0] & 0x0F) | (p[1] << 4);
    }
    if let (Some(last), Some(d)) = (odd, dst.get_mut(src.len() / 2)) {
        *d = last & 0x0F;
    }
}
