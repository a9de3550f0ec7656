//! CRC32C of v2 records and frames: the folded carry-less-multiply version where the CPU has it
//! (`crate::simd`, bit-identical by test), else the `crc32c` crate.

/// CRC32C (Castagnoli) of `data`, as `crc32c::crc32c`.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// CRC32C of a message continued by `data`, as `crc32c::crc32c_append`.
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if let Some(crc) = crate::simd::Clmul::get().and_then(|c| c.append(crc, data)) {
        return crc;
    }
    crc32c::crc32c_append(crc, data)
}
