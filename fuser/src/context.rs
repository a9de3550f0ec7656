//! The context layout over real models: the sharer read a passage, the receiver only has the
//! question (docs/FUSER.md, "Context layout").
//!
//! For a passage the sharer read as `S` tokens (positions `0..S`), the receiver gets `S`
//! **context slots** at positions `0..S`, one per sharer token. A slot's base K/V are the
//! receiver's own cache of a neutral [`Filler`] (a run of `S` copies of one token through the
//! receiver, or zeros); every linked receiver layer gets `r + g w P([s ; r])` in its slots with
//! the RoPE handling of `c2c::context`. The question then runs at positions `S..` on the slot
//! cache, and answers are scored (or the loss taken) from there.

use c2c::GateMode;
use c2c::checkpoint::Fuser;
use c2c::context::{RopePair, SlotRows, fuse_slots};
use c2c::rope::{RopePairing, RopeSpec};
use candle_core::{DType, Tensor};
use model_runtime::{ContinuationScore, KvCache, LayerKv, Model, ModelConfig, RopeStyle};
use serde::{Deserialize, Serialize};

use crate::error::{Ctx, FuserError, Result};
use crate::fused::GateSource;

/// The RoPE of a model, as `c2c` needs it.
pub fn rope_spec(config: &ModelConfig) -> RopeSpec {
    RopeSpec {
        theta: config.rope_theta,
        head_dim: config.head_dim,
        pairing: match config.rope_style {
            RopeStyle::Half => RopePairing::Half,
            RopeStyle::Interleaved => RopePairing::Interleaved,
        },
    }
}

/// Both models' RoPE.
pub fn rope_pair(receiver: &Model, sharer: &Model) -> RopePair {
    RopePair {
        sharer: rope_spec(sharer.config()),
        receiver: rope_spec(receiver.config()),
    }
}

/// The receiver's own input in the context slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filler {
    /// `S` copies of this receiver token, run through the receiver at positions `0..S`.
    Token(u32),
    /// All-zero K and V.
    Zero,
}

/// File name of a context-layout checkpoint's settings, beside `fuser.safetensors`.
pub const SETTINGS_FILE: &str = "context.json";

/// What a context-layout checkpoint needs at evaluation and serving ([`SETTINGS_FILE`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextSettings {
    /// The slot filler used in training.
    pub filler: Filler,
    /// Longest passage kept, in sharer tokens.
    pub max_passage_tokens: usize,
    /// The sharer's RoPE: its K rows are un-rotated with it before projection (a serving
    /// receiver has no sharer model to read it from).
    pub sharer_rope: RopeSpec,
}

impl ContextSettings {
    /// Reads the settings of the checkpoint folder `dir`.
    pub fn read(dir: &std::path::Path) -> Result<Self> {
        crate::sidecar::read_json(
            &dir.join(SETTINGS_FILE),
            "context settings",
            " (a fuser trained with --layout context has one)",
        )
    }
}

/// The slot cache of `len` slots: the base K/V the fuser writes into. A token filler's cache
/// is causal, so the slots of a shorter passage are a prefix of a longer one's: compute it once
/// for the longest passage and cut it with [`slot_base`].
pub fn filler_cache(receiver: &Model, filler: Filler, len: usize) -> Result<KvCache> {
    if len == 0 {
        return Err(FuserError::input("context slots", "no slots"));
    }
    match filler {
        Filler::Token(id) => {
            let mut cache = KvCache::new();
            receiver.forward_hidden(&receiver.ids_tensor(&vec![id; len])?, 0, &mut cache)?;
            Ok(cache)
        }
        Filler::Zero => {
            let c = receiver.config();
            let zeros = || {
                Tensor::zeros(
                    (1, c.n_kv_heads, len, c.head_dim),
                    receiver.dtype(),
                    receiver.device(),
                )
                .ctx("zero filler")
            };
            let layers = (0..c.n_layers)
                .map(|_| {
                    Ok(LayerKv {
                        k: zeros()?,
                        v: zeros()?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(KvCache { layers })
        }
    }
}

/// The first `len` slots of a filler cache (contiguous copies: the fuse step gathers rows).
pub fn slot_base(filler: &KvCache, len: usize) -> Result<KvCache> {
    if len == 0 || len > filler.seq_len() {
        return Err(FuserError::input(
            "context slots",
            format!("{len} slots from a filler of {}", filler.seq_len()),
        ));
    }
    let layers = filler
        .truncate(len)?
        .layers
        .into_iter()
        .map(|l| {
            Ok(LayerKv {
                k: l.k.contiguous().ctx("slot K")?,
                v: l.v.contiguous().ctx("slot V")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(KvCache { layers })
}

/// One slot per sharer token: every sharer layer's rows `0..S` into slots `0..S`.
pub fn passage_rows(sharer: &KvCache) -> Result<Vec<Option<SlotRows>>> {
    sharer
        .layers
        .iter()
        .map(|l| {
            Ok(Some(SlotRows::dense(c2c::KvLayer::new(
                l.k.clone(),
                l.v.clone(),
            )?)?))
        })
        .collect()
}

/// Fuses sharer rows into the slot cache `base`; unlinked layers and absent sharer layers keep
/// the filler.
pub fn fuse_context(
    fuser: &Fuser,
    rows: &[Option<SlotRows>],
    base: &KvCache,
    gates: &mut dyn GateSource,
    ropes: &RopePair,
) -> Result<KvCache> {
    let map = &fuser.config.layer_map;
    map.validate(base.layers.len(), rows.len(), fuser.projectors.len())?;
    let mut layers = base.layers.clone();
    for link in map.links() {
        let Some(rows) = &rows[link.sharer] else {
            continue;
        };
        let own = &base.layers[link.receiver];
        let own = c2c::KvLayer::new(own.k.clone(), own.v.clone())?;
        let (b, h, _, _) = own.dims()?;
        let gate: GateMode = gates.gate(link.receiver, b * rows.slots.len(), h)?;
        let fused = fuse_slots(&fuser.projectors[link.projector], rows, &own, &gate, ropes)?;
        layers[link.receiver] = LayerKv {
            k: fused.k,
            v: fused.v,
        };
    }
    Ok(KvCache { layers })
}

/// A whole passage's sharer cache fused into the first `S` slots of `filler` (one slot per
/// sharer token, `S` = the passage length): what training, `fuser eval` and the serving
/// receiver all build.
pub fn fuse_passage(
    fuser: &Fuser,
    sharer: &KvCache,
    filler: &KvCache,
    gates: &mut dyn GateSource,
    ropes: &RopePair,
) -> Result<KvCache> {
    let base = slot_base(filler, sharer.seq_len())?;
    fuse_context(fuser, &passage_rows(sharer)?, &base, gates, ropes)
}

/// Runs the question at positions `S..` on the slot cache (`S = slots.seq_len()`; an empty
/// cache is the receiver alone) and scores every continuation.
pub fn score_after_slots(
    receiver: &Model,
    slots: &KvCache,
    question: &[u32],
    continuations: &[Vec<u32>],
) -> Result<Vec<ContinuationScore>> {
    if question.is_empty() {
        return Err(FuserError::input("question", "no tokens"));
    }
    let s = slots.seq_len();
    let mut cache = slots.clone();
    let logits = receiver.forward(&receiver.ids_tensor(question)?, s, &mut cache)?;
    Ok(receiver.score_continuations(&logits, &cache, s + question.len(), continuations)?)
}

/// Mean cross-entropy of `response` after `question`, both run at positions `S..` on the fused
/// slot cache (`receiver` with autograd, so gradients reach the projectors through attention).
pub fn context_loss(
    receiver: &Model,
    slots: &KvCache,
    question: &[u32],
    response: &[u32],
) -> Result<Tensor> {
    let (q, m) = (question.len(), response.len());
    if q == 0 || m == 0 {
        return Err(FuserError::input(
            "training item",
            format!("question of {q} and response of {m} tokens (need >= 1 each)"),
        ));
    }
    let s = slots.seq_len();
    let mut ids = Vec::with_capacity(q + m - 1);
    ids.extend_from_slice(question);
    ids.extend_from_slice(&response[..m - 1]);
    let mut cache = slots.clone();
    let logits = receiver.forward_all(&receiver.ids_tensor(&ids)?, s, &mut cache)?;
    let logits = logits
        .squeeze(0)
        .and_then(|l| l.narrow(0, q - 1, m))
        .and_then(|l| l.to_dtype(DType::F32))
        .ctx("response logits")?;
    let targets = Tensor::new(response, logits.device()).ctx("targets")?;
    candle_nn::loss::cross_entropy(&logits, &targets).ctx("cross-entropy")
}
