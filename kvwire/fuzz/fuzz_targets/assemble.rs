//! Arbitrary bytes cut into records (by the `record_len` each prefix states) and applied to a
//! `CacheAssembler`, the routine the receiver builds its cache with; then the round is finished.
#![no_main]

use kvwire::CacheAssembler;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut assembler = CacheAssembler::new();
    let mut rest = data;
    while rest.len() >= 12 {
        let len = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]) as usize;
        let (record, tail) = rest.split_at(len.clamp(12, rest.len()));
        if assembler.push_record(record).is_err() {
            return;
        }
        rest = tail;
    }
    if let Ok(cache) = assembler.finish() {
        for layer in 0..cache.layers.len() {
            let _ = cache.gather(layer, &cache.positions);
        }
    }
});
