//! Whole tensors through `quantize_tensor` (the per_block vector kernel of `crate::simd` when
//! the CPU has it) against the row-by-row path, and stored-scale dequantization against f32
//! scales. The random rows come from the vector kernels' own tests.

use half::f16;
use proptest::prelude::*;

use super::{
    Granularity, QuantMode, QuantParams, ScaleDtype, compute_scale, dequantize_tensor,
    dequantize_tensor_le, dequantize_tensor_le_f16, quantize_rows, quantize_tensor,
    scale_from_bits,
};
use crate::layer::KvData;
use crate::simd::tests::{bits, finite};

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
                2 => prop::collection::vec(finite(), rows * d),
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
            prop_assert_eq!(bits(&o_fast), bits(&o_ref));
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
