//! The device quantizer (`device_quant`: candle tensor ops, run here on the CPU, the same op
//! graph the GPU runs) against kvwire's CPU quantizer on the same values (`quantize_on_host`,
//! a call of `kvwire::quant::quantize_tensor`): identical payload
//! bytes and scale bits for every shape (odd head dims and counts included), granularity,
//! int8 / int4 / fp16 payload, fp16 / bf16 scales and f32 / f16 / bf16 caches, on values with
//! zero rows, exact .5 ties of a step, huge and tiny (subnormal) magnitudes; where kvwire
//! refuses (a NaN or infinity, an fp16 scale overflow) the device path defers to it and the
//! frame encoder returns kvwire's own error. Whole frames (shuffled positions) are compared
//! byte for byte with `kvwire::v2::encode_frame`.

use kvwire::v2::{FrameOptions, Payload, encode_frame};
use kvwire::{Granularity, KvData, ScaleDtype};
use model_runtime::LayerKv;
use model_runtime::candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sharer_svc::SharerError;
use sharer_svc::device_quant::{
    FrameRows, encode_frame_on_device, quantize_on_device, quantize_on_host,
};

/// How the values of one row are drawn.
#[derive(Debug, Clone, Copy)]
enum RowKind {
    /// Uniform in ±3 times 10^e, e in [-8, 8].
    Spread,
    /// All zero (the scale floor).
    Zero,
    /// `(k + 1/2) * s` for a power of two `s` shared by the tensor, with one value at
    /// `±qmax * s`: every quotient is an exact tie once the group's scale is `s`.
    Ties,
    /// Up to 1e30 (fp16 scales overflow; f16 caches turn them into infinities).
    Huge,
    /// Around 1e-40 (f32 subnormals; zero in f16).
    Tiny,
}

/// Values of a `[B, H, T, D]` tensor, row by row; `ties_only` makes every row a tie row.
fn values(shape: [usize; 4], qmax: f32, seed: u64, ties_only: bool, poison: u8) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let [b, h, t, d] = shape;
    let s = 2f32.powi(rng.random_range(-10..=5));
    let kinds = [
        RowKind::Spread,
        RowKind::Zero,
        RowKind::Ties,
        RowKind::Huge,
        RowKind::Tiny,
    ];
    let mut out = Vec::with_capacity(b * h * t * d);
    for _ in 0..b * h * t {
        let kind = if ties_only {
            RowKind::Ties
        } else {
            kinds[rng.random_range(0..kinds.len())]
        };
        let e = rng.random_range(-8..=8);
        for i in 0..d {
            let x = match kind {
                RowKind::Spread => rng.random_range(-3.0f32..3.0) * 10f32.powi(e),
                RowKind::Zero => 0.0,
                RowKind::Ties if i == 0 => qmax * s * if rng.random() { 1.0 } else { -1.0 },
                RowKind::Ties => {
                    let k = rng.random_range(-(qmax as i32)..qmax as i32);
                    (k as f32 + 0.5) * s
                }
                RowKind::Huge => {
                    rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(3..=30))
                }
                RowKind::Tiny => rng.random_range(-1.0f32..1.0) * 1e-40,
            };
            out.push(x);
        }
    }
    // Now and then a NaN or an infinity somewhere.
    if !out.is_empty() && poison > 0 {
        let at = rng.random_range(0..out.len());
        out[at] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][usize::from(poison - 1) % 3];
    }
    out
}

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
const PAYLOADS: [Payload; 3] = [Payload::Fp16, Payload::Int8, Payload::Int4];

/// The tensor in the cache dtype and the host f32 values kvwire sees (`LayerKv::to_host`).
fn cache_tensor(x: &[f32], shape: [usize; 4], dtype: DType) -> (Tensor, Vec<f32>) {
    let t = Tensor::from_slice(x, &shape[..], &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap();
    let host = t
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    (t, host)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn device_ops_give_kvwires_bytes(
        b in 1usize..3, h in 1usize..4, t in 0usize..7, d in 1usize..12,
        payload in 0usize..3, gran in 0usize..4, bf16 in any::<bool>(), dtype in 0usize..3,
        ties_only in any::<bool>(), poison in prop_oneof![8 => Just(0u8), 1 => 1u8..4],
        seed in any::<u64>(),
    ) {
        let shape = [b, h, t, d];
        let (payload, gran) = (PAYLOADS[payload], Granularity::ALL[gran]);
        let sd = if bf16 { ScaleDtype::Bf16 } else { ScaleDtype::Fp16 };
        let qmax = payload.quant_mode().map_or(127.0, |m| m.qmax());
        let x = values(shape, qmax, seed, ties_only, poison);
        let (tensor, host) = cache_tensor(&x, shape, DTYPES[dtype]);
        let want = quantize_on_host(&host, shape, payload, gran, sd).ok();
        let got = quantize_on_device(&tensor, payload, gran, sd).unwrap();
        if payload == Payload::Fp16 {
            // fp16 frames are not checked for finiteness (kvwire converts whatever it gets).
            prop_assert_eq!(got, want);
        } else {
            prop_assert_eq!(got.is_some(), want.is_some(), "defers exactly where kvwire refuses");
            if let (Some(got), Some(want)) = (got, want) {
                prop_assert_eq!(got.scales, want.scales);
                prop_assert_eq!(got.payload, want.payload);
            }
        }
    }

    #[test]
    fn device_frames_equal_kvwire_frames(
        h in 1usize..4, t in 1usize..9, d in 1usize..10, payload in 0usize..3, gran in 0usize..4,
        bf16 in any::<bool>(), dtype in 0usize..3, shuffle in any::<bool>(), ties in any::<bool>(),
        poison in prop_oneof![6 => Just(0u8), 1 => 1u8..4], seed in any::<u64>(),
    ) {
        let shape = [1, h, t, d];
        let opts = FrameOptions {
            payload: PAYLOADS[payload],
            granularity: Granularity::ALL[gran],
            scale_dtype: if bf16 { ScaleDtype::Bf16 } else { ScaleDtype::Fp16 },
            layer: 2,
            ..FrameOptions::default()
        };
        let (k, hk) = cache_tensor(&values(shape, 127.0, seed, ties, poison), shape, DTYPES[dtype]);
        let (v, hv) = cache_tensor(&values(shape, 7.0, seed ^ 1, true, 0), shape, DTYPES[dtype]);
        // Positions as a selection hands them over: any order, not contiguous.
        let indices: Vec<u32> = (0..t as u32)
            .map(|i| if shuffle { (i * 5 + 3) % t as u32 * 3 + 1 } else { i * 2 })
            .collect();
        let host = kvwire::LayerKv { k: KvData::F32(&hk), v: KvData::F32(&hv), shape, indices: &indices };
        let want = encode_frame(&host, &opts).map_err(|e| SharerError::from(e).to_string());
        let layer = LayerKv { k, v };
        let got = encode_frame_on_device(&layer, &indices, &opts).map_err(|e| e.to_string());
        prop_assert_eq!(&got, &want);
        // The CPU produce path (host rows through kvwire) makes the same frame.
        let rows = FrameRows::of(&layer).unwrap();
        prop_assert!(matches!(rows, FrameRows::Host(_)));
        let cpu = rows.encode(h, d, &indices, &opts).map_err(|e| e.to_string());
        prop_assert_eq!(&cpu, &want);
    }
}

#[test]
fn an_f16_scale_overflow_and_a_nan_give_kvwires_errors() {
    let shape = [1, 2, 2, 3];
    let opts = FrameOptions::default();
    let mut k = vec![1.0f32; 12];
    k[7] = 1e7; // row 2: 1e7 / 127 > 65504
    let mut v = vec![0.5f32; 12];
    v[4] = f32::NAN; // row 1
    let t = |x: &[f32]| Tensor::from_slice(x, &shape[..], &Device::Cpu).unwrap();
    let layer = LayerKv { k: t(&k), v: t(&v) };
    let err = encode_frame_on_device(&layer, &[], &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("k scale") && err.contains("group 2"), "{err}");
    let layer = LayerKv { k: t(&v), v: t(&v) };
    let err = encode_frame_on_device(&layer, &[], &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("non-finite") && err.contains("group 1"),
        "{err}"
    );
}

/// A NaN that the group's absmax skips (it heads its row, and the group's maximum keeps the
/// other row against it) leaves huge quotients beside it: the device path must still end in
/// kvwire's typed error, as the host does, at every quantized payload and group.
#[test]
fn a_nan_skipped_by_the_absmax_beside_huge_values_is_kvwires_error() {
    let shape = [1, 2, 1, 2];
    let k = [1e-3f32, 1e-3, f32::NAN, 1e6];
    let v = [0.5f32; 4];
    let t = |x: &[f32]| Tensor::from_slice(x, &shape[..], &Device::Cpu).unwrap();
    let host = kvwire::LayerKv {
        k: KvData::F32(&k),
        v: KvData::F32(&v),
        shape,
        indices: &[],
    };
    for payload in [Payload::Int8, Payload::Int4] {
        for granularity in Granularity::ALL {
            let opts = FrameOptions {
                payload,
                granularity,
                ..FrameOptions::default()
            };
            let want = encode_frame(&host, &opts).map_err(|e| SharerError::from(e).to_string());
            assert!(want.is_err(), "{payload:?} {granularity:?}");
            let layer = LayerKv { k: t(&k), v: t(&v) };
            let got = encode_frame_on_device(&layer, &[], &opts).map_err(|e| e.to_string());
            assert_eq!(got, want, "{payload:?} {granularity:?}");
        }
    }
}
