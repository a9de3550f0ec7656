//! The record layer every v2 record shares: the 12-byte prefix (`KVW2` | type | minor | .. |
//! u32 record_len), the record types with the fixed length of each, and the CRC32C trailer.
//! The frame header (`header`) and the session header (`session`) are built on it.

use super::{MAGIC, MINOR};
use crate::error::DecodeError;
use crate::limits::MAX_RECORD_BYTES;
use crate::reader::Reader;

/// Bytes of the fixed frame header (before the body).
pub const FRAME_HEADER_LEN: usize = 36;
/// Bytes after the body: the CRC32C.
pub const RECORD_TRAILER_LEN: usize = 4;
/// Bytes needed to learn a record's type and length.
pub(crate) const RECORD_PREFIX_LEN: usize = 12;
/// Record type byte of a frame.
pub(crate) const TYPE_FRAME: u8 = b'F';
/// Record type byte of a session header.
pub(crate) const TYPE_SESSION: u8 = b'S';
/// Bytes of the session header before the model ids.
pub(crate) const SESSION_FIXED_LEN: usize = 44;

/// The error for a field at `offset` holding a value this version does not accept.
pub(super) fn invalid(field: &'static str, offset: usize, value: impl ToString) -> DecodeError {
    DecodeError::InvalidValue {
        field,
        offset,
        value: value.to_string(),
    }
}

/// Parses the 12-byte record prefix at the start of `buf` (absolute offset `base`): checks the
/// magic, minor and record_len bounds and returns (record type, record_len).
pub(crate) fn read_prefix(buf: &[u8], base: usize) -> Result<(u8, usize), DecodeError> {
    let mut r = Reader::new(buf, base);
    let magic = r.array::<4>("magic")?;
    if &magic != MAGIC {
        return Err(crate::version::magic_error(&magic, base));
    }
    let record_type = r.u8("record_type")?;
    let minor = r.u8("minor")?;
    if minor != MINOR {
        return Err(DecodeError::UnknownVersion {
            offset: base + 5,
            found: format!("KVW2 minor {minor}"),
        });
    }
    r.take(2, "record header")?;
    let len = r.u32("record_len")? as usize;
    if len > MAX_RECORD_BYTES {
        return Err(DecodeError::TooLarge {
            field: "record_len",
            offset: base + 8,
            value: len as u64,
            max: MAX_RECORD_BYTES as u64,
        });
    }
    let min = match record_type {
        TYPE_FRAME => FRAME_HEADER_LEN + RECORD_TRAILER_LEN,
        TYPE_SESSION => SESSION_FIXED_LEN + RECORD_TRAILER_LEN,
        v => return Err(invalid("record_type", base + 4, v)),
    };
    if len < min {
        return Err(DecodeError::LengthMismatch {
            field: "record_len",
            offset: base + 8,
            expected: min as u64,
            found: len as u64,
        });
    }
    Ok((record_type, len))
}

/// Checks that `buf` (starting at stream offset `base`) is exactly one record of `len` bytes
/// whose CRC32C trailer matches, and returns the record without its trailer.
pub(crate) fn checked_record<'a>(
    buf: &'a [u8],
    base: usize,
    len: usize,
    field: &'static str,
) -> Result<&'a [u8], DecodeError> {
    let (body, stored) = record_parts(buf, base, len, field)?;
    checksum_matches(base, stored, crate::checksum::crc32c(body))?;
    Ok(body)
}

/// Checks that `buf` is exactly one record of `len` bytes; returns the record without its
/// trailer and the CRC32C the trailer holds (not yet compared).
pub(crate) fn record_parts<'a>(
    buf: &'a [u8],
    base: usize,
    len: usize,
    field: &'static str,
) -> Result<(&'a [u8], u32), DecodeError> {
    if buf.len() < len {
        return Err(DecodeError::Truncated {
            field,
            offset: base,
            needed: len,
            available: buf.len(),
        });
    }
    if buf.len() > len {
        return Err(DecodeError::TrailingBytes {
            offset: base + len,
            count: buf.len() - len,
        });
    }
    let (body, trailer) = buf.split_at(len - RECORD_TRAILER_LEN);
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    Ok((body, stored))
}

/// The error for a record at `base` whose trailer does not hold the CRC32C computed.
pub(crate) fn checksum_matches(base: usize, stored: u32, computed: u32) -> Result<(), DecodeError> {
    if stored != computed {
        return Err(DecodeError::Checksum {
            offset: base,
            stored,
            computed,
        });
    }
    Ok(())
}
