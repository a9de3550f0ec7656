//! v2 frames and session headers round-trip at every option, and streams decode record by record.

use half::f16;
use kvwire::quant::{QuantParams, fake_quantize};
use kvwire::v2::{
    self, FrameKind, FrameOptions, IndexEncoding, Payload, SessionHeader, StreamDecoder, StreamItem,
};
use kvwire::{Granularity, KvData, LayerKv, ScaleDtype};
use proptest::prelude::*;

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5) * 6.0
        })
        .collect()
}

fn permuted(src: &[f32], shape: [usize; 4], order: &[usize]) -> Vec<f32> {
    let [b, h, t, d] = shape;
    let mut out = Vec::with_capacity(src.len());
    for bh in 0..b * h {
        for &o in order {
            out.extend_from_slice(&src[(bh * t + o) * d..][..d]);
        }
    }
    out
}

fn check_roundtrip(shape: [usize; 4], indices: &[u32], opts: FrameOptions, f16_input: bool) {
    let n: usize = shape.iter().product();
    let k = values(n, 1);
    let v = values(n, 2);
    let (k16, v16): (Vec<f16>, Vec<f16>) = (
        k.iter().map(|&x| f16::from_f32(x)).collect(),
        v.iter().map(|&x| f16::from_f32(x)).collect(),
    );
    let (kd, vd) = if f16_input {
        (KvData::F16(&k16), KvData::F16(&v16))
    } else {
        (KvData::F32(&k), KvData::F32(&v))
    };
    let layer = LayerKv {
        k: kd,
        v: vd,
        shape,
        indices,
    };
    let bytes = v2::encode_frame(&layer, &opts).unwrap();
    let frame = v2::decode_frame(&bytes).unwrap();
    let h = frame.header();
    assert_eq!(
        (h.layer, h.group, h.round, h.kind, h.payload),
        (opts.layer, opts.group, opts.round, opts.kind, opts.payload)
    );
    // Entropy coding is used only when asked for and only when it makes the payload smaller.
    assert!(!h.entropy || opts.entropy);
    if h.entropy {
        assert!(frame.breakdown().payload < 2 * h.tensor_payload_bytes() as u64);
    }
    assert_eq!(h.shape, shape);
    assert_eq!(frame.breakdown().total(), bytes.len() as u64);
    let (sorted, order) = layer.sorted_positions();
    assert_eq!(&*frame.indices(), sorted.as_slice());
    let (dk, dv) = frame.dequantize();
    // The borrowing decoder agrees with the owning one, bit for bit.
    let view = v2::decode_frame_ref(&bytes).unwrap();
    assert_eq!(view.indices(), frame.indices());
    assert_eq!(view.dequantize(), frame.dequantize());
    let (mut rk, mut rv) = (vec![0f32; dk.len()], vec![0f32; dv.len()]);
    view.dequantize_into(&mut rk, &mut rv).unwrap();
    let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    assert_eq!((bits(&rk), bits(&rv)), (bits(&dk), bits(&dv)));
    // To fp16: each f32 value rounded (nearest, ties to even).
    let (mut hk, mut hv) = (vec![f16::ZERO; dk.len()], vec![f16::ZERO; dv.len()]);
    view.dequantize_into_f16(&mut hk, &mut hv).unwrap();
    let rounded = |x: &[f32]| {
        x.iter()
            .map(|&f| f16::from_f32(f).to_bits())
            .collect::<Vec<_>>()
    };
    let half_bits = |x: &[f16]| x.iter().map(|h| h.to_bits()).collect::<Vec<_>>();
    assert_eq!(half_bits(&hk), rounded(&dk));
    assert_eq!(half_bits(&hv), rounded(&dv));
    let mut short = vec![f16::ZERO; dk.len().saturating_sub(1)];
    if !dk.is_empty() {
        let err = view.dequantize_into_f16(&mut short, &mut hv).unwrap_err();
        assert!(
            matches!(err, kvwire::DecodeError::LengthMismatch { .. }),
            "{err:?}"
        );
    }
    check_fused_decode(&bytes, &dk, &dv);
    assert_eq!(view.into_owned(), frame);
    let to_f32 = |x: &[f16]| x.iter().map(|v| v.to_f32()).collect::<Vec<f32>>();
    let (k, v) = if f16_input {
        (to_f32(&k16), to_f32(&v16))
    } else {
        (k, v)
    };
    for (src, got) in [(&k, &dk), (&v, &dv)] {
        let src = permuted(src, shape, &order);
        let want = match opts.payload.quant_mode() {
            None => src.iter().map(|&x| f16::from_f32(x).to_f32()).collect(),
            Some(mode) => fake_quantize(
                &src,
                shape,
                QuantParams {
                    mode,
                    granularity: opts.granularity,
                    scale_dtype: opts.scale_dtype,
                },
            )
            .unwrap(),
        };
        assert_eq!(got, &want);
    }
    {
        let est = v2::estimate_frame_bytes(
            &opts,
            shape,
            if matches!(h.index, IndexEncoding::Contiguous { .. }) {
                0
            } else {
                shape[2]
            },
            sorted.last().copied().unwrap_or(0),
        );
        if h.entropy {
            assert!(
                est > bytes.len() as u64,
                "coded frames are smaller than the estimate"
            );
        } else {
            assert_eq!(est, bytes.len() as u64);
        }
    }
}

/// `decode_frame_into` (one pass: CRC folded into the dequantization) returns the frame
/// `decode_frame_ref` returns and writes what `dequantize_into` writes, in f32 and fp16; a wrong
/// output length is the same error.
fn check_fused_decode(bytes: &[u8], dk: &[f32], dv: &[f32]) {
    let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<u32>>();
    let half_bits = |x: &[f16]| x.iter().map(|h| h.to_bits()).collect::<Vec<_>>();
    let view = v2::decode_frame_ref(bytes).unwrap();
    let (mut k, mut v) = (vec![f32::NAN; dk.len()], vec![f32::NAN; dv.len()]);
    assert_eq!(v2::decode_frame_into(bytes, &mut k, &mut v).unwrap(), view);
    assert_eq!((bits(&k), bits(&v)), (bits(dk), bits(dv)));
    let (mut hk, mut hv) = (vec![f16::NAN; dk.len()], vec![f16::NAN; dv.len()]);
    assert_eq!(
        v2::decode_frame_into_f16(bytes, &mut hk, &mut hv).unwrap(),
        view
    );
    let (mut wk, mut wv) = (vec![f16::ZERO; dk.len()], vec![f16::ZERO; dv.len()]);
    view.dequantize_into_f16(&mut wk, &mut wv).unwrap();
    assert_eq!(
        (half_bits(&hk), half_bits(&hv)),
        (half_bits(&wk), half_bits(&wv))
    );
    let mut long = vec![0f32; dv.len() + 1];
    assert_eq!(
        v2::decode_frame_into(bytes, &mut k, &mut long).unwrap_err(),
        view.dequantize_into(&mut k, &mut long).unwrap_err()
    );
}

/// Frames whose payloads span many 256-byte CRC blocks (the fused decode folds them between
/// rows), with every tail length, int8 and int4, fp16 and bf16 scales, the whole-tensor kernel's
/// head dims and others: the fused decode matches the two-step one, and a flipped bit anywhere
/// gives the two-step decode's error.
#[test]
fn fused_decode_matches_and_rejects_like_the_two_step_decode() {
    let shapes = [
        [1, 2, 37, 64],
        [1, 3, 50, 128],
        [1, 1, 9, 96],
        [2, 1, 5, 32],
        [1, 1, 3, 64],
        [1, 2, 1, 160],
        [1, 4, 21, 64],
    ];
    for (i, shape) in shapes.into_iter().enumerate() {
        for payload in [Payload::Int8, Payload::Int4, Payload::Fp16] {
            for (gran, scale_dtype) in [
                (Granularity::PerBlock, ScaleDtype::Fp16),
                (Granularity::PerBlock, ScaleDtype::Bf16),
                (Granularity::PerHead, ScaleDtype::Fp16),
            ] {
                let n: usize = shape.iter().product();
                let (k, v) = (values(n, 3 + i as u32), values(n, 40 + i as u32));
                let indices: Vec<u32> = (0..shape[2] as u32).map(|t| 3 * t + 1).collect();
                let layer = LayerKv {
                    k: KvData::F32(&k),
                    v: KvData::F32(&v),
                    shape,
                    indices: &indices,
                };
                let opts = FrameOptions {
                    payload,
                    granularity: gran,
                    scale_dtype,
                    ..FrameOptions::default()
                };
                let bytes = v2::encode_frame(&layer, &opts).unwrap();
                let (dk, dv) = v2::decode_frame_ref(&bytes).unwrap().dequantize();
                check_fused_decode(&bytes, &dk, &dv);
                let (mut ok, mut ov) = (vec![0f32; n], vec![0f32; n]);
                let len = bytes.len();
                let spots = [
                    0,
                    5,
                    9,
                    37,
                    60,
                    len / 3,
                    len / 2,
                    len.saturating_sub(300),
                    len - 7,
                    len - 1,
                ];
                for at in spots.into_iter().filter(|&a| a < len) {
                    for bit in [0x01, 0x80] {
                        let mut bad = bytes.clone();
                        bad[at] ^= bit;
                        let want = v2::decode_frame_ref(&bad)
                            .and_then(|f| f.dequantize_into(&mut ok, &mut ov))
                            .unwrap_err();
                        let got = v2::decode_frame_into(&bad, &mut ok, &mut ov).unwrap_err();
                        assert_eq!(got, want, "{shape:?} {payload:?} {gran:?} byte {at}");
                    }
                }
            }
        }
    }
}

fn payload_strategy() -> impl Strategy<Value = Payload> {
    prop_oneof![
        Just(Payload::Fp16),
        Just(Payload::Int8),
        Just(Payload::Int4)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn frames_round_trip_at_every_option(
        b in 1usize..3, h in 1usize..4, t in 0usize..12, d in 1usize..10,
        payload in payload_strategy(),
        gran in 0usize..4, bf16 in any::<bool>(), entropy in any::<bool>(), f16_input in any::<bool>(),
        residual in any::<bool>(), layer in any::<u16>(), group in any::<u8>(), round in any::<u8>(),
        index_kind in 0usize..3, seed in any::<u32>(),
    ) {
        let mut indices: Vec<u32> = match index_kind {
            0 => Vec::new(),
            1 => (0..t as u32).map(|i| i.wrapping_mul(7919).wrapping_add(seed % 1000) % 60_000).collect(),
            _ => (0..t as u32).map(|i| 70_000 + i * 3 + seed % 5).rev().collect(),
        };
        // Shuffle deterministically so re-sorting is exercised.
        if indices.len() > 1 { let l = indices.len(); indices.swap(0, (seed as usize) % l); }
        let opts = FrameOptions {
            payload,
            granularity: Granularity::ALL[gran],
            scale_dtype: if bf16 { ScaleDtype::Bf16 } else { ScaleDtype::Fp16 },
            layer, group, round,
            kind: if residual { FrameKind::Residual } else { FrameKind::Base },
            entropy: entropy && cfg!(feature = "entropy"),
        };
        check_roundtrip([b, h, t, d], &indices, opts, f16_input);
    }
}

#[test]
fn contiguous_positions_cost_no_index_bytes() {
    let k = values(2 * 5 * 4, 3);
    let layer = LayerKv {
        k: KvData::F32(&k),
        v: KvData::F32(&k),
        shape: [1, 2, 5, 4],
        indices: &[10, 11, 12, 13, 14],
    };
    let frame =
        v2::decode_frame(&v2::encode_frame(&layer, &FrameOptions::default()).unwrap()).unwrap();
    assert_eq!(
        frame.header().index,
        IndexEncoding::Contiguous { start: 10 }
    );
    assert_eq!(frame.breakdown().indices, 0);
    assert_eq!(&*frame.indices(), &[10, 11, 12, 13, 14]);
}

#[test]
fn residual_frame_upgrades_int4_to_near_int8_error() {
    let shape = [1, 2, 16, 64];
    let n: usize = shape.iter().product();
    let orig = values(n, 9);
    let layer = LayerKv {
        k: KvData::F32(&orig),
        v: KvData::F32(&orig),
        shape,
        indices: &[],
    };
    let base_opts = FrameOptions {
        payload: Payload::Int4,
        ..FrameOptions::default()
    };
    let base = v2::decode_frame(&v2::encode_frame(&layer, &base_opts).unwrap()).unwrap();
    let (mut held_k, mut held_v) = base.dequantize();
    let resid: Vec<f32> = orig.iter().zip(&held_k).map(|(o, h)| o - h).collect();
    let rlayer = LayerKv {
        k: KvData::F32(&resid),
        v: KvData::F32(&resid),
        shape,
        indices: &[],
    };
    let ropts = FrameOptions {
        payload: Payload::Int8,
        kind: FrameKind::Residual,
        round: 2,
        ..FrameOptions::default()
    };
    let rframe = v2::decode_frame(&v2::encode_frame(&rlayer, &ropts).unwrap()).unwrap();
    let err = |x: &[f32]| {
        x.iter()
            .zip(&orig)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max)
    };
    let before = err(&held_k);
    rframe
        .add_dequantized_into(&mut held_k, &mut held_v)
        .unwrap();
    let after = err(&held_k);
    assert!(
        after < before / 8.0,
        "residual should cut the error: {before} -> {after}"
    );
}

#[test]
fn stream_yields_each_record_as_soon_as_it_is_complete() {
    let session = SessionHeader {
        session_id: [7; 16],
        sharer_model: "qwen2.5-0.5b".into(),
        receiver_model: "qwen3-0.6b".into(),
        layers: 3,
        kv_heads: 2,
        head_dim: 8,
        tokens: 6,
        round: 1,
        frames: 3,
    };
    let mut stream = session.encode().unwrap();
    let k = values(2 * 6 * 8, 4);
    let layer = LayerKv {
        k: KvData::F32(&k),
        v: KvData::F32(&k),
        shape: [1, 2, 6, 8],
        indices: &[],
    };
    let mut ends = vec![stream.len()];
    for l in 0..3 {
        v2::encode_frame_into(
            &layer,
            &FrameOptions {
                layer: l,
                ..FrameOptions::default()
            },
            &mut stream,
        )
        .unwrap();
        ends.push(stream.len());
    }
    let mut dec = StreamDecoder::new();
    let mut seen = Vec::new();
    for (i, byte) in stream.iter().enumerate() {
        dec.push(std::slice::from_ref(byte));
        while let Some(item) = dec.next_item().unwrap() {
            seen.push((i + 1, item));
        }
    }
    dec.finish().unwrap();
    assert_eq!(seen.iter().map(|(at, _)| *at).collect::<Vec<_>>(), ends);
    assert_eq!(seen[0].1, StreamItem::Session(session));
    for (l, (_, item)) in seen[1..].iter().enumerate() {
        let StreamItem::Frame(f) = item else {
            panic!("expected a frame")
        };
        assert_eq!(f.header().layer, l as u16);
    }
}

#[test]
fn entropy_coding_is_used_when_it_pays_and_skipped_when_it_does_not() {
    let shape = [1, 4, 256, 64];
    let n: usize = shape.iter().product();
    let k = values(n, 5);
    let big = LayerKv {
        k: KvData::F32(&k),
        v: KvData::F32(&k),
        shape,
        indices: &[],
    };
    let opts = FrameOptions {
        payload: Payload::Int4,
        entropy: cfg!(feature = "entropy"),
        ..FrameOptions::default()
    };
    let raw = v2::encode_frame(
        &big,
        &FrameOptions {
            entropy: false,
            ..opts
        },
    )
    .unwrap();
    let coded = v2::encode_frame(&big, &opts).unwrap();
    let f = v2::decode_frame(&coded).unwrap();
    assert_eq!(f.header().entropy, cfg!(feature = "entropy"));
    assert_eq!(f.dequantize(), v2::decode_frame(&raw).unwrap().dequantize());
    if cfg!(feature = "entropy") {
        assert!(coded.len() < raw.len(), "{} vs {}", coded.len(), raw.len());
    }
    // One token of one head: the frequency tables cost more than they save.
    let tiny = LayerKv {
        k: KvData::F32(&k[..8]),
        v: KvData::F32(&k[..8]),
        shape: [1, 1, 1, 8],
        indices: &[],
    };
    let f = v2::decode_frame(&v2::encode_frame(&tiny, &opts).unwrap()).unwrap();
    assert!(!f.header().entropy);
}
