//! Whole-tensor per_block kernels: one call quantizes (or dequantizes) every row of a tensor, so
//! the per-row work (absmax, scale, its stored bits, the reciprocal) stays inside one
//! `#[target_feature]` function instead of a dispatched call per kernel per row.
//!
//! Quantization multiplies by the reciprocal of the scale instead of dividing, twice: by
//! `r_lo = fl(r·(1 − 2⁻²⁰))` and `r_hi = fl(r·(1 + 2⁻²⁰))` with `r = fl(1/scale)`. Each product
//! is within `3·2⁻²⁴` (relative, plus the margin) of `x/scale`, the reference quotient
//! `fl(x/scale)` within `2⁻²⁴`, and the margin is `2⁻²⁰ = 16·2⁻²⁴`, so `fl(x/scale)` always lies
//! between the two products. Rounding to the nearest integer (half to even) is monotonic, so
//! where both products round to the same integer that integer is the reference's. Where they
//! differ anywhere in a block of 32 values (some `x/scale` within about `1e-4` of a .5 tie:
//! ~3% of the rows of 64 random halves hold one), that block is quantized with the true
//! division, from the values already in registers. The scale comes from the row's own absmax, so
//! `|x/scale| <= qmax·(1 + 2⁻²³)` and the reference's clamp never changes a rounded value: no
//! clamp here. Products that underflow are below 1 in magnitude, where both round to 0 as the
//! reference does. The bit-for-bit agreement with the generic row-by-row path is tested on
//! random tensors and on rows built from exact and near ties (`tests.rs`).
//!
//! Over 400 lines on purpose: the whole-tensor kernels share the reciprocal-margin argument
//! above and the group loop; they are read and checked together.

use std::arch::x86_64::*;

use std::mem::MaybeUninit;

use super::{init_bytes16, init_bytes32, load8, store8};

/// Source rows of a tensor: f32 values or IEEE half bits.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rows<'a> {
    /// f32 values.
    F32(&'a [f32]),
    /// IEEE half bits.
    F16(&'a [u16]),
}

/// Why a row could not be quantized; the caller names the field and group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum RowFault {
    /// A NaN or infinite value.
    NonFinite,
    /// The scale does not fit the scale dtype.
    ScaleOverflow(f32),
}

/// One per_block quantization job: `rows` of `d` values in output order given by `starts`
/// (element offset of each output row in the source).
pub(crate) struct QuantizeJob<'a> {
    pub src: Rows<'a>,
    pub d: usize,
    pub int4: bool,
    pub bf16_scales: bool,
}

impl QuantizeJob<'_> {
    fn scale_dtype(&self) -> crate::scalar::ScaleDtype {
        if self.bf16_scales {
            crate::scalar::ScaleDtype::Bf16
        } else {
            crate::scalar::ScaleDtype::Fp16
        }
    }
}

const LO: f32 = 1.0 - 1.0 / 1_048_576.0; // 1 - 2^-20, exact in f32
const HI: f32 = 1.0 + 1.0 / 1_048_576.0; // 1 + 2^-20, exact in f32

/// Quantizes every row: appends one scale per row to `scales` and writes the packed row into
/// `payload` (`d` bytes per row for int8, `d / 2` for int4; every byte of a row, so the bytes
/// may start uninitialized). `d` is a positive multiple of 32. Returns the number of rows
/// written (the starts given, as far as `payload` holds them); stops at the first faulty row
/// with its output index.
#[target_feature(enable = "avx2,f16c")]
pub(super) fn quantize_per_block(
    job: &QuantizeJob<'_>,
    starts: impl Iterator<Item = usize>,
    payload: &mut [MaybeUninit<u8>],
    scales: &mut Vec<u16>,
) -> Result<usize, (usize, RowFault)> {
    // The usual head dims get their own copies, with the row loops unrolled; int8 and int4
    // each get theirs.
    match (job.d, job.int4) {
        (64, false) => with_d::<64, false>(job, starts, payload, scales),
        (64, true) => with_d::<64, true>(job, starts, payload, scales),
        (128, false) => with_d::<128, false>(job, starts, payload, scales),
        (128, true) => with_d::<128, true>(job, starts, payload, scales),
        (_, false) => with_d::<0, false>(job, starts, payload, scales),
        (_, true) => with_d::<0, true>(job, starts, payload, scales),
    }
}

/// [`quantize_per_block`] with the row length `D` (0: `job.d`) and the payload known at
/// compile time.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn with_d<const D: usize, const INT4: bool>(
    job: &QuantizeJob<'_>,
    starts: impl Iterator<Item = usize>,
    payload: &mut [MaybeUninit<u8>],
    scales: &mut Vec<u16>,
) -> Result<usize, (usize, RowFault)> {
    match job.src {
        Rows::F32(x) => {
            let ops = Ops {
                row: move |at: usize, d: usize| &x[at..at + d],
                absmax8: |starts: &[usize; 8], d: usize| absmax8_f32(x, starts, d),
                load: |v: &[f32; 32]| f32x32(v),
                exact: |r: &[f32]| r.to_vec(),
            };
            batches::<D, INT4, _, _, _, _, _>(job, starts, payload, scales, ops)
        }
        Rows::F16(x) => {
            let ops = Ops {
                row: move |at: usize, d: usize| &x[at..at + d],
                absmax8: |starts: &[usize; 8], d: usize| absmax8_f16(x, starts, d),
                load: |v: &[u16; 32]| f16x32(v),
                exact: |r: &[u16]| {
                    let mut row = vec![0f32; r.len()];
                    super::f16_to_f32(r, &mut row);
                    row
                },
            };
            batches::<D, INT4, _, _, _, _, _>(job, starts, payload, scales, ops)
        }
    }
}

/// How [`batches`] reads one source type `T`.
struct Ops<R, A, L, E> {
    /// The source row of a length at an element offset.
    row: R,
    /// The absmax of each of eight rows (element offsets, a length) as f32 (NaN or infinity
    /// where the row holds one).
    absmax8: A,
    /// 32 values as f32.
    load: L,
    /// A row as f32 (fault reports, rare: allocates).
    exact: E,
}

/// [`Ops::absmax8`] for f32 rows (`d % 8 == 0`).
#[inline]
#[target_feature(enable = "avx2")]
fn absmax8_f32(x: &[f32], starts: &[usize; 8], d: usize) -> __m256 {
    let abs = _mm256_set1_epi32(0x7fff_ffff);
    // The largest |x| bits of each row, folded to eight lanes; the bits order as the values.
    let mut m = [_mm256_setzero_si256(); 8];
    // Loops, not `array::map`, whose closure would not inline with this function's features.
    for (m, &at) in m.iter_mut().zip(starts) {
        for v in x[at..at + d].as_chunks::<8>().0 {
            *m = _mm256_max_epi32(*m, _mm256_and_si256(_mm256_castps_si256(load8(v)), abs));
        }
    }
    _mm256_castsi256_ps(max_across(m))
}

/// [`Ops::absmax8`] for rows of halves (`d % 16 == 0`): the largest |x| half bits of each
/// row (the bits order as the values), reduced across the eight rows by interleaving, then
/// widened to f32 (exact).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn absmax8_f16(x: &[u16], starts: &[usize; 8], d: usize) -> __m256 {
    let abs = _mm256_set1_epi16(0x7fff);
    let mut m = [_mm256_setzero_si256(); 8];
    for (m, &at) in m.iter_mut().zip(starts) {
        for b in x[at..at + d].as_chunks::<16>().0 {
            // SAFETY: `b` is 32 readable bytes and `loadu` has no alignment requirement.
            let v = unsafe { _mm256_loadu_si256(b.as_ptr().cast()) };
            *m = _mm256_max_epu16(*m, _mm256_and_si256(v, abs));
        }
    }
    // Each step halves the vectors and doubles the rows per vector; a lane of 128 bits ends
    // up holding rows 0..8 in words 0..8, each the maximum over that half's lanes.
    let max = _mm256_max_epu16;
    let w16 = |a, b| max(_mm256_unpacklo_epi16(a, b), _mm256_unpackhi_epi16(a, b));
    let w32 = |a, b| max(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b));
    let w64 = |a, b| max(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
    let m = w64(
        w32(w16(m[0], m[1]), w16(m[2], m[3])),
        w32(w16(m[4], m[5]), w16(m[6], m[7])),
    );
    let m = _mm_max_epu16(_mm256_castsi256_si128(m), _mm256_extracti128_si256::<1>(m));
    _mm256_cvtph_ps(m)
}

/// Eight vectors of eight non-negative i32 to one vector: lane `i` = the largest lane of `m[i]`.
#[inline]
#[target_feature(enable = "avx2")]
fn max_across(m: [__m256i; 8]) -> __m256i {
    let pair = |a: __m256i, b: __m256i| {
        _mm256_max_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
    };
    let quad = |a: __m256i, b: __m256i| {
        _mm256_max_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b))
    };
    // Per 128-bit half: [max m0, max m1, max m2, max m3] over that half's lanes.
    let lo = quad(pair(m[0], m[1]), pair(m[2], m[3]));
    let hi = quad(pair(m[4], m[5]), pair(m[6], m[7]));
    _mm256_max_epi32(
        _mm256_permute2x128_si256::<0x20>(lo, hi),
        _mm256_permute2x128_si256::<0x31>(lo, hi),
    )
}

/// Rows per chunk: scales for the whole chunk first, then its rows.
const CHUNK: usize = 64;

/// Rows in chunks of [`CHUNK`]: first the chunk's scales, eight rows at a time (absmaxes
/// reduced across the eight rows into one vector, then the scales, their stored bits and the
/// reciprocals as one vector each: a row's divisions and conversions are a latency chain that a
/// row of 64 values cannot hide), then the chunk's rows, whose values are still in cache.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn batches<'a, const D: usize, const INT4: bool, T: 'a, R, A, L, E>(
    job: &QuantizeJob<'_>,
    mut starts: impl Iterator<Item = usize>,
    payload: &mut [MaybeUninit<u8>],
    scales: &mut Vec<u16>,
    ops: Ops<R, A, L, E>,
) -> Result<usize, (usize, RowFault)>
where
    R: Fn(usize, usize) -> &'a [T],
    A: Fn(&[usize; 8], usize) -> __m256,
    L: Fn(&[T; 32]) -> [__m256; 4],
    E: Fn(&[T]) -> Vec<f32>,
{
    let Ops {
        row: source,
        absmax8,
        load,
        exact,
    } = ops;
    let d = if D == 0 { job.d } else { D };
    let (qmax, row_bytes) = if INT4 { (7.0, d / 2) } else { (127.0, d) };
    let exponent = _mm_set1_epi16(if job.bf16_scales { 0x7f80 } else { 0x7c00 });
    let mut dsts = payload.chunks_exact_mut(row_bytes);
    scales.reserve(dsts.len());
    let (mut at, mut sc, mut lo, mut hi) =
        ([0usize; CHUNK], [0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK]);
    let mut bits = [0u16; CHUNK];
    let mut row = 0;
    loop {
        // No more rows than `payload` has room for: `row` counts rows written in full.
        let n = at
            .iter_mut()
            .take(dsts.len())
            .map_while(|x| starts.next().map(|s| *x = s))
            .count();
        if n == 0 {
            return Ok(row);
        }
        let mut fault = 0;
        // The absmaxes of the whole chunk first, so the divisions below (a latency chain per
        // group) overlap across groups.
        let mut amaxes = [_mm256_setzero_ps(); CHUNK / 8];
        for (g, a) in (0..n).step_by(8).zip(amaxes.iter_mut()) {
            let k = (n - g).min(8);
            // A short last group repeats its last row; the extra lanes are never used.
            let mut eight = [0; 8];
            for (j, e) in eight.iter_mut().enumerate() {
                *e = at[g + j.min(k - 1)];
            }
            *a = absmax8(&eight, d);
        }
        for (g, &amax) in (0..n).step_by(8).zip(amaxes.iter()) {
            let k = (n - g).min(8);
            // scale = max(absmax / qmax, 1e-6) as `compute_scale`, eight at a time.
            let s = _mm256_max_ps(
                _mm256_div_ps(amax, _mm256_set1_ps(qmax)),
                _mm256_set1_ps(crate::scalar::SCALE_FLOOR),
            );
            let r = _mm256_div_ps(_mm256_set1_ps(1.0), s);
            store8(lanes(&mut sc, g), s);
            store8(lanes(&mut lo, g), _mm256_mul_ps(r, _mm256_set1_ps(LO)));
            store8(lanes(&mut hi, g), _mm256_mul_ps(r, _mm256_set1_ps(HI)));
            let h = if job.bf16_scales {
                // The high halves of the f32 bits, truncated as `scale_to_bits`.
                let t = _mm256_srli_epi32::<16>(_mm256_castps_si256(s));
                _mm_packus_epi32(_mm256_castsi256_si128(t), _mm256_extracti128_si256::<1>(t))
            } else {
                _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(s)
            };
            // SAFETY: the 8 lanes are 16 writable bytes; `storeu` has no alignment requirement.
            unsafe { _mm_storeu_si128(bits[g..g + 8].as_mut_ptr().cast(), h) };
            // Faults: a NaN or infinite absmax (bits from infinity's up), an all-ones exponent
            // in the stored scale bits.
            let nonfinite =
                _mm256_cmpgt_epi32(_mm256_castps_si256(amax), _mm256_set1_epi32(0x7f7f_ffff));
            let overflow = _mm_cmpeq_epi16(_mm_and_si128(h, exponent), exponent);
            let overflow = _mm_packs_epi16(overflow, overflow);
            let rows = _mm256_movemask_ps(_mm256_castsi256_ps(nonfinite))
                | (_mm_movemask_epi8(overflow) & 0xff);
            fault |= rows & ((1 << k) - 1);
        }
        if fault != 0 {
            // The first row with a fault, as the row-by-row path would report it.
            for (i, &start) in at[..n].iter().enumerate() {
                let x = exact(source(start, d));
                let a = super::absmax_checked(&x).ok_or((row + i, RowFault::NonFinite))?;
                let s = crate::scalar::compute_scale(a, qmax);
                if crate::scalar::scale_to_bits(s, job.scale_dtype()).is_none() {
                    return Err((row + i, RowFault::ScaleOverflow(s)));
                }
            }
        }
        scales.extend_from_slice(&bits[..n]);
        let clamp = (_mm256_set1_ps(-qmax), _mm256_set1_ps(qmax));
        for (i, dst) in dsts.by_ref().take(n).enumerate() {
            let src = source(at[i], d).as_chunks::<32>().0;
            let (l, h) = (_mm256_set1_ps(lo[i]), _mm256_set1_ps(hi[i]));
            // Within a hair of a tie somewhere in 32 values: the true division decides for
            // them, as the reference.
            let bytes = |v: [__m256; 4]| match bracket32(v, l, h) {
                Some(q) => q,
                None => super::quantize_vectors(v, _mm256_set1_ps(sc[i]), clamp.0, clamp.1),
            };
            if INT4 {
                for (x, d) in src.iter().zip(dst.as_chunks_mut::<16>().0) {
                    init_bytes16(d, super::nibbles(bytes(load(x))));
                }
            } else {
                for (x, d) in src.iter().zip(dst.as_chunks_mut::<32>().0) {
                    init_bytes32(d, bytes(load(x)));
                }
            }
        }
        row += n;
    }
}

/// Lanes `g..g + 8` of a chunk's array.
fn lanes(a: &mut [f32; CHUNK], g: usize) -> &mut [f32; 8] {
    &mut a[g..g + 8].as_chunks_mut::<8>().0[0]
}

/// Eight halves to f32.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn load8_f16(x: &[u16; 8]) -> __m256 {
    // SAFETY: `x` is 16 readable bytes and `loadu` has no alignment requirement.
    _mm256_cvtph_ps(unsafe { _mm_loadu_si128(x.as_ptr().cast()) })
}

/// 32 values (as four vectors) times `lo`, rounded to 32 signed bytes in element order, when
/// the products by `hi` round to the same bytes; `None` where some differs. The two byte vectors
/// are compared before the final lane permutation, which is the same for both.
#[inline]
#[target_feature(enable = "avx2")]
fn bracket32(v: [__m256; 4], lo: __m256, hi: __m256) -> Option<__m256i> {
    let q = |i: usize, s: __m256| _mm256_cvtps_epi32(_mm256_mul_ps(v[i], s));
    let bytes = |s: __m256| {
        _mm256_packs_epi16(
            _mm256_packs_epi32(q(0, s), q(1, s)),
            _mm256_packs_epi32(q(2, s), q(3, s)),
        )
    };
    let (a, b) = (bytes(lo), bytes(hi));
    let diff = _mm256_xor_si256(a, b);
    if _mm256_testz_si256(diff, diff) == 0 {
        return None;
    }
    // |q| <= 127: the packs never saturate; the permutation restores element order.
    Some(_mm256_permutevar8x32_epi32(
        a,
        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
    ))
}

#[inline]
#[target_feature(enable = "avx2")]
fn f32x32(x: &[f32; 32]) -> [__m256; 4] {
    let (v, _) = x.as_chunks::<8>();
    [load8(&v[0]), load8(&v[1]), load8(&v[2]), load8(&v[3])]
}

#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16x32(x: &[u16; 32]) -> [__m256; 4] {
    let (v, _) = x.as_chunks::<8>();
    [
        load8_f16(&v[0]),
        load8_f16(&v[1]),
        load8_f16(&v[2]),
        load8_f16(&v[3]),
    ]
}

/// Where dequantized values go: f32, or IEEE half bits (each f32 value rounded to nearest
/// even, as `half::f16::from_f32`).
pub(crate) enum Dequantized<'a> {
    /// f32 values.
    F32(&'a mut [f32]),
    /// Half bits.
    F16(&'a mut [u16]),
}

impl Dequantized<'_> {
    /// The values `range` of the output, reborrowed.
    fn rows(&mut self, range: std::ops::Range<usize>) -> Dequantized<'_> {
        match self {
            Dequantized::F32(o) => Dequantized::F32(&mut o[range]),
            Dequantized::F16(o) => Dequantized::F16(&mut o[range]),
        }
    }
}

/// A per_block payload with its scales stored little-endian, two bytes per row (fp16, or bf16
/// when `bf16`); rows of `d` values, packed nibbles when `int4`.
#[derive(Clone, Copy)]
pub(crate) struct StoredRows<'a> {
    pub payload: &'a [u8],
    pub scales: &'a [u8],
    pub bf16: bool,
    pub d: usize,
    pub int4: bool,
}

/// Dequantizes every row: row `r` uses the scale at `scales[2r..2r + 2]`. The output length is
/// a multiple of `d`; the caller checked every length.
#[target_feature(enable = "avx2,f16c")]
pub(super) fn dequantize_per_block(rows: StoredRows<'_>, out: Dequantized<'_>) {
    // The usual head dims get their own copies, with the row loops unrolled.
    match out {
        Dequantized::F32(out) => match (rows.d, rows.int4) {
            (64, false) => each_row::<64, _>(rows, out, |q, s, o| super::dequantize_row(q, s, o)),
            (128, false) => each_row::<128, _>(rows, out, |q, s, o| super::dequantize_row(q, s, o)),
            (_, false) => each_row::<0, _>(rows, out, |q, s, o| super::dequantize_row(q, s, o)),
            (64, true) => {
                each_row::<64, _>(rows, out, |q, s, o| super::dequantize_row_int4(q, s, o))
            }
            (128, true) => {
                each_row::<128, _>(rows, out, |q, s, o| super::dequantize_row_int4(q, s, o))
            }
            (_, true) => each_row::<0, _>(rows, out, |q, s, o| super::dequantize_row_int4(q, s, o)),
        },
        Dequantized::F16(out) => match (rows.d, rows.int4) {
            (64, false) => {
                each_row::<64, _>(rows, out, |q, s, o| super::dequantize_row_f16(q, s, o))
            }
            (128, false) => {
                each_row::<128, _>(rows, out, |q, s, o| super::dequantize_row_f16(q, s, o))
            }
            (_, false) => each_row::<0, _>(rows, out, |q, s, o| super::dequantize_row_f16(q, s, o)),
            (64, true) => {
                each_row::<64, _>(rows, out, |q, s, o| super::dequantize_row_int4_f16(q, s, o))
            }
            (128, true) => {
                each_row::<128, _>(rows, out, |q, s, o| super::dequantize_row_int4_f16(q, s, o))
            }
            (_, true) => {
                each_row::<0, _>(rows, out, |q, s, o| super::dequantize_row_int4_f16(q, s, o))
            }
        },
    }
}

/// Payload bytes per segment of the fused CRC decode for other row lengths: the rows of one
/// segment are dequantized, then the CRC folds the 256-byte blocks they read, still in L1.
const SEGMENT: usize = 1024;

/// [`dequantize_per_block`] that also returns `crc32c_append(crc, rows.payload)`. For the
/// usual head dims the CRC folds each 256-byte block of the payload right after the rows that
/// read it (4 rows of int8 at D = 64): the carry-less multiplies then run beside the
/// dequantization's stores, which bound it, instead of in a pass of their own (about 10% faster
/// at D = 64 while the output fits L2, more once it does not). Other row lengths go segment by
/// segment.
#[target_feature(enable = "avx2,f16c,avx512f,vpclmulqdq,pclmulqdq,sse4.2")]
pub(super) fn dequantize_per_block_crc(
    rows: StoredRows<'_>,
    mut out: Dequantized<'_>,
    crc: u32,
) -> u32 {
    let payload = rows.payload;
    let (blocks, _) = payload.as_chunks::<256>();
    let (Some(first), Some(d)) = (blocks.first(), std::num::NonZeroUsize::new(rows.d)) else {
        dequantize_per_block(rows, out);
        return crc32c::crc32c_append(crc, payload);
    };
    let d = d.get();
    let mut fold = super::crc::Fold::start(crc, first);
    let f = &mut fold;
    let i8_f32 = |q: &[u8], s, o: &mut [f32]| super::dequantize_row(q, s, o);
    let i4_f32 = |q: &[u8], s, o: &mut [f32]| super::dequantize_row_int4(q, s, o);
    let i8_f16 = |q: &[u8], s, o: &mut [u16]| super::dequantize_row_f16(q, s, o);
    let i4_f16 = |q: &[u8], s, o: &mut [u16]| super::dequantize_row_int4_f16(q, s, o);
    // Rows done block by block (whole blocks: their blocks are folded).
    let done = match (&mut out, rows.int4, d) {
        (Dequantized::F32(o), false, 64) => by_block::<64, false, _>(rows, o, f, i8_f32),
        (Dequantized::F32(o), false, 128) => by_block::<128, false, _>(rows, o, f, i8_f32),
        (Dequantized::F32(o), true, 64) => by_block::<64, true, _>(rows, o, f, i4_f32),
        (Dequantized::F32(o), true, 128) => by_block::<128, true, _>(rows, o, f, i4_f32),
        (Dequantized::F16(o), false, 64) => by_block::<64, false, _>(rows, o, f, i8_f16),
        (Dequantized::F16(o), false, 128) => by_block::<128, false, _>(rows, o, f, i8_f16),
        (Dequantized::F16(o), true, 64) => by_block::<64, true, _>(rows, o, f, i4_f16),
        (Dequantized::F16(o), true, 128) => by_block::<128, true, _>(rows, o, f, i4_f16),
        _ => 0,
    };
    let row_bytes = if rows.int4 { d / 2 } else { d };
    let n = rows.scales.len() / 2;
    // `blocks[next]` is the next to fold.
    let mut next = (done * row_bytes / 256).max(1);
    let per_segment = (SEGMENT / row_bytes).max(1);
    for r0 in (done..n).step_by(per_segment) {
        let r1 = (r0 + per_segment).min(n);
        let segment = StoredRows {
            payload: &payload[r0 * row_bytes..r1 * row_bytes],
            scales: &rows.scales[2 * r0..2 * r1],
            ..rows
        };
        dequantize_per_block(segment, out.rows(r0 * d..r1 * d));
        while next < blocks.len() && 256 * (next + 1) <= r1 * row_bytes {
            fold.block(&blocks[next]);
            next += 1;
        }
    }
    for b in &blocks[next..] {
        fold.block(b);
    }
    fold.finish(&payload[256 * blocks.len()..])
}

/// The rows of whole 256-byte payload blocks, `row` on each (row length `D`, int4 or not, all
/// known at compile time so the row loops unroll), folding each block but the first (the
/// fold's start) after its rows; returns the rows done.
#[inline]
#[target_feature(enable = "avx2,f16c,avx512f,vpclmulqdq,pclmulqdq,sse4.2")]
fn by_block<const D: usize, const INT4: bool, T>(
    rows: StoredRows<'_>,
    out: &mut [T],
    fold: &mut super::crc::Fold,
    row: impl Fn(&[u8], f32, &mut [T]),
) -> usize {
    let row_bytes = if INT4 { D / 2 } else { D };
    let per = 256 / row_bytes;
    let blocks = rows.payload.as_chunks::<256>().0;
    let outs = out.chunks_exact_mut(per * D);
    let scales = rows.scales.chunks_exact(2 * per);
    let mut done = 0;
    for (j, ((q, o), s)) in blocks.iter().zip(outs).zip(scales).enumerate() {
        let each = q
            .chunks_exact(row_bytes)
            .zip(o.chunks_exact_mut(D))
            .zip(s.as_chunks::<2>().0);
        for ((q, o), s) in each {
            row(q, stored_scale(s, rows.bf16), o);
        }
        if j > 0 {
            fold.block(q);
        }
        done += per;
    }
    done
}

/// The stored scale of a row as f32.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn stored_scale(bits: &[u8; 2], bf16_scales: bool) -> f32 {
    let bits = u16::from_le_bytes(*bits);
    let s = if bf16_scales {
        _mm_set_ss(f32::from_bits(u32::from(bits) << 16))
    } else {
        _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))
    };
    _mm_cvtss_f32(s)
}

/// `row(payload row, its scale, output row)` over every row, with the row length `D` known at
/// compile time (0: `rows.d`).
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn each_row<const D: usize, T>(
    rows: StoredRows<'_>,
    out: &mut [T],
    row: impl Fn(&[u8], f32, &mut [T]),
) {
    let d = if D == 0 { rows.d } else { D };
    let row_bytes = if rows.int4 { d / 2 } else { d };
    let pairs = out
        .chunks_exact_mut(d.max(1))
        .zip(rows.payload.chunks_exact(row_bytes.max(1)));
    for ((o, q), sb) in pairs.zip(rows.scales.as_chunks::<2>().0) {
        row(q, stored_scale(sb, rows.bf16), o);
    }
}
