//! Scoring one item with a loaded model in one of the three modes.
//!
//! Chat prompts (letter, generate) all start with the same tokens: the template's system turn
//! and the first line of the task prompt (about 30 of Qwen's ~170 tokens). The runner prefills
//! that prefix once and runs each item from a copy of its cache, which is the same computation
//! as a full prefill up to floating-point summation order (`--no-prefix-cache` turns it off).

use std::cell::OnceCell;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use eval_harness::{
    ANSWER_PREFIX, ChoiceLogprob, Example, LetterScore, RankScore, evaluation_prompt,
    extract_final_number, extract_letter, letter_choice, numbers_match, rank_all, rank_context,
    rank_continuation,
};
use model_runtime::candle_core::Tensor;
use model_runtime::{ChatTemplate, GenerateParams, KvCache, Model, Tokenizer};
use serde::Serialize;

/// Scoring mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Forced choice over the answer letters after "The correct answer is" (chat template).
    Letter,
    /// OLMES rank classification of the choice texts after "Question: ...\nAnswer:".
    Rank,
    /// Greedy generation with answer extraction (chat template).
    Generate,
}

impl Mode {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Letter => "letter",
            Mode::Rank => "rank",
            Mode::Generate => "generate",
        }
    }
}

/// One evaluated item.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    pub dataset: String,
    pub gold: Option<usize>,
    pub answer_text: Option<String>,
    /// Predicted choice (letter/generate), or the per-char rank prediction.
    pub prediction: Option<usize>,
    /// Correct under the mode's primary rule (rank: per-char, the OLMES default for ARC).
    pub correct: bool,
    pub prompt_tokens: usize,
    /// Leading prompt tokens whose cache came from the shared prefix (0: full prefill).
    pub reused_prefix_tokens: usize,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub letter: Option<LetterScore>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rank: Vec<RankScore>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extracted: Option<String>,
}

/// A model, its tokenizer and template, set up for one mode.
pub struct Runner<'a> {
    model: &'a Model,
    tokenizer: &'a Tokenizer,
    template: ChatTemplate,
    mode: Mode,
    max_new_tokens: usize,
    letter_ids: Vec<u32>,
    stop_ids: Vec<u32>,
    /// Whether chat prompts reuse the shared prefix's cache.
    reuse_prefix: bool,
    /// Built from the first chat item (`None` inside: no common prefix found).
    shared_prefix: OnceCell<Option<SharedPrefix>>,
}

/// Token ids every chat prompt of the run starts with, and their prefilled cache.
struct SharedPrefix {
    ids: Vec<u32>,
    cache: KvCache,
}

/// Number of leading elements `a` and `b` share.
fn common_prefix_len(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl<'a> Runner<'a> {
    /// Resolves the letter tokens (letter mode: " A".." D", one token each) and the stop
    /// tokens.
    pub fn new(
        model: &'a Model,
        tokenizer: &'a Tokenizer,
        template: ChatTemplate,
        mode: Mode,
        max_new_tokens: usize,
        reuse_prefix: bool,
    ) -> Result<Self> {
        let mut letter_ids = Vec::new();
        let letters: &[&str] = if mode == Mode::Letter {
            &["A", "B", "C", "D"]
        } else {
            &[]
        };
        for letter in letters {
            let ids = tokenizer.encode(&format!(" {letter}"))?;
            match ids.as_slice() {
                [id] => letter_ids.push(*id),
                _ => bail!("\" {letter}\" is not a single token: {ids:?}"),
            }
        }
        let mut stop_ids: Vec<u32> = tokenizer.eos_token_id().into_iter().collect();
        stop_ids.extend(tokenizer.token_to_id("<|im_end|>"));
        Ok(Self {
            model,
            tokenizer,
            template,
            mode,
            max_new_tokens,
            letter_ids,
            stop_ids,
            reuse_prefix,
            shared_prefix: OnceCell::new(),
        })
    }

    /// The chat prompt of an item (letter and generate modes): user text and assistant prefix.
    fn chat_parts(ex: &Example) -> (String, &'static str) {
        if ex.choices.is_empty() {
            (rank_context(ex), "")
        } else {
            (evaluation_prompt(ex), ANSWER_PREFIX)
        }
    }

    /// Token ids of an item's chat prompt.
    fn chat_ids(&self, ex: &Example) -> Result<Vec<u32>> {
        let (user, prefix) = Self::chat_parts(ex);
        Ok(self
            .tokenizer
            .encode(&self.template.prompt(&user, prefix))?)
    }

    /// The prefix shared by `ex`'s prompt with the same prompt around other questions:
    /// the common tokens of two probes that differ only in the question.
    fn build_shared_prefix(&self, ex: &Example) -> Result<Option<SharedPrefix>> {
        let probe = |question: &str| {
            let mut p = ex.clone();
            p.question = question.to_owned();
            self.chat_ids(&p)
        };
        let (a, b) = (probe("Which 1")?, probe("7 what")?);
        let len = common_prefix_len(&a, &b);
        if len == 0 {
            return Ok(None);
        }
        let ids = a[..len].to_vec();
        let (_, cache) = self.model.prefill(&self.model.ids_tensor(&ids)?)?;
        Ok(Some(SharedPrefix { ids, cache }))
    }

    /// Prefills a chat prompt, from the shared prefix's cache when `ids` extends it.
    /// Returns last-position logits `[1, V]`, the cache, and how many tokens were reused.
    fn prefill_chat(&self, ex: &Example, ids: &[u32]) -> Result<(Tensor, KvCache, usize)> {
        if self.reuse_prefix {
            if self.shared_prefix.get().is_none() {
                let built = self.build_shared_prefix(ex)?;
                let _ = self.shared_prefix.set(built);
            }
            if let Some(Some(p)) = self.shared_prefix.get()
                && ids.len() > p.ids.len()
                && ids.starts_with(&p.ids)
            {
                let mut cache = p.cache.clone();
                let rest = self.model.ids_tensor(&ids[p.ids.len()..])?;
                let logits = self.model.forward(&rest, p.ids.len(), &mut cache)?;
                return Ok((logits, cache, p.ids.len()));
            }
        }
        let (logits, cache) = self.model.prefill(&self.model.ids_tensor(ids)?)?;
        Ok((logits, cache, 0))
    }

    /// Scores one item.
    pub fn run(&self, ex: &Example) -> Result<Row> {
        let start = Instant::now();
        let mut row = Row {
            id: ex.id.clone(),
            dataset: ex.dataset.clone(),
            gold: ex.gold,
            answer_text: ex.answer_text.clone(),
            prediction: None,
            correct: false,
            prompt_tokens: 0,
            reused_prefix_tokens: 0,
            seconds: 0.0,
            letter: None,
            rank: Vec::new(),
            generated: None,
            extracted: None,
        };
        match self.mode {
            Mode::Letter => {
                let ids = self.chat_ids(ex)?;
                row.prompt_tokens = ids.len();
                let (logits, _, reused) = self.prefill_chat(ex, &ids)?;
                row.reused_prefix_tokens = reused;
                let logits = logits.flatten_all()?.to_vec1::<f32>()?;
                let picked: Vec<f32> = self.letter_ids[..ex.choices.len()]
                    .iter()
                    .map(|&id| {
                        logits
                            .get(id as usize)
                            .copied()
                            .context("letter token outside the vocabulary")
                    })
                    .collect::<Result<_>>()?;
                let score = letter_choice(&picked).context("non-finite letter logits")?;
                row.prediction = Some(score.prediction);
                row.letter = Some(score);
            }
            Mode::Rank => {
                let ctx = self.tokenizer.encode(&rank_context(ex))?;
                row.prompt_tokens = ctx.len();
                let texts: Vec<String> = ex.choices.iter().map(|c| rank_continuation(c)).collect();
                let conts = texts
                    .iter()
                    .map(|t| self.tokenizer.encode(t))
                    .collect::<Result<Vec<_>, _>>()?;
                let scores = self.model.continuation_logprobs(&ctx, &conts)?;
                let choices: Vec<ChoiceLogprob> = scores
                    .iter()
                    .zip(&texts)
                    .map(|(s, t)| ChoiceLogprob {
                        logprob: s.sum_logprob,
                        tokens: s.n_tokens,
                        chars: t.chars().count(),
                    })
                    .collect();
                let ranked =
                    rank_all(&choices).context("non-finite continuation log-probabilities")?;
                row.prediction = Some(ranked[2].prediction);
                row.rank = ranked.to_vec();
            }
            Mode::Generate => {
                let open_ended = ex.choices.is_empty();
                let (_, prefix) = Self::chat_parts(ex);
                let ids = self.chat_ids(ex)?;
                row.prompt_tokens = ids.len();
                let params = GenerateParams {
                    max_new_tokens: self.max_new_tokens,
                    stop_ids: self.stop_ids.clone(),
                };
                let (logits, cache, reused) = self.prefill_chat(ex, &ids)?;
                row.reused_prefix_tokens = reused;
                let generation =
                    self.model
                        .generate_greedy_from(&logits, cache, ids.len(), &params)?;
                let text = format!(
                    "{prefix}{}",
                    self.tokenizer.decode(&generation.tokens, true)?
                );
                if open_ended {
                    row.extracted = extract_final_number(&text);
                } else if let Some((i, _rule)) = extract_letter(&text, ex.choices.len()) {
                    row.prediction = Some(i);
                    row.extracted = ex.labels.get(i).cloned();
                }
                row.generated = Some(text);
            }
        }
        row.correct = match (&row.extracted, &ex.answer_text, ex.choices.is_empty()) {
            (Some(pred), Some(gold), true) => numbers_match(pred, gold),
            _ => row.prediction.is_some() && row.prediction == ex.gold,
        };
        row.seconds = start.elapsed().as_secs_f64();
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eval_harness::letter_labels;
    use model_runtime::candle_core::{DType, Device};
    use model_runtime::{Arch, ModelConfig};

    fn example(question: &str) -> Example {
        Example {
            id: question.to_owned(),
            dataset: "t".into(),
            question: question.to_owned(),
            choices: vec!["a cat".into(), "the sun".into()],
            labels: letter_labels(2),
            gold: Some(0),
            answer_text: None,
            passage: None,
        }
    }

    #[test]
    fn shared_prefix_cache_reproduces_full_prefill() {
        let mut config = ModelConfig::tiny(Arch::Qwen2);
        config.max_position = 2048;
        let model = Model::random(&config, 7, &Device::Cpu, DType::F32).unwrap();
        let tokenizer = Tokenizer::tiny().unwrap();
        let runner = |reuse| {
            Runner::new(
                &model,
                &tokenizer,
                ChatTemplate::Qwen2,
                Mode::Generate,
                4,
                reuse,
            )
            .unwrap()
        };
        let (shared, full) = (runner(true), runner(false));
        for question in ["Which is a star?", "What orbits the earth?"] {
            let ex = example(question);
            let ids = shared.chat_ids(&ex).unwrap();
            let (a, cache_a, reused) = shared.prefill_chat(&ex, &ids).unwrap();
            let (b, cache_b, none) = full.prefill_chat(&ex, &ids).unwrap();
            assert!(
                reused > 10 && reused < ids.len(),
                "reused {reused} of {}",
                ids.len()
            );
            assert_eq!(none, 0);
            assert_eq!(cache_a.seq_len(), cache_b.seq_len());
            let diff = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-4, "max logit difference {diff}");
        }
    }

    #[test]
    fn common_prefix_counts_leading_equal_ids() {
        assert_eq!(common_prefix_len(&[1, 2, 3], &[1, 2, 4, 5]), 2);
        assert_eq!(common_prefix_len(&[1, 2], &[1, 2, 3]), 2);
        assert_eq!(common_prefix_len(&[9], &[1]), 0);
    }
}
