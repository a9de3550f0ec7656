//! Reference quantization shared by v1 and v2, bit-exact with the reference's f32 arithmetic.
//!
//! `scale = max(absmax / qmax, 1e-6)` in f32; `q = clip(round_half_even(x / scale), ±qmax)`
//! with a true f32 division (no reciprocal); dequantization multiplies by the scale after it was
//! rounded to the scale dtype (fp16 round-to-nearest-even, or bf16 = upper 16 bits of the f32).
//! The loops are written so the compiler vectorizes them: the rounding uses the 1.5 * 2^23
//! addition, which rounds half to even in the default FP mode and is exact for |y| <= 127.

use half::f16;

use crate::error::{DecodeError, EncodeError};
use crate::layer::KvData;

/// Integer width of a quantized payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantMode {
    /// Signed 8-bit, qmax 127.
    Int8,
    /// Signed 4-bit (two per byte), qmax 7 (never -8).
    Int4,
}

impl QuantMode {
    /// Largest magnitude of a quantized value.
    pub fn qmax(self) -> f32 {
        match self {
            QuantMode::Int8 => 127.0,
            QuantMode::Int4 => 7.0,
        }
    }

    /// Payload bytes for `n` elements.
    pub fn payload_bytes(self, n: usize) -> usize {
        match self {
            QuantMode::Int8 => n,
            QuantMode::Int4 => n.div_ceil(2),
        }
    }

    /// Reference name (`int8` / `int4`).
    pub fn name(self) -> &'static str {
        match self {
            QuantMode::Int8 => "int8",
            QuantMode::Int4 => "int4",
        }
    }
}

/// Which elements share one scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale per (b, h, t) row over D: scale shape `[B, H, T, 1]`.
    PerBlock,
    /// One scale per (b, h): `[B, H, 1, 1]`.
    PerHead,
    /// One scale per tensor: `[1, 1, 1, 1]`.
    PerTensor,
    /// One scale per layer tensor; within one layer blob identical to `PerTensor`.
    PerLayer,
}

impl Granularity {
    /// All values, in wire-code order.
    pub const ALL: [Granularity; 4] = [
        Granularity::PerBlock,
        Granularity::PerHead,
        Granularity::PerTensor,
        Granularity::PerLayer,
    ];

    /// Reference name.
    pub fn name(self) -> &'static str {
        match self {
            Granularity::PerBlock => "per_block",
            Granularity::PerHead => "per_head",
            Granularity::PerTensor => "per_tensor",
            Granularity::PerLayer => "per_layer",
        }
    }

    /// Parses a reference name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.name() == s)
    }

    /// Shape of the scale tensor for a `[B, H, T, D]` tensor.
    pub fn scale_shape(self, shape: [usize; 4]) -> [usize; 4] {
        let [b, h, t, _] = shape;
        match self {
            Granularity::PerBlock => [b, h, t, 1],
            Granularity::PerHead => [b, h, 1, 1],
            Granularity::PerTensor | Granularity::PerLayer => [1, 1, 1, 1],
        }
    }

    /// Number of scales for a `[B, H, T, D]` tensor.
    pub fn scale_count(self, shape: [usize; 4]) -> usize {
        self.scale_shape(shape).iter().product()
    }

    /// Scale group of row `r` (of `B*H*T` rows) when there are `t` tokens.
    fn group_of_row(self, r: usize, t: usize) -> usize {
        match self {
            Granularity::PerBlock => r,
            Granularity::PerHead => r / t.max(1),
            Granularity::PerTensor | Granularity::PerLayer => 0,
        }
    }
}

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

/// Quantization options of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuantParams {
    /// Integer width.
    pub mode: QuantMode,
    /// Scale sharing.
    pub granularity: Granularity,
    /// Scale storage.
    pub scale_dtype: ScaleDtype,
}

const SCALE_FLOOR: f32 = 1e-6;
const ROUND_MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23

/// `max(absmax / qmax, 1e-6)` in f32.
pub fn compute_scale(absmax: f32, qmax: f32) -> f32 {
    let s = absmax / qmax;
    if s > SCALE_FLOOR { s } else { SCALE_FLOOR }
}

/// `clip(round_half_even(x / scale), -qmax, qmax)` for one finite value.
pub fn quantize_value(x: f32, scale: f32, qmax: f32) -> i8 {
    quantize_one(x, scale, qmax) as i8
}

/// Rounds an f32 scale to the scale dtype's bits; `None` when it overflows to infinity.
pub fn scale_to_bits(scale: f32, dtype: ScaleDtype) -> Option<u16> {
    let bits = match dtype {
        ScaleDtype::Fp16 => f16::from_f32(scale).to_bits(),
        ScaleDtype::Bf16 => (scale.to_bits() >> 16) as u16,
    };
    scale_from_bits(bits, dtype).is_finite().then_some(bits)
}

/// The f32 value of stored scale bits.
pub fn scale_from_bits(bits: u16, dtype: ScaleDtype) -> f32 {
    match dtype {
        ScaleDtype::Fp16 => f16_bits_to_f32(bits),
        ScaleDtype::Bf16 => f32::from_bits(u32::from(bits) << 16),
    }
}

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
fn quantize_one(x: f32, scale: f32, qmax: f32) -> u8 {
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

/// Returns a row of f32, converting from f16 into `buf` when needed.
fn load_row<'s>(data: &'s KvData<'_>, start: usize, buf: &'s mut [f32]) -> &'s [f32] {
    match data {
        KvData::F32(s) => &s[start..start + buf.len()],
        KvData::F16(s) => {
            for (o, h) in buf.iter_mut().zip(&s[start..]) {
                *o = f16_bits_to_f32(h.to_bits());
            }
            buf
        }
    }
}

/// Quantizes a `[B, H, T, D]` tensor whose output row `t` of each (b, h) is source row
/// `order[t]`. Writes the payload (`mode.payload_bytes(n)` bytes) into `payload` and appends the
/// scale bits (in `granularity.scale_shape` order) to `scales`.
///
/// The caller guarantees `data.len() == B*H*T*D`, `order` is a permutation of `0..T` and
/// `payload` has the right length (the encoders validate first).
pub fn quantize_tensor(
    data: KvData<'_>,
    shape: [usize; 4],
    order: &[usize],
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
    let [b, h, t, d] = shape;
    let rows = b * h * t;
    let n = rows * d;
    let checks = [
        ("out", n, out.len()),
        ("payload", mode.payload_bytes(n), payload.len()),
        ("scales", granularity.scale_count(shape), scales.len()),
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
    if d == 0 {
        return Ok(());
    }
    match mode {
        QuantMode::Int8 => {
            for (r, (o, q)) in out
                .chunks_exact_mut(d)
                .zip(payload.chunks_exact(d))
                .enumerate()
            {
                let s = scales[granularity.group_of_row(r, t)];
                for (o, &q) in o.iter_mut().zip(q) {
                    *o = f32::from(q as i8) * s;
                }
            }
        }
        QuantMode::Int4 if d % 2 == 0 => {
            let half_d = d / 2;
            for (r, (o, q)) in out
                .chunks_exact_mut(d)
                .zip(payload.chunks_exact(half_d))
                .enumerate()
            {
                let s = scales[granularity.group_of_row(r, t)];
                for (o, &q) in o.chunks_exact_mut(2).zip(q) {
                    o[0] = f32::from(int4_lo(q)) * s;
                    o[1] = f32::from(int4_hi(q)) * s;
                }
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
                *o = f32::from(q) * scales[granularity.group_of_row(i / d, t)];
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
    let mut payload = vec![0u8; params.mode.payload_bytes(n)];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_half_for_every_bit_pattern() {
        for bits in 0..=u16::MAX {
            let want = f16::from_bits(bits).to_f32();
            let got = f16_bits_to_f32(bits);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}"
            );
        }
    }

    #[test]
    fn rounding_is_half_to_even_and_clipped() {
        for (x, q) in [
            (0.5f32, 0i8),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (-2.5, -2),
            (126.5, 126),
            (127.5, 127),
            (-200.0, -127),
        ] {
            assert_eq!(quantize_value(x, 1.0, 127.0), q, "{x}");
        }
        assert_eq!(quantize_value(7.5, 1.0, 7.0), 7);
        assert_eq!(quantize_value(-9.0, 1.0, 7.0), -7);
    }

    #[test]
    fn scale_has_a_floor_and_bf16_truncates() {
        assert_eq!(compute_scale(0.0, 127.0), 1e-6);
        let s = 1.0f32 / 3.0;
        assert_eq!(
            scale_to_bits(s, ScaleDtype::Bf16),
            Some((s.to_bits() >> 16) as u16)
        );
        assert_eq!(scale_to_bits(1e6, ScaleDtype::Fp16), None);
    }
}
