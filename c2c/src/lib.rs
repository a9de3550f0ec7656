//! Cache-to-Cache math: the fuser projector, layer mapping, the fuse step over KV caches (the
//! shared-prompt layout, and context slots with RoPE moved between the models), token
//! alignment for heterogeneous tokenizer pairs, token selection scores and policies, rate
//! allocation under exact byte caps, checkpoint formats (ours and the released C2C one), and the
//! building blocks of projector training.
//!
//! Tensor code uses candle; selection, alignment and allocation are plain functions over slices.

pub mod align;
pub mod cache;
pub mod checkpoint;
pub mod context;
pub mod error;
mod ffn;
pub mod fuse;
pub mod layer_map;
pub mod layer_policy;
pub mod projector;
pub mod quant;
pub mod rate;
pub mod released;
pub mod rope;
pub mod scores;
pub mod select;
pub mod train;

pub use cache::KvLayer;
pub use error::{C2cError, Result};
pub use fuse::{SharerLayer, fuse, fuse_layer, prompt_positions};
pub use layer_map::{LayerLink, LayerMap};
pub use projector::{GateMode, Projector, ProjectorDims};
