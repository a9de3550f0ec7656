//! The receiver engine: owns the model; scores an example by forced choice or by rank
//! classification, from its own prefill or from an injected prompt cache, or by greedy
//! generation. Tensors stay here; the rest of the service hands in host rows. Every method is
//! blocking.

use eval_harness::{ChoiceLogprob, Normalization};
use model_runtime::candle_core::Tensor;
use model_runtime::{ForcedChoice, GenerateParams, KvCache, LayerKv, forced_choice};
use service_kit::letters::{LetterPrompt, letter_prompt};
use service_kit::model_load::LoadedModel;
use service_kit::prompt::Example;
use service_kit::rank::{RankPrompt, rank_prompt};
use service_kit::timing::timed;

use crate::decode::DecodedCache;
use crate::error::ReceiverError;

/// The tokens the receiver runs for an example, by scoring mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverPrompt {
    /// Forced choice over the letter tokens after the chat prompt.
    Letter(LetterPrompt),
    /// Greedy generation after the chat prompt.
    Generate(LetterPrompt),
    /// Rank classification of the choice texts after the plain context; the normalisation
    /// picks the prediction and the margin.
    Rank(RankPrompt, Normalization),
}

impl ReceiverPrompt {
    /// The prompt token ids.
    pub fn ids(&self) -> &[u32] {
        match self {
            ReceiverPrompt::Letter(p) | ReceiverPrompt::Generate(p) => &p.ids,
            ReceiverPrompt::Rank(p, _) => &p.ids,
        }
    }
}

/// Rank-classification inputs of every choice, with the stage times.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    /// Summed log-probability, token and character count of each choice's continuation.
    pub choices: Vec<ChoiceLogprob>,
    /// Receiver forward over the prompt (or its last token, with an injected cache), ms.
    pub prefill_ms: f64,
    /// Forward over the continuations and their log-probabilities, ms.
    pub score_ms: f64,
}

/// A scored example.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The forced choice (probabilities, prediction, margin).
    pub choice: ForcedChoice,
    /// Receiver forward time, ms.
    pub prefill_ms: f64,
    /// Softmax over the letters, ms.
    pub score_ms: f64,
}

/// The receiver's model and everything needed to run it.
#[derive(Debug)]
pub struct ReceiverEngine {
    loaded: LoadedModel,
}

impl ReceiverEngine {
    /// Wraps a loaded model.
    pub fn new(loaded: LoadedModel) -> Self {
        Self { loaded }
    }

    /// The loaded model (shape and identity for Info).
    pub fn loaded(&self) -> &LoadedModel {
        &self.loaded
    }

    /// The letter prompt of an example, with optional text context.
    pub fn letter_prompt(
        &self,
        example: &Example,
        context: Option<&str>,
    ) -> Result<LetterPrompt, ReceiverError> {
        letter_prompt(
            &self.loaded.tokenizer,
            self.loaded.template,
            example,
            context,
        )
        .map_err(|e| ReceiverError::invalid("example", e.to_string()))
    }

    /// The rank prompt of an example, with an optional sharer message before the context.
    pub fn rank_prompt(
        &self,
        example: &Example,
        message: Option<&str>,
    ) -> Result<RankPrompt, ReceiverError> {
        rank_prompt(&self.loaded.tokenizer, example, message)
            .map_err(|e| ReceiverError::invalid("example", e.to_string()))
    }

    /// Runs the prompt: a full prefill of `ids`, or, with `cache` (the fused prompt cache for
    /// the positions before the last prompt token) injected, only the last token at its
    /// absolute position. Last-position logits `[1, V]` and the cache after the prompt.
    fn prompt_forward(
        &self,
        ids: &[u32],
        cache: Option<&DecodedCache>,
    ) -> Result<(Tensor, KvCache), ReceiverError> {
        let model = &self.loaded.model;
        let Some(cache) = cache else {
            return Ok(model.prefill(&model.ids_tensor(ids)?)?);
        };
        self.check_fits(ids, cache)?;
        let last = ids.len() - 1;
        let mut kv = self.kv_cache(cache)?;
        let logits = model.forward(&model.ids_tensor(&ids[last..])?, last, &mut kv)?;
        Ok((logits, kv))
    }

    /// Rank classification: the prompt runs (see [`Self::prompt_forward`]), then every
    /// continuation is scored from the prompt's cache (the score stage).
    pub fn rank(
        &self,
        prompt: &RankPrompt,
        cache: Option<&DecodedCache>,
    ) -> Result<Ranked, ReceiverError> {
        let (prefilled, prefill_ms) = timed(|| self.prompt_forward(&prompt.ids, cache));
        let (logits, kv) = prefilled?;
        let (scores, score_ms) = timed(|| {
            self.loaded.model.score_continuations(
                &logits,
                &kv,
                prompt.ids.len(),
                &prompt.continuations,
            )
        });
        Ok(Ranked {
            choices: prompt.choice_logprobs(&scores?),
            prefill_ms,
            score_ms,
        })
    }

    /// Forced choice over the letter tokens after the prompt (see [`Self::prompt_forward`]);
    /// the score stage is the softmax over the letters (the LM head runs in the forward).
    pub fn score(
        &self,
        prompt: &LetterPrompt,
        cache: Option<&DecodedCache>,
    ) -> Result<Scored, ReceiverError> {
        let (logits, prefill_ms) = timed(|| -> Result<Vec<f32>, ReceiverError> {
            let (logits, _) = self.prompt_forward(&prompt.ids, cache)?;
            let flat = logits.flatten_all().and_then(|t| t.to_vec1::<f32>());
            flat.map_err(|e| ReceiverError::Model(e.into()))
        });
        let logits = logits?;
        let (choice, score_ms) = timed(|| forced_choice(&logits, &prompt.candidates));
        Ok(Scored {
            choice: choice?,
            prefill_ms,
            score_ms,
        })
    }

    /// Checks the injected cache matches this model and this prompt.
    fn check_fits(&self, ids: &[u32], cache: &DecodedCache) -> Result<(), ReceiverError> {
        let c = self.loaded.model.config();
        if cache.layers.len() != c.n_layers
            || cache.heads != c.n_kv_heads
            || cache.head_dim != c.head_dim
        {
            return Err(ReceiverError::Transfer(format!(
                "cache of {} layers x {} heads x {} dims does not fit the receiver ({} x {} x {})",
                cache.layers.len(),
                cache.heads,
                cache.head_dim,
                c.n_layers,
                c.n_kv_heads,
                c.head_dim
            )));
        }
        if cache.prompt_tokens != ids.len() || ids.is_empty() {
            return Err(ReceiverError::Transfer(format!(
                "sharer prompt has {} tokens, receiver prompt {}: not the same prompt",
                cache.prompt_tokens,
                ids.len()
            )));
        }
        Ok(())
    }

    fn kv_cache(&self, cache: &DecodedCache) -> Result<KvCache, ReceiverError> {
        let model = &self.loaded.model;
        let shape = (1, cache.heads, cache.positions.len(), cache.head_dim);
        let layers = cache
            .layers
            .iter()
            .map(|l| {
                let t = |data: &Vec<f32>| {
                    Tensor::from_slice(data, shape, model.device())?.to_dtype(model.dtype())
                };
                Ok(LayerKv {
                    k: t(&l.k)?,
                    v: t(&l.v)?,
                })
            })
            .collect::<Result<Vec<_>, model_runtime::candle_core::Error>>()
            .map_err(model_runtime::RuntimeError::from)?;
        KvCache::from_layers(layers).map_err(ReceiverError::from)
    }

    /// Greedy generation from the prompt (the answer prefix included), with `cache` injected as
    /// the prompt cache when given; the text, the extracted letter index if any, and the
    /// generation time in ms (the prompt forward included).
    pub fn generate(
        &self,
        prompt: &LetterPrompt,
        cache: Option<&DecodedCache>,
        max_new_tokens: usize,
        n_choices: usize,
    ) -> Result<(String, Option<usize>, f64), ReceiverError> {
        let model = &self.loaded.model;
        let params = GenerateParams {
            max_new_tokens,
            stop_ids: model.config().eos_token_ids.clone(),
        };
        let (generation, ms) = timed(|| -> Result<_, ReceiverError> {
            let (logits, kv) = self.prompt_forward(&prompt.ids, cache)?;
            Ok(model.generate_greedy_from(&logits, kv, prompt.ids.len(), &params)?)
        });
        let text = self.loaded.tokenizer.decode(&generation?.tokens, true)?;
        let letter = extract_letter(&text, n_choices);
        Ok((text, letter, ms))
    }
}

/// The first standalone choice letter in generated text (the prompt already ends with
/// "The correct answer is", so the continuation starts with the letter when the model obeys).
pub fn extract_letter(text: &str, n_choices: usize) -> Option<usize> {
    let letters =
        &service_kit::prompt::LETTERS[..n_choices.min(service_kit::prompt::LETTERS.len())];
    let chars: Vec<char> = text.chars().collect();
    chars.iter().enumerate().find_map(|(i, c)| {
        let standalone = (i == 0 || !chars[i - 1].is_alphanumeric())
            && chars.get(i + 1).is_none_or(|n| !n.is_alphanumeric());
        letters.iter().position(|l| l == c).filter(|_| standalone)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_the_first_standalone_letter() {
        assert_eq!(extract_letter(" B", 4), Some(1));
        assert_eq!(extract_letter(" (C). Because", 4), Some(2));
        assert_eq!(extract_letter(" Because D", 4), Some(3));
        assert_eq!(extract_letter(" E", 4), None);
        assert_eq!(extract_letter("And", 4), None);
    }
}
