//! Row kernels: absmax with a finiteness check, int8/int4 quantization and dequantization of
//! one row, f16 conversion, int4 nibble helpers.
//!
//! Each public kernel runs the AVX2 version from `crate::simd` when the CPU has it (x86-64,
//! detected at run time) and otherwise the `*_scalar` reference beside it, written so that the
//! compiler vectorizes it on the SSE2 baseline. The two give identical bits for finite input
//! (`simd` tests compare them).

use super::{ROUND_MAGIC, f16_bits_to_f32};

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

/// Reference for [`absmax_checked`].
pub(crate) fn absmax_checked_scalar(row: &[f32]) -> Option<f32> {
    // 16 independent lanes so the max and the finiteness flags vectorize.
    let mut m = [0f32; 16];
    let mut bad = [0u32; 16];
    let chunks = row.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..16 {
            let a = c[i].abs();
            m[i] = if a > m[i] { a } else { m[i] };
            bad[i] |= u32::from(!a.is_finite());
        }
    }
    let mut max = m.iter().fold(0f32, |acc, &a| if a > acc { a } else { acc });
    let mut flags = bad.iter().fold(0, |x, y| x | y);
    for &x in rest {
        let a = x.abs();
        max = if a > max { a } else { max };
        flags |= u32::from(!a.is_finite());
    }
    (flags == 0).then_some(max)
}

#[inline(always)]
pub(crate) fn quantize_one(x: f32, scale: f32, qmax: f32) -> u8 {
    let y = x / scale;
    let y = if y > qmax {
        qmax
    } else if y < -qmax {
        -qmax
    } else {
        y
    };
    // y + 1.5*2^23 lies in [2^23, 2^24): its low mantissa byte is round_half_even(y) mod 256,
    // i.e. the two's-complement byte (the magic's own low byte is zero).
    (y + ROUND_MAGIC).to_bits() as u8
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

/// Reference for [`quantize_row`].
pub(crate) fn quantize_row_scalar(src: &[f32], scale: f32, qmax: f32, dst: &mut [u8]) {
    // A plain zip: LLVM vectorizes it (divps + packuswb); hand-blocked variants vectorized worse.
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = quantize_one(x, scale, qmax);
    }
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

/// Reference for [`quantize_row_int4`].
pub(crate) fn quantize_row_int4_scalar(src: &[f32], scale: f32, dst: &mut [u8]) {
    // Pairs of f32 deinterleave with shufps and pack from the rounded bits' low nibbles.
    for (d, p) in dst.iter_mut().zip(src.chunks_exact(2)) {
        let lo = u32::from(quantize_one(p[0], scale, 7.0)) & 0x0F;
        let hi = u32::from(quantize_one(p[1], scale, 7.0)) & 0x0F;
        *d = (lo | (hi << 4)) as u8;
    }
}

/// Dequantizes int8 bytes: `out[i] = (q[i] as i8) as f32 * scale`; `out.len() == q.len()`.
pub fn dequantize_row(q: &[u8], scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = simd() {
        return k.dequantize_row(q, scale, out);
    }
    dequantize_row_scalar(q, scale, out);
}

/// Reference for [`dequantize_row`].
pub(crate) fn dequantize_row_scalar(q: &[u8], scale: f32, out: &mut [f32]) {
    for (o, &q) in out.iter_mut().zip(q) {
        *o = f32::from(q as i8) * scale;
    }
}

/// Dequantizes packed int4 (low nibble first); `out.len() == 2 * q.len()`.
pub fn dequantize_row_int4(q: &[u8], scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(k) = simd() {
        return k.dequantize_row_int4(q, scale, out);
    }
    dequantize_row_int4_scalar(q, scale, out);
}

/// Reference for [`dequantize_row_int4`].
pub(crate) fn dequantize_row_int4_scalar(q: &[u8], scale: f32, out: &mut [f32]) {
    for (o, &q) in out.chunks_exact_mut(2).zip(q) {
        o[0] = f32::from(int4_lo(q)) * scale;
        o[1] = f32::from(int4_hi(q)) * scale;
    }
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

/// Reference for [`f16_to_f32_row`].
pub(crate) fn f16_to_f32_row_scalar(src: &[u16], dst: &mut [f32]) {
    for (d, &h) in dst.iter_mut().zip(src) {
        *d = f16_bits_to_f32(h);
    }
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

/// Sign-extends the low nibble of `b`.
#[inline]
pub fn int4_lo(b: u8) -> i8 {
    ((b << 4) as i8) >> 4
}

/// Sign-extends the high nibble of `b`.
#[inline]
pub fn int4_hi(b: u8) -> i8 {
    (b as i8) >> 4
}
