//! Continuation scoring for rank classification: the log-probability of every answer choice
//! after one prompt, all choices in one forward pass over the prompt's cache.
//!
//! Layout: the continuations are **packed into one row** (batch 1) rather than stacked as a
//! right-padded batch of N rows. Each continuation is a segment of that row, at positions
//! `offset..offset+len` (RoPE continues after the prompt for every segment), and a
//! block-causal mask lets a segment's tokens see the whole prompt cache and their own earlier
//! tokens only: no segment attends to or is attended by another, and there is no padding.
//! Against a padded batch this reads the prompt cache once instead of copying it N times
//! (`repeat` along batch, then a concatenation per layer) or broadcasting it through N query
//! rows, runs no padded positions through the layers or the output head, and downloads every
//! log-probability in one transfer; the attention is one `[T, P + T]` score matrix per head
//! with `T` the real continuation tokens.

use crate::cache::KvCache;
use crate::error::{Result, RuntimeError};
use crate::layer::log_softmax;
use crate::model::Model;
use candle_core::{DType, IndexOp, Tensor};

/// Log-probability of one continuation given a prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuationScore {
    /// Log-probability of each continuation token (natural log).
    pub token_logprobs: Vec<f32>,
    /// Their sum.
    pub sum_logprob: f64,
    /// Number of continuation tokens.
    pub n_tokens: usize,
}

impl Model {
    /// Prefills `prompt` once and scores every continuation from it (rank classification).
    pub fn continuation_logprobs(
        &self,
        prompt: &[u32],
        continuations: &[Vec<u32>],
    ) -> Result<Vec<ContinuationScore>> {
        let (logits, cache) = self.prefill(&self.ids_tensor(prompt)?)?;
        self.score_continuations(&logits, &cache, prompt.len(), continuations)
    }

    /// Scores continuations after a prompt whose cache is `cache` (batch 1, possibly
    /// injected or pruned) and whose last-position logits are `last_logits` `[1, V]`; the
    /// first continuation token sits at absolute position `offset`. The cache is not
    /// modified.
    ///
    /// Each continuation's first token is scored from `last_logits`; the rest of every
    /// continuation of two or more tokens runs in **one** forward pass, packed as segments of
    /// one row (see the module documentation). A call whose continuations are all one token
    /// long runs no forward pass.
    pub fn score_continuations(
        &self,
        last_logits: &Tensor,
        cache: &KvCache,
        offset: usize,
        continuations: &[Vec<u32>],
    ) -> Result<Vec<ContinuationScore>> {
        check_continuations(continuations, last_logits.dim(1)?)?;
        let firsts: Vec<u32> = continuations.iter().map(|c| c[0]).collect();
        let first = log_softmax(last_logits)?
            .i(0)?
            .index_select(&Tensor::new(firsts, &self.device)?, 0)?;
        // Token j of a segment predicts token j + 1 of its continuation.
        let segments: Vec<usize> = continuations
            .iter()
            .map(|c| c.len() - 1)
            .filter(|&len| len > 0)
            .collect();
        let picked = if segments.is_empty() {
            first
        } else {
            let fed: Vec<u32> = continuations
                .iter()
                .flat_map(|c| &c[..c.len() - 1])
                .copied()
                .collect();
            let targets: Vec<u32> = continuations
                .iter()
                .flat_map(|c| &c[1..])
                .copied()
                .collect();
            let mut scratch = cache.clone();
            let hidden =
                self.forward_packed(&self.ids_tensor(&fed)?, &segments, offset, &mut scratch)?;
            let logits = self.lm_head.forward(&hidden.i(0)?)?.to_dtype(DType::F32)?;
            let targets = Tensor::new(targets, &self.device)?.unsqueeze(1)?;
            let later = log_softmax(&logits)?.gather(&targets, 1)?.flatten_all()?;
            Tensor::cat(&[&first, &later], 0)?
        };
        let picked = picked.to_vec1::<f32>()?;
        Ok(split_scores(continuations, &picked))
    }
}

/// Refuses an empty continuation and tokens outside the `vocab` logits.
fn check_continuations(continuations: &[Vec<u32>], vocab: usize) -> Result<()> {
    if continuations.iter().any(Vec::is_empty) {
        return Err(RuntimeError::input(
            "continuations",
            "a continuation has no tokens",
        ));
    }
    let outside = continuations
        .iter()
        .flatten()
        .find(|&&t| t as usize >= vocab);
    if let Some(token) = outside {
        return Err(RuntimeError::input(
            "continuations",
            format!("token {token} outside the vocabulary of {vocab}"),
        ));
    }
    Ok(())
}

/// Each continuation's scores from `picked`: the first-token log-probabilities of every
/// continuation in order, then the later tokens' ones continuation by continuation.
fn split_scores(continuations: &[Vec<u32>], picked: &[f32]) -> Vec<ContinuationScore> {
    let mut later = continuations.len();
    continuations
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut lps = Vec::with_capacity(c.len());
            lps.push(picked[i]);
            lps.extend_from_slice(&picked[later..later + c.len() - 1]);
            later += c.len() - 1;
            ContinuationScore {
                sum_logprob: lps.iter().map(|&x| f64::from(x)).sum(),
                n_tokens: lps.len(),
                token_logprobs: lps,
            }
        })
        .collect()
}
