//! The scalar reference arithmetic, shared by [`crate::quant`] (the public kernels and their
//! portable fallback) and the x86-64 vector kernels in `crate::simd` (which finish row tails
//! with it and must reproduce it bit for bit): the scale (`max(absmax / qmax, 1e-6)`) and its
//! rounding to the stored dtype, IEEE half to f32, int4 nibbles, and the `*_scalar` row loops.
//!
//! It depends on neither of them, so `quant` uses `simd` and both use this module, without a
//! cycle. `quant` re-exports the public items ([`ScaleDtype`], [`compute_scale`],
//! [`scale_to_bits`], [`f16_bits_to_f32`], [`int4_lo`], [`int4_hi`]) where they always were.

use half::f16;

/// Storage type of the scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleDtype {
    /// IEEE half, round to nearest even.
    Fp16,
    /// bfloat16 as the upper 16 bits of the f32 (truncation, as the reference).
    Bf16,
}

impl ScaleDtype {
    /// Reference name.
    pub fn name(self) -> &'static str {
        match self {
            ScaleDtype::Fp16 => "fp16",
            ScaleDtype::Bf16 => "bf16",
        }
    }

    /// Parses a reference name.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "fp16" => Some(ScaleDtype::Fp16),
            "bf16" => Some(ScaleDtype::Bf16),
            _ => None,
        }
    }
}

/// The smallest scale: `compute_scale` never returns less (an all-zero group gets it).
pub const SCALE_FLOOR: f32 = 1e-6;
/// 1.5 * 2^23: `y + ROUND_MAGIC` in f32 rounds `y` (|y| <= 2^22) to an integer, half to even,
/// and its low mantissa byte is that integer's two's-complement byte.
pub const ROUND_MAGIC: f32 = 12_582_912.0;

/// `max(absmax / qmax, 1e-6)` in f32.
pub fn compute_scale(absmax: f32, qmax: f32) -> f32 {
    let s = absmax / qmax;
    if s > SCALE_FLOOR { s } else { SCALE_FLOOR }
}

/// Rounds an f32 scale to the scale dtype's bits; `None` when it overflows to infinity.
pub fn scale_to_bits(scale: f32, dtype: ScaleDtype) -> Option<u16> {
    // Finite exactly when the exponent field is not all ones.
    let (bits, exponent) = match dtype {
        ScaleDtype::Fp16 => (f16::from_f32(scale).to_bits(), 0x7c00),
        ScaleDtype::Bf16 => ((scale.to_bits() >> 16) as u16, 0x7f80),
    };
    (bits & exponent != exponent).then_some(bits)
}

/// IEEE half bits to f32, exact for every value (NaN stays NaN). Branch-free so that loops over
/// it vectorize without F16C.
#[inline(always)]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let em = (h & 0x7fff) << 13;
    let exp = em & (0x7c00 << 13);
    let v = if exp == (0x7c00 << 13) {
        f32::from_bits(em + ((255 - 31) << 23))
    } else if exp == 0 {
        // Subnormal or zero: renormalize through one exact subtraction.
        f32::from_bits(em + (113 << 23)) - f32::from_bits(113 << 23)
    } else {
        f32::from_bits(em + ((127 - 15) << 23))
    };
    f32::from_bits(v.to_bits() | sign)
}

/// Reference for [`crate::quant::absmax_checked`].
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

/// Reference for [`crate::quant::quantize_row`].
pub(crate) fn quantize_row_scalar(src: &[f32], scale: f32, qmax: f32, dst: &mut [u8]) {
    // A plain zip: LLVM vectorizes it (divps + packuswb); hand-blocked variants vectorized worse.
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = quantize_one(x, scale, qmax);
    }
}

/// Reference for [`crate::quant::quantize_row_int4`].
pub(crate) fn quantize_row_int4_scalar(src: &[f32], scale: f32, dst: &mut [u8]) {
    // Pairs of f32 deinterleave with shufps and pack from the rounded bits' low nibbles.
    for (d, p) in dst.iter_mut().zip(src.chunks_exact(2)) {
        let lo = u32::from(quantize_one(p[0], scale, 7.0)) & 0x0F;
        let hi = u32::from(quantize_one(p[1], scale, 7.0)) & 0x0F;
        *d = (lo | (hi << 4)) as u8;
    }
}

/// Reference for [`crate::quant::dequantize_row`].
pub(crate) fn dequantize_row_scalar(q: &[u8], scale: f32, out: &mut [f32]) {
    for (o, &q) in out.iter_mut().zip(q) {
        *o = f32::from(q as i8) * scale;
    }
}

/// Reference for [`crate::quant::dequantize_row_int4`].
pub(crate) fn dequantize_row_int4_scalar(q: &[u8], scale: f32, out: &mut [f32]) {
    for (o, &q) in out.chunks_exact_mut(2).zip(q) {
        o[0] = f32::from(int4_lo(q)) * scale;
        o[1] = f32::from(int4_hi(q)) * scale;
    }
}

/// Reference for [`crate::quant::f16_to_f32_row`].
pub(crate) fn f16_to_f32_row_scalar(src: &[u16], dst: &mut [f32]) {
    for (d, &h) in dst.iter_mut().zip(src) {
        *d = f16_bits_to_f32(h);
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
