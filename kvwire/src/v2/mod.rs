//! KVWire v2: ours, the default for services.
//!
//! A stream is a sequence of records, each starting `KVW2` | type | minor | .. | u32 record_len
//! and ending with a CRC32C of everything before it: one [`SessionHeader`] then one frame per
//! (layer, precision group, round). Frames have a fixed 36-byte header, so a receiver can
//! decode layer 0 while later layers are still on the wire ([`StreamDecoder`]). Byte tables are
//! in `FORMAT.md`.

mod decode;
#[cfg(feature = "entropy")]
mod entropy;
mod frame;
mod header;
mod prequantized;
mod record;
mod session;
mod stream;

pub use decode::{
    Frame, FrameRef, decode_frame, decode_frame_at, decode_frame_into, decode_frame_into_f16,
    decode_frame_ref, decode_frame_ref_at,
};
pub use frame::{encode_frame, encode_frame_into};
pub use header::{FrameHeader, IndexEncoding};
pub use prequantized::{
    PrequantizedLayer, QuantizedTensor, encode_prequantized_frame, encode_prequantized_frame_into,
};
pub use record::{FRAME_HEADER_LEN, RECORD_TRAILER_LEN};
pub use session::SessionHeader;
pub use stream::{StreamDecoder, StreamItem, decode_stream};

use crate::quant::{Granularity, QuantMode, ScaleDtype};

/// The four-byte magic that starts every v2 record.
pub const MAGIC: &[u8; 4] = b"KVW2";
/// Minor revision this build writes and accepts.
pub const MINOR: u8 = 0;

/// How the values of a frame are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Payload {
    /// IEEE half floats, no scales (unquantized transfer).
    Fp16,
    /// Symmetric int8 with scales.
    Int8,
    /// Symmetric int4 (two per byte) with scales.
    Int4,
}

impl Payload {
    /// Wire code.
    pub fn code(self) -> u8 {
        match self {
            Payload::Fp16 => 0,
            Payload::Int8 => 1,
            Payload::Int4 => 2,
        }
    }

    /// From a wire code.
    pub fn from_code(c: u8) -> Option<Self> {
        [Payload::Fp16, Payload::Int8, Payload::Int4]
            .into_iter()
            .find(|p| p.code() == c)
    }

    /// The quantization mode, or `None` for fp16.
    pub fn quant_mode(self) -> Option<QuantMode> {
        match self {
            Payload::Fp16 => None,
            Payload::Int8 => Some(QuantMode::Int8),
            Payload::Int4 => Some(QuantMode::Int4),
        }
    }

    /// Payload bytes for `n` elements of one tensor.
    pub fn tensor_bytes(self, n: usize) -> usize {
        match self.quant_mode() {
            None => 2 * n,
            Some(m) => m.payload_bytes(n),
        }
    }

    /// Name (`fp16`, `int8`, `int4`).
    pub fn name(self) -> &'static str {
        match self {
            Payload::Fp16 => "fp16",
            Payload::Int8 => "int8",
            Payload::Int4 => "int4",
        }
    }
}

/// Whether a frame carries values or a correction to values the receiver already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FrameKind {
    /// Values to store.
    #[default]
    Base,
    /// A precision upgrade: the receiver adds the dequantized residual to what it holds for the
    /// same (layer, positions).
    Residual,
}

/// Options of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameOptions {
    /// fp16, int8 or int4.
    pub payload: Payload,
    /// Scale sharing (ignored for fp16, written as 0).
    pub granularity: Granularity,
    /// Scale storage (ignored for fp16).
    pub scale_dtype: ScaleDtype,
    /// Sharer layer.
    pub layer: u16,
    /// Precision group within the layer.
    pub group: u8,
    /// Refinement round (1-based by convention, 0 allowed).
    pub round: u8,
    /// Base values or residual.
    pub kind: FrameKind,
    /// Entropy-code the payload when that makes it smaller (needs feature `entropy`); the
    /// frame header's `entropy` says whether it was.
    pub entropy: bool,
}

impl Default for FrameOptions {
    fn default() -> Self {
        Self {
            payload: Payload::Int8,
            granularity: Granularity::PerBlock,
            scale_dtype: ScaleDtype::Fp16,
            layer: 0,
            group: 0,
            round: 1,
            kind: FrameKind::Base,
            entropy: false,
        }
    }
}

/// Predicted frame length (formula, for the drift report).
///
/// `n_indices == 0` means contiguous positions (no index bytes); otherwise uint16 when
/// `max_position <= 65535`, else uint32. With `entropy` the payload is estimated at its raw
/// size, an upper bound (the coded form is kept only when it is smaller).
pub fn estimate_frame_bytes(
    opts: &FrameOptions,
    shape: [usize; 4],
    n_indices: usize,
    max_position: u32,
) -> u64 {
    let n: u64 = shape.iter().map(|&d| d as u64).product();
    let idx = if n_indices == 0 {
        0
    } else if max_position <= u32::from(u16::MAX) {
        2 * n_indices as u64
    } else {
        4 * n_indices as u64
    };
    let scales = match opts.payload {
        Payload::Fp16 => 0,
        _ => 4 * opts.granularity.scale_count(shape) as u64,
    };
    let per_tensor = match opts.payload {
        Payload::Fp16 => 2 * n,
        Payload::Int8 => n,
        Payload::Int4 => n.div_ceil(2),
    };
    (FRAME_HEADER_LEN + RECORD_TRAILER_LEN) as u64 + idx + scales + 2 * per_tensor
}
