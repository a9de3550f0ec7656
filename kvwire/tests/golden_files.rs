//! Committed golden files for v1 and v2: today's encoder must reproduce them byte for byte,
//! and they must decode. `cargo test -p kvwire --test golden_files -- --ignored` rewrites them.

mod common;

use std::path::PathBuf;

use common::{Fixture, golden_frame_options, golden_session};
use kvwire::v1::{self, IndexDtype, V1Options};
use kvwire::v2;
use kvwire::{Decoded, Granularity, QuantMode, ScaleDtype, decode_any};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn golden_blobs() -> Vec<(&'static str, Vec<u8>)> {
    let fx = Fixture::new();
    let layer = fx.layer();
    let v1_int8 = V1Options {
        mode: QuantMode::Int8,
        granularity: Granularity::PerBlock,
        scale_dtype: ScaleDtype::Fp16,
        index_dtype: IndexDtype::Auto,
    };
    let v1_int4 = V1Options {
        mode: QuantMode::Int4,
        granularity: Granularity::PerHead,
        scale_dtype: ScaleDtype::Bf16,
        index_dtype: IndexDtype::U32,
    };
    let mut stream = golden_session().encode().unwrap();
    for opts in golden_frame_options() {
        v2::encode_frame_into(&layer, &opts, &mut stream).unwrap();
    }
    vec![
        (
            "v1_int8_per_block_fp16.bin",
            v1::encode(&layer, &v1_int8).unwrap(),
        ),
        (
            "v1_int4_per_head_bf16_u32.bin",
            v1::encode(&layer, &v1_int4).unwrap(),
        ),
        ("v2_stream.bin", stream),
    ]
}

#[test]
fn encoder_reproduces_the_golden_files() {
    for (name, bytes) in golden_blobs() {
        let path = golden_dir().join(name);
        let want = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(bytes, want, "{name} differs from the committed golden file");
    }
}

#[test]
fn golden_files_decode() {
    for (name, _) in golden_blobs() {
        let bytes = std::fs::read(golden_dir().join(name)).unwrap();
        match decode_any(&bytes).unwrap() {
            Decoded::V1(blob) => {
                assert_eq!(blob.indices, vec![3, 9, 17, 40, 250]);
                assert_eq!(blob.breakdown().total(), bytes.len() as u64);
            }
            Decoded::V2(items) => {
                assert_eq!(items.len(), 1 + golden_frame_options().len());
                assert_eq!(items[0], v2::StreamItem::Session(golden_session()));
            }
        }
    }
}

#[test]
#[ignore = "rewrites tests/golden; run on purpose after a deliberate format change"]
fn regenerate_golden_files() {
    std::fs::create_dir_all(golden_dir()).unwrap();
    for (name, bytes) in golden_blobs() {
        std::fs::write(golden_dir().join(name), bytes).unwrap();
    }
}
