//! The fixed 36-byte v2 frame header (the record prefix and trailer are in `record`).

use super::record::{FRAME_HEADER_LEN, RECORD_TRAILER_LEN, TYPE_FRAME, invalid, read_prefix};
use super::{FrameKind, MAGIC, MINOR, Payload};
use crate::error::DecodeError;
use crate::layer::checked_elements;
use crate::limits::{MAX_TENSOR_ELEMENTS, MAX_TOKENS, max_entropy_decoded_len};
use crate::quant::{Granularity, ScaleDtype};
use crate::reader::Reader;

/// Offset of the coding byte in a frame header.
#[cfg(feature = "entropy")]
pub(crate) const CODING_OFFSET: usize = 17;
/// How the T positions of a frame are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexEncoding {
    /// Positions `start..start + T`; no index bytes.
    Contiguous {
        /// First position.
        start: u32,
    },
    /// T little-endian u16.
    U16,
    /// T little-endian u32.
    U32,
}

impl IndexEncoding {
    /// Bytes of the index section for `t` positions.
    pub fn bytes(self, t: usize) -> usize {
        match self {
            IndexEncoding::Contiguous { .. } => 0,
            IndexEncoding::U16 => 2 * t,
            IndexEncoding::U32 => 4 * t,
        }
    }

    /// The cheapest encoding of sorted positions.
    pub fn for_sorted(positions: &[u32]) -> Self {
        let start = positions.first().copied().unwrap_or(0);
        let contiguous = positions
            .iter()
            .enumerate()
            .all(|(i, &p)| u64::from(p) == u64::from(start) + i as u64);
        if contiguous {
            IndexEncoding::Contiguous { start }
        } else if positions.last().is_some_and(|&p| p > u32::from(u16::MAX)) {
            IndexEncoding::U32
        } else {
            IndexEncoding::U16
        }
    }

    /// Name for inspection.
    pub fn name(self) -> &'static str {
        match self {
            IndexEncoding::Contiguous { .. } => "contiguous",
            IndexEncoding::U16 => "uint16",
            IndexEncoding::U32 => "uint32",
        }
    }
}

/// The decoded fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// Sharer layer.
    pub layer: u16,
    /// Precision group within the layer.
    pub group: u8,
    /// Refinement round.
    pub round: u8,
    /// Base or residual.
    pub kind: FrameKind,
    /// fp16, int8 or int4.
    pub payload: Payload,
    /// Scale sharing (`PerBlock` for fp16, unused).
    pub granularity: Granularity,
    /// Scale storage (`Fp16` for fp16 payloads, unused).
    pub scale_dtype: ScaleDtype,
    /// How positions are stored.
    pub index: IndexEncoding,
    /// Whether the payload is entropy-coded.
    pub entropy: bool,
    /// `[B, H, T, D]` of K and of V.
    pub shape: [usize; 4],
    /// Length of the whole record, header to CRC.
    pub record_len: usize,
}

impl FrameHeader {
    /// Elements of one tensor.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Scale count of one tensor (0 for fp16).
    pub fn scale_count(&self) -> usize {
        match self.payload {
            Payload::Fp16 => 0,
            _ => self.granularity.scale_count(self.shape),
        }
    }

    /// Unentropy-coded payload bytes of one tensor.
    pub fn tensor_payload_bytes(&self) -> usize {
        self.payload.tensor_bytes(self.elements())
    }

    /// Writes the 36 header bytes.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        let [b, h, t, d] = self.shape;
        let (index_code, start) = match self.index {
            IndexEncoding::Contiguous { start } => (0u8, start),
            IndexEncoding::U16 => (1, 0),
            IndexEncoding::U32 => (2, 0),
        };
        let (gran, sdt) = match self.payload {
            Payload::Fp16 => (0, 0),
            _ => (gran_code(self.granularity), sdt_code(self.scale_dtype)),
        };
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[TYPE_FRAME, MINOR]);
        out.extend_from_slice(&self.layer.to_le_bytes());
        out.extend_from_slice(&(self.record_len as u32).to_le_bytes());
        let kind = match self.kind {
            FrameKind::Base => 0,
            FrameKind::Residual => 1,
        };
        out.extend_from_slice(&[
            kind,
            self.payload.code(),
            gran,
            sdt,
            index_code,
            u8::from(self.entropy),
            self.group,
            self.round,
        ]);
        for dim in [b, h, d] {
            out.extend_from_slice(&(dim as u16).to_le_bytes());
        }
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(t as u32).to_le_bytes());
        out.extend_from_slice(&start.to_le_bytes());
    }

    /// The fixed header of the frame at the start of `buf`, each field checked but not yet the
    /// CRC32C or the body: what sizes the buffers for [`super::decode_frame_into`] (`B*H*T*D`
    /// values each). Only the 36 header bytes are needed.
    ///
    /// What it returns is bounded as the decoder bounds it: `B*H*T*D` is at most
    /// `limits::MAX_TENSOR_ELEMENTS`, and the header's `record_len` must hold the sections the
    /// shape implies: exactly, for a raw payload; for an entropy-coded one, a coded payload of
    /// at least 4 bytes whose decoded size is within `limits::max_entropy_decoded_len`. So a frame of `record_len` bytes never
    /// sizes buffers beyond what its decode would accept (a 40-byte frame claims no values).
    pub fn peek(buf: &[u8]) -> Result<FrameHeader, DecodeError> {
        let header = Self::read(buf, 0)?;
        header.check_record_len(0)?;
        Ok(header)
    }

    /// Checks that `record_len` holds the sections the other fields imply, as decoding the
    /// body would (the frame starts at absolute offset `base`).
    fn check_record_len(&self, base: usize) -> Result<(), DecodeError> {
        let t = self.shape[2] as u64;
        let index = match self.index {
            IndexEncoding::Contiguous { .. } => 0,
            IndexEncoding::U16 => 2 * t,
            IndexEncoding::U32 => 4 * t,
        };
        let fixed =
            (FRAME_HEADER_LEN + RECORD_TRAILER_LEN) as u64 + index + 4 * self.scale_count() as u64;
        let raw = 2 * self.tensor_payload_bytes() as u64;
        let record_len = self.record_len as u64;
        let mismatch = |expected: u64| DecodeError::LengthMismatch {
            field: "record_len",
            offset: base + 8,
            expected,
            found: record_len,
        };
        if !self.entropy {
            return if record_len == fixed + raw {
                Ok(())
            } else {
                Err(mismatch(fixed + raw))
            };
        }
        // An entropy-coded payload: `u32 k_coded_len`, then the coded bytes.
        let Some(stored) = record_len.checked_sub(fixed).filter(|&s| s >= 4) else {
            return Err(mismatch(fixed + 4));
        };
        let limit = max_entropy_decoded_len(usize::try_from(stored).unwrap_or(usize::MAX)) as u64;
        if raw > limit {
            return Err(DecodeError::TooLarge {
                field: "entropy-decoded payload",
                offset: base + 8,
                value: raw,
                max: limit,
            });
        }
        Ok(())
    }

    /// Parses the fixed header of a frame that starts at absolute offset `base`.
    pub(crate) fn read(buf: &[u8], base: usize) -> Result<FrameHeader, DecodeError> {
        let (record_type, record_len) = read_prefix(buf, base)?;
        if record_type != TYPE_FRAME {
            return Err(invalid("record_type", base + 4, record_type));
        }
        let mut r = Reader::new(buf, base);
        r.take(6, "record prefix")?;
        let layer = r.u16("layer")?;
        r.u32("record_len")?;
        let at = r.offset();
        let kind = match r.u8("kind")? {
            0 => FrameKind::Base,
            1 => FrameKind::Residual,
            v => return Err(invalid("kind", at, v)),
        };
        let payload_code = r.u8("payload")?;
        let payload =
            Payload::from_code(payload_code).ok_or(invalid("payload", at + 1, payload_code))?;
        let gran_byte = r.u8("granularity")?;
        let granularity = *Granularity::ALL.get(usize::from(gran_byte)).ok_or(invalid(
            "granularity",
            at + 2,
            gran_byte,
        ))?;
        let sdt_byte = r.u8("scale_dtype")?;
        let scale_dtype = match sdt_byte {
            0 => ScaleDtype::Fp16,
            1 => ScaleDtype::Bf16,
            v => return Err(invalid("scale_dtype", at + 3, v)),
        };
        if payload == Payload::Fp16 && (gran_byte != 0 || sdt_byte != 0) {
            return Err(invalid(
                "granularity/scale_dtype of fp16 frame",
                at + 2,
                gran_byte | sdt_byte,
            ));
        }
        let index_code = r.u8("index_mode")?;
        let entropy = match r.u8("coding")? {
            0 => false,
            1 => true,
            v => return Err(invalid("coding", at + 5, v)),
        };
        let group = r.u8("group")?;
        let round = r.u8("round")?;
        let b = usize::from(r.u16("batch")?);
        let h = usize::from(r.u16("heads")?);
        let d = usize::from(r.u16("head_dim")?);
        let reserved_at = r.offset();
        let reserved = r.u16("reserved")?;
        if reserved != 0 {
            return Err(DecodeError::InvalidValue {
                field: "reserved",
                offset: reserved_at,
                value: reserved.to_string(),
            });
        }
        let t_at = r.offset();
        let t = r.u32("tokens")? as usize;
        if t > MAX_TOKENS {
            return Err(DecodeError::TooLarge {
                field: "tokens",
                offset: t_at,
                value: t as u64,
                max: MAX_TOKENS as u64,
            });
        }
        let shape = [b, h, t, d];
        if checked_elements(shape).is_none() {
            return Err(DecodeError::TooLarge {
                field: "elements (B*H*T*D)",
                offset: base + 20,
                // Saturating: 65535^3 * 2^24 overflows u64.
                value: shape
                    .iter()
                    .fold(1u64, |acc, &x| acc.saturating_mul(x as u64)),
                max: MAX_TENSOR_ELEMENTS as u64,
            });
        }
        let start = r.u32("index_start")?;
        let index = match index_code {
            0 => IndexEncoding::Contiguous { start },
            1 => IndexEncoding::U16,
            2 => IndexEncoding::U32,
            v => return Err(invalid("index_mode", at + 4, v)),
        };
        if index_code != 0 && start != 0 {
            return Err(invalid("index_start (non-contiguous)", base + 32, start));
        }
        if let IndexEncoding::Contiguous { start } = index
            && u64::from(start) + t as u64 > u64::from(u32::MAX) + 1
        {
            return Err(invalid("index_start", base + 32, start));
        }
        Ok(FrameHeader {
            layer,
            group,
            round,
            kind,
            payload,
            granularity,
            scale_dtype,
            index,
            entropy,
            shape,
            record_len,
        })
    }
}

fn gran_code(g: Granularity) -> u8 {
    Granularity::ALL.iter().position(|&x| x == g).unwrap_or(0) as u8
}

fn sdt_code(s: ScaleDtype) -> u8 {
    match s {
        ScaleDtype::Fp16 => 0,
        ScaleDtype::Bf16 => 1,
    }
}
