//! The fused prompt cache and scoring from it.
//!
//! C2C recipe (docs/FUSER.md): the receiver prefills its prompt except the last token; every
//! receiver layer linked to a sharer layer gets `r + g * w * P([s ; r])` at the positions the
//! sharer rows cover (sparse fusion: other positions keep the receiver's own K/V); the last
//! prompt token then runs on the fused cache, and scoring or decoding continues from there.

use c2c::checkpoint::Fuser;
use c2c::fuse::{SharerLayer, fuse_layer};
use c2c::{GateMode, KvLayer};
use candle_core::Tensor;
use model_runtime::{ContinuationScore, KvCache, LayerKv, Model};

use crate::error::{Ctx, FuserError, Result};

/// The sharer's cache of its whole prompt (no output head: only the K/V are needed).
pub fn sharer_cache(sharer: &Model, ids: &[u32]) -> Result<KvCache> {
    if ids.is_empty() {
        return Err(FuserError::input("sharer prompt", "no tokens"));
    }
    let mut cache = KvCache::new();
    sharer.forward_hidden(&sharer.ids_tensor(ids)?, 0, &mut cache)?;
    Ok(cache)
}

/// The receiver's own cache of its prompt except the last token (the positions C2C fuses).
pub fn receiver_prompt_cache(receiver: &Model, ids: &[u32]) -> Result<KvCache> {
    if ids.len() < 2 {
        return Err(FuserError::input(
            "receiver prompt",
            format!("{} token(s): fusion needs at least 2", ids.len()),
        ));
    }
    let mut cache = KvCache::new();
    receiver.forward_hidden(&receiver.ids_tensor(&ids[..ids.len() - 1])?, 0, &mut cache)?;
    Ok(cache)
}

/// The map must pair every one of the `count` receiver positions.
fn check_map(map: &[usize], count: usize) -> Result<()> {
    if map.len() < count {
        return Err(FuserError::input(
            "alignment map",
            format!("{} entries for {count} receiver positions", map.len()),
        ));
    }
    Ok(())
}

/// Sharer rows for receiver positions `0..count`: row `i` of every sharer layer is the sharer
/// token `map[i]`.
pub fn gather_sharer_rows(
    cache: &KvCache,
    map: &[usize],
    count: usize,
) -> Result<Vec<Option<SharerLayer>>> {
    check_map(map, count)?;
    let t = cache.seq_len();
    if let Some(&bad) = map[..count].iter().find(|&&j| j >= t) {
        return Err(FuserError::input(
            "alignment map",
            format!("sharer token {bad} outside the sharer cache of {t} tokens"),
        ));
    }
    let Some(first) = cache.layers.first() else {
        return Err(FuserError::input("sharer cache", "empty"));
    };
    let idx: Vec<u32> = map[..count].iter().map(|&j| j as u32).collect();
    let idx = Tensor::from_vec(idx, count, first.k.device()).ctx("building row index")?;
    cache
        .layers
        .iter()
        .map(|l| {
            let kv = KvLayer::new(
                l.k.index_select(&idx, 2).ctx("gathering sharer K rows")?,
                l.v.index_select(&idx, 2).ctx("gathering sharer V rows")?,
            )?;
            Ok(Some(SharerLayer {
                kv,
                positions: (0..count).collect(),
            }))
        })
        .collect()
}

/// Sharer rows as they arrive over the wire: per sharer layer `[1, Hs, n, Ds]` K/V holding the
/// sharer token positions `arrived` (ascending), mapped onto receiver positions `0..count`
/// through `map` (receiver token -> sharer token). A receiver position is fused only when its
/// sharer token arrived; the others keep the receiver's own K/V (sparse fusion).
pub fn rows_from_transfer(
    layers: &[Option<KvLayer>],
    arrived: &[u32],
    map: &[usize],
    count: usize,
) -> Result<Vec<Option<SharerLayer>>> {
    check_map(map, count)?;
    if arrived.windows(2).any(|w| w[0] >= w[1]) {
        return Err(FuserError::input(
            "sharer positions",
            "not strictly increasing",
        ));
    }
    let mut receiver_positions = Vec::new();
    let mut rows = Vec::new();
    for (i, &j) in map[..count].iter().enumerate() {
        if let Ok(row) = arrived.binary_search(&(j as u32)) {
            receiver_positions.push(i);
            rows.push(row as u32);
        }
    }
    layers
        .iter()
        .map(|layer| {
            let Some(layer) = layer else {
                return Ok(None);
            };
            let (_, _, n, _) = layer.dims()?;
            if n != arrived.len() {
                return Err(FuserError::input(
                    "sharer layer",
                    format!("{n} rows for {} positions", arrived.len()),
                ));
            }
            if receiver_positions.is_empty() {
                return Ok(None);
            }
            let idx = Tensor::from_vec(rows.clone(), rows.len(), layer.k.device())
                .ctx("building row index")?;
            Ok(Some(SharerLayer {
                kv: KvLayer::new(
                    layer
                        .k
                        .index_select(&idx, 2)
                        .ctx("gathering sharer K rows")?,
                    layer
                        .v
                        .index_select(&idx, 2)
                        .ctx("gathering sharer V rows")?,
                )?,
                positions: receiver_positions.clone(),
            }))
        })
        .collect()
}

/// Chooses the gate of each linked receiver layer: hard at inference, a fresh Gumbel-sigmoid
/// sample per layer in training.
pub trait GateSource {
    /// The gate for receiver layer `layer` over `rows` token rows of `heads` receiver heads.
    fn gate(&mut self, layer: usize, rows: usize, heads: usize) -> Result<GateMode>;
}

/// Inference: the hard gate everywhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct HardGate;

impl GateSource for HardGate {
    fn gate(&mut self, _layer: usize, _rows: usize, _heads: usize) -> Result<GateMode> {
        Ok(GateMode::Hard)
    }
}

/// Fuses `sharer` rows into the receiver prompt cache `receiver` (both from this module), one
/// projector per linked receiver layer; unlinked layers and absent sharer layers keep the
/// receiver's cache.
pub fn fuse_prompt(
    fuser: &Fuser,
    sharer: &[Option<SharerLayer>],
    receiver: &KvCache,
    gates: &mut dyn GateSource,
) -> Result<KvCache> {
    let map = &fuser.config.layer_map;
    map.validate(receiver.layers.len(), sharer.len(), fuser.projectors.len())?;
    let mut layers = receiver.layers.clone();
    for link in map.links() {
        let Some(rows) = &sharer[link.sharer] else {
            continue;
        };
        let own = &receiver.layers[link.receiver];
        let own = KvLayer::new(own.k.clone(), own.v.clone())?;
        let (b, h, _, _) = own.dims()?;
        let gate = gates.gate(link.receiver, b * rows.positions.len(), h)?;
        let fused = fuse_layer(&fuser.projectors[link.projector], rows, &own, &gate)?;
        layers[link.receiver] = LayerKv {
            k: fused.k,
            v: fused.v,
        };
    }
    Ok(KvCache { layers })
}

/// A prompt whose cache (all positions but the last) is ready, with the last token still to run.
#[derive(Debug, Clone)]
pub struct FusedPrompt {
    /// Cache of positions `0..n-1` (fused, or the receiver's own for the receiver-only baseline).
    pub cache: KvCache,
    /// The prompt's last token.
    pub last_token: u32,
    /// Prompt length n.
    pub len: usize,
}

impl FusedPrompt {
    /// Builds the prompt state from a cache of the first `ids.len() - 1` positions.
    pub fn new(cache: KvCache, ids: &[u32]) -> Result<Self> {
        let Some(&last_token) = ids.last() else {
            return Err(FuserError::input("prompt", "no tokens"));
        };
        if cache.seq_len() + 1 != ids.len() {
            return Err(FuserError::input(
                "prompt cache",
                format!(
                    "{} cached positions for a prompt of {} tokens (expected n-1)",
                    cache.seq_len(),
                    ids.len()
                ),
            ));
        }
        Ok(Self {
            cache,
            last_token,
            len: ids.len(),
        })
    }
}

/// Runs the prompt's last token on its cache and scores every continuation (rank
/// classification): summed log-probabilities, per token.
pub fn score_from_cache(
    receiver: &Model,
    prompt: &FusedPrompt,
    continuations: &[Vec<u32>],
) -> Result<Vec<ContinuationScore>> {
    let mut cache = prompt.cache.clone();
    let last = receiver.ids_tensor(&[prompt.last_token])?;
    let logits = receiver.forward(&last, prompt.len - 1, &mut cache)?;
    Ok(receiver.score_continuations(&logits, &cache, prompt.len, continuations)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use c2c::projector::ProjectorDims;
    use candle_core::{DType, Device};
    use model_runtime::{Arch, ModelConfig};

    fn closed_fuser(receiver: &ModelConfig, sharer: &ModelConfig) -> Fuser {
        let dims = ProjectorDims {
            sharer_heads: sharer.n_kv_heads,
            sharer_head_dim: sharer.head_dim,
            receiver_heads: receiver.n_kv_heads,
            receiver_head_dim: receiver.head_dim,
            hidden: 16,
            intermediate: 16,
            proj_blocks: 1,
        };
        let varmap = candle_nn::VarMap::new();
        c2c::train::trainable_fuser(
            dims,
            receiver.n_layers,
            sharer.n_layers,
            &varmap,
            0,
            &Device::Cpu,
        )
        .unwrap()
    }

    #[test]
    fn closed_gates_reproduce_receiver_only_scores_exactly() {
        let rc = ModelConfig::tiny(Arch::Llama);
        let sc = ModelConfig::tiny(Arch::Qwen2);
        let receiver = Model::random(&rc, 1, &Device::Cpu, DType::F32).unwrap();
        let sharer = Model::random(&sc, 2, &Device::Cpu, DType::F32).unwrap();
        // Gate logits start at 0: closed under the hard gate (g = 1[logit > 0]).
        let fuser = closed_fuser(&rc, &sc);
        let ids = [3u32, 9, 4, 7, 1];
        let conts = vec![vec![5u32, 6], vec![8], vec![2, 2, 9]];
        let own = receiver_prompt_cache(&receiver, &ids).unwrap();
        let s = sharer_cache(&sharer, &ids).unwrap();
        let rows = gather_sharer_rows(&s, &[0, 1, 2, 3, 4], ids.len() - 1).unwrap();
        let fused = fuse_prompt(&fuser, &rows, &own, &mut HardGate).unwrap();
        let fused =
            score_from_cache(&receiver, &FusedPrompt::new(fused, &ids).unwrap(), &conts).unwrap();
        let plain = receiver.continuation_logprobs(&ids, &conts).unwrap();
        for (a, b) in fused.iter().zip(&plain) {
            assert_eq!(a.n_tokens, b.n_tokens);
            assert!(
                (a.sum_logprob - b.sum_logprob).abs() < 1e-4,
                "{a:?} vs {b:?}"
            );
        }
    }

    #[test]
    fn transfer_rows_fuse_only_the_positions_that_arrived() {
        let sc = ModelConfig::tiny(Arch::Qwen2);
        let sharer = Model::random(&sc, 2, &Device::Cpu, DType::F32).unwrap();
        let s = sharer_cache(&sharer, &[5, 6, 7, 8]).unwrap();
        // Sharer positions 1 and 3 arrived; receiver tokens map 0->0, 1->1, 2->1, 3->2, 4->3.
        let arrived = [1u32, 3];
        let idx = Tensor::new(&arrived, &Device::Cpu).unwrap();
        let layers: Vec<Option<KvLayer>> = s
            .layers
            .iter()
            .map(|l| {
                Some(
                    KvLayer::new(
                        l.k.index_select(&idx, 2).unwrap(),
                        l.v.index_select(&idx, 2).unwrap(),
                    )
                    .unwrap(),
                )
            })
            .collect();
        let rows = rows_from_transfer(&layers, &arrived, &[0, 1, 1, 2, 3], 5).unwrap();
        let dense = gather_sharer_rows(&s, &[0, 1, 1, 2, 3], 5).unwrap();
        let first = rows[0].as_ref().unwrap();
        assert_eq!(first.positions, vec![1, 2, 4]);
        let d = dense[0].as_ref().unwrap();
        for (r, &p) in first.positions.iter().enumerate() {
            let a = first.kv.k.narrow(2, r, 1).unwrap();
            let b = d.kv.k.narrow(2, p, 1).unwrap();
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        }
        assert!(rows_from_transfer(&layers, &[3, 1], &[0, 1], 2).is_err());
        assert!(rows_from_transfer(&layers, &arrived, &[0], 2).is_err());
    }

    #[test]
    fn bad_maps_and_prompts_are_typed_errors() {
        let sc = ModelConfig::tiny(Arch::Qwen2);
        let sharer = Model::random(&sc, 2, &Device::Cpu, DType::F32).unwrap();
        let s = sharer_cache(&sharer, &[1, 2, 3]).unwrap();
        assert!(gather_sharer_rows(&s, &[0, 1], 3).is_err());
        assert!(gather_sharer_rows(&s, &[0, 7], 2).is_err());
        assert!(receiver_prompt_cache(&sharer, &[1]).is_err());
        assert!(sharer_cache(&sharer, &[]).is_err());
        assert!(FusedPrompt::new(s, &[1, 2]).is_err());
    }
}
