//! Rank-classification prompts (OLMES): the plain `Question: ...\nAnswer:` context (no chat
//! template) that the receiver and, for KV methods, the sharer run, and the continuation
//! tokens of each choice. The texts and the scoring math are the evaluation harness's, so the
//! services and `eval --mode rank` score the same way.

use eval_harness::{ChoiceLogprob, rank_context, rank_continuation};
use model_runtime::{ContinuationScore, RuntimeError, Tokenizer};

use crate::prompt::{Example, LETTERS};

/// A rank prompt: the context to run and what to score after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankPrompt {
    /// The context text (what a sharer is sent to build the same cache).
    pub text: String,
    /// Context token ids.
    pub ids: Vec<u32>,
    /// Token ids of each choice's continuation (a space then the choice text), in choice order.
    pub continuations: Vec<Vec<u32>>,
    /// Characters of each continuation, leading space included (per-character normalisation).
    pub chars: Vec<usize>,
}

/// Why a rank prompt could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RankPromptError {
    /// Tokenization failed.
    #[error("tokenizing the rank prompt: {0}")]
    Tokenizer(#[from] RuntimeError),
    /// The context or a continuation has no tokens.
    #[error("{0} has no tokens")]
    Empty(&'static str),
}

/// The context text: an optional sharer message, then `Question: {question}\nAnswer:`.
pub fn rank_context_text(example: &Example, message: Option<&str>) -> String {
    let harness_example = eval_harness::Example {
        id: example.id.clone(),
        dataset: String::new(),
        question: example.question.clone(),
        choices: example.choices.clone(),
        labels: LETTERS
            .iter()
            .take(example.choices.len())
            .map(char::to_string)
            .collect(),
        gold: example.gold,
        answer_text: None,
    };
    let context = rank_context(&harness_example);
    match message {
        Some(m) if !m.is_empty() => format!("{m}\n\n{context}"),
        _ => context,
    }
}

/// Tokenizes the context and each choice's continuation separately (as `eval --mode rank`).
pub fn rank_prompt(
    tokenizer: &Tokenizer,
    example: &Example,
    message: Option<&str>,
) -> Result<RankPrompt, RankPromptError> {
    let text = rank_context_text(example, message);
    let ids = tokenizer.encode(&text)?;
    if ids.is_empty() {
        return Err(RankPromptError::Empty("the context"));
    }
    let mut continuations = Vec::with_capacity(example.choices.len());
    let mut chars = Vec::with_capacity(example.choices.len());
    for choice in &example.choices {
        let continuation = rank_continuation(choice);
        let tokens = tokenizer.encode(&continuation)?;
        if tokens.is_empty() {
            return Err(RankPromptError::Empty("a choice continuation"));
        }
        chars.push(continuation.chars().count());
        continuations.push(tokens);
    }
    Ok(RankPrompt {
        text,
        ids,
        continuations,
        chars,
    })
}

impl RankPrompt {
    /// The harness's per-choice inputs from the model's continuation scores.
    pub fn choice_logprobs(&self, scores: &[ContinuationScore]) -> Vec<ChoiceLogprob> {
        scores
            .iter()
            .zip(&self.chars)
            .map(|(s, &chars)| ChoiceLogprob {
                logprob: s.sum_logprob,
                tokens: s.n_tokens,
                chars,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Example {
        Example::new(
            "1".into(),
            "Which is red?".into(),
            vec!["sky".into(), "a rose".into()],
            "B",
        )
        .unwrap()
    }

    #[test]
    fn context_is_the_harness_text_with_the_message_first() {
        let e = example();
        assert_eq!(
            rank_context_text(&e, None),
            "Question: Which is red?\nAnswer:"
        );
        assert_eq!(
            rank_context_text(&e, Some("roses are red")),
            "roses are red\n\nQuestion: Which is red?\nAnswer:"
        );
    }

    #[test]
    fn continuations_are_tokenized_alone_with_their_character_counts() {
        let tok = Tokenizer::tiny().unwrap();
        let p = rank_prompt(&tok, &example(), None).unwrap();
        assert_eq!(p.ids, tok.encode(&p.text).unwrap());
        assert_eq!(p.continuations[1], tok.encode(" a rose").unwrap());
        assert_eq!(p.chars, [4, 7]);
        let scores = [
            ContinuationScore {
                token_logprobs: vec![-1.0],
                sum_logprob: -1.0,
                n_tokens: 1,
            },
            ContinuationScore {
                token_logprobs: vec![-1.0, -1.0],
                sum_logprob: -2.0,
                n_tokens: 2,
            },
        ];
        let c = p.choice_logprobs(&scores);
        assert_eq!((c[1].logprob, c[1].tokens, c[1].chars), (-2.0, 2, 7));
    }
}
