//! Malformed input is refused with the right typed error: truncated, oversized, corrupted,
//! trailing, unknown version.

mod common;

use common::{Fixture, golden_session};
use kvwire::v1::{self, V1Options};
use kvwire::v2::{self, FrameOptions, SessionHeader, StreamDecoder};
use kvwire::{DecodeError, Version, decode_any};

fn v1_blob() -> Vec<u8> {
    v1::encode(&Fixture::new().layer(), &V1Options::default()).unwrap()
}

fn v2_frame() -> Vec<u8> {
    v2::encode_frame(&Fixture::new().layer(), &FrameOptions::default()).unwrap()
}

#[test]
fn every_truncation_of_a_v1_blob_is_truncated() {
    let blob = v1_blob();
    for len in 0..blob.len() {
        match v1::decode(&blob[..len]) {
            Err(DecodeError::Truncated {
                offset,
                needed,
                available,
                ..
            }) => {
                assert!(
                    available < needed && offset <= len,
                    "len {len}: {offset} {needed} {available}"
                );
            }
            other => panic!("len {len}: {other:?}"),
        }
    }
}

#[test]
fn every_truncation_of_a_v2_frame_is_truncated() {
    let frame = v2_frame();
    for len in 0..frame.len() {
        let err = v2::decode_frame(&frame[..len]).unwrap_err();
        assert!(
            matches!(err, DecodeError::Truncated { .. }),
            "len {len}: {err:?}"
        );
    }
}

#[test]
fn truncated_stream_is_reported_by_finish() {
    let frame = v2_frame();
    let mut dec = StreamDecoder::new();
    dec.push(&frame[..frame.len() - 1]);
    assert_eq!(dec.next_item(), Ok(None));
    assert!(matches!(
        dec.finish(),
        Err(DecodeError::Truncated {
            field: "record",
            offset: 0,
            ..
        })
    ));
}

#[test]
fn corrupted_v2_bytes_fail_the_checksum() {
    let frame = v2_frame();
    // Any byte after the fields the header parser validates: indices, scales, payload, CRC.
    for at in [40, frame.len() / 2, frame.len() - 5, frame.len() - 1] {
        let mut bad = frame.clone();
        bad[at] ^= 0x10;
        assert!(
            matches!(
                v2::decode_frame(&bad),
                Err(DecodeError::Checksum { offset: 0, .. })
            ),
            "byte {at}"
        );
    }
    let mut session = golden_session().encode().unwrap();
    let last = session.len() - 6;
    session[last] ^= 1;
    assert!(matches!(
        SessionHeader::decode(&session),
        Err(DecodeError::Checksum { .. })
    ));
}

#[test]
fn oversized_lengths_are_refused_before_allocating() {
    let mut blob = v1_blob();
    blob[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        v1::decode(&blob),
        Err(DecodeError::TooLarge {
            field: "json_len",
            offset: 8,
            ..
        })
    ));

    let mut frame = v2_frame();
    frame[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        v2::decode_frame(&frame),
        Err(DecodeError::TooLarge {
            field: "record_len",
            offset: 8,
            ..
        })
    ));

    let mut frame = v2_frame();
    frame[28..32].copy_from_slice(&u32::MAX.to_le_bytes()); // tokens
    assert!(matches!(
        v2::decode_frame(&frame),
        Err(DecodeError::TooLarge {
            field: "tokens",
            offset: 28,
            ..
        })
    ));

    let huge = r#"{"version":"kvwire_v1","quant_mode":"int8","index_dtype":"uint16","scale_dtype":"fp16","scale_granularity":"per_tensor","k_shape":[65535,65535,65535,65535],"v_shape":[1,1,1,1],"indices_len":1,"sections":{"indices":2,"k_quant":1,"v_quant":1,"scales":4},"scale_meta":{"scale_dtype":"fp16","scale_k_shape":[1,1,1,1],"scale_v_shape":[1,1,1,1]}}"#;
    let mut blob = b"KVWIRE01".to_vec();
    blob.extend_from_slice(&(huge.len() as u32).to_le_bytes());
    blob.extend_from_slice(huge.as_bytes());
    assert!(matches!(
        v1::decode(&blob),
        Err(DecodeError::TooLarge {
            field: "k_shape",
            offset: 12,
            ..
        })
    ));

    let long = SessionHeader {
        sharer_model: "x".repeat(200),
        ..golden_session()
    };
    assert!(matches!(
        long.encode(),
        Err(kvwire::EncodeError::TooLarge {
            field: "sharer_model",
            ..
        })
    ));
}

#[test]
fn section_lengths_must_match_the_shapes() {
    let blob = v1_blob();
    let text = String::from_utf8_lossy(&blob[12..]).into_owned();
    let json_len = u32::from_le_bytes(blob[8..12].try_into().unwrap()) as usize;
    let json = &text[..json_len];
    let lied = json.replace("\"scales\":40", "\"scales\":42");
    assert_ne!(lied, json);
    let mut bad = blob[..12].to_vec();
    bad.extend_from_slice(lied.as_bytes());
    bad.extend_from_slice(&blob[12 + json_len..]);
    assert!(matches!(
        v1::decode(&bad),
        Err(DecodeError::LengthMismatch {
            field: "sections.scales",
            expected: 40,
            found: 42,
            ..
        })
    ));
}

#[test]
fn trailing_bytes_are_refused() {
    let mut blob = v1_blob();
    let len = blob.len();
    blob.push(0);
    assert_eq!(
        v1::decode(&blob),
        Err(DecodeError::TrailingBytes {
            offset: len,
            count: 1
        })
    );
    let mut frame = v2_frame();
    let len = frame.len();
    frame.extend_from_slice(&[1, 2]);
    assert_eq!(
        v2::decode_frame(&frame).unwrap_err(),
        DecodeError::TrailingBytes {
            offset: len,
            count: 2
        }
    );
}

#[test]
fn versions_are_negotiated_through_the_magic() {
    assert_eq!(Version::try_from(&v1_blob()[..]), Ok(Version::V1));
    assert_eq!(Version::try_from(&v2_frame()[..]), Ok(Version::V2));
    let mut v3 = v2_frame();
    v3[3] = b'3';
    assert!(matches!(
        decode_any(&v3),
        Err(DecodeError::UnknownVersion { offset: 0, .. })
    ));
    let mut v1_next = v1_blob();
    v1_next[7] = b'2';
    assert!(matches!(
        decode_any(&v1_next),
        Err(DecodeError::UnknownVersion { .. })
    ));
    let mut minor = v2_frame();
    minor[5] = 1;
    assert!(matches!(
        decode_any(&minor),
        Err(DecodeError::UnknownVersion { offset: 5, .. })
    ));
    assert!(matches!(
        decode_any(b"GGUF\x03\x00\x00\x00"),
        Err(DecodeError::BadMagic { offset: 0, .. })
    ));
    assert!(matches!(
        decode_any(b"KVW"),
        Err(DecodeError::Truncated { field: "magic", .. })
    ));
}

#[test]
fn stream_errors_carry_absolute_offsets_and_poison_the_decoder() {
    let session = golden_session().encode().unwrap();
    let mut stream = session.clone();
    let mut frame = v2_frame();
    frame[20] = 0xFF; // corrupt batch: the CRC catches it
    stream.extend_from_slice(&frame);
    let mut dec = StreamDecoder::new();
    dec.push(&stream);
    assert!(matches!(
        dec.next_item(),
        Ok(Some(v2::StreamItem::Session(_)))
    ));
    let err = dec.next_item().unwrap_err();
    assert!(
        matches!(err, DecodeError::Checksum { offset, .. } if offset == session.len()),
        "{err:?}"
    );
    assert_eq!(dec.next_item().unwrap_err(), err);
}
