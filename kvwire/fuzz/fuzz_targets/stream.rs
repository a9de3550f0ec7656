//! Arbitrary bytes pushed into a `StreamDecoder` in chunks whose sizes come from the input.
#![no_main]

use kvwire::v2::StreamDecoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, rest)) = data.split_first() else { return };
    let mut dec = StreamDecoder::new();
    for chunk in rest.chunks(usize::from(step).max(1)) {
        dec.push(chunk);
        while let Ok(Some(_)) = dec.next_item() {}
    }
    let _ = dec.finish();
});
