//! Runtime-dispatched x86-64 kernels for the quantization hot loops and the CRC32C.
//!
//! The only module of the crate with `unsafe`. Every kernel is a `#[target_feature]` function
//! reached through a token ([`Avx2`]: AVX2 + F16C; [`Clmul`]: AVX-512 VPCLMULQDQ) that can only
//! be made after `is_x86_feature_detected!` said yes, so its methods are safe to call. Each
//! kernel reproduces the scalar reference in `crate::scalar` bit for bit (the tests compare
//! them on random and edge inputs). The row kernels here use the same f32 division (`vdivps`),
//! clamp, round-half-even conversion (`vcvtps2dq` in the default rounding mode) and a single
//! multiplication for dequantization; no FMA, which rounds once where the reference rounds
//! twice. The whole-tensor per_block kernels (`block`) multiply by a bracketed reciprocal and
//! fall back to the division on the blocks of 32 values where the bracket cannot decide (the
//! proof is in that module). `crc` computes the crate's CRC32C by carry-less multiplication.
//!
//! Over 400 lines on purpose: it is the crate's whole `unsafe` surface, kept in one audited
//! module (with `block.rs` beside it) rather than spread over the callers.
#![allow(unsafe_code)]

use std::arch::x86_64::*;
use std::mem::MaybeUninit;

/// Proof that this CPU has AVX2 and F16C; its methods run the vector kernels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Avx2 {
    _detected: (),
}

impl Avx2 {
    /// The token, when the CPU supports AVX2 and F16C (detection is cached by std).
    #[inline]
    pub(crate) fn get() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c"))
            .then_some(Self { _detected: () })
    }

    /// Largest |x| of a row, or `None` if any value is NaN or infinite.
    #[inline]
    pub(crate) fn absmax_checked(self, row: &[f32]) -> Option<f32> {
        // SAFETY: `self` exists only after AVX2 was detected on this CPU.
        unsafe { absmax_checked(row) }
    }

    /// int8 quantization of a row (`dst.len() == src.len()`), finite quotients.
    #[inline]
    pub(crate) fn quantize_row(self, src: &[f32], scale: f32, qmax: f32, dst: &mut [u8]) {
        // SAFETY: `self` exists only after AVX2 was detected on this CPU.
        unsafe { quantize_row(src, scale, qmax, dst) }
    }

    /// int4 quantization of an even-length row into packed nibbles (`dst.len() == src.len()/2`).
    #[inline]
    pub(crate) fn quantize_row_int4(self, src: &[f32], scale: f32, dst: &mut [u8]) {
        // SAFETY: `self` exists only after AVX2 was detected on this CPU.
        unsafe { quantize_row_int4(src, scale, dst) }
    }

    /// `out[i] = q[i] as i8 as f32 * scale`.
    #[inline]
    pub(crate) fn dequantize_row(self, q: &[u8], scale: f32, out: &mut [f32]) {
        // SAFETY: `self` exists only after AVX2 was detected on this CPU.
        unsafe { dequantize_row(q, scale, out) }
    }

    /// Packed int4 (`out.len() == 2 * q.len()`) times `scale`.
    #[inline]
    pub(crate) fn dequantize_row_int4(self, q: &[u8], scale: f32, out: &mut [f32]) {
        // SAFETY: `self` exists only after AVX2 was detected on this CPU.
        unsafe { dequantize_row_int4(q, scale, out) }
    }

    /// per_block quantization of a whole tensor (see [`block`]): `rows` rows in output order
    /// start at the element offsets `starts`; their packed bytes are appended to `out` (written
    /// straight into its spare capacity: no zero fill first) and one scale per row to
    /// `scales`. On a fault `out` keeps its length. A `starts` shorter than `rows` appends
    /// only the rows it gives; `d` must be a positive multiple of 32.
    #[inline]
    pub(crate) fn quantize_per_block(
        self,
        job: &QuantizeJob<'_>,
        rows: usize,
        starts: impl Iterator<Item = usize>,
        out: &mut Vec<u8>,
        scales: &mut Vec<u16>,
    ) -> Result<(), (usize, RowFault)> {
        // The kernel writes whole blocks of 32 values; any other row length would leave bytes
        // of each row unwritten, which `set_len` below must never expose.
        assert!(
            job.d > 0 && job.d.is_multiple_of(32),
            "per_block kernel needs D % 32 == 0"
        );
        let row_bytes = if job.int4 { job.d / 2 } else { job.d };
        out.reserve(rows * row_bytes);
        let spare = &mut out.spare_capacity_mut()[..rows * row_bytes];
        // SAFETY: `self` exists only after AVX2 and F16C were detected on this CPU.
        let written = unsafe { block::quantize_per_block(job, starts.take(rows), spare, scales) }?;
        // SAFETY: the kernel wrote every byte of its first `written` rows (`d % 32 == 0`: each
        // row is whole 32-value blocks, each stored in full), all within the reserved capacity.
        unsafe { out.set_len(out.len() + written * row_bytes) };
        Ok(())
    }

    /// per_block dequantization of a whole tensor with little-endian stored scales, to f32 or
    /// to half bits; the caller checked every length.
    #[inline]
    pub(crate) fn dequantize_per_block(self, rows: StoredRows<'_>, out: Dequantized<'_>) {
        // SAFETY: `self` exists only after AVX2 and F16C were detected on this CPU.
        unsafe { block::dequantize_per_block(rows, out) }
    }

    /// [`Self::dequantize_per_block`] that also returns `crc32c_append(crc, rows.payload)`,
    /// folded in between the rows (see [`block`]).
    #[inline]
    pub(crate) fn dequantize_per_block_crc(
        self,
        _clmul: Clmul,
        rows: StoredRows<'_>,
        out: Dequantized<'_>,
        crc: u32,
    ) -> u32 {
        // SAFETY: `self` exists only after AVX2 and F16C were detected, `_clmul` after
        // AVX-512F, VPCLMULQDQ, PCLMULQDQ and SSE4.2.
        unsafe { block::dequantize_per_block_crc(rows, out, crc) }
    }

    /// IEEE half bits to f32 (`dst.len() == src.len()`); exact for every non-NaN value.
    #[inline]
    pub(crate) fn f16_to_f32(self, src: &[u16], dst: &mut [f32]) {
        // SAFETY: `self` exists only after AVX2 and F16C were detected on this CPU.
        unsafe { f16_to_f32(src, dst) }
    }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load8(x: &[f32; 8]) -> __m256 {
    // SAFETY: `x` is 32 readable bytes and `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(x.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn store8(x: &mut [f32; 8], v: __m256) {
    // SAFETY: `x` is 32 writable bytes and `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_ps(x.as_mut_ptr(), v) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn load_bytes8(x: &[u8; 8]) -> __m128i {
    // SAFETY: `x` is 8 readable bytes; `loadl_epi64` reads exactly 8, unaligned.
    unsafe { _mm_loadl_epi64(x.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn store_bytes16(x: &mut [u8; 16], v: __m128i) {
    // SAFETY: `x` is 16 writable bytes and `storeu` has no alignment requirement.
    unsafe { _mm_storeu_si128(x.as_mut_ptr().cast(), v) }
}

#[inline]
#[target_feature(enable = "avx2")]
fn store_bytes32(x: &mut [u8; 32], v: __m256i) {
    // SAFETY: `x` is 32 writable bytes and `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(x.as_mut_ptr().cast(), v) }
}

/// [`store_bytes16`] into possibly uninitialized bytes (which it initializes).
#[inline]
#[target_feature(enable = "avx2")]
fn init_bytes16(x: &mut [MaybeUninit<u8>; 16], v: __m128i) {
    // SAFETY: `x` is 16 writable bytes and `storeu` has no alignment requirement.
    unsafe { _mm_storeu_si128(x.as_mut_ptr().cast(), v) }
}

/// [`store_bytes32`] into possibly uninitialized bytes (which it initializes).
#[inline]
#[target_feature(enable = "avx2")]
fn init_bytes32(x: &mut [MaybeUninit<u8>; 32], v: __m256i) {
    // SAFETY: `x` is 32 writable bytes and `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(x.as_mut_ptr().cast(), v) }
}

#[target_feature(enable = "avx2")]
fn absmax_checked(row: &[f32]) -> Option<f32> {
    // |x| as bits: for non-negative floats integer order is float order, and a value is
    // non-finite exactly when its bits reach those of infinity.
    let abs = _mm256_set1_epi32(0x7fff_ffff);
    let (blocks, rest) = row.as_chunks::<16>();
    let (mut m0, mut m1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for b in blocks {
        let (v, _) = b.as_chunks::<8>();
        m0 = _mm256_max_epi32(m0, _mm256_and_si256(_mm256_castps_si256(load8(&v[0])), abs));
        m1 = _mm256_max_epi32(m1, _mm256_and_si256(_mm256_castps_si256(load8(&v[1])), abs));
    }
    let m = _mm256_max_epi32(m0, m1);
    let m = _mm_max_epi32(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
    let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b01_00_11_10>(m));
    let m = _mm_max_epi32(m, _mm_shuffle_epi32::<0b10_11_00_01>(m));
    let mut max = _mm_cvtsi128_si32(m) as u32;
    for &x in rest {
        max = max.max(x.to_bits() & 0x7fff_ffff);
    }
    (max < 0x7f80_0000).then_some(f32::from_bits(max))
}

/// Eight quotients `x / scale`, clamped to `[lo, hi]` and rounded half to even to i32.
#[inline]
#[target_feature(enable = "avx2")]
fn quantize8(x: __m256, scale: __m256, lo: __m256, hi: __m256) -> __m256i {
    let y = _mm256_div_ps(x, scale);
    _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(y, lo), hi))
}

/// 32 values (as four vectors) quantized, as bytes in element order.
#[inline]
#[target_feature(enable = "avx2")]
fn quantize_vectors(v: [__m256; 4], scale: __m256, lo: __m256, hi: __m256) -> __m256i {
    // Written out: `array::map` takes the closure out of this function's target features.
    pack_bytes(
        quantize8(v[0], scale, lo, hi),
        quantize8(v[1], scale, lo, hi),
        quantize8(v[2], scale, lo, hi),
        quantize8(v[3], scale, lo, hi),
    )
}

/// 32 quantized values as bytes in element order.
#[inline]
#[target_feature(enable = "avx2")]
fn quantize32(x: &[f32; 32], scale: __m256, lo: __m256, hi: __m256) -> __m256i {
    let (v, _) = x.as_chunks::<8>();
    quantize_vectors(
        [load8(&v[0]), load8(&v[1]), load8(&v[2]), load8(&v[3])],
        scale,
        lo,
        hi,
    )
}

/// Four vectors of eight i32 in [-127, 127] to 32 bytes in element order.
#[inline]
#[target_feature(enable = "avx2")]
fn pack_bytes(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> __m256i {
    // Packing works per 128-bit lane: the dwords come out as a0 b0 c0 d0 a1 b1 c1 d1
    // (a0 = a[0..4]); the permutation puts them back in order. |q| <= 127, no saturation.
    let packed = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

#[target_feature(enable = "avx2")]
fn quantize_row(src: &[f32], scale: f32, qmax: f32, dst: &mut [u8]) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    let (s, lo, hi) = (
        _mm256_set1_ps(scale),
        _mm256_set1_ps(-qmax),
        _mm256_set1_ps(qmax),
    );
    let (xs, x_rest) = src.as_chunks::<32>();
    let (ds, d_rest) = dst.as_chunks_mut::<32>();
    for (x, d) in xs.iter().zip(ds) {
        store_bytes32(d, quantize32(x, s, lo, hi));
    }
    crate::scalar::quantize_row_scalar(x_rest, scale, qmax, d_rest);
}

#[target_feature(enable = "avx2")]
fn quantize_row_int4(src: &[f32], scale: f32, dst: &mut [u8]) {
    let n = (src.len() / 2).min(dst.len());
    let (src, dst) = (&src[..2 * n], &mut dst[..n]);
    let (s, lo, hi) = (
        _mm256_set1_ps(scale),
        _mm256_set1_ps(-7.0),
        _mm256_set1_ps(7.0),
    );
    let (xs, x_rest) = src.as_chunks::<32>();
    let (ds, d_rest) = dst.as_chunks_mut::<16>();
    for (x, d) in xs.iter().zip(ds) {
        store_bytes16(d, nibbles(quantize32(x, s, lo, hi)));
    }
    crate::scalar::quantize_row_int4_scalar(x_rest, scale, d_rest);
}

/// Packs 32 int4 values held as bytes into 16 bytes (low nibble first).
#[inline]
#[target_feature(enable = "avx2")]
fn nibbles(w: __m256i) -> __m128i {
    // Each 16-bit word holds element 2i (low byte) and 2i+1 (high byte); keep the low nibble of
    // each, side by side in the low byte, then narrow words to bytes.
    let nib = _mm256_or_si256(
        _mm256_and_si256(w, _mm256_set1_epi16(0x000f)),
        _mm256_and_si256(_mm256_srli_epi16::<4>(w), _mm256_set1_epi16(0x00f0)),
    );
    _mm_packus_epi16(
        _mm256_castsi256_si128(nib),
        _mm256_extracti128_si256::<1>(nib),
    )
}

/// Eight sign-extended bytes times `scale`.
#[inline]
#[target_feature(enable = "avx2")]
fn dequantize8(q: __m128i, scale: __m256) -> __m256 {
    _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), scale)
}

#[inline]
#[target_feature(enable = "avx2")]
fn dequantize_row(q: &[u8], scale: f32, out: &mut [f32]) {
    let n = q.len().min(out.len());
    let (q, out) = (&q[..n], &mut out[..n]);
    let s = _mm256_set1_ps(scale);
    let (qs, q_rest) = q.as_chunks::<8>();
    let (os, o_rest) = out.as_chunks_mut::<8>();
    for (q, o) in qs.iter().zip(os) {
        store8(o, dequantize8(load_bytes8(q), s));
    }
    crate::scalar::dequantize_row_scalar(q_rest, scale, o_rest);
}

#[inline]
#[target_feature(enable = "avx2")]
fn dequantize_row_int4(q: &[u8], scale: f32, out: &mut [f32]) {
    let n = q.len().min(out.len() / 2);
    let (q, out) = (&q[..n], &mut out[..2 * n]);
    let s = _mm256_set1_ps(scale);
    let (qs, q_rest) = q.as_chunks::<16>();
    let (os, o_rest) = out.as_chunks_mut::<32>();
    for (q, o) in qs.iter().zip(os) {
        dequantize32_int4(q, s, o);
    }
    crate::scalar::dequantize_row_int4_scalar(q_rest, scale, o_rest);
}

/// [`dequantize_row`] rounded to half bits.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn dequantize_row_f16(q: &[u8], scale: f32, out: &mut [u16]) {
    let n = q.len().min(out.len());
    let (q, out) = (&q[..n], &mut out[..n]);
    let s = _mm256_set1_ps(scale);
    let (qs, q_rest) = q.as_chunks::<16>();
    let (os, o_rest) = out.as_chunks_mut::<16>();
    for (q, o) in qs.iter().zip(os) {
        let (h, _) = q.as_chunks::<8>();
        let wide = |b: &[u8; 8]| dequantize8(load_bytes8(b), s);
        store_halves16(o, wide(&h[0]), wide(&h[1]));
    }
    for (o, &q) in o_rest.iter_mut().zip(q_rest) {
        *o = half::f16::from_f32(f32::from(q as i8) * scale).to_bits();
    }
}

/// Two vectors of f32 rounded to 16 half bits (nearest, ties to even) and stored.
/// (`vcvtps2ph` issues once per 0.8 cycles on Zen 4, a multiply twice per cycle: decode to
/// f16 saves stores but not time while the output fits in L2.)
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn store_halves16(o: &mut [u16; 16], a: __m256, b: __m256) {
    let a = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(a);
    let b = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(b);
    let v = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(a), b);
    // SAFETY: `o` is 32 writable bytes and `storeu` has no alignment requirement.
    unsafe { _mm256_storeu_si256(o.as_mut_ptr().cast(), v) };
}

/// [`dequantize_row_int4`] rounded to half bits.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn dequantize_row_int4_f16(q: &[u8], scale: f32, out: &mut [u16]) {
    let n = q.len().min(out.len() / 2);
    let (q, out) = (&q[..n], &mut out[..2 * n]);
    let s = _mm256_set1_ps(scale);
    let (qs, q_rest) = q.as_chunks::<16>();
    let (os, o_rest) = out.as_chunks_mut::<32>();
    for (q, o) in qs.iter().zip(os) {
        let [a, b, c, d] = int4_vectors(q, s);
        let (o, _) = o.as_chunks_mut::<16>();
        store_halves16(&mut o[0], a, b);
        store_halves16(&mut o[1], c, d);
    }
    let mut wide = [0f32; 32];
    let wide = &mut wide[..o_rest.len()];
    crate::scalar::dequantize_row_int4_scalar(q_rest, scale, wide);
    for (o, &x) in o_rest.iter_mut().zip(wide.iter()) {
        *o = half::f16::from_f32(x).to_bits();
    }
}

/// 16 bytes of packed int4 (low nibble first) times `scale`: 32 floats as four vectors.
#[inline]
#[target_feature(enable = "avx2")]
fn int4_vectors(q: &[u8; 16], s: __m256) -> [__m256; 4] {
    // Both 128-bit lanes hold the 16 bytes. For output vector v, dword j takes byte 4v + j/2
    // into its top byte; the low nibble (even j) is shifted 4 further up; an arithmetic shift
    // right by 28 then leaves each nibble sign-extended.
    // SAFETY: `q` is 16 readable bytes and `loadu` has no alignment requirement.
    let b = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(q.as_ptr().cast()) });
    let up = _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0);
    let take = |v: i8| {
        let at = |j: i8| 4 * v + j / 2;
        #[rustfmt::skip]
        let c = _mm256_setr_epi8(
            -1, -1, -1, at(0), -1, -1, -1, at(1), -1, -1, -1, at(2), -1, -1, -1, at(3),
            -1, -1, -1, at(4), -1, -1, -1, at(5), -1, -1, -1, at(6), -1, -1, -1, at(7),
        );
        let x = _mm256_srai_epi32::<28>(_mm256_sllv_epi32(_mm256_shuffle_epi8(b, c), up));
        _mm256_mul_ps(_mm256_cvtepi32_ps(x), s)
    };
    [take(0), take(1), take(2), take(3)]
}

/// 16 bytes of packed int4 (low nibble first) times `scale` into 32 floats.
#[inline]
#[target_feature(enable = "avx2")]
fn dequantize32_int4(q: &[u8; 16], s: __m256, o: &mut [f32; 32]) {
    let v = int4_vectors(q, s);
    let (o, _) = o.as_chunks_mut::<8>();
    for (o, v) in o.iter_mut().zip(v) {
        store8(o, v);
    }
}

#[target_feature(enable = "avx2,f16c")]
fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (src, dst) = (&src[..n], &mut dst[..n]);
    let (xs, x_rest) = src.as_chunks::<8>();
    let (ds, d_rest) = dst.as_chunks_mut::<8>();
    for (x, d) in xs.iter().zip(ds) {
        // SAFETY: `x` is 16 readable bytes and `loadu` has no alignment requirement.
        let h = unsafe { _mm_loadu_si128(x.as_ptr().cast()) };
        store8(d, _mm256_cvtph_ps(h));
    }
    for (d, &h) in d_rest.iter_mut().zip(x_rest) {
        *d = crate::scalar::f16_bits_to_f32(h);
    }
}

mod block;
mod crc;
pub(crate) use block::{Dequantized, QuantizeJob, RowFault, Rows, StoredRows};
pub(crate) use crc::Clmul;

#[cfg(test)]
pub(crate) mod tests;
