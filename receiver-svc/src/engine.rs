//! The receiver engine: owns the model; scores an example by forced choice or by rank
//! classification, from its own prefill or from an injected prompt cache, or by greedy
//! generation. An injected cache comes from the fuse seam already on the model's device.
//! Every method is blocking.

use eval_harness::{
    ChoiceLogprob, Example, LetterPrompt, Normalization, RankPrompt, first_standalone_letter,
    letter_prompt, rank_prompt, rank_prompt_after_passage,
};
use fuser::{CacheFuser, FusedCache, PromptLayout, ReceiverContext};
use kvwire::HostCache;
use model_runtime::candle_core::Tensor;
use model_runtime::{ForcedChoice, GenerateParams, KvCache, forced_choice};
use service_kit::model_load::LoadedModel;
use service_kit::timing::timed;

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

    /// The prompt text a C2C fuser aligns across tokenizers: the rank context; empty for
    /// letter prompts, which the sharer builds from the example itself.
    pub fn text(&self) -> &str {
        match self {
            ReceiverPrompt::Letter(_) | ReceiverPrompt::Generate(_) => "",
            ReceiverPrompt::Rank(p, _) => &p.text,
        }
    }
}

/// A prompt cache from the fuse seam and where the receiver's own tokens go on it.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The cache of the positions before the receiver's own tokens, on the model's device.
    pub cache: KvCache,
    /// Index in the prompt ids of the first token the receiver runs on it.
    pub run_from: usize,
    /// Absolute position of that token.
    pub next_position: usize,
}

impl From<FusedCache> for Injected {
    fn from(f: FusedCache) -> Self {
        Self {
            cache: f.cache,
            run_from: f.run_from,
            next_position: f.next_position,
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

    /// The context layout's rank prompt: the question alone (`passage` empty), or with a
    /// passage the receiver was sent as text before it (token concatenation).
    pub fn rank_prompt_after_passage(
        &self,
        example: &Example,
        passage: &str,
    ) -> Result<RankPrompt, ReceiverError> {
        rank_prompt_after_passage(&self.loaded.tokenizer, example, passage)
            .map_err(|e| ReceiverError::invalid("example", e.to_string()))
    }

    /// Runs the prompt: a full prefill of `ids`, or, with a cache from the fuse seam injected,
    /// the receiver's own tokens (`ids[run_from..]`: the last prompt token in the shared
    /// layout, the whole question after a passage in the context layout) at their absolute
    /// positions from `next_position`. Last-position logits `[1, V]`, the cache after the
    /// prompt, and the position after the prompt's last token.
    fn prompt_forward(
        &self,
        ids: &[u32],
        cache: Option<Injected>,
    ) -> Result<(Tensor, KvCache, usize), ReceiverError> {
        let model = &self.loaded.model;
        let Some(Injected {
            cache: mut kv,
            run_from,
            next_position,
        }) = cache
        else {
            let (logits, kv) = model.prefill(&model.ids_tensor(ids)?)?;
            return Ok((logits, kv, ids.len()));
        };
        let own = own_tokens(ids, run_from)?;
        let logits = model.forward(&model.ids_tensor(own)?, next_position, &mut kv)?;
        Ok((logits, kv, next_position + own.len()))
    }

    /// The receiver's delta score of every position of an injected cache (in the cache's
    /// row order): the attention probability its own tokens (`ids[run_from..]`) put on the
    /// row, summed over layers, heads and tokens (docs/REFINEMENT.md).
    pub fn delta_scores(
        &self,
        ids: &[u32],
        injected: &Injected,
    ) -> Result<Vec<f32>, ReceiverError> {
        let own = own_tokens(ids, injected.run_from)?;
        let model = &self.loaded.model;
        Ok(model.query_attention(
            &model.ids_tensor(own)?,
            injected.next_position,
            &injected.cache,
        )?)
    }

    /// Rank classification: the prompt runs (see [`Self::prompt_forward`]), then every
    /// continuation is scored from the prompt's cache (the score stage).
    pub fn rank(
        &self,
        prompt: &RankPrompt,
        cache: Option<Injected>,
    ) -> Result<Ranked, ReceiverError> {
        let (prefilled, prefill_ms) = tracing::info_span!("receiver.prefill")
            .in_scope(|| timed(|| self.prompt_forward(&prompt.ids, cache)));
        let (logits, kv, end) = prefilled?;
        let (scores, score_ms) = tracing::info_span!("receiver.score").in_scope(|| {
            timed(|| {
                self.loaded
                    .model
                    .score_continuations(&logits, &kv, end, &prompt.continuations)
            })
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
        cache: Option<Injected>,
    ) -> Result<Scored, ReceiverError> {
        let prefill = tracing::info_span!("receiver.prefill");
        let (logits, prefill_ms) = prefill.in_scope(|| {
            timed(|| -> Result<Vec<f32>, ReceiverError> {
                let (logits, _, _) = self.prompt_forward(&prompt.ids, cache)?;
                let flat = logits.flatten_all().and_then(|t| t.to_vec1::<f32>());
                flat.map_err(|e| ReceiverError::Model(e.into()))
            })
        });
        let logits = logits?;
        let (choice, score_ms) = tracing::info_span!("receiver.score")
            .in_scope(|| timed(|| forced_choice(&logits, &prompt.candidates)));
        Ok(Scored {
            choice: choice?,
            prefill_ms,
            score_ms,
        })
    }

    /// The receiver's prompt cache for `prompt` (its text and ids) from the sharer rows a
    /// transfer delivered, through `fuser`, on this model's device, in `layout`.
    pub fn fuse(
        &self,
        fuser: &dyn CacheFuser,
        sharer: &HostCache,
        text: &str,
        ids: &[u32],
        layout: PromptLayout,
    ) -> Result<FusedCache, ReceiverError> {
        let loaded = &self.loaded;
        let model_id = loaded.spec.to_string();
        let context = ReceiverContext {
            model: &loaded.model,
            model_id: &model_id,
            tokenizer: &loaded.tokenizer,
            text,
            ids,
            layout,
        };
        Ok(fuser.fuse(sharer, &context)?)
    }

    /// Greedy generation from the prompt (the answer prefix included), with `cache` injected as
    /// the prompt cache when given; the text, the extracted letter index if any, and the
    /// generation time in ms (the prompt forward included).
    pub fn generate(
        &self,
        prompt: &LetterPrompt,
        cache: Option<Injected>,
        max_new_tokens: usize,
        n_choices: usize,
    ) -> Result<(String, Option<usize>, f64), ReceiverError> {
        let model = &self.loaded.model;
        let params = GenerateParams {
            max_new_tokens,
            stop_ids: model.config().eos_token_ids.clone(),
        };
        let (generation, ms) = tracing::info_span!("receiver.generate").in_scope(|| {
            timed(|| -> Result<_, ReceiverError> {
                let (logits, kv, end) = self.prompt_forward(&prompt.ids, cache)?;
                Ok(model.generate_greedy_from(&logits, kv, end, &params)?)
            })
        });
        let text = self.loaded.tokenizer.decode(&generation?.tokens, true)?;
        let letter = first_standalone_letter(&text, n_choices);
        Ok((text, letter, ms))
    }
}

/// The prompt tokens the receiver runs itself on an injected cache (`ids[run_from..]`).
fn own_tokens(ids: &[u32], run_from: usize) -> Result<&[u32], ReceiverError> {
    ids.get(run_from..)
        .filter(|own| !own.is_empty())
        .ok_or_else(|| {
            ReceiverError::invalid(
                "example",
                "the prompt has no tokens of the receiver's own to run",
            )
        })
}
