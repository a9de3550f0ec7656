//! `v2::encode_prequantized_frame`: a payload quantized elsewhere (here by the crate's own
//! quantizer) makes the same frame, byte for byte, as `encode_frame` from the values, at every
//! option; wrong lengths and descending positions are refused with typed errors and leave the
//! output as it was.

mod common;

use common::values;
use half::f16;
use kvwire::layer::sort_positions;
use kvwire::quant::{QuantParams, quantize_tensor};
use kvwire::v2::{
    FrameOptions, Payload, PrequantizedLayer, QuantizedTensor, encode_frame,
    encode_prequantized_frame, encode_prequantized_frame_into,
};
use kvwire::{EncodeError, Granularity, KvData, LayerKv, ScaleDtype};
use proptest::prelude::*;

/// Payload and scale bits of one tensor in wire order, through the crate's quantizer (or the
/// fp16 conversion for an fp16 payload).
fn wire_tensor(x: &[f32], shape: [usize; 4], order: &[usize], opts: &FrameOptions) -> Wire {
    let Some(mode) = opts.payload.quant_mode() else {
        let [b, h, t, d] = shape;
        let mut payload = Vec::new();
        for bh in 0..b * h {
            for &src in order {
                for &x in &x[(bh * t + src) * d..][..d] {
                    payload.extend_from_slice(&f16::from_f32(x).to_bits().to_le_bytes());
                }
            }
        }
        return (payload, Vec::new());
    };
    let params = QuantParams {
        mode,
        granularity: opts.granularity,
        scale_dtype: opts.scale_dtype,
    };
    let (mut payload, mut scales) = (Vec::new(), Vec::new());
    quantize_tensor(
        KvData::F32(x),
        shape,
        order,
        params,
        "x",
        &mut payload,
        &mut scales,
    )
    .unwrap();
    (payload, scales)
}

type Wire = (Vec<u8>, Vec<u16>);

fn layer<'a>(
    k: &'a Wire,
    v: &'a Wire,
    shape: [usize; 4],
    positions: &'a [u32],
) -> PrequantizedLayer<'a> {
    let tensor = |w: &'a Wire| QuantizedTensor {
        payload: &w.0,
        scales: &w.1,
    };
    PrequantizedLayer {
        k: tensor(k),
        v: tensor(v),
        shape,
        positions,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn prequantized_frames_equal_encoded_frames(
        b in 1usize..3, h in 1usize..4, t in 0usize..9, d in 1usize..9,
        payload in 0usize..3, gran in 0usize..4, bf16 in any::<bool>(),
        shuffled in any::<bool>(), big in any::<bool>(), entropy in any::<bool>(),
        seed in any::<u32>(),
    ) {
        let shape = [b, h, t, d];
        let n = b * h * t * d;
        let (k, v) = (values(n, seed), values(n, seed ^ 0x5EED));
        let offset = if big { 70_000 } else { 3 };
        let indices: Vec<u32> = if shuffled {
            (0..t as u32).map(|i| offset + (i * 7) % (t as u32 + 5)).collect()
        } else {
            Vec::new()
        };
        let opts = FrameOptions {
            payload: [Payload::Fp16, Payload::Int8, Payload::Int4][payload],
            granularity: Granularity::ALL[gran],
            scale_dtype: if bf16 { ScaleDtype::Bf16 } else { ScaleDtype::Fp16 },
            layer: 3,
            entropy: entropy && cfg!(feature = "entropy"),
            ..FrameOptions::default()
        };
        let values = LayerKv { k: KvData::F32(&k), v: KvData::F32(&v), shape, indices: &indices };
        let want = encode_frame(&values, &opts).unwrap();

        let (positions, order) = sort_positions(&indices, t);
        let (kw, vw) = (wire_tensor(&k, shape, &order, &opts), wire_tensor(&v, shape, &order, &opts));
        let got = encode_prequantized_frame(&layer(&kw, &vw, shape, &positions), &opts).unwrap();
        prop_assert_eq!(got, want);
    }
}

#[test]
fn wrong_lengths_and_descending_positions_are_refused_and_leave_the_output() {
    let shape = [1, 2, 3, 5];
    let n = 30;
    let opts = FrameOptions {
        payload: Payload::Int4,
        granularity: Granularity::PerBlock,
        ..FrameOptions::default()
    };
    let x = values(n, 7);
    let (_, order) = sort_positions(&[], 3);
    let good = wire_tensor(&x, shape, &order, &opts);
    assert_eq!(good.0.len(), 15, "int4 packs 30 values into 15 bytes");
    let mut out = b"earlier".to_vec();
    let positions = [4u32, 5, 9];

    let short = (good.0[..14].to_vec(), good.1.clone());
    let err =
        encode_prequantized_frame_into(&layer(&good, &short, shape, &positions), &opts, &mut out);
    assert_eq!(
        err,
        Err(EncodeError::ShapeMismatch {
            field: "v payload",
            expected: 15,
            found: 14
        })
    );
    let few = (good.0.clone(), good.1[..5].to_vec());
    let err =
        encode_prequantized_frame_into(&layer(&few, &good, shape, &positions), &opts, &mut out);
    assert_eq!(
        err,
        Err(EncodeError::ShapeMismatch {
            field: "k scales",
            expected: 6,
            found: 5
        })
    );
    let down = [4u32, 9, 5];
    let err = encode_prequantized_frame_into(&layer(&good, &good, shape, &down), &opts, &mut out);
    assert_eq!(
        err,
        Err(EncodeError::NotAscending {
            slot: 2,
            position: 5
        })
    );
    let two = [4u32, 5];
    let err = encode_prequantized_frame_into(&layer(&good, &good, shape, &two), &opts, &mut out);
    assert!(matches!(
        err,
        Err(EncodeError::ShapeMismatch {
            field: "indices",
            ..
        })
    ));
    assert_eq!(out, b"earlier");

    // fp16 carries no scales: a scale given with it is refused too.
    let fp16 = FrameOptions {
        payload: Payload::Fp16,
        ..opts
    };
    let bytes = (vec![0u8; 2 * n], vec![1u16]);
    let err = encode_prequantized_frame(&layer(&bytes, &bytes, shape, &positions), &fp16);
    assert!(matches!(
        err,
        Err(EncodeError::ShapeMismatch {
            field: "k scales",
            expected: 0,
            found: 1
        })
    ));
}
