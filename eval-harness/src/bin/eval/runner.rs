//! Scoring one item with a loaded model in one of the three modes.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use eval_harness::{
    ANSWER_PREFIX, ChoiceLogprob, Example, LetterScore, RankScore, evaluation_prompt,
    extract_final_number, extract_letter, letter_choice, numbers_match, rank_all, rank_context,
    rank_continuation,
};
use model_runtime::{ChatTemplate, GenerateParams, Model, Tokenizer};
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
}

impl<'a> Runner<'a> {
    /// Resolves the letter tokens (" A".." D", one token each) and the stop tokens.
    pub fn new(
        model: &'a Model,
        tokenizer: &'a Tokenizer,
        template: ChatTemplate,
        mode: Mode,
        max_new_tokens: usize,
    ) -> Result<Self> {
        let mut letter_ids = Vec::new();
        for letter in ["A", "B", "C", "D"] {
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
        })
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
            seconds: 0.0,
            letter: None,
            rank: Vec::new(),
            generated: None,
            extracted: None,
        };
        match self.mode {
            Mode::Letter => {
                let ids = self
                    .tokenizer
                    .encode(&self.template.prompt(&evaluation_prompt(ex), ANSWER_PREFIX))?;
                row.prompt_tokens = ids.len();
                let logits = self.model.next_token_logits(&ids)?;
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
                let (user, prefix) = if open_ended {
                    (rank_context(ex), "")
                } else {
                    (evaluation_prompt(ex), ANSWER_PREFIX)
                };
                let ids = self
                    .tokenizer
                    .encode(&self.template.prompt(&user, prefix))?;
                row.prompt_tokens = ids.len();
                let params = GenerateParams {
                    max_new_tokens: self.max_new_tokens,
                    stop_ids: self.stop_ids.clone(),
                };
                let generation = self.model.generate_greedy(&ids, &params)?;
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
