//! The receiver engine: owns the model; scores an example by forced choice from its own
//! prefill or from an injected prompt cache, or by greedy generation. Tensors stay here; the
//! rest of the service hands in host rows. Every method is blocking.

use model_runtime::candle_core::Tensor;
use model_runtime::{ForcedChoice, GenerateParams, KvCache, LayerKv, forced_choice};
use service_kit::letters::{LetterPrompt, letter_prompt};
use service_kit::model_load::LoadedModel;
use service_kit::prompt::Example;
use service_kit::timing::timed;

use crate::decode::DecodedCache;
use crate::error::ReceiverError;

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

    /// Scores from the receiver's own prefill of the prompt.
    pub fn score_plain(&self, prompt: &LetterPrompt) -> Result<Scored, ReceiverError> {
        let model = &self.loaded.model;
        let (logits, prefill_ms) = timed(|| model.next_token_logits(&prompt.ids));
        let logits = logits?;
        let (choice, score_ms) = timed(|| forced_choice(&logits, &prompt.candidates));
        Ok(Scored {
            choice: choice?,
            prefill_ms,
            score_ms,
        })
    }

    /// Scores with `cache` (the fused prompt cache for positions before the last prompt token)
    /// injected: only the last prompt token runs, at its absolute position.
    pub fn score_with_cache(
        &self,
        prompt: &LetterPrompt,
        cache: &DecodedCache,
    ) -> Result<Scored, ReceiverError> {
        let model = &self.loaded.model;
        self.check_fits(prompt, cache)?;
        let last = prompt.ids.len() - 1;
        let (logits, prefill_ms) = timed(|| -> Result<Vec<f32>, ReceiverError> {
            let mut kv = self.kv_cache(cache)?;
            let input = model.ids_tensor(&prompt.ids[last..])?;
            let logits = model.forward(&input, last, &mut kv)?;
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
    fn check_fits(&self, prompt: &LetterPrompt, cache: &DecodedCache) -> Result<(), ReceiverError> {
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
        if cache.prompt_tokens != prompt.ids.len() {
            return Err(ReceiverError::Transfer(format!(
                "sharer prompt has {} tokens, receiver prompt {}: not the same prompt",
                cache.prompt_tokens,
                prompt.ids.len()
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
            let Some(cache) = cache else {
                return Ok(model.generate_greedy(&prompt.ids, &params)?);
            };
            self.check_fits(prompt, cache)?;
            let last = prompt.ids.len() - 1;
            let mut kv = self.kv_cache(cache)?;
            let logits = model.forward(&model.ids_tensor(&prompt.ids[last..])?, last, &mut kv)?;
            Ok(model.generate_greedy_from(&logits, kv, last + 1, &params)?)
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
