//! The fuse seam: from the sharer rows a transfer delivered (a [`HostCache`]) to the
//! receiver's prompt cache on the receiver model's device, in one trait.
//!
//! - [`IdentityFuser`]: same model on both sides; the rows are uploaded as they are (what
//!   selection and quantization alone do to accuracy).
//! - [`C2cFuser`]: a trained C2C fuser, for the layout its checkpoint was trained in. Shared
//!   layout: the prompt text is aligned across the two tokenizers, the sharer rows are uploaded
//!   once and placed at the receiver positions they cover, the receiver prefills its own prompt
//!   cache, and the projectors fuse the two. Context layout (a checkpoint with `context.json`):
//!   every passage row goes into its context slot over the filler cache (`crate::context`), as
//!   `fuser eval --layout context` does.
//!
//! The prompt layout ([`PromptLayout`]) says where the receiver's own tokens go. Shared prompt:
//! the returned cache holds the prompt positions before its last token, which the receiver then
//! runs itself. Context: the cache holds the passage positions (identity: the sharer's rows as
//! they are; C2C: the fused slots) and the receiver runs its whole prompt after them, from the
//! passage length on.
//! Either way the [`FusedCache`] says which receiver tokens to run and at what position; each
//! host value crosses to the device once per round.

use std::fmt;
use std::path::Path;
use std::time::Instant;

use c2c::KvLayer;
use candle_core::DType;
use kvwire::HostCache;
use model_runtime::{KvCache, Model, Tokenizer};

use crate::context::{ContextSettings, SETTINGS_FILE, filler_cache, rope_spec};
use crate::error::{FuserError, Result};
use crate::fused::{HardGate, fuse_prompt, receiver_prompt_cache, rows_from_transfer};
use crate::gating::Gating;
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

/// A trained C2C fuser with the sharer's tokenizer. A shared-layout checkpoint projects the
/// sharer rows that arrived into the receiver's cache space and fuses them into its own prompt
/// cache (receiver positions whose sharer token did not arrive keep the receiver's K/V); a
/// context-layout checkpoint (one with `context.json`) fuses every passage row into its slot.
pub struct C2cFuser {
    fuser: c2c::checkpoint::Fuser,
    sharer_tokenizer: Tokenizer,
    /// Set for a context-layout checkpoint.
    context: Option<ContextServing>,
    source: String,
}

/// What a context-layout checkpoint serves with, prepared once at load.
struct ContextServing {
    settings: ContextSettings,
    /// The end-of-training gating (`gating.json`), as `fuser eval` uses it.
    gating: Gating,
    /// The receiver's filler cache of `max_passage_tokens` slots, in f32 (the projectors'
    /// dtype); a passage of `S` tokens uses its first `S` slots.
    filler: KvCache,
}

impl fmt::Debug for C2cFuser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("C2cFuser")
            .field("source", &self.source)
            .field("layout", &self.layout())
            .finish_non_exhaustive()
    }
}

impl C2cFuser {
    /// Loads a fuser folder (`fuser.safetensors` + `fuser.json`) and the sharer's tokenizer
    /// (`tokenizer.json` or a GGUF file), checking the fuser fits `receiver`. A folder with
    /// `context.json` is a context-layout checkpoint: its settings and `gating.json` are read
    /// and the filler cache of its longest passage is computed on `receiver` once, here.
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
        let context = if fuser_dir.join(SETTINGS_FILE).exists() {
            Some(ContextServing::load(fuser_dir, receiver)?)
        } else {
            None
        };
        Ok(Self {
            fuser,
            sharer_tokenizer,
            context,
            source: fuser_dir.display().to_string(),
        })
    }

    /// The prompt layout the checkpoint was trained for (the only one it fuses).
    pub fn layout(&self) -> PromptLayout {
        if self.context.is_some() {
            PromptLayout::Context
        } else {
            PromptLayout::Shared
        }
    }

    /// Refuses a request in a layout the checkpoint was not trained for.
    fn check_layout(&self, requested: PromptLayout) -> Result<()> {
        let trained = self.layout();
        if requested == trained {
            return Ok(());
        }
        let (name, hint) = match trained {
            PromptLayout::Shared => (
                "shared",
                "serve a checkpoint of `fuser train --layout context` (it has context.json) for \
                 the context layout",
            ),
            PromptLayout::Context => (
                "context",
                "a context-layout checkpoint fuses a passage only the sharer read; serve a \
                 shared-layout checkpoint for the shared prompt",
            ),
        };
        Err(FuserError::LayoutNotTrained {
            checkpoint: self.source.clone(),
            trained: name,
            requested: layout_name(requested),
            hint,
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
        self.check_layout(receiver.layout)?;
        self.check_sharer(sharer)?;
        if let Some(context) = &self.context {
            return self.fuse_passage(context, sharer, receiver.model);
        }
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

impl C2cFuser {
    /// Context layout: the passage rows `0..S` (all of them) into the first `S` slots of the
    /// filler cache, as `fuser eval --layout context` builds them; the receiver runs its whole
    /// prompt from position `S`.
    fn fuse_passage(
        &self,
        context: &ContextServing,
        sharer: &HostCache,
        model: &Model,
    ) -> Result<FusedCache> {
        let s = sharer.prompt_tokens;
        let max = context.settings.max_passage_tokens;
        if s == 0 {
            return Err(FuserError::input(
                "sharer cache",
                "an empty passage (0 tokens)",
            ));
        }
        if s > max {
            return Err(FuserError::PassageTooLong { tokens: s, max });
        }
        check_every_row(&sharer.positions, s)?;
        let start = Instant::now();
        let passage = upload(sharer, model.device(), DType::F32)?;
        let project_ms = ms_since(start);

        let start = Instant::now();
        let ropes = c2c::context::RopePair {
            sharer: context.settings.sharer_rope,
            receiver: rope_spec(model.config()),
        };
        let mut gates = context.gating.evaluation(model.device());
        let fused = crate::context::fuse_passage(
            &self.fuser,
            &passage,
            &context.filler,
            gates.as_mut(),
            &ropes,
        )?;
        let cache = to_dtype(fused, model.dtype())?;
        let fuse_ms = ms_since(start);
        Ok(FusedCache {
            cache,
            run_from: 0,
            next_position: s,
            timings: FuseTimings {
                project_ms,
                fuse_ms,
                receiver_prefill_ms: 0.0,
            },
        })
    }
}

impl ContextServing {
    /// The settings and gating of the checkpoint `dir`, and the filler cache on `receiver`.
    fn load(dir: &Path, receiver: &Model) -> Result<Self> {
        let settings = ContextSettings::read(dir)?;
        let gating = Gating::read(dir)?;
        let filler = filler_cache(receiver, settings.filler, settings.max_passage_tokens)?;
        Ok(Self {
            settings,
            gating,
            filler: to_dtype(filler, DType::F32)?,
        })
    }
}

/// Checks the held positions (strictly ascending) are exactly `0..s`.
fn check_every_row(positions: &[u32], s: usize) -> Result<()> {
    let complete = positions.len() == s
        && positions
            .iter()
            .enumerate()
            .all(|(i, &p)| usize::try_from(p).is_ok_and(|p| p == i));
    if complete {
        return Ok(());
    }
    let held: std::collections::HashSet<u32> = positions.iter().copied().collect();
    let missing: Vec<usize> = (0..s)
        .filter(|&p| !u32::try_from(p).is_ok_and(|p| held.contains(&p)))
        .collect();
    if missing.is_empty() {
        // Every row is held, but so is one past the passage: not a cache of this passage.
        return Err(FuserError::input(
            "sharer cache",
            format!("{} rows held for a passage of {s} tokens", positions.len()),
        ));
    }
    Err(FuserError::PartialPassage {
        prompt_tokens: s,
        missing: missing.len(),
        first_missing: missing
            .into_iter()
            .take(FuserError::MISSING_SHOWN)
            .collect(),
    })
}

/// A layout's name in errors.
fn layout_name(layout: PromptLayout) -> &'static str {
    match layout {
        PromptLayout::Shared => "shared",
        PromptLayout::Context => "context",
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
