//! The decoder: embedding, layers, final norm and output head, with a forward pass that
//! takes the KV cache as an explicit argument.

use crate::WeightsInfo;
use crate::cache::KvCache;
use crate::chunked::Keep;
use crate::config::ModelConfig;
use crate::error::{Result, RuntimeError};
use crate::layer::{AttentionProbe, Dims, Layer, Rope, Shared, causal_mask, rms_norm};
use crate::weights::Linear;
use candle_core::{DType, Device, Tensor};

/// A loaded decoder. Immutable: all per-sequence state lives in a [`KvCache`].
#[derive(Debug, Clone)]
pub struct Model {
    pub(crate) config: ModelConfig,
    pub(crate) embed: Tensor,
    pub(crate) layers: Vec<Layer>,
    pub(crate) final_norm: Tensor,
    pub(crate) lm_head: Linear,
    pub(crate) rope: Rope,
    pub(crate) device: Device,
    pub(crate) dtype: DType,
    pub(crate) info: WeightsInfo,
    pub(crate) autograd: bool,
    /// Query-chunk length of multi-token passes (`0`: unchunked; see [`crate::chunked`]).
    pub(crate) prefill_chunk_tokens: usize,
}

/// How the new tokens of a forward pass are laid out.
#[derive(Debug, Clone, Copy)]
enum Run<'a> {
    /// One run of tokens at `offset..offset+T` (every row of the batch alike).
    Whole,
    /// One row of independent segments with these lengths, each from `offset`.
    Packed(&'a [usize]),
}

/// How a pass writes the extended K/V into the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Extend {
    /// All layers swapped in after the last one: an error leaves the cache as it was.
    AtEnd,
    /// Layer by layer, each layer's old K/V dropped as soon as its extension exists (peak
    /// memory one cache, not two), for a scratch cache that is discarded on an error.
    InPlace,
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position: `[B, V]`.
    Last,
    /// Every position: `[B, T, V]` (rank classification scores every continuation token).
    All,
}

impl Model {
    /// The config the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Activation dtype (and dtype of the KV cache).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Where the weights came from and how they are held.
    pub fn weights_info(&self) -> &WeightsInfo {
        &self.info
    }

    /// One line for manifests: source, weights mode, dtype, device.
    pub fn describe(&self) -> String {
        self.info.describe()
    }

    /// This model with differentiable kernels (`on`) or candle's fused ones (the default).
    ///
    /// candle's fused RMSNorm, softmax and RoPE kernels have no backward pass, so gradients
    /// through the model (training a fuser whose output is this model's KV cache) need the
    /// composite forms. They agree with the fused ones to float rounding. Gradients also need
    /// dense weights ([`crate::WeightsMode::Dequantized`] or safetensors): quantized matmuls
    /// have no backward pass either.
    pub fn with_autograd(mut self, on: bool) -> Self {
        self.autograd = on;
        self
    }

    /// Whether differentiable kernels are in use.
    pub fn autograd(&self) -> bool {
        self.autograd
    }

    /// Turns token ids into a `[1, T]` u32 tensor on the model's device.
    pub fn ids_tensor(&self, ids: &[u32]) -> Result<Tensor> {
        Ok(Tensor::new(ids, &self.device)?.unsqueeze(0)?)
    }

    /// Runs `input_ids` `[B, T]` at absolute positions `offset..offset+T`, attending to
    /// everything in `cache`, appends the new K/V to `cache`, and returns last-position
    /// logits `[B, V]` in f32.
    ///
    /// `offset` is usually `cache.seq_len()`; it may be larger when the cache holds a
    /// pruned subset of earlier positions (RoPE uses `offset`, the mask uses the cache).
    ///
    /// More than [`Model::prefill_chunk_tokens`] new tokens run as consecutive query chunks
    /// (`crate::chunked`), each attending to the cache so far: the same result, with memory
    /// linear in T. On an error (a cancelled request) `cache` is left as it was.
    pub fn forward(
        &self,
        input_ids: &Tensor,
        offset: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.forward_logits(input_ids, offset, cache, Logits::Last)
    }

    /// As [`Model::forward`], returning logits for every position `[B, T, V]`.
    pub fn forward_all(
        &self,
        input_ids: &Tensor,
        offset: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.forward_logits(input_ids, offset, cache, Logits::All)
    }

    /// Runs a prompt from an empty cache: last-position logits `[B, V]` and the cache.
    pub fn prefill(&self, input_ids: &Tensor) -> Result<(Tensor, KvCache)> {
        let mut cache = KvCache::new();
        let logits = self.forward(input_ids, 0, &mut cache)?;
        Ok((logits, cache))
    }

    /// Forward with a choice of which positions get logits.
    pub fn forward_logits(
        &self,
        input_ids: &Tensor,
        offset: usize,
        cache: &mut KvCache,
        which: Logits,
    ) -> Result<Tensor> {
        let keep = match which {
            Logits::Last => Keep::Last,
            Logits::All => Keep::All,
        };
        let hidden = self.forward_chunked(input_ids, offset, cache, None, keep)?;
        Ok(self.lm_head.forward(&hidden)?.to_dtype(DType::F32)?)
    }

    /// Final-norm hidden states `[B, T, H]`, extending `cache`.
    pub fn forward_hidden(
        &self,
        input_ids: &Tensor,
        offset: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        self.forward_chunked(input_ids, offset, cache, None, Keep::All)
    }

    /// How much a query attends to each cached position (SnapKV's observation-window score):
    /// runs `query_ids` `[1, T]` at positions `offset..` over a copy of `cache` and returns, per
    /// cached position, the attention probability the query tokens put on it, summed over
    /// layers, heads and query tokens (`cache.seq_len()` values). `cache` is left unchanged.
    pub fn query_attention(
        &self,
        query_ids: &Tensor,
        offset: usize,
        cache: &KvCache,
    ) -> Result<Vec<f32>> {
        if cache.batch_size() > 1 {
            return Err(RuntimeError::input(
                "cache",
                format!("query attention takes batch 1, got {}", cache.batch_size()),
            ));
        }
        let mut probe = AttentionProbe::new(cache.seq_len());
        let mut scratch = cache.clone();
        self.forward_chunked(
            query_ids,
            offset,
            &mut scratch,
            Some(&mut probe),
            Keep::Last,
        )?;
        probe.into_scores()
    }

    /// One pass over a run of new tokens (one query chunk of [`Model::forward_chunked`]).
    pub(crate) fn forward_whole(
        &self,
        input_ids: &Tensor,
        offset: usize,
        cache: &mut KvCache,
        probe: Option<&mut AttentionProbe>,
        extend: Extend,
    ) -> Result<Tensor> {
        self.forward_run(input_ids, offset, Run::Whole, cache, probe, extend)
    }

    /// Runs one row of new tokens packed as independent segments (lengths summing to the
    /// row's length), each at positions `offset..offset+len` and attending to the whole
    /// cache and its own earlier tokens only. Final-norm hidden states `[1, T, H]`; the
    /// segments' K/V are appended to `cache` (callers score on a copy and drop it).
    pub(crate) fn forward_packed(
        &self,
        input_ids: &Tensor,
        segments: &[usize],
        offset: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let packed = Run::Packed(segments);
        self.forward_run(input_ids, offset, packed, cache, None, Extend::AtEnd)
    }

    fn forward_run(
        &self,
        input_ids: &Tensor,
        offset: usize,
        run: Run<'_>,
        cache: &mut KvCache,
        mut probe: Option<&mut AttentionProbe>,
        extend: Extend,
    ) -> Result<Tensor> {
        let (b, t) = ids_dims(input_ids)?;
        let whole = [t];
        let segments = match run {
            Run::Whole => &whole[..],
            Run::Packed(segments) => segments,
        };
        self.check_run(b, t, segments, offset)?;
        self.check_cache(cache, b, offset)?;
        let mask = causal_mask(segments, cache.seq_len(), self.dtype, &self.device)?;
        let rope = self.rope.at(offset, segments)?;
        let dims = Dims {
            n_heads: self.config.n_heads,
            n_kv_heads: self.config.n_kv_heads,
            head_dim: self.config.head_dim,
            eps: self.config.rms_eps as f32,
            autograd: self.autograd,
        };
        let ids = input_ids.to_device(&self.device)?.to_dtype(DType::U32)?;
        let mut x = embedding_lookup(&self.embed, &ids)?;
        let shared = Shared {
            mask: mask.as_ref(),
            rope: &rope,
            dims,
        };
        let mut new_layers = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            // Between layers: a cancelled request stops here (with `Extend::AtEnd`, its cache
            // left as it was; `InPlace` caches are scratch copies the caller drops).
            crate::cancel::checkpoint()?;
            let (y, kv) = layer.forward(&x, cache.layers.get(i), &shared, probe.as_deref_mut())?;
            x = y;
            match (extend, cache.layers.get_mut(i)) {
                (Extend::InPlace, Some(old)) => *old = kv,
                _ => new_layers.push(kv),
            }
        }
        if !new_layers.is_empty() {
            cache.layers = new_layers;
        }
        rms_norm(&x, &self.final_norm, dims.eps, dims.autograd)
    }

    /// Checks the new tokens (`b` rows of `t`, laid out as `segments`) and that their
    /// positions from `offset` stay under `max_position`.
    fn check_run(&self, b: usize, t: usize, segments: &[usize], offset: usize) -> Result<()> {
        if t == 0 {
            return Err(RuntimeError::input("input_ids", "no tokens"));
        }
        if segments.iter().sum::<usize>() != t || segments.contains(&0) {
            return Err(RuntimeError::input(
                "segments",
                format!("{segments:?} do not split a row of {t} tokens"),
            ));
        }
        if segments.len() > 1 && b != 1 {
            return Err(RuntimeError::input(
                "input_ids",
                format!("packed segments take one row, got {b}"),
            ));
        }
        let span = segments.iter().copied().max().unwrap_or(t);
        if offset + span > self.config.max_position {
            return Err(RuntimeError::input(
                "offset",
                format!(
                    "positions up to {} exceed max_position {}",
                    offset + span,
                    self.config.max_position
                ),
            ));
        }
        Ok(())
    }

    /// Checks a caller-provided cache fits this model, converting its dtype if needed.
    fn check_cache(&self, cache: &mut KvCache, batch: usize, offset: usize) -> Result<()> {
        if cache.is_empty() {
            return Ok(());
        }
        let c = &self.config;
        if cache.layers.len() != c.n_layers {
            return Err(RuntimeError::input(
                "cache",
                format!("{} layers, model has {}", cache.layers.len(), c.n_layers),
            ));
        }
        let past = cache.seq_len();
        for (i, layer) in cache.layers.iter_mut().enumerate() {
            for (name, t) in [("k", &mut layer.k), ("v", &mut layer.v)] {
                let expected = [batch, c.n_kv_heads, past, c.head_dim];
                if t.dims() != expected {
                    return Err(RuntimeError::input(
                        "cache",
                        format!(
                            "layer {i} {name} has shape {:?}, expected {expected:?}",
                            t.dims()
                        ),
                    ));
                }
                if t.dtype() != self.dtype || !t.device().same_device(&self.device) {
                    *t = t.to_device(&self.device)?.to_dtype(self.dtype)?;
                }
            }
        }
        if offset < past {
            return Err(RuntimeError::input(
                "offset",
                format!("offset {offset} is before the end of the cache ({past} positions)"),
            ));
        }
        Ok(())
    }
}

/// The `[B, T]` of a batch of token ids, or a typed error naming the shape it has.
pub(crate) fn ids_dims(input_ids: &Tensor) -> Result<(usize, usize)> {
    input_ids.dims2().map_err(|_| {
        RuntimeError::input(
            "input_ids",
            format!("expected [B, T], got {:?}", input_ids.dims()),
        )
    })
}

/// Embedding lookup on a dense `[V, H]` table, rejecting ids outside the vocabulary.
fn embedding_lookup(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (b, t) = ids.dims2()?;
    let hidden = table.dim(1)?;
    let vocab = table.dim(0)?;
    let max = ids.max_all()?.to_scalar::<u32>()? as usize;
    if max >= vocab {
        return Err(RuntimeError::input(
            "input_ids",
            format!("token id {max} is outside the vocabulary of {vocab}"),
        ));
    }
    Ok(table
        .index_select(&ids.flatten_all()?, 0)?
        .reshape((b, t, hidden))?)
}
