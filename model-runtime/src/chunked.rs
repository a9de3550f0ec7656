//! Chunked prefill: a forward pass over T new tokens runs as consecutive query chunks of at
//! most C tokens ([`Model::prefill_chunk_tokens`]). Chunk `i` attends to the cache so far
//! (everything cached before the call plus chunks `0..i`) and causally to its own keys, so its
//! mask is `[C, past + C]` and its attention scores `[B, H, C, past + C]`: memory grows
//! linearly with T instead of as T x T. Causal attention makes this the same computation as
//! one pass (to float rounding: tests/chunked_prefill.rs).
//!
//! Ordinary runs (prefill, `forward`, `forward_all`, `forward_hidden`, the attention probe) go
//! through here; packed segments (continuation scoring, short by construction) do not.

use crate::cache::KvCache;
use crate::error::{Result, RuntimeError};
use crate::layer::AttentionProbe;
use crate::model::{Extend, Model, ids_dims};
use candle_core::{IndexOp, Tensor};

/// Default query-chunk length of a multi-token forward pass: large enough that the matmuls
/// stay efficient, small enough that the `[H, C, past + C]` scores of an 8192-token prompt are
/// a few hundred MB rather than GBs.
pub const DEFAULT_PREFILL_CHUNK_TOKENS: usize = 512;

/// Which positions' final hidden states a chunked pass keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Every position, `[B, T, H]`.
    All,
    /// Only the last position, `[B, H]`.
    Last,
}

/// The `(start, len)` of each query chunk of `t` tokens at most `chunk` long (`0`: one chunk).
pub(crate) fn chunk_spans(t: usize, chunk: usize) -> Vec<(usize, usize)> {
    if chunk == 0 || chunk >= t {
        return vec![(0, t)];
    }
    (0..t)
        .step_by(chunk)
        .map(|start| (start, chunk.min(t - start)))
        .collect()
}

impl Model {
    /// This model with multi-token forward passes split into query chunks of at most `tokens`
    /// (`0`: one pass over all new tokens, attention scores `[B, H, T, past + T]`). The default
    /// is [`DEFAULT_PREFILL_CHUNK_TOKENS`].
    pub fn with_prefill_chunk_tokens(mut self, tokens: usize) -> Self {
        self.prefill_chunk_tokens = tokens;
        self
    }

    /// The query-chunk length of multi-token forward passes (`0`: unchunked).
    pub fn prefill_chunk_tokens(&self) -> usize {
        self.prefill_chunk_tokens
    }

    /// Runs `input_ids` `[B, T]` at positions `offset..` in query chunks, extending `cache`
    /// only when every chunk succeeded (a cancelled or failed pass leaves it as it was).
    /// Returns the final-norm hidden states `keep` asks for.
    pub(crate) fn forward_chunked(
        &self,
        input_ids: &Tensor,
        offset: usize,
        cache: &mut KvCache,
        mut probe: Option<&mut AttentionProbe>,
        keep: Keep,
    ) -> Result<Tensor> {
        let (_, t) = ids_dims(input_ids)?;
        let spans = chunk_spans(t, self.prefill_chunk_tokens);
        if let [_] = spans.as_slice() {
            let hidden = self.forward_whole(input_ids, offset, cache, probe, Extend::AtEnd)?;
            return last_if(hidden, keep);
        }
        // The tensors are reference-counted: this copies handles, not K/V. `work` is extended
        // in place layer by layer (each layer's previous K/V freed once extended) and becomes
        // the cache only when every chunk has run.
        let mut work = cache.clone();
        let mut kept = Vec::with_capacity(spans.len());
        for (start, len) in spans {
            let ids = input_ids.narrow(1, start, len)?;
            let probe = probe.as_deref_mut();
            let hidden =
                self.forward_whole(&ids, offset + start, &mut work, probe, Extend::InPlace)?;
            kept.push(match keep {
                Keep::All => hidden,
                // Only the last chunk's last position is returned.
                Keep::Last => hidden.i((.., len - 1..len, ..))?,
            });
        }
        *cache = work;
        let hidden = match keep {
            Keep::All => Tensor::cat(&kept, 1)?,
            Keep::Last => kept
                .pop()
                .map_or_else(|| Err(RuntimeError::input("input_ids", "no tokens")), Ok)?,
        };
        last_if(hidden, keep)
    }
}

/// `[B, T, H]` as is for [`Keep::All`], its last position `[B, H]` for [`Keep::Last`].
fn last_if(hidden: Tensor, keep: Keep) -> Result<Tensor> {
    match keep {
        Keep::All => Ok(hidden),
        Keep::Last => {
            let t = hidden.dim(1)?;
            Ok(hidden.i((.., t - 1, ..))?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_cover_the_tokens_in_order_without_overlap() {
        assert_eq!(chunk_spans(7, 0), vec![(0, 7)]);
        assert_eq!(chunk_spans(7, 7), vec![(0, 7)]);
        assert_eq!(chunk_spans(7, 9), vec![(0, 7)]);
        assert_eq!(chunk_spans(7, 3), vec![(0, 3), (3, 3), (6, 1)]);
        assert_eq!(chunk_spans(7, 6), vec![(0, 6), (6, 1)]);
        assert_eq!(chunk_spans(3, 1), vec![(0, 1), (1, 1), (2, 1)]);
    }
}
