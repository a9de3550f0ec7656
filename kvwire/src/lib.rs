//! KVWire: the KV-cache wire format. Pure and synchronous.
//!
//! - [`v1`]: one blob per layer, byte-exact with the reference (JSON header).
//! - [`v2`]: ours, the default for services: a session header and one CRC32C-checked frame per
//!   (layer, precision group, round) with a fixed 36-byte header, decodable frame by frame
//!   from a byte stream ([`v2::StreamDecoder`]); [`v2::decode_frame_ref`] checks one frame and
//!   dequantizes it without copying the payload; [`v2::decode_frame_into`] does both in one pass
//!   over the payload, straight into caller buffers.
//! - [`assemble`]: the host cache a transfer builds and the one routine (receiver and sharer
//!   alike) that applies base and residual frames to it.
//! - [`quant`]: the reference quantize/dequantize arithmetic both versions share; on x86-64
//!   CPUs with AVX2 + F16C its row kernels run bit-identical vector versions chosen at run
//!   time (the crate's only `unsafe`, confined to one private module).
//! - [`decode_any`]: dispatch on the magic, with a typed error for unknown versions.
//!
//! Every length and count from the wire is bounded by a [`limits`] constant before allocating,
//! and every malformed input is a [`DecodeError`] naming the field and offset.
//!
//! ```
//! use kvwire::v2::{self, FrameOptions, Payload, SessionHeader, StreamDecoder, StreamItem};
//! use kvwire::{KvData, LayerKv};
//!
//! // One layer, [B=1, H=2, T=3, D=4], rows at positions 9, 2, 5 (re-sorted on the wire).
//! let k: Vec<f32> = (0..24).map(|i| i as f32 / 10.0).collect();
//! let layer = LayerKv { k: KvData::F32(&k), v: KvData::F32(&k), shape: [1, 2, 3, 4], indices: &[9, 2, 5] };
//! let session = SessionHeader { layers: 1, kv_heads: 2, head_dim: 4, tokens: 10, frames: 1, ..Default::default() };
//! let mut wire = session.encode()?;
//! v2::encode_frame_into(&layer, &FrameOptions { payload: Payload::Int8, ..FrameOptions::default() }, &mut wire)?;
//!
//! let mut rx = StreamDecoder::new();
//! rx.push(&wire);
//! assert!(matches!(rx.next_item()?, Some(StreamItem::Session(_))));
//! let Some(StreamItem::Frame(frame)) = rx.next_item()? else { unreachable!() };
//! assert_eq!(&*frame.indices(), &[2, 5, 9]);
//! let (k_hat, _v_hat) = frame.dequantize();
//! assert!((k_hat[4] - k[8]).abs() < 0.01); // output row 1 (position 5) is input row 2
//! assert_eq!(frame.breakdown().total(), (wire.len() - session.encoded_len()) as u64);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod assemble;
pub mod breakdown;
pub mod checksum;
pub mod error;
pub mod layer;
pub mod limits;
pub mod npy;
pub mod quant;
mod reader;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod simd;
pub mod v1;
pub mod v2;
mod version;

pub use assemble::{AssembleError, CacheAssembler, HostCache, HostLayer};
pub use breakdown::Breakdown;
pub use error::{DecodeError, EncodeError};
pub use layer::{KvData, LayerKv};
pub use quant::{Granularity, QuantMode, QuantParams, ScaleDtype};
pub use version::{Decoded, Version, decode_any};
