//! The fuzz targets' seed corpus (`fuzz/corpus-seed/<target>/`): small valid inputs that get the
//! fuzzer past the magic, lengths and checksums at once. Today's encoder must reproduce the
//! committed files; `cargo test -p kvwire --test fuzz_seed -- --ignored` rewrites them.

mod common;

use std::path::PathBuf;

use common::{Fixture, golden_frame_options, golden_session};
use kvwire::v1::{self, IndexDtype, V1Options};
use kvwire::v2::{self, FrameOptions, Payload, SessionHeader};
use kvwire::{Granularity, QuantMode, ScaleDtype, decode_any};

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus-seed")
}

/// A whole round: session header then one frame per layer, as a sharer sends it.
fn round(opts: FrameOptions, layers: u16) -> Vec<u8> {
    let fx = Fixture::new();
    let mut out = SessionHeader {
        session_id: *b"kvwire-fuzzseed1",
        sharer_model: "sharer".into(),
        receiver_model: "receiver".into(),
        layers,
        kv_heads: fx.shape[1] as u16,
        head_dim: fx.shape[3] as u16,
        tokens: 256,
        round: 1,
        frames: u32::from(layers),
    }
    .encode()
    .unwrap();
    for layer in 0..layers {
        let opts = FrameOptions { layer, ..opts };
        v2::encode_frame_into(&fx.layer(), &opts, &mut out).unwrap();
    }
    out
}

/// (target, file name, bytes).
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let fx = Fixture::new();
    let layer = fx.layer();
    let v1_int4 = V1Options {
        mode: QuantMode::Int4,
        granularity: Granularity::PerHead,
        scale_dtype: ScaleDtype::Bf16,
        index_dtype: IndexDtype::U32,
    };
    let mut golden = golden_session().encode().unwrap();
    for opts in golden_frame_options() {
        v2::encode_frame_into(&layer, &opts, &mut golden).unwrap();
    }
    let entropy = FrameOptions {
        payload: Payload::Int8,
        entropy: true,
        ..FrameOptions::default()
    };
    // Values bunched near zero, int4 per tensor: small enough to seed, skewed enough that the
    // coded payload is kept.
    let shape = [1, 2, 32, 8];
    let skewed: Vec<f32> = common::values(512, 21)
        .iter()
        .map(|x| x * x * x / 9.0)
        .collect();
    let positions: Vec<u32> = (0..32).collect();
    let coded = v2::encode_frame(
        &kvwire::LayerKv {
            k: kvwire::KvData::F32(&skewed),
            v: kvwire::KvData::F32(&skewed),
            shape,
            indices: &positions,
        },
        &FrameOptions {
            payload: Payload::Int4,
            granularity: Granularity::PerTensor,
            entropy: true,
            ..FrameOptions::default()
        },
    )
    .unwrap();
    assert!(
        v2::FrameHeader::peek(&coded).unwrap().entropy,
        "the seed is entropy-coded"
    );
    let int4 = FrameOptions {
        payload: Payload::Int4,
        granularity: Granularity::PerTensor,
        ..FrameOptions::default()
    };
    let rounds = round(FrameOptions::default(), 2);
    // The stream target reads its first byte as the chunk size.
    let chunked = |step: u8, bytes: &[u8]| [&[step][..], bytes].concat();
    vec![
        (
            "decode_any",
            "v1_int8.bin",
            v1::encode(&layer, &V1Options::default()).unwrap(),
        ),
        (
            "decode_any",
            "v1_int4_per_head_bf16.bin",
            v1::encode(&layer, &v1_int4).unwrap(),
        ),
        (
            "decode_any",
            "v2_frame_int8.bin",
            v2::encode_frame(&layer, &FrameOptions::default()).unwrap(),
        ),
        ("decode_any", "v2_frame_int4_entropy.bin", coded),
        ("decode_any", "v2_stream_golden.bin", golden.clone()),
        ("stream", "step7_golden.bin", chunked(7, &golden)),
        (
            "stream",
            "step64_round_int4.bin",
            chunked(64, &round(int4, 3)),
        ),
        (
            "stream",
            "step1_round_entropy.bin",
            chunked(1, &round(entropy, 2)),
        ),
        ("assemble", "round_int8.bin", rounds),
        (
            "assemble",
            "round_fp16.bin",
            round(
                FrameOptions {
                    payload: Payload::Fp16,
                    ..FrameOptions::default()
                },
                2,
            ),
        ),
    ]
}

#[test]
fn committed_seeds_are_current_and_decode() {
    for (target, name, bytes) in seeds() {
        let path = seed_dir().join(target).join(name);
        let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            bytes, want,
            "{target}/{name} differs from the committed seed"
        );
        let body = if target == "stream" {
            &bytes[1..]
        } else {
            &bytes[..]
        };
        decode_any(body).unwrap_or_else(|e| panic!("{target}/{name}: {e}"));
    }
}

#[test]
#[ignore = "rewrites fuzz/corpus-seed; run on purpose after a deliberate format change"]
fn regenerate_seeds() {
    for (target, name, bytes) in seeds() {
        let dir = seed_dir().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
