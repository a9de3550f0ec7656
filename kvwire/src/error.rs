//! Typed errors for encoding and decoding. Every decode error names the field and the byte
//! offset where the problem was found, with the sizes involved.

use thiserror::Error;

/// Why a blob, frame or stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The input ended before `field` was complete.
    #[error("truncated {field} at offset {offset}: need {needed} bytes, {available} available")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Offset where the field starts.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input from `offset`.
        available: usize,
    },
    /// The input does not start with any KVWire magic.
    #[error("bad magic at offset {offset}: found {found:02x?}")]
    BadMagic {
        /// Offset of the magic (0 for a whole blob).
        offset: usize,
        /// First bytes found (up to 8).
        found: Vec<u8>,
    },
    /// A KVWire magic of a version this build does not speak.
    #[error("unknown KVWire version at offset {offset}: magic {found:?}")]
    UnknownVersion {
        /// Offset of the magic.
        offset: usize,
        /// The magic as text (lossy).
        found: String,
    },
    /// An enumerated field holds a value that is not defined.
    #[error("invalid {field} at offset {offset}: {value}")]
    InvalidValue {
        /// Field name.
        field: &'static str,
        /// Offset of the field.
        offset: usize,
        /// Value found, as text.
        value: String,
    },
    /// A length or count exceeds its `MAX_*` bound.
    #[error("{field} at offset {offset} is {value}, over the limit {max}")]
    TooLarge {
        /// Field name.
        field: &'static str,
        /// Offset of the field.
        offset: usize,
        /// Value found.
        value: u64,
        /// The bound.
        max: u64,
    },
    /// A declared length disagrees with the one implied by the other fields.
    #[error("{field} at offset {offset}: expected {expected}, found {found}")]
    LengthMismatch {
        /// Field name.
        field: &'static str,
        /// Offset of the field.
        offset: usize,
        /// Length implied by the rest of the header.
        expected: u64,
        /// Length declared or present.
        found: u64,
    },
    /// CRC32C over the record does not match the stored one.
    #[error(
        "checksum mismatch for record at offset {offset}: stored {stored:#010x}, computed {computed:#010x}"
    )]
    Checksum {
        /// Offset of the record.
        offset: usize,
        /// CRC stored in the record.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// The v1 JSON header is not valid or lacks a key.
    #[error("v1 JSON header at offset {offset}: {message}")]
    Json {
        /// Offset of the JSON header.
        offset: usize,
        /// Parser message.
        message: String,
    },
    /// Bytes follow the last section of a blob or frame.
    #[error("{count} trailing bytes at offset {offset}")]
    TrailingBytes {
        /// Offset of the first extra byte.
        offset: usize,
        /// How many extra bytes.
        count: usize,
    },
    /// An entropy-coded payload did not decode to the declared size.
    #[error("entropy payload at offset {offset}: {message}")]
    Entropy {
        /// Offset of the payload section.
        offset: usize,
        /// What went wrong.
        message: &'static str,
    },
    /// A v2 stream ended (at a record boundary) or opened its next round before every frame its
    /// session header announced had arrived.
    #[error(
        "stream truncated at offset {offset}: {received} of the {announced} frames the session header announced arrived"
    )]
    MissingFrames {
        /// Offset where the stream ended or the next session header starts.
        offset: usize,
        /// Frames the session header announced (`frames`).
        announced: u32,
        /// Frames that arrived after it.
        received: u32,
    },
    /// The frame uses the entropy-coded mode but this build lacks the `entropy` feature.
    #[error("frame at offset {offset} is entropy-coded; build kvwire with feature `entropy`")]
    EntropyUnsupported {
        /// Offset of the coding field.
        offset: usize,
    },
}

/// Why a layer could not be encoded.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EncodeError {
    /// A slice length disagrees with the declared shape.
    #[error("{field} has {found} elements, shape needs {expected}")]
    ShapeMismatch {
        /// Which input (`k`, `v`, `indices`, ...).
        field: &'static str,
        /// Element count the shape implies.
        expected: usize,
        /// Element count given.
        found: usize,
    },
    /// A dimension or size is over its `MAX_*` bound.
    #[error("{field} is {value}, over the limit {max}")]
    TooLarge {
        /// Which dimension or size.
        field: &'static str,
        /// Value given.
        value: u64,
        /// The bound.
        max: u64,
    },
    /// A token position does not fit the requested index dtype.
    #[error("index {position} at slot {slot} does not fit {dtype}")]
    IndexOverflow {
        /// Slot in the indices slice.
        slot: usize,
        /// The position.
        position: u32,
        /// The requested dtype name.
        dtype: &'static str,
    },
    /// An input value is NaN or infinite (quantization would be meaningless).
    #[error("{field} holds a non-finite value in quantization group {group}")]
    NonFinite {
        /// `k` or `v`.
        field: &'static str,
        /// Index of the scale group (row for per_block).
        group: usize,
    },
    /// A scale does not fit the scale dtype (fp16 overflows above 65504).
    #[error("{field} scale {scale} of group {group} overflows the scale dtype")]
    ScaleOverflow {
        /// `k` or `v`.
        field: &'static str,
        /// Index of the scale group.
        group: usize,
        /// The f32 scale.
        scale: f32,
    },
    /// Positions given with pre-quantized rows are not in ascending order (the rows must
    /// already be in wire order).
    #[error("position {position} at slot {slot} is below the one before it")]
    NotAscending {
        /// Slot in the positions slice.
        slot: usize,
        /// The position.
        position: u32,
    },
    /// The option combination is not representable in this format.
    #[error("unsupported option: {what}")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
    },
}
