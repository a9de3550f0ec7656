//! The fuse seam: from the sharer rows a transfer delivered (a [`HostCache`]) to the
//! receiver's prompt cache on the receiver model's device, in one trait.
//!
//! - [`IdentityFuser`]: same model on both sides; the rows are uploaded as they are (what
//!   selection and quantization alone do to accuracy).
//! - [`C2cFuser`]: a trained C2C fuser; the prompt text is aligned across the two tokenizers,
//!   the sharer rows are uploaded once and placed at the receiver positions they cover, the
//!   receiver prefills its own prompt cache, and the projectors fuse the two.
//!
//! The prompt layout ([`PromptLayout`]) says where the receiver's own tokens go. Shared prompt:
//! the returned cache holds the prompt positions before its last token, which the receiver then
//! runs itself. Context (identity only): the cache holds the sharer's passage rows at their own
//! positions and the receiver runs its whole prompt after them, from the passage length on.
//! Either way the [`FusedCache`] says which receiver tokens to run and at what position; each
//! host value crosses to the device once per round.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use c2c::KvLayer;
use candle_core::DType;
use kvwire::HostCache;
use model_runtime::{KvCache, Model, Tokenizer};

use crate::error::{FuserError, Result};
use crate::fused::{HardGate, fuse_prompt, receiver_prompt_cache, rows_from_transfer};
use crate::prompt::align_text;

/// Who has read what: how the sharer's prompt and the receiver's prompt relate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PromptLayout {
    /// Both read the same prompt; the transfer covers its positions before the last token,
    /// which the receiver runs itself.
    #[default]
    Shared,
    /// The sharer read a passage the receiver has not: the transfer covers the passage
    /// (`prompt_tokens` of its session header), every position a candidate, and the receiver's
    /// whole prompt follows it, from position `prompt_tokens` on. Nothing of the receiver's
    /// prompt is compared with the passage.
    Context,
}

/// What a fuser needs of the receiver for one prompt.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverContext<'a> {
    /// The receiver's model.
    pub model: &'a Model,
    /// Its identity (the model spec), compared with the sharer's by the identity fuser.
    pub model_id: &'a str,
    /// Its tokenizer.
    pub tokenizer: &'a Tokenizer,
    /// The prompt text both sides ran (C2C aligns it across tokenizers).
    pub text: &'a str,
    /// The receiver's prompt token ids.
    pub ids: &'a [u32],
    /// How the sharer's prompt relates to `ids`.
    pub layout: PromptLayout,
}

/// Where a fuse call spent its time, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FuseTimings {
    /// Putting the sharer rows on the device at the receiver's positions: the upload and, for
    /// C2C, the token alignment.
    pub project_ms: f64,
    /// The fuser proper: C2C's projectors and gated add (nothing for identity).
    pub fuse_ms: f64,
    /// The receiver's own prefill of its prompt (C2C fuses into it; identity has none).
    pub receiver_prefill_ms: f64,
}

/// The receiver's prompt cache and what it cost.
#[derive(Debug, Clone)]
pub struct FusedCache {
    /// Cache of the positions before the receiver's own tokens (shared layout: the prompt
    /// before its last token; context layout: the passage rows that arrived), on the model's
    /// device in its dtype.
    pub cache: KvCache,
    /// Index in the receiver's prompt ids of the first token the receiver runs itself on
    /// `cache` (shared layout: the last one, `n - 1`; context layout: 0, the whole prompt).
    pub run_from: usize,
    /// Absolute position of that token (shared layout: `n - 1`; context layout: the passage
    /// length). Its later tokens follow at consecutive positions.
    pub next_position: usize,
    /// Stage times.
    pub timings: FuseTimings,
}

/// Turns a transferred sharer cache into the receiver's prompt cache.
pub trait CacheFuser: Send + Sync + fmt::Debug {
    /// Name for logs, errors and manifests.
    fn name(&self) -> &'static str;

    /// The receiver's prompt cache built from the sharer's rows.
    fn fuse(&self, sharer: &HostCache, receiver: &ReceiverContext<'_>) -> Result<FusedCache>;
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// Same model on both sides: the dequantized sharer rows become the receiver's cache as they
/// are, at their own positions (rows not sent leave gaps, which RoPE positions tolerate).
#[derive(Debug, Clone, Copy, Default)]
pub struct IdentityFuser;

impl CacheFuser for IdentityFuser {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn fuse(&self, sharer: &HostCache, receiver: &ReceiverContext<'_>) -> Result<FusedCache> {
        if sharer.sharer_model != receiver.model_id {
            return Err(FuserError::input(
                "pair",
                format!(
                    "the identity fuser needs the same model on both sides: sharer {:?}, receiver {:?}",
                    sharer.sharer_model, receiver.model_id
                ),
            ));
        }
        check_shape(sharer, receiver.model, "receiver")?;
        let (run_from, next_position) = match receiver.layout {
            PromptLayout::Shared => {
                let last = receiver.ids.len().saturating_sub(1);
                (last, last)
            }
            PromptLayout::Context => (0, sharer.prompt_tokens),
        };
        if receiver.layout == PromptLayout::Shared && sharer.prompt_tokens != receiver.ids.len() {
            return Err(FuserError::input(
                "prompt",
                format!(
                    "sharer prompt has {} tokens, receiver prompt {}: not the same prompt",
                    sharer.prompt_tokens,
                    receiver.ids.len()
                ),
            ));
        }
        let model = receiver.model;
        let start = Instant::now();
        let cache = upload(sharer, model.device(), model.dtype())?;
        let project_ms = ms_since(start);
        Ok(FusedCache {
            cache,
            run_from,
            next_position,
            timings: FuseTimings {
                project_ms,
                ..FuseTimings::default()
            },
        })
    }
}

/// Checks the sharer cache has the layer count and KV shape of `model`.
fn check_shape(sharer: &HostCache, model: &Model, whose: &str) -> Result<()> {
    let c = model.config();
    if sharer.layers.len() != c.n_layers
        || sharer.heads != c.n_kv_heads
        || sharer.head_dim != c.head_dim
    {
        return Err(FuserError::input(
            "sharer cache",
            format!(
                "{} layers x {} heads x {} dims does not fit the {whose} ({} x {} x {})",
                sharer.layers.len(),
                sharer.heads,
                sharer.head_dim,
                c.n_layers,
                c.n_kv_heads,
                c.head_dim
            ),
        ));
    }
    Ok(())
}

fn upload(sharer: &HostCache, device: &candle_core::Device, dtype: DType) -> Result<KvCache> {
    Ok(KvCache::from_host(
        &sharer.layers,
        sharer.heads,
        sharer.head_dim,
        device,
        dtype,
    )?)
}

/// A trained C2C fuser with the sharer's tokenizer: projects the sharer rows that arrived into
/// the receiver's cache space and fuses them into its own prompt cache (receiver positions
/// whose sharer token did not arrive keep the receiver's K/V).
pub struct C2cFuser {
    fuser: c2c::checkpoint::Fuser,
    sharer_tokenizer: Tokenizer,
    source: String,
}

impl fmt::Debug for C2cFuser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("C2cFuser")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl C2cFuser {
    /// Loads a fuser folder (`fuser.safetensors` + `fuser.json`) and the sharer's tokenizer
    /// (`tokenizer.json` or a GGUF file), checking the fuser fits `receiver`.
    pub fn load(fuser_dir: &Path, sharer_tokenizer: &Path, receiver: &Model) -> Result<Self> {
        let fuser = c2c::checkpoint::load(
            &fuser_dir.join("fuser.safetensors"),
            &fuser_dir.join("fuser.json"),
            DType::F32,
            receiver.device(),
        )?;
        let c = receiver.config();
        let dims = fuser.config.projectors.first().copied();
        if fuser.config.receiver_layers != c.n_layers
            || dims.is_some_and(|d| {
                d.receiver_heads != c.n_kv_heads || d.receiver_head_dim != c.head_dim
            })
        {
            return Err(FuserError::input(
                "fuser",
                format!(
                    "fuser for {} receiver layers ({dims:?}) does not fit this receiver ({} layers, {} x {})",
                    fuser.config.receiver_layers, c.n_layers, c.n_kv_heads, c.head_dim
                ),
            ));
        }
        let is_gguf = sharer_tokenizer.extension().is_some_and(|e| e == "gguf");
        let sharer_tokenizer = if is_gguf {
            Tokenizer::from_gguf_file(sharer_tokenizer)
        } else {
            Tokenizer::from_file(sharer_tokenizer)
        }?;
        Ok(Self {
            fuser,
            sharer_tokenizer,
            source: fuser_dir.display().to_string(),
        })
    }

    /// Checks the sharer cache has the layers and KV shape the fuser was trained on.
    fn check_sharer(&self, sharer: &HostCache) -> Result<()> {
        let cfg = &self.fuser.config;
        if sharer.layers.len() != cfg.sharer_layers {
            return Err(FuserError::input(
                "sharer cache",
                format!(
                    "{} layers, the fuser expects {}",
                    sharer.layers.len(),
                    cfg.sharer_layers
                ),
            ));
        }
        match cfg.projectors.first() {
            Some(d) if d.sharer_heads != sharer.heads || d.sharer_head_dim != sharer.head_dim => {
                Err(FuserError::input(
                    "sharer cache",
                    format!(
                        "{} x {}, the fuser expects {} x {}",
                        sharer.heads, sharer.head_dim, d.sharer_heads, d.sharer_head_dim
                    ),
                ))
            }
            _ => Ok(()),
        }
    }
}

impl CacheFuser for C2cFuser {
    fn name(&self) -> &'static str {
        "c2c"
    }

    fn fuse(&self, sharer: &HostCache, receiver: &ReceiverContext<'_>) -> Result<FusedCache> {
        if receiver.layout != PromptLayout::Shared {
            return Err(FuserError::input(
                "layout",
                "the C2C fuser fuses a prompt both models read (trained on the shared prompt); \
                 the context layout is not supported by C2C yet",
            ));
        }
        self.check_sharer(sharer)?;
        let model = receiver.model;
        let start = Instant::now();
        let aligned = align_text(receiver.tokenizer, &self.sharer_tokenizer, receiver.text)?;
        if aligned.receiver != receiver.ids {
            return Err(FuserError::input(
                "prompt",
                "the receiver prompt is not the aligned text",
            ));
        }
        if aligned.sharer.len() != sharer.prompt_tokens {
            return Err(FuserError::input(
                "prompt",
                format!(
                    "sharer prompt has {} tokens, the sharer tokenizer gives {}: not the same \
                     prompt or not the same tokenizer",
                    sharer.prompt_tokens,
                    aligned.sharer.len()
                ),
            ));
        }
        let uploaded = upload(sharer, model.device(), DType::F32)?;
        let layers = uploaded
            .layers
            .into_iter()
            .map(|l| Ok(Some(KvLayer::new(l.k, l.v)?)))
            .collect::<Result<Vec<_>>>()?;
        let count = receiver.ids.len() - 1;
        let rows = rows_from_transfer(&layers, &sharer.positions, &aligned.map, count)?;
        let project_ms = ms_since(start);

        let start = Instant::now();
        let own = receiver_prompt_cache(model, receiver.ids)?;
        let receiver_prefill_ms = ms_since(start);

        let start = Instant::now();
        let fused = fuse_prompt(&self.fuser, &rows, &own, &mut HardGate)?;
        let cache = to_dtype(fused, model.dtype())?;
        let fuse_ms = ms_since(start);
        Ok(FusedCache {
            cache,
            run_from: count,
            next_position: count,
            timings: FuseTimings {
                project_ms,
                fuse_ms,
                receiver_prefill_ms,
            },
        })
    }
}

/// The cache in the model's dtype (the projectors run in f32).
fn to_dtype(cache: KvCache, dtype: DType) -> Result<KvCache> {
    let layers = cache
        .layers
        .into_iter()
        .map(|l| {
            Ok(model_runtime::LayerKv {
                k: l.k.to_dtype(dtype)?,
                v: l.v.to_dtype(dtype)?,
            })
        })
        .collect::<std::result::Result<Vec<_>, candle_core::Error>>()
        .map_err(|source| FuserError::Tensor {
            context: "casting the fused cache to the model's dtype",
            source,
        })?;
    Ok(KvCache { layers })
}

#[cfg(test)]
mod tests;
