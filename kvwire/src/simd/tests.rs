//! The AVX2 kernels against the scalar reference, bit for bit, on random rows mixing the edge
//! cases (zeros of both signs, subnormals, the largest finite values, exact .5 ties, all-zero
//! rows) and on lengths that exercise both the vector body and the scalar tail.

use proptest::prelude::*;

use super::Avx2;
use crate::scalar::{
    absmax_checked_scalar, compute_scale, dequantize_row_int4_scalar, dequantize_row_scalar,
    f16_bits_to_f32, quantize_row_int4_scalar, quantize_row_scalar,
};

fn kernels() -> Option<Avx2> {
    let k = Avx2::get();
    if k.is_none() {
        eprintln!("no AVX2 + F16C on this CPU: vector kernels not tested");
    }
    k
}

pub(crate) fn finite() -> impl Strategy<Value = f32> {
    use prop::num::f32::{NEGATIVE, NORMAL, POSITIVE, SUBNORMAL, ZERO};
    prop_oneof![
        4 => -4.0f32..4.0,
        2 => POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO,
        1 => POSITIVE | NEGATIVE | SUBNORMAL,
        1 => prop_oneof![Just(0.0f32), Just(-0.0f32)],
        1 => prop_oneof![Just(f32::MAX), Just(-f32::MAX), Just(f32::MIN_POSITIVE)],
        // Exact ties once divided by a power-of-two scale.
        2 => (-300i32..300).prop_map(|k| k as f32 + 0.5),
    ]
}

fn row() -> impl Strategy<Value = Vec<f32>> {
    prop_oneof![
        6 => prop::collection::vec(finite(), 0..300),
        1 => (0usize..300).prop_map(|n| vec![0.0; n]),
        1 => (0usize..300).prop_map(|n| (0..n).map(|i| i as f32 - 149.5).collect()),
    ]
}

/// The scale the encoder would use, or a power of two (where ties stay exact), or the floor.
fn scale_for(row: &[f32], qmax: f32, pick: u8, exp: i32) -> f32 {
    match pick % 3 {
        0 => compute_scale(absmax_checked_scalar(row).unwrap_or(0.0), qmax),
        1 => 2f32.powi(exp),
        _ => 1e-6,
    }
}

pub(crate) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn absmax_matches(mut r in row(), bad in prop::option::of((any::<prop::sample::Index>(),
            prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY)]))) {
        let Some(k) = kernels() else { return Ok(()) };
        if let (Some((at, x)), false) = (bad, r.is_empty()) {
            let i = at.index(r.len());
            r[i] = x;
        }
        let want = absmax_checked_scalar(&r).map(f32::to_bits);
        prop_assert_eq!(k.absmax_checked(&r).map(f32::to_bits), want);
    }

    #[test]
    fn quantize_int8_matches(r in row(), pick in any::<u8>(), exp in -20i32..8) {
        let Some(k) = kernels() else { return Ok(()) };
        let s = scale_for(&r, 127.0, pick, exp);
        let (mut want, mut got) = (vec![0u8; r.len()], vec![0u8; r.len()]);
        quantize_row_scalar(&r, s, 127.0, &mut want);
        k.quantize_row(&r, s, 127.0, &mut got);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn quantize_int4_matches(mut r in row(), pick in any::<u8>(), exp in -20i32..8) {
        let Some(k) = kernels() else { return Ok(()) };
        r.truncate(r.len() / 2 * 2);
        let s = scale_for(&r, 7.0, pick, exp);
        let (mut want, mut got) = (vec![0u8; r.len() / 2], vec![0u8; r.len() / 2]);
        quantize_row_int4_scalar(&r, s, &mut want);
        k.quantize_row_int4(&r, s, &mut got);
        prop_assert_eq!(got, want);
        // The int4 kernels read as int8 with qmax 7 too (the unpacked path for odd D).
        let (mut want8, mut got8) = (vec![0u8; r.len()], vec![0u8; r.len()]);
        quantize_row_scalar(&r, s, 7.0, &mut want8);
        k.quantize_row(&r, s, 7.0, &mut got8);
        prop_assert_eq!(got8, want8);
    }

    #[test]
    fn quantize_near_ties_matches(
        s in prop_oneof![
            3 => 1e-6f32..1e3,
            1 => prop::num::f32::POSITIVE | prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL,
        ],
        ks in prop::collection::vec((-140i32..140, -4i32..=4), 0..100),
        int4 in any::<bool>(),
    ) {
        let Some(k) = kernels() else { return Ok(()) };
        // Values within a few ulps of (k + 0.5) * s, where a reciprocal could round differently.
        let r: Vec<f32> = ks
            .iter()
            .map(|&(k, ulps)| {
                let x = (k as f32 + 0.5) * s;
                let y = f32::from_bits(x.to_bits().wrapping_add_signed(ulps));
                if y.is_finite() { y } else { x }
            })
            .filter(|x| x.is_finite())
            .collect();
        let qmax = if int4 { 7.0 } else { 127.0 };
        let (mut want, mut got) = (vec![0u8; r.len()], vec![0u8; r.len()]);
        quantize_row_scalar(&r, s, qmax, &mut want);
        k.quantize_row(&r, s, qmax, &mut got);
        prop_assert_eq!(&got, &want);
        let even = &r[..r.len() / 2 * 2];
        let (mut want4, mut got4) = (vec![0u8; even.len() / 2], vec![0u8; even.len() / 2]);
        quantize_row_int4_scalar(even, s, &mut want4);
        k.quantize_row_int4(even, s, &mut got4);
        prop_assert_eq!(got4, want4);
    }

    #[test]
    fn dequantize_matches(q in prop::collection::vec(any::<u8>(), 0..300),
            s in prop_oneof![
                3 => (0u16..0x7c00).prop_map(f16_bits_to_f32),
                1 => prop::num::f32::POSITIVE | prop::num::f32::NORMAL | prop::num::f32::SUBNORMAL,
            ]) {
        let Some(k) = kernels() else { return Ok(()) };
        let (mut want, mut got) = (vec![0f32; q.len()], vec![0f32; q.len()]);
        dequantize_row_scalar(&q, s, &mut want);
        k.dequantize_row(&q, s, &mut got);
        prop_assert_eq!(bits(&got), bits(&want));
        let (mut want4, mut got4) = (vec![0f32; 2 * q.len()], vec![0f32; 2 * q.len()]);
        dequantize_row_int4_scalar(&q, s, &mut want4);
        k.dequantize_row_int4(&q, s, &mut got4);
        prop_assert_eq!(bits(&got4), bits(&want4));
    }
}

#[test]
fn ties_round_half_to_even_like_the_reference() {
    let Some(k) = kernels() else { return };
    let r: Vec<f32> = (-140..140).map(|i| i as f32 + 0.5).collect();
    for (scale, qmax) in [
        (1.0, 127.0),
        (0.5, 127.0),
        (2.0, 127.0),
        (1.0, 7.0),
        (0.25, 7.0),
    ] {
        let (mut want, mut got) = (vec![0u8; r.len()], vec![0u8; r.len()]);
        quantize_row_scalar(&r, scale, qmax, &mut want);
        k.quantize_row(&r, scale, qmax, &mut got);
        assert_eq!(got, want, "scale {scale} qmax {qmax}");
    }
    let mut q = vec![0u8; 4];
    k.quantize_row(&[0.5, 1.5, 2.5, -2.5], 1.0, 127.0, &mut q);
    // Only the first 32 go through the vector body: check that body on a full block too.
    let block: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) + 0.5).collect();
    let mut qb = vec![0u8; 32];
    k.quantize_row(&block, 1.0, 127.0, &mut qb);
    let want: Vec<u8> = block
        .iter()
        .map(|x| x.round_ties_even() as i8 as u8)
        .collect();
    assert_eq!(qb, want);
    assert_eq!(q, [0, 2, 2, (-2i8) as u8]);
}

#[test]
fn f16_conversion_matches_for_every_bit_pattern() {
    let Some(k) = kernels() else { return };
    let src: Vec<u16> = (0..=u16::MAX).collect();
    for len in [src.len(), 13, 8, 0] {
        let mut got = vec![0f32; len];
        k.f16_to_f32(&src[src.len() - len..], &mut got);
        for (&h, g) in src[src.len() - len..].iter().zip(&got) {
            let want = f16_bits_to_f32(h);
            assert!(
                g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                "{h:#06x}: {g} vs {want}"
            );
        }
    }
}

#[test]
fn crc32c_by_clmul_matches_the_crate() {
    let Some(c) = super::Clmul::get() else {
        eprintln!("no AVX-512 VPCLMULQDQ on this CPU: the folded CRC32C is not tested");
        return;
    };
    let mut s = 0x9e37_79b9u32;
    let data: Vec<u8> = (0..70_000)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s as u8
        })
        .collect();
    assert_eq!(c.append(0, &data[..255]), None);
    for len in (256..1100).chain([4096, 4097, 65_535, 70_000]) {
        for (start, crc) in [(0, 0), (3, 0x1234_5678), (17, u32::MAX)] {
            let d = &data[start..start + len.min(data.len() - start)];
            let want = crc32c::crc32c_append(crc, d);
            assert_eq!(
                c.append(crc, d),
                Some(want),
                "len {} start {start}",
                d.len()
            );
        }
    }
    let zeros = vec![0u8; 1000];
    assert_eq!(c.append(0, &zeros), Some(crc32c::crc32c(&zeros)));
}

#[test]
fn dequantize_with_crc_matches_dequantize_then_crc() {
    use super::{Dequantized, StoredRows};
    let (Some(k), Some(c)) = (kernels(), super::Clmul::get()) else {
        eprintln!("no AVX-512 VPCLMULQDQ on this CPU: the fused CRC32C is not tested");
        return;
    };
    let mut s = 0x2545_f491u32;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        s
    };
    for d in [32, 64, 96, 128, 160] {
        for int4 in [false, true] {
            // Payloads from a few bytes to many 256-byte blocks, with every kind of tail.
            for rows in (0..12).chain([15, 16, 17, 33, 63, 64, 65, 100]) {
                let row_bytes = if int4 { d / 2 } else { d };
                let payload: Vec<u8> = (0..rows * row_bytes).map(|_| next() as u8).collect();
                // Finite fp16 scales, little-endian.
                let scales: Vec<u8> = (0..rows)
                    .flat_map(|_| ((next() % 0x7c00) as u16).to_le_bytes())
                    .collect();
                for bf16 in [false, true] {
                    let stored = StoredRows {
                        payload: &payload,
                        scales: &scales,
                        bf16,
                        d,
                        int4,
                    };
                    let (mut want, mut got) = (vec![0f32; rows * d], vec![1f32; rows * d]);
                    k.dequantize_per_block(stored, Dequantized::F32(&mut want));
                    let start = next();
                    let crc =
                        k.dequantize_per_block_crc(c, stored, Dequantized::F32(&mut got), start);
                    assert_eq!(
                        crc,
                        crc32c::crc32c_append(start, &payload),
                        "d {d} rows {rows}"
                    );
                    assert_eq!(bits(&got), bits(&want), "d {d} rows {rows} int4 {int4}");
                    let (mut want16, mut got16) = (vec![0u16; rows * d], vec![1u16; rows * d]);
                    k.dequantize_per_block(stored, Dequantized::F16(&mut want16));
                    let crc =
                        k.dequantize_per_block_crc(c, stored, Dequantized::F16(&mut got16), start);
                    assert_eq!(crc, crc32c::crc32c_append(start, &payload));
                    assert_eq!(got16, want16);
                }
            }
        }
    }
}
