//! The fused receiver: C2C over real models.
//!
//! The c2c crate holds the math (projector, fuse step, alignment rules, checkpoints); this crate
//! runs it against [`model_runtime::Model`]s: a prompt aligned across the two tokenizers
//! ([`prompt`]), the sharer's cache and the receiver's fused prompt cache ([`fused`]), rank
//! scoring of answer texts continued from that cache, the training loss and optimiser of the
//! projectors ([`train`]), quantization-aware sharer caches ([`qat`]), and the fuse seam the
//! receiver service calls ([`seam`]: identity or C2C, from a transferred host cache to the
//! receiver's prompt cache on its device), and the context layout ([`context`]: a passage only
//! the sharer read, fused into receiver slots before the question). The `fuser` binary (crate `fuser-cli`) trains fusers
//! on the real data sets and evaluates them.

pub mod context;
pub mod error;
pub mod fused;
pub mod gating;
pub mod prompt;
pub mod qat;
pub mod seam;
mod sidecar;
pub mod slot_distill;
pub mod train;

pub use error::{FuserError, Result};
pub use fused::{FusedPrompt, fuse_prompt, receiver_prompt_cache, score_from_cache, sharer_cache};
pub use prompt::{AlignedPrompt, align_text, proportional_map};
pub use seam::{
    C2cFuser, CacheFuser, FuseTimings, FusedCache, IdentityFuser, PromptLayout, ReceiverContext,
};
