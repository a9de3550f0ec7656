//! Version negotiation through the magic: `KVWIRE01` is v1, `KVW2` is v2.

use crate::error::DecodeError;
use crate::v1::{self, V1Blob};
use crate::v2::{self, StreamItem};

/// A KVWire version this build speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// `KVWIRE01`, the reference JSON-header blob.
    V1,
    /// `KVW2`, session headers and frames.
    V2,
}

impl TryFrom<&[u8]> for Version {
    type Error = DecodeError;

    /// Reads the magic at the start of `bytes`.
    fn try_from(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.starts_with(v1::MAGIC) {
            Ok(Version::V1)
        } else if bytes.starts_with(v2::MAGIC) {
            Ok(Version::V2)
        } else if v1::MAGIC.starts_with(bytes) || v2::MAGIC.starts_with(bytes) {
            Err(DecodeError::Truncated {
                field: "magic",
                offset: 0,
                needed: 4,
                available: bytes.len(),
            })
        } else {
            Err(magic_error(&bytes[..bytes.len().min(8)], 0))
        }
    }
}

/// The error for bytes that are not a magic we speak: `UnknownVersion` for a KVWire-looking
/// magic of another version (`KVWIRE..`, `KVW<digit>`), `BadMagic` otherwise (including too few
/// bytes to tell).
pub(crate) fn magic_error(found: &[u8], offset: usize) -> DecodeError {
    let kvwire_like = found.starts_with(b"KVWIRE")
        || (found.len() >= 4 && found.starts_with(b"KVW") && found[3].is_ascii_digit());
    if kvwire_like {
        DecodeError::UnknownVersion {
            offset,
            found: String::from_utf8_lossy(found).into_owned(),
        }
    } else {
        DecodeError::BadMagic {
            offset,
            found: found.to_vec(),
        }
    }
}

/// Anything [`decode_any`] can return.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// One v1 blob.
    V1(Box<V1Blob>),
    /// The records of a v2 stream (one frame, one session header, or a whole stream).
    V2(Vec<StreamItem>),
}

/// Decodes a v1 blob or a v2 stream, dispatching on the magic.
pub fn decode_any(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    match Version::try_from(bytes)? {
        Version::V1 => v1::decode(bytes).map(|b| Decoded::V1(Box::new(b))),
        Version::V2 => v2::decode_stream(bytes).map(Decoded::V2),
    }
}
