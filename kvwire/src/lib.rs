//! KVWire: the KV-cache wire format. Pure and synchronous.
//!
//! - [`v1`]: one blob per layer, byte-exact with the reference (JSON header).
//! - [`v2`]: ours, the default for services: a session header and one CRC32C-checked frame per
//!   (layer, precision group, round) with a fixed 36-byte header, decodable frame by frame
//!   from a byte stream ([`v2::StreamDecoder`]).
//! - [`quant`]: the reference quantize/dequantize arithmetic both versions share.
//! - [`decode_any`]: dispatch on the magic, with a typed error for unknown versions.
//!
//! Every length and count from the wire is bounded by a [`limits`] constant before allocating,
//! and every malformed input is a [`DecodeError`] naming the field and offset.

pub mod breakdown;
pub mod error;
pub mod layer;
pub mod limits;
pub mod npy;
pub mod quant;
mod reader;
pub mod v1;
pub mod v2;
mod version;

pub use breakdown::Breakdown;
pub use error::{DecodeError, EncodeError};
pub use layer::{KvData, LayerKv};
pub use quant::{Granularity, QuantMode, QuantParams, ScaleDtype};
pub use version::{Decoded, Version, decode_any};
