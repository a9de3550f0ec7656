//! KVWire v1: one blob per layer, byte-exact with the reference implementation.
//!
//! `KVWIRE01` | u32 LE json_len | compact JSON header | indices | k_quant | v_quant | scales.
//! See `FORMAT.md` for the byte table.

mod decode;
mod encode;
mod json;

pub use decode::{V1Blob, V1BlobRef, decode, decode_ref};
pub use encode::{encode, encode_into};

use crate::breakdown::Breakdown;
use crate::quant::{Granularity, QuantMode, ScaleDtype};

/// The eight-byte v1 magic.
pub const MAGIC: &[u8; 8] = b"KVWIRE01";

/// Index width requested by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IndexDtype {
    /// uint16 when every position fits, else uint32.
    #[default]
    Auto,
    /// uint16; a position above 65535 is an error (never a silent wrap).
    U16,
    /// uint32.
    U32,
}

/// Index width on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexWidth {
    /// 2 bytes per position.
    U16,
    /// 4 bytes per position.
    U32,
}

impl IndexWidth {
    /// Bytes per position.
    pub fn bytes(self) -> usize {
        match self {
            IndexWidth::U16 => 2,
            IndexWidth::U32 => 4,
        }
    }

    /// Reference name (`uint16` / `uint32`).
    pub fn name(self) -> &'static str {
        match self {
            IndexWidth::U16 => "uint16",
            IndexWidth::U32 => "uint32",
        }
    }

    /// The width `request` resolves to for positions whose largest is `max_position`.
    pub fn resolve(request: IndexDtype, max_position: u32) -> Option<IndexWidth> {
        match request {
            IndexDtype::U32 => Some(IndexWidth::U32),
            IndexDtype::U16 => (max_position <= u32::from(u16::MAX)).then_some(IndexWidth::U16),
            IndexDtype::Auto if max_position <= u32::from(u16::MAX) => Some(IndexWidth::U16),
            IndexDtype::Auto => Some(IndexWidth::U32),
        }
    }
}

/// Encoding options of a v1 blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct V1Options {
    /// int8 or int4.
    pub mode: QuantMode,
    /// Scale sharing.
    pub granularity: Granularity,
    /// Scale storage.
    pub scale_dtype: ScaleDtype,
    /// Index width request.
    pub index_dtype: IndexDtype,
}

impl Default for V1Options {
    fn default() -> Self {
        Self {
            mode: QuantMode::Int8,
            granularity: Granularity::PerBlock,
            scale_dtype: ScaleDtype::Fp16,
            index_dtype: IndexDtype::Auto,
        }
    }
}

/// Byte lengths of the four v1 body sections (the JSON `sections` object).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct V1Sections {
    /// Index bytes.
    pub indices: usize,
    /// Quantized K bytes.
    pub k_quant: usize,
    /// Quantized V bytes.
    pub v_quant: usize,
    /// All K then all V scales.
    pub scales: usize,
}

/// The decoded v1 JSON header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Header {
    /// int8 or int4.
    pub mode: QuantMode,
    /// Index width.
    pub index_width: IndexWidth,
    /// Scale storage.
    pub scale_dtype: ScaleDtype,
    /// Scale sharing.
    pub granularity: Granularity,
    /// `[B, H, T, D]` of K.
    pub k_shape: [usize; 4],
    /// `[B, H, T, D]` of V.
    pub v_shape: [usize; 4],
    /// Number of positions.
    pub indices_len: usize,
    /// Section lengths.
    pub sections: V1Sections,
    /// Length of the JSON text.
    pub json_len: usize,
}

impl V1Header {
    /// Section lengths implied by the shapes and options.
    pub fn expected_sections(&self) -> V1Sections {
        sections_for(
            self.mode,
            self.granularity,
            self.index_width,
            self.k_shape,
            self.v_shape,
            self.indices_len,
        )
    }

    /// Bytes by section for the whole blob.
    pub fn breakdown(&self) -> Breakdown {
        Breakdown {
            header: (MAGIC.len() + 4 + self.json_len) as u64,
            indices: self.sections.indices as u64,
            payload: (self.sections.k_quant + self.sections.v_quant) as u64,
            scales: self.sections.scales as u64,
        }
    }
}

/// Section lengths for the given options and shapes. Shapes must be within the limits.
pub(crate) fn sections_for(
    mode: QuantMode,
    granularity: Granularity,
    width: IndexWidth,
    k_shape: [usize; 4],
    v_shape: [usize; 4],
    indices_len: usize,
) -> V1Sections {
    V1Sections {
        indices: indices_len * width.bytes(),
        k_quant: mode.payload_bytes(k_shape.iter().product()),
        v_quant: mode.payload_bytes(v_shape.iter().product()),
        scales: 2 * (granularity.scale_count(k_shape) + granularity.scale_count(v_shape)),
    }
}

/// Predicted blob length (formula, for the drift report): JSON text length is computed exactly.
pub fn estimate_bytes(opts: &V1Options, shape: [usize; 4], max_position: u32) -> u64 {
    let width = IndexWidth::resolve(opts.index_dtype, max_position).unwrap_or(IndexWidth::U32);
    let sections = sections_for(opts.mode, opts.granularity, width, shape, shape, shape[2]);
    let header = V1Header {
        mode: opts.mode,
        index_width: width,
        scale_dtype: opts.scale_dtype,
        granularity: opts.granularity,
        k_shape: shape,
        v_shape: shape,
        indices_len: shape[2],
        sections,
        json_len: 0,
    };
    let json_len = json::write_header(&header).len();
    (MAGIC.len() + 4 + json_len) as u64
        + (sections.indices + sections.k_quant + sections.v_quant + sections.scales) as u64
}
