//! Decoder runtime on candle with an explicit KV cache: Qwen2, Qwen3, Llama (SmolLM2) and
//! Mistral, loaded from GGUF files, Hugging Face folders, or seeded random weights.
//!
//! The cache is a value ([`KvCache`]): [`Model::prefill`] returns every layer's post-RoPE
//! K and V as `[B, H_kv, T, D]`, and [`Model::forward`] takes a cache plus an offset, so a
//! sharer can export its cache and a receiver can run on a fused one.
//!
//! Multi-token passes run in query chunks of [`Model::prefill_chunk_tokens`] (default
//! [`DEFAULT_PREFILL_CHUNK_TOKENS`]), so prefill memory grows linearly with the prompt.
//!
//! Every forward pass checks the current thread's [`CancelToken`] (installed with
//! [`CancelToken::scope`]) before each layer and stops with [`RuntimeError::Cancelled`].

pub mod cache;
pub mod cancel;
pub mod chat;
mod chunked;
pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
mod layer;
pub mod load;
pub mod model;
pub mod score;
pub mod tokenizer;
mod weights;

pub use cache::{KvCache, KvPart, LayerKv};
pub use cancel::CancelToken;
pub use chunked::DEFAULT_PREFILL_CHUNK_TOKENS;
pub use config::{Arch, ModelConfig, RopeStyle};
pub use error::{Result, RuntimeError};
pub use generate::{ForcedChoice, GenerateParams, Generation, StopReason, forced_choice};
pub use load::{LoadOptions, WeightsInfo, WeightsSource};
pub use model::{Logits, Model};
pub use score::ContinuationScore;
pub use weights::WeightsMode;

/// Re-exported so callers build tensors and devices with the same candle version.
pub use candle_core;
pub use chat::{ChatTemplate, Message, Role};
pub use tokenizer::{TokenSpan, Tokenizer};
