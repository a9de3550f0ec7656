//! Arbitrary bytes through every KVWire decoder; whatever decodes is also dequantized.
#![no_main]

use kvwire::v2::StreamItem;
use kvwire::{Decoded, decode_any};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = decode_any(data) {
        match decoded {
            Decoded::V1(blob) => {
                let _ = blob.dequantize();
            }
            Decoded::V2(items) => {
                for item in items {
                    if let StreamItem::Frame(f) = item {
                        let _ = f.dequantize();
                    }
                }
            }
        }
    }
    let _ = kvwire::v1::decode(data);
    let _ = kvwire::v2::decode_frame(data);
    let n = kvwire::v2::FrameHeader::peek(data).map_or(3, |h| h.elements());
    if n <= 1 << 16 {
        let (mut k, mut v) = (vec![0f32; n], vec![0f32; n]);
        let _ = kvwire::v2::decode_frame_into(data, &mut k, &mut v);
    }
    let _ = kvwire::v2::SessionHeader::decode(data);
});
