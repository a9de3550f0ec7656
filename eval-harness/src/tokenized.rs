//! Tokenized prompts (feature `prompts`, which brings in model-runtime): the token ids the
//! services run for an item, and what they score after them.
//!
//! Forced choice ([`letter_prompt`]): the letter follows "The correct answer is" after a space.
//! Tokenizers differ in how they split " A" (one token in Qwen and SmolLM2; a space token then
//! the letter in the tiny test tokenizer), so the prompt is the longest token prefix shared by
//! "<prompt> A", "<prompt> B", ..., and each candidate is the first token after it.
//!
//! Rank classification ([`rank_prompt`], OLMES): the plain `Question: ...\nAnswer:` context
//! (no chat template) that the receiver and, for KV methods, the sharer run, and the
//! continuation tokens of each choice, tokenized separately as `eval --mode rank` does.

use model_runtime::{ChatTemplate, ContinuationScore, RuntimeError, Tokenizer};

use crate::example::Example;
use crate::prompt::{
    ANSWER_PREFIX, evaluation_prompt_with_context, passage_context, rank_context_with_message,
    rank_continuation,
};
use crate::scoring::ChoiceLogprob;

/// The tokens to run and the letter candidates to score.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LetterPrompt {
    /// Prompt token ids (chat template, task, answer prefix).
    pub ids: Vec<u32>,
    /// The token of each choice letter, in choice order.
    pub candidates: Vec<u32>,
}

/// Why a letter prompt could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LetterPromptError {
    /// Tokenization failed.
    #[error("tokenizing the prompt: {0}")]
    Tokenizer(#[from] RuntimeError),
    /// Two letters share their first distinguishing token, the prompt is empty, or the item
    /// has no choices.
    #[error("letters are not separable by one token after the prompt")]
    NotSeparable,
}

/// Builds the letter prompt of `example` (the SPEC prompt in `template`, then the answer
/// prefix), with an optional sharer text message as context.
pub fn letter_prompt(
    tokenizer: &Tokenizer,
    template: ChatTemplate,
    example: &Example,
    context: Option<&str>,
) -> Result<LetterPrompt, LetterPromptError> {
    let text = template.prompt(
        &evaluation_prompt_with_context(example, context),
        ANSWER_PREFIX,
    );
    let variants = example
        .labels
        .iter()
        .take(example.choices.len())
        .map(|l| tokenizer.encode(&format!("{text} {l}")))
        .collect::<Result<Vec<_>, _>>()?;
    let first = variants.first().ok_or(LetterPromptError::NotSeparable)?;
    let common = (0..first.len())
        .take_while(|&i| variants.iter().all(|v| v.get(i) == Some(&first[i])))
        .count();
    let candidates: Vec<u32> = variants
        .iter()
        .map(|v| v.get(common).copied())
        .collect::<Option<_>>()
        .ok_or(LetterPromptError::NotSeparable)?;
    let mut distinct = candidates.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if common == 0 || distinct.len() != candidates.len() {
        return Err(LetterPromptError::NotSeparable);
    }
    Ok(LetterPrompt {
        ids: first[..common].to_vec(),
        candidates,
    })
}

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

/// Tokenizes the context (an optional sharer message first) and each choice's continuation
/// separately (as `eval --mode rank`).
pub fn rank_prompt(
    tokenizer: &Tokenizer,
    example: &Example,
    message: Option<&str>,
) -> Result<RankPrompt, RankPromptError> {
    let text = rank_context_with_message(example, message);
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

/// The context regime's rank prompt with the passage in the receiver's own prompt (the upper
/// bound, and the raw-passage text baseline with the text the sharer sent): the tokens of
/// [`passage_context`] then the tokens of the question's rank context, each tokenized alone
/// (token concatenation: the ids a KV transfer of the passage followed by the question gives).
/// `text` is the two texts joined; an empty passage gives the question-only prompt.
pub fn rank_prompt_after_passage(
    tokenizer: &Tokenizer,
    example: &Example,
    passage: &str,
) -> Result<RankPrompt, RankPromptError> {
    let mut prompt = rank_prompt(tokenizer, example, None)?;
    if passage.is_empty() {
        return Ok(prompt);
    }
    let wrapped = passage_context(passage);
    let mut ids = tokenizer.encode(&wrapped)?;
    ids.extend_from_slice(&prompt.ids);
    prompt.ids = ids;
    prompt.text = wrapped + &prompt.text;
    Ok(prompt)
}

/// The token ids of a passage as the sharer prefills it ([`passage_context`], raw text).
pub fn passage_ids(tokenizer: &Tokenizer, passage: &str) -> Result<Vec<u32>, RuntimeError> {
    tokenizer.encode(&passage_context(passage))
}

impl RankPrompt {
    /// The per-choice scoring inputs from the model's continuation scores.
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

    fn example(choices: &[&str]) -> Example {
        let choices = choices.iter().map(|c| c.to_string()).collect();
        Example::new("1".into(), "Which is red?".into(), choices, "B").unwrap()
    }

    #[test]
    fn tiny_tokenizer_gives_distinct_letter_candidates() {
        let tok = Tokenizer::tiny().unwrap();
        let ex = example(&["sky", "rose", "grass", "snow"]);
        let p = letter_prompt(&tok, ChatTemplate::Qwen2, &ex, None).unwrap();
        assert_eq!(p.candidates.len(), 4);
        for (l, &c) in ["A", "B", "C", "D"].iter().zip(&p.candidates) {
            assert_eq!(tok.decode(&[c], false).unwrap().trim(), *l);
        }
        let with_context =
            letter_prompt(&tok, ChatTemplate::Qwen2, &ex, Some("roses are red")).unwrap();
        assert!(with_context.ids.len() > p.ids.len());
        let mut open_ended = ex.clone();
        open_ended.choices.clear();
        assert!(matches!(
            letter_prompt(&tok, ChatTemplate::Qwen2, &open_ended, None),
            Err(LetterPromptError::NotSeparable)
        ));
    }

    #[test]
    fn continuations_are_tokenized_alone_with_their_character_counts() {
        let tok = Tokenizer::tiny().unwrap();
        let p = rank_prompt(&tok, &example(&["sky", "a rose"]), None).unwrap();
        assert_eq!(p.text, "Question: Which is red?\nAnswer:");
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

    #[test]
    fn the_passage_prompt_concatenates_the_tokens_of_the_passage_and_the_question() {
        let tok = Tokenizer::tiny().unwrap();
        let ex = example(&["sky", "a rose"]);
        let alone = rank_prompt(&tok, &ex, None).unwrap();
        let p = rank_prompt_after_passage(&tok, &ex, "Roses are red.").unwrap();
        let passage = passage_ids(&tok, "Roses are red.").unwrap();
        assert_eq!(p.ids[..passage.len()], passage[..]);
        assert_eq!(p.ids[passage.len()..], alone.ids[..]);
        assert_eq!(p.text, "Roses are red.\n\nQuestion: Which is red?\nAnswer:");
        assert_eq!(p.continuations, alone.continuations);
        assert_eq!(rank_prompt_after_passage(&tok, &ex, "").unwrap(), alone);
    }
}
