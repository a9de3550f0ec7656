//! The v2 session header: what the frames that follow describe.

use super::record::{
    RECORD_TRAILER_LEN, SESSION_FIXED_LEN, TYPE_SESSION, checked_record, read_prefix,
};
use super::{MAGIC, MINOR};
use crate::error::{DecodeError, EncodeError};
use crate::limits::MAX_MODEL_ID_LEN;
use crate::reader::Reader;

/// Opens a stream of frames: which models, which shapes, which round.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SessionHeader {
    /// Opaque session id chosen by the sharer.
    pub session_id: [u8; 16],
    /// Sharer model id (UTF-8, at most [`MAX_MODEL_ID_LEN`] bytes).
    pub sharer_model: String,
    /// Receiver model id (UTF-8, at most [`MAX_MODEL_ID_LEN`] bytes).
    pub receiver_model: String,
    /// Sharer layer count.
    pub layers: u16,
    /// Sharer KV heads.
    pub kv_heads: u16,
    /// Sharer head dimension.
    pub head_dim: u16,
    /// Tokens of the sharer prompt.
    pub tokens: u32,
    /// Refinement round these frames belong to.
    pub round: u8,
    /// Frames that follow in this round (0 when not known up front).
    pub frames: u32,
}

impl SessionHeader {
    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        SESSION_FIXED_LEN + self.sharer_model.len() + self.receiver_model.len() + RECORD_TRAILER_LEN
    }

    /// Encodes the record (with its CRC32C).
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        for (field, id) in [
            ("sharer_model", &self.sharer_model),
            ("receiver_model", &self.receiver_model),
        ] {
            if id.len() > MAX_MODEL_ID_LEN {
                return Err(EncodeError::TooLarge {
                    field,
                    value: id.len() as u64,
                    max: MAX_MODEL_ID_LEN as u64,
                });
            }
        }
        let len = self.encoded_len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[TYPE_SESSION, MINOR, self.round, 0]);
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&self.session_id);
        for v in [self.layers, self.kv_heads, self.head_dim] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&[
            self.sharer_model.len() as u8,
            self.receiver_model.len() as u8,
        ]);
        out.extend_from_slice(&self.tokens.to_le_bytes());
        out.extend_from_slice(&self.frames.to_le_bytes());
        out.extend_from_slice(self.sharer_model.as_bytes());
        out.extend_from_slice(self.receiver_model.as_bytes());
        let crc = crate::checksum::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes a buffer holding exactly one session header.
    pub fn decode(buf: &[u8]) -> Result<SessionHeader, DecodeError> {
        Self::decode_at(buf, 0)
    }

    /// Decodes exactly one session header found at absolute offset `base`.
    pub fn decode_at(buf: &[u8], base: usize) -> Result<SessionHeader, DecodeError> {
        let (record_type, len) = read_prefix(buf, base)?;
        if record_type != TYPE_SESSION {
            return Err(DecodeError::InvalidValue {
                field: "record_type",
                offset: base + 4,
                value: record_type.to_string(),
            });
        }
        let body = checked_record(buf, base, len, "session header")?;
        let mut r = Reader::new(body, base);
        r.take(6, "record prefix")?;
        let round = r.u8("round")?;
        let reserved_at = r.offset();
        if r.u8("reserved")? != 0 {
            return Err(DecodeError::InvalidValue {
                field: "reserved",
                offset: reserved_at,
                value: "non-zero".into(),
            });
        }
        r.u32("record_len")?;
        let session_id = r.array::<16>("session_id")?;
        let layers = r.u16("layers")?;
        let kv_heads = r.u16("kv_heads")?;
        let head_dim = r.u16("head_dim")?;
        let ids_at = r.offset();
        let sharer_len = usize::from(r.u8("sharer_model_len")?);
        let receiver_len = usize::from(r.u8("receiver_model_len")?);
        for (field, n, at) in [
            ("sharer_model_len", sharer_len, ids_at),
            ("receiver_model_len", receiver_len, ids_at + 1),
        ] {
            if n > MAX_MODEL_ID_LEN {
                return Err(DecodeError::TooLarge {
                    field,
                    offset: at,
                    value: n as u64,
                    max: MAX_MODEL_ID_LEN as u64,
                });
            }
        }
        let tokens = r.u32("tokens")?;
        let frames = r.u32("frames")?;
        let expected = SESSION_FIXED_LEN + sharer_len + receiver_len + RECORD_TRAILER_LEN;
        if expected != len {
            return Err(DecodeError::LengthMismatch {
                field: "record_len",
                offset: base + 8,
                expected: expected as u64,
                found: len as u64,
            });
        }
        let mut text = |n: usize, field: &'static str| -> Result<String, DecodeError> {
            let at = r.offset();
            String::from_utf8(r.take(n, field)?.to_vec()).map_err(|_| DecodeError::InvalidValue {
                field,
                offset: at,
                value: "not UTF-8".into(),
            })
        };
        let sharer_model = text(sharer_len, "sharer_model")?;
        let receiver_model = text(receiver_len, "receiver_model")?;
        Ok(SessionHeader {
            session_id,
            sharer_model,
            receiver_model,
            layers,
            kv_heads,
            head_dim,
            tokens,
            round,
            frames,
        })
    }
}
