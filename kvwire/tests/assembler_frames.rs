//! The cache assembler holds a round to the frame count its session header announces, as the
//! stream decoder does (`DecodeError::MissingFrames`): regression of issue 18.

mod common;

use common::Fixture;
use kvwire::v2::{self, FrameOptions, SessionHeader};

fn stream(frames_announced: u32, frames: usize) -> (Vec<u8>, Vec<usize>) {
    let fx = Fixture::new();
    let session = SessionHeader {
        layers: frames as u16,
        kv_heads: fx.shape[1] as u16,
        head_dim: fx.shape[3] as u16,
        tokens: 300,
        round: 1,
        frames: frames_announced,
        ..SessionHeader::default()
    };
    let mut bytes = session.encode().unwrap();
    let mut boundaries = vec![bytes.len()];
    for layer in 0..frames {
        let opts = FrameOptions {
            layer: layer as u16,
            ..FrameOptions::default()
        };
        v2::encode_frame_into(&fx.layer(), &opts, &mut bytes).unwrap();
        boundaries.push(bytes.len());
    }
    (bytes, boundaries)
}

#[test]
fn the_assembler_also_wants_every_announced_frame() {
    let (bytes, boundaries) = stream(3, 2);
    let mut assembler = kvwire::CacheAssembler::new();
    let mut at = 0;
    for &end in &boundaries {
        assembler.push_record(&bytes[at..end]).unwrap();
        at = end;
    }
    assert!(
        matches!(
            assembler.finish(),
            Err(kvwire::AssembleError::MissingFrames {
                got: 2,
                announced: 3
            })
        ),
        "a header announcing 3 frames with 2 layers sent"
    );
}
