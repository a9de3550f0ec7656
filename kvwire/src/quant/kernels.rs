//! Row kernels written so that the compiler vectorizes them on baseline x86-64 (SSE2):
//! absmax with a finiteness check, int8/int4 quantization of one row, int4 nibble helpers.

use super::ROUND_MAGIC;

/// Largest |x| of a row, or `None` if any value is NaN or infinite.
pub fn absmax_checked(row: &[f32]) -> Option<f32> {
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
pub fn quantize_row(src: &[f32], scale: f32, qmax: f32, dst: &mut [u8]) {
    // A plain zip: LLVM vectorizes it (divps + packuswb); hand-blocked variants vectorized worse.
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = quantize_one(x, scale, qmax);
    }
}

/// Quantizes an even-length row straight to packed int4 (`dst.len() == src.len() / 2`).
pub fn quantize_row_int4(src: &[f32], scale: f32, dst: &mut [u8]) {
    // Pairs of f32 deinterleave with shufps and pack from the rounded bits' low nibbles.
    for (d, p) in dst.iter_mut().zip(src.chunks_exact(2)) {
        let lo = u32::from(quantize_one(p[0], scale, 7.0)) & 0x0F;
        let hi = u32::from(quantize_one(p[1], scale, 7.0)) & 0x0F;
        *d = (lo | (hi << 4)) as u8;
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
