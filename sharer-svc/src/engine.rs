//! The sharer engine: owns the model; prefills prompts (the cache stays on the model's device;
//! the producer selects rows there and exports only those), answers examples by forced choice,
//! and generates hints. Every method is blocking (run it on a blocking thread).

use c2c::select::ScoreKind;
use eval_harness::{Example, letter_prompt};
use model_runtime::{GenerateParams, KvCache, KvPart, forced_choice};
use service_kit::model_load::LoadedModel;
use service_kit::timing::timed;

use crate::domain::PromptSource;
use crate::error::SharerError;

/// Model shape and identity, as Info reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// The model spec.
    pub spec: String,
    /// Architecture name.
    pub architecture: String,
    /// Decoder layers.
    pub layers: usize,
    /// KV heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Tokenizer source.
    pub tokenizer: String,
    /// Random weights.
    pub random_weights: bool,
    /// Device name (`cpu`, `cuda:0`).
    pub device: String,
}

/// A prefilled prompt: its tokens and its cache on the model's device.
#[derive(Debug)]
pub struct Prefilled {
    /// Prompt token ids.
    pub ids: Vec<u32>,
    /// Every layer's K and V, `[1, H, T, D]`, on the model's device.
    pub cache: KvCache,
    /// Prefill wall time, ms.
    pub prefill_ms: f64,
}

/// The sharer's forced-choice answer.
#[derive(Debug, Clone, PartialEq)]
pub struct SharerAnswer {
    /// Index of the predicted choice.
    pub prediction: usize,
    /// Letter probabilities in choice order.
    pub probabilities: Vec<f32>,
    /// p1 - p2.
    pub margin: f32,
    /// Prefill time, ms.
    pub prefill_ms: f64,
}

/// The sharer's model and everything needed to run it.
#[derive(Debug)]
pub struct SharerEngine {
    loaded: LoadedModel,
    info: EngineInfo,
}

impl SharerEngine {
    /// Wraps a loaded model.
    pub fn new(loaded: LoadedModel) -> Self {
        let c = loaded.model.config();
        let info = EngineInfo {
            spec: loaded.spec.to_string(),
            architecture: c.arch.name().to_string(),
            layers: c.n_layers,
            kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            vocab_size: c.vocab_size,
            tokenizer: loaded.tokenizer_source.clone(),
            random_weights: loaded.spec.is_random(),
            device: loaded.model.weights_info().device.clone(),
        };
        Self { loaded, info }
    }

    /// Shape and identity.
    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// Token ids of a prompt: the letter prompt of an example, or raw text as is.
    pub fn prompt_ids(&self, prompt: &PromptSource) -> Result<Vec<u32>, SharerError> {
        match prompt {
            PromptSource::Example(e) => Ok(self.letter_ids(e)?.0),
            PromptSource::Text(t) => Ok(self.loaded.tokenizer.encode(t)?),
        }
    }

    fn letter_ids(&self, e: &Example) -> Result<(Vec<u32>, Vec<u32>), SharerError> {
        let p = letter_prompt(&self.loaded.tokenizer, self.loaded.template, e, None)
            .map_err(|err| SharerError::invalid("example", err.to_string()))?;
        Ok((p.ids, p.candidates))
    }

    /// Runs the prompt; the cache stays on the model's device.
    pub fn prefill(&self, ids: &[u32]) -> Result<Prefilled, SharerError> {
        let model = &self.loaded.model;
        let input = model.ids_tensor(ids)?;
        let (result, prefill_ms) = tracing::info_span!("sharer.prefill", tokens = ids.len() as i64)
            .in_scope(|| timed(|| model.prefill(&input)));
        let (_, cache) = result?;
        Ok(Prefilled {
            ids: ids.to_vec(),
            cache,
            prefill_ms,
        })
    }

    /// One score per prompt position for a scored selection: the summed per-layer norms of the
    /// K or V rows, or the attention the query puts on each position (the query runs after
    /// the prompt, on a copy of the cache; none of its rows are kept). On the model's device.
    pub fn position_scores(
        &self,
        prefilled: &Prefilled,
        kind: ScoreKind,
        query: Option<&str>,
    ) -> Result<Vec<f32>, SharerError> {
        match kind {
            ScoreKind::Vnorm => Ok(prefilled.cache.row_norms(KvPart::V)?),
            ScoreKind::Knorm => Ok(prefilled.cache.row_norms(KvPart::K)?),
            ScoreKind::QueryAttention => {
                let query = query.ok_or_else(|| {
                    SharerError::invalid("query", "query-attention selection needs the query")
                })?;
                let ids = self.loaded.tokenizer.encode(query)?;
                if ids.is_empty() {
                    return Err(SharerError::invalid("query", "tokenizes to no tokens"));
                }
                let model = &self.loaded.model;
                let input = model.ids_tensor(&ids)?;
                Ok(model.query_attention(&input, prefilled.ids.len(), &prefilled.cache)?)
            }
            ScoreKind::ProjVnorm | ScoreKind::Delta => Err(SharerError::invalid(
                "transfer.selection",
                "a receiver-side score cannot be computed by the sharer",
            )),
        }
    }

    /// The sharer's own forced-choice answer.
    pub fn answer(&self, example: &Example) -> Result<SharerAnswer, SharerError> {
        let (ids, candidates) = self.letter_ids(example)?;
        let (logits, prefill_ms) = tracing::info_span!("sharer.prefill", tokens = ids.len() as i64)
            .in_scope(|| timed(|| self.loaded.model.next_token_logits(&ids)));
        let choice = forced_choice(&logits?, &candidates)?;
        Ok(SharerAnswer {
            prediction: choice.prediction,
            probabilities: choice.probs,
            margin: choice.margin,
            prefill_ms,
        })
    }

    /// A greedy-generated hint about the example (no answer prefix), and the generation time.
    pub fn hint(
        &self,
        example: &Example,
        max_new_tokens: usize,
    ) -> Result<(String, f64), SharerError> {
        let user = format!(
            "Give a short, useful hint for answering this question. Do not state the answer letter.\n\n{}\n\nChoices:\n{}",
            example.question.trim(),
            choice_lines(example)
        );
        self.generate(&user, max_new_tokens)
    }

    /// A greedy-generated summary of the example's passage, written for its question (not its
    /// choices; the context layout's generated text baseline), and the generation time. `None`
    /// without a passage.
    pub fn passage_summary(
        &self,
        example: &Example,
        max_new_tokens: usize,
    ) -> Result<Option<(String, f64)>, SharerError> {
        let Some(passage) = example.passage.as_deref().filter(|p| !p.trim().is_empty()) else {
            return Ok(None);
        };
        // The choices are left out: shown them, a small model answers with a choice instead of
        // summarising (SmolLM2-135M did on 5 of 6 SciQ items).
        let user = format!(
            "Summarize the passage below in one or two short sentences, keeping the facts needed to answer the question.\n\nPassage:\n{}\n\nQuestion: {}",
            passage.trim(),
            example.question.trim(),
        );
        self.generate(&user, max_new_tokens).map(Some)
    }

    /// Greedy generation for a user message in the model's chat template (no answer prefix).
    fn generate(&self, user: &str, max_new_tokens: usize) -> Result<(String, f64), SharerError> {
        let text = self.loaded.template.prompt(user, "");
        let ids = self.loaded.tokenizer.encode(&text)?;
        let params = GenerateParams {
            max_new_tokens,
            stop_ids: self.loaded.model.config().eos_token_ids.clone(),
        };
        let (generation, ms) = tracing::info_span!("sharer.generate", tokens = ids.len() as i64)
            .in_scope(|| timed(|| self.loaded.model.generate_greedy(&ids, &params)));
        let text = self.loaded.tokenizer.decode(&generation?.tokens, true)?;
        Ok((text.trim().to_string(), ms))
    }
}

/// The example's choices as "A. text" lines.
fn choice_lines(example: &Example) -> String {
    let mut lines = String::new();
    for (l, c) in example.letters().zip(&example.choices) {
        lines.push_str(&format!("{l}. {}\n", c.trim()));
    }
    lines.trim_end().to_string()
}
