//! Reference quantization shared by v1 and v2, bit-exact with the reference's f32 arithmetic.
//!
//! `scale = max(absmax / qmax, 1e-6)` in f32; `q = clip(round_half_even(x / scale), ±qmax)`
//! with the result of a true f32 division (the vector per_block kernel multiplies by a
//! bracketed reciprocal and divides where the bracket cannot decide, which gives the same
//! bytes, `crate::simd`); dequantization multiplies by the scale after it was
//! rounded to the scale dtype (fp16 round-to-nearest-even, or bf16 = upper 16 bits of the f32).
//! The scalar loops are written so the compiler vectorizes them: the rounding uses the
//! 1.5 * 2^23 addition, which rounds half to even in the default FP mode and is exact for
//! |y| <= 127. On x86-64 CPUs with AVX2 + F16C the row kernels run bit-identical vector
//! versions chosen at run time (`crate::simd`).

pub(crate) mod kernels;
mod tensor;
#[cfg(all(test, target_arch = "x86_64"))]
mod vector_tests;

pub use crate::scalar::{
    ROUND_MAGIC, SCALE_FLOOR, ScaleDtype, compute_scale, f16_bits_to_f32, int4_hi, int4_lo,
    scale_to_bits,
};
pub use kernels::{
    absmax_checked, dequantize_row, dequantize_row_int4, f16_to_f32_row, pack_int4, quantize_row,
    quantize_row_int4,
};
#[cfg(test)]
pub(crate) use tensor::quantize_rows;
pub(crate) use tensor::{
    OutBuf, dequantize_tensor_le, dequantize_tensor_le_crc, dequantize_tensor_le_f16,
};
pub use tensor::{dequantize_tensor, fake_quantize, quantize_tensor};

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

/// `clip(round_half_even(x / scale), -qmax, qmax)` for one finite value.
pub fn quantize_value(x: f32, scale: f32, qmax: f32) -> i8 {
    crate::scalar::quantize_one(x, scale, qmax) as i8
}

/// The f32 value of stored scale bits.
pub fn scale_from_bits(bits: u16, dtype: ScaleDtype) -> f32 {
    match dtype {
        ScaleDtype::Fp16 => f16_bits_to_f32(bits),
        ScaleDtype::Bf16 => f32::from_bits(u32::from(bits) << 16),
    }
}

#[cfg(test)]
mod tests {
    use half::f16;

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
