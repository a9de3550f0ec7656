//! Forced-choice letter prompts: the token ids both services run, and the candidate token of
//! each answer letter.
//!
//! The letter follows "The correct answer is" after a space. Tokenizers differ in how they split
//! " A" (one token in Qwen and SmolLM2; a space token then the letter in the tiny test
//! tokenizer), so the prompt is the longest token prefix shared by "<prompt> A", "<prompt> B",
//! ..., and each candidate is the first token after it.

use model_runtime::{ChatTemplate, RuntimeError, Tokenizer};

use crate::prompt::{ANSWER_PREFIX, Example};

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
pub enum LetterError {
    /// Tokenization failed.
    #[error("tokenizing the prompt: {0}")]
    Tokenizer(#[from] RuntimeError),
    /// Two letters share their first distinguishing token, or the prompt is empty.
    #[error("letters are not separable by one token after the prompt")]
    NotSeparable,
}

/// Builds the letter prompt of `example`, with an optional sharer text message as context.
pub fn letter_prompt(
    tokenizer: &Tokenizer,
    template: ChatTemplate,
    example: &Example,
    context: Option<&str>,
) -> Result<LetterPrompt, LetterError> {
    let text = template.prompt(&example.user_message(context), ANSWER_PREFIX);
    let variants = example
        .letters()
        .map(|l| tokenizer.encode(&format!("{text} {l}")))
        .collect::<Result<Vec<_>, _>>()?;
    let first = &variants[0];
    let common = (0..first.len())
        .take_while(|&i| variants.iter().all(|v| v.get(i) == Some(&first[i])))
        .count();
    let candidates: Vec<u32> = variants
        .iter()
        .map(|v| v.get(common).copied())
        .collect::<Option<_>>()
        .ok_or(LetterError::NotSeparable)?;
    let mut distinct = candidates.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if common == 0 || distinct.len() != candidates.len() {
        return Err(LetterError::NotSeparable);
    }
    Ok(LetterPrompt {
        ids: first[..common].to_vec(),
        candidates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_tokenizer_gives_distinct_letter_candidates() {
        let tok = Tokenizer::tiny().unwrap();
        let ex = Example::new(
            "1".into(),
            "Which is red?".into(),
            vec!["sky".into(), "rose".into(), "grass".into(), "snow".into()],
            "B",
        )
        .unwrap();
        let p = letter_prompt(&tok, ChatTemplate::Qwen2, &ex, None).unwrap();
        assert_eq!(p.candidates.len(), 4);
        for (l, &c) in ["A", "B", "C", "D"].iter().zip(&p.candidates) {
            assert_eq!(tok.decode(&[c], false).unwrap().trim(), *l);
        }
        let with_context =
            letter_prompt(&tok, ChatTemplate::Qwen2, &ex, Some("roses are red")).unwrap();
        assert!(with_context.ids.len() > p.ids.len());
    }
}
