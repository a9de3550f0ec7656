//! Inference helpers over an explicit cache: greedy generation, next-token logits and forced
//! choice over options (continuation scoring for rank classification is in `score`).

use crate::cache::KvCache;
use crate::error::{Result, RuntimeError};
use crate::model::Model;
use candle_core::{IndexOp, Tensor};

/// Parameters of greedy generation.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
    /// Tokens that end generation (included in the output when produced).
    pub stop_ids: Vec<u32>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was produced.
    StopToken(u32),
    /// `max_new_tokens` were produced.
    MaxTokens,
}

/// Output of greedy generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated tokens, including the stop token if one ended generation.
    pub tokens: Vec<u32>,
    /// Why it ended.
    pub stop: StopReason,
}

/// Forced choice over candidate tokens: softmax restricted to them.
#[derive(Debug, Clone, PartialEq)]
pub struct ForcedChoice {
    /// Probability of each candidate, in the order given (sums to one).
    pub probs: Vec<f32>,
    /// Index of the most probable candidate (the first on ties).
    pub prediction: usize,
    /// Best minus second-best probability (1 with a single candidate).
    pub margin: f32,
}

/// Softmax of `logits` restricted to `candidates` (token ids), with prediction and margin.
pub fn forced_choice(logits: &[f32], candidates: &[u32]) -> Result<ForcedChoice> {
    if candidates.is_empty() {
        return Err(RuntimeError::input("candidates", "empty"));
    }
    let picked = candidates
        .iter()
        .map(|&id| {
            logits.get(id as usize).copied().ok_or_else(|| {
                RuntimeError::input(
                    "candidates",
                    format!("token {id} outside {} logits", logits.len()),
                )
            })
        })
        .collect::<Result<Vec<f32>>>()?;
    let max = picked.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = picked.iter().map(|l| (l - max).exp()).collect();
    let total: f32 = exp.iter().sum();
    let probs: Vec<f32> = exp.iter().map(|e| e / total).collect();
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let margin = match order.get(1) {
        Some(&second) => probs[order[0]] - probs[second],
        None => 1.0,
    };
    Ok(ForcedChoice {
        prediction: order[0],
        margin,
        probs,
    })
}

fn argmax(logits: &Tensor) -> Result<u32> {
    Ok(logits
        .argmax(candle_core::D::Minus1)?
        .flatten_all()?
        .to_vec1::<u32>()?[0])
}

impl Model {
    /// Prefills `ids` (batch 1) and returns the next-token logits `[V]` as a vector.
    pub fn next_token_logits(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let (logits, _) = self.prefill(&self.ids_tensor(ids)?)?;
        Ok(logits.i(0)?.to_vec1::<f32>()?)
    }

    /// Greedy generation from a prompt (batch 1).
    pub fn generate_greedy(&self, prompt: &[u32], params: &GenerateParams) -> Result<Generation> {
        let (logits, cache) = self.prefill(&self.ids_tensor(prompt)?)?;
        self.generate_greedy_from(&logits, cache, prompt.len(), params)
    }

    /// Greedy generation continuing from a cache (for example an injected, fused one)
    /// whose last-position logits are `logits` `[1, V]`; `offset` is the position of the
    /// first generated token.
    pub fn generate_greedy_from(
        &self,
        logits: &Tensor,
        mut cache: KvCache,
        offset: usize,
        params: &GenerateParams,
    ) -> Result<Generation> {
        let mut tokens = Vec::with_capacity(params.max_new_tokens);
        let mut next = argmax(logits)?;
        let mut pos = offset;
        while tokens.len() < params.max_new_tokens {
            tokens.push(next);
            if params.stop_ids.contains(&next) {
                return Ok(Generation {
                    tokens,
                    stop: StopReason::StopToken(next),
                });
            }
            if tokens.len() == params.max_new_tokens {
                break;
            }
            let logits = self.forward(&self.ids_tensor(&[next])?, pos, &mut cache)?;
            pos += 1;
            next = argmax(&logits)?;
        }
        Ok(Generation {
            tokens,
            stop: StopReason::MaxTokens,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_choice_restricts_softmax_to_candidates() {
        // Token 0 has the highest logit overall but is not a candidate.
        let logits = [9.0, 1.0, 2.0, 0.0, 2.0];
        let fc = forced_choice(&logits, &[1, 2, 3, 4]).unwrap();
        let sum: f32 = fc.probs.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        assert_eq!(fc.prediction, 1, "ties go to the first candidate");
        assert_eq!(fc.margin, 0.0);
        let e = [1f32.exp(), 2f32.exp(), 1.0, 2f32.exp()];
        let total: f32 = e.iter().sum();
        assert!((fc.probs[0] - e[0] / total).abs() < 1e-6);
        let fc = forced_choice(&logits, &[1, 3]).unwrap();
        assert_eq!(fc.prediction, 0);
        assert!((fc.margin - (fc.probs[0] - fc.probs[1])).abs() < 1e-7 && fc.margin > 0.0);
        assert!(forced_choice(&logits, &[7]).is_err());
        assert!(forced_choice(&logits, &[]).is_err());
    }
}
