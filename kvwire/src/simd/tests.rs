//! The AVX2 kernels against the scalar reference, bit for bit, on random rows mixing the edge
//! cases (zeros of both signs, subnormals, the largest finite values, exact .5 ties, all-zero
//! rows) and on lengths that exercise both the vector body and the scalar tail.

use proptest::prelude::*;

use super::Avx2;
use crate::quant::kernels::{
    absmax_checked_scalar, dequantize_row_int4_scalar, dequantize_row_scalar,
    quantize_row_int4_scalar, quantize_row_scalar,
};
use crate::quant::{compute_scale, f16_bits_to_f32};

fn kernels() -> Option<Avx2> {
    let k = Avx2::get();
    if k.is_none() {
        eprintln!("no AVX2 + F16C on this CPU: vector kernels not tested");
    }
    k
}

fn finite() -> impl Strategy<Value = f32> {
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

fn bits(v: &[f32]) -> Vec<u32> {
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

/// Whole tensors through `quantize_tensor` (the per_block vector kernel when the CPU has it)
/// against the row-by-row path, and stored-scale dequantization against f32 scales.
mod whole_tensor {
    use half::f16;
    use proptest::prelude::*;

    use crate::layer::KvData;
    use crate::quant::{
        Granularity, QuantMode, QuantParams, ScaleDtype, compute_scale, dequantize_tensor,
        dequantize_tensor_le, dequantize_tensor_le_f16, quantize_rows, quantize_tensor,
        scale_from_bits,
    };

    /// A row whose values sit on or within a few ulps of `(k + 0.5) · scale`, with `scale` the
    /// one the encoder derives from the row's own absmax: where a reciprocal could round
    /// differently from the division.
    fn tie_row(d: usize, absmax: f32, qmax: f32, seeds: &[(i32, i32)]) -> Vec<f32> {
        let s = compute_scale(absmax, qmax);
        let mut row: Vec<f32> = (0..d)
            .map(|i| {
                let (k, ulps) = seeds[i % seeds.len()];
                let x = (k as f32 + 0.5) * s;
                let y = f32::from_bits(x.to_bits().wrapping_add_signed(ulps));
                if y.is_finite() && y.abs() <= absmax {
                    y
                } else {
                    x.clamp(-absmax, absmax)
                }
            })
            .collect();
        row[0] = if seeds[0].0 < 0 { -absmax } else { absmax };
        row
    }

    fn case() -> impl Strategy<Value = (Vec<f32>, [usize; 4], Vec<usize>, bool, QuantParams)> {
        let dims = (
            1usize..3,
            1usize..3,
            0usize..12,
            prop_oneof![
                Just(1usize),
                Just(2),
                Just(7),
                Just(8),
                Just(32),
                Just(40),
                Just(64),
                Just(96),
                Just(128)
            ],
        );
        (
            dims,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<u64>(),
        )
            .prop_flat_map(|((b, h, t, d), f16_in, int4, bf16, seed)| {
                let rows = b * h * t;
                let values = prop_oneof![
                    // Random magnitudes, edge values included.
                    2 => prop::collection::vec(super::finite(), rows * d),
                    // Rows of near ties.
                    3 => prop::collection::vec(
                        (
                            prop_oneof![1e-7f32..1e-5, 0.01f32..4.0, 100.0f32..60_000.0, 4.5e5f32..8.4e6],
                            prop::collection::vec((-127i32..127, -3i32..=3), 1..8),
                        ),
                        rows,
                    )
                    .prop_map(move |rs| {
                        let qmax = if int4 { 7.0 } else { 127.0 };
                        let rs = rs.iter().map(|(a, seeds)| tie_row(d, *a, qmax, seeds));
                        rs.flatten().collect::<Vec<_>>()
                    }),
                ];
                let order = Just((0..t).collect::<Vec<_>>()).prop_shuffle();
                (values, Just([b, h, t, d]), order).prop_map(move |(v, shape, order)| {
                    let params = QuantParams {
                        mode: if int4 {
                            QuantMode::Int4
                        } else {
                            QuantMode::Int8
                        },
                        granularity: Granularity::PerBlock,
                        scale_dtype: if bf16 {
                            ScaleDtype::Bf16
                        } else {
                            ScaleDtype::Fp16
                        },
                    };
                    let _ = seed;
                    (v, shape, order, f16_in, params)
                })
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn quantize_tensor_matches_row_by_row((values, shape, order, f16_in, params) in case()) {
            let halves: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
            let data = if f16_in { KvData::F16(&halves) } else { KvData::F32(&values) };
            let n = values.len();
            let bytes = params.mode.payload_bytes(n);
            // Appended after what the buffer already holds.
            let (mut p_fast, mut s_fast) = (vec![7u8; 3], Vec::new());
            let fast = quantize_tensor(data, shape, &order, params, "k", &mut p_fast, &mut s_fast);
            let (mut p_ref, mut s_ref) = (vec![0u8; bytes], Vec::new());
            let reference = quantize_rows((data, shape, &order), params, "k", &mut p_ref, &mut s_ref);
            prop_assert_eq!(format!("{fast:?}"), format!("{reference:?}"));
            prop_assert_eq!(&p_fast[..3], &[7u8; 3]);
            if reference.is_ok() {
                prop_assert_eq!(&p_fast[3..], &p_ref);
                prop_assert_eq!(&s_fast, &s_ref);
                // Stored-scale dequantization (vector kernel) against f32 scales (row by row).
                let le: Vec<u8> = s_ref.iter().flat_map(|b| b.to_le_bytes()).collect();
                let f: Vec<f32> = s_ref.iter().map(|&b| scale_from_bits(b, params.scale_dtype)).collect();
                let (mut o_fast, mut o_ref) = (vec![0f32; n], vec![0f32; n]);
                let g = params.granularity;
                dequantize_tensor_le(params.mode, g, shape, &p_ref, (&le, params.scale_dtype), &mut o_fast).unwrap();
                dequantize_tensor(params.mode, g, shape, &p_ref, &f, &mut o_ref).unwrap();
                prop_assert_eq!(super::bits(&o_fast), super::bits(&o_ref));
                // Straight to fp16 (vector kernel) against the f32 values rounded.
                let mut h = vec![f16::ZERO; n];
                dequantize_tensor_le_f16(params.mode, g, shape, &p_ref, (&le, params.scale_dtype), &mut h).unwrap();
                let want: Vec<u16> = o_ref.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
                prop_assert_eq!(h.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), want);
            }
        }
    }

    #[test]
    fn faults_name_the_same_row() {
        let params = QuantParams {
            mode: QuantMode::Int8,
            granularity: Granularity::PerBlock,
            scale_dtype: ScaleDtype::Fp16,
        };
        let shape = [1, 2, 3, 64];
        let order = [2, 0, 1];
        for (at, x) in [(130, f32::NAN), (200, f32::INFINITY), (64, 1e9)] {
            let mut values = vec![0.5f32; 384];
            values[at] = x;
            let data = KvData::F32(&values);
            let (mut p1, mut s1, mut p2, mut s2) = (vec![1, 2], vec![], vec![0; 384], vec![]);
            let fast = quantize_tensor(data, shape, &order, params, "v", &mut p1, &mut s1);
            let reference = quantize_rows((data, shape, &order), params, "v", &mut p2, &mut s2);
            assert!(fast.is_err(), "{x}");
            assert_eq!(p1, [1, 2], "an error appends nothing");
            assert_eq!(format!("{fast:?}"), format!("{reference:?}"));
        }
        // A fault past the kernel's first chunk of 64 rows: still nothing appended, scales
        // included.
        let shape = [1, 2, 50, 64];
        let order: Vec<usize> = (0..50).collect();
        let mut values = vec![0.5f32; 2 * 50 * 64];
        values[90 * 64 + 3] = f32::NAN;
        let (mut p1, mut s1) = (vec![7u8], vec![9u16]);
        let data = KvData::F32(&values);
        let fast = quantize_tensor(data, shape, &order, params, "k", &mut p1, &mut s1);
        assert!(
            matches!(
                fast,
                Err(crate::error::EncodeError::NonFinite { group: 90, .. })
            ),
            "{fast:?}"
        );
        assert_eq!((p1, s1), (vec![7], vec![9]));
        // And through the row-by-row path (D not a multiple of 32), which appends per row.
        let shape = [1, 1, 6, 40];
        let mut values = vec![0.5f32; 240];
        values[5 * 40] = f32::NAN;
        let (mut p1, mut s1) = (vec![7u8], vec![9u16]);
        let order: Vec<usize> = (0..6).collect();
        let data = KvData::F32(&values);
        assert!(quantize_tensor(data, shape, &order, params, "k", &mut p1, &mut s1).is_err());
        assert_eq!((p1, s1), (vec![7], vec![9]));
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
