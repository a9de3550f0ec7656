//! Nothing panics on arbitrary bytes: random blobs and mutations of valid ones go through
//! every decoder (and, when they decode, through dequantization).

mod common;

use common::{Fixture, golden_frame_options, golden_session};
use kvwire::v1::{self, IndexDtype, V1Options};
use kvwire::v2::{self, FrameOptions, Payload, StreamDecoder, StreamItem};
use kvwire::{Decoded, Granularity, QuantMode, ScaleDtype, decode_any};
use proptest::prelude::*;

fn exercise(bytes: &[u8]) {
    if let Ok(decoded) = decode_any(bytes) {
        match decoded {
            Decoded::V1(blob) => {
                let _ = blob.dequantize();
            }
            Decoded::V2(items) => {
                for item in items {
                    if let StreamItem::Frame(f) = item {
                        let _ = f.dequantize();
                        let _ = f.indices();
                    }
                }
            }
        }
    }
    let _ = v1::decode(bytes);
    let _ = v2::decode_frame(bytes);
    // The one-pass decode into buffers sized from the unchecked header (small ones only).
    let n = v2::FrameHeader::peek(bytes).map_or(3, |h| h.elements());
    if n <= 1 << 16 {
        let (mut k, mut v) = (vec![0f32; n], vec![0f32; n]);
        let _ = v2::decode_frame_into(bytes, &mut k, &mut v);
        let (mut k, mut v) = (vec![half::f16::ZERO; n], vec![half::f16::ZERO; n]);
        let _ = v2::decode_frame_into_f16(bytes, &mut k, &mut v);
        let _ = v2::decode_frame_into(bytes, &mut vec![0f32; n + 1], &mut vec![0f32; n]);
    }
    let _ = v2::SessionHeader::decode(bytes);
    let mut dec = StreamDecoder::new();
    for chunk in bytes.chunks(7) {
        dec.push(chunk);
        while let Ok(Some(_)) = dec.next_item() {}
    }
    let _ = dec.finish();
}

fn seeds() -> Vec<Vec<u8>> {
    let fx = Fixture::new();
    let layer = fx.layer();
    let mut out = Vec::new();
    for mode in [QuantMode::Int8, QuantMode::Int4] {
        for granularity in [Granularity::PerBlock, Granularity::PerHead] {
            let opts = V1Options {
                mode,
                granularity,
                scale_dtype: ScaleDtype::Fp16,
                index_dtype: IndexDtype::Auto,
            };
            out.push(v1::encode(&layer, &opts).unwrap());
        }
    }
    let mut stream = golden_session().encode().unwrap();
    for opts in golden_frame_options() {
        v2::encode_frame_into(&layer, &opts, &mut stream).unwrap();
        out.push(v2::encode_frame(&layer, &opts).unwrap());
    }
    out.push(stream);
    if cfg!(feature = "entropy") {
        for payload in [Payload::Fp16, Payload::Int8, Payload::Int4] {
            let opts = FrameOptions {
                payload,
                entropy: true,
                ..FrameOptions::default()
            };
            out.push(v2::encode_frame(&layer, &opts).unwrap());
        }
    }
    out
}

/// Recomputes a v2 frame's CRC so mutations reach the parsers behind the checksum.
fn fix_crc(bytes: &mut [u8]) {
    if bytes.len() >= 40 && bytes.starts_with(b"KVW2") {
        let n = bytes.len() - 4;
        let crc = crc32c::crc32c(&bytes[..n]);
        bytes[n..].copy_from_slice(&crc.to_le_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8000, ..ProptestConfig::default() })]
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256), prefix in 0usize..3) {
        let mut b = match prefix { 0 => Vec::new(), 1 => b"KVWIRE01".to_vec(), _ => b"KVW2F\0".to_vec() };
        b.extend_from_slice(&bytes);
        exercise(&b);
    }

    #[test]
    fn mutated_blobs_never_panic(
        which in any::<prop::sample::Index>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..6),
        recrc in any::<bool>(),
    ) {
        let all = seeds();
        let mut b = all[which.index(all.len())].clone();
        for (at, byte, op) in edits {
            if b.is_empty() { break; }
            let i = at.index(b.len());
            match op {
                0 => b[i] = byte,
                1 => b[i] ^= 1 << (byte % 8),
                2 => b.truncate(i),
                _ => b.insert(i, byte),
            }
        }
        if recrc { fix_crc(&mut b); }
        exercise(&b);
    }
}
