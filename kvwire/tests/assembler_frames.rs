//! The cache assembler holds a round to the frame count its session header announces, as the
//! stream decoder does (`DecodeError::MissingFrames`): regression of issue 18.

mod common;

use common::announced_stream;

#[test]
fn the_assembler_also_wants_every_announced_frame() {
    let (bytes, boundaries) = announced_stream(3, 2);
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
