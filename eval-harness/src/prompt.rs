//! Prompt texts, one source for the harness and both services: the evaluation prompt
//! (placed inside each model's chat template by the caller), optionally preceded by a text
//! message from the sharer; the answer prefix; and the OLMES rank-classification context and
//! continuations.

use crate::example::Example;

/// The assistant turn starts with this; the next token is the answer letter.
pub const ANSWER_PREFIX: &str = "The correct answer is";

/// The evaluation prompt for a multiple-choice item (exact text).
pub fn evaluation_prompt(ex: &Example) -> String {
    evaluation_prompt_with_context(ex, None)
}

/// The evaluation prompt, preceded by `Context from another model:\n{context}\n\n` when
/// a non-empty context is given (the receiver's text methods).
pub fn evaluation_prompt_with_context(ex: &Example, context: Option<&str>) -> String {
    let choices: Vec<String> = ex
        .labels
        .iter()
        .zip(&ex.choices)
        .map(|(label, text)| format!("{label}. {text}"))
        .collect();
    let context = match context {
        Some(text) if !text.is_empty() => format!("Context from another model:\n{text}\n\n"),
        _ => String::new(),
    };
    format!(
        "{context}Accurately answer the following question:\n\n{}\n\nChoices:\n{}\n\nInstructions:\n\
         - Carefully read the question and all options.\n\
         - Select the single most correct answer.\n\
         - Respond ONLY in the following format: \"The correct answer is A/B/C/D\".\n\
         - Do not include any explanations, additional text, or punctuation besides the answer.",
        ex.question,
        choices.join("\n")
    )
}

/// The OLMES rank-classification context: `Question: {question}\nAnswer:` (plain text, no
/// chat template). Also the zero-shot gsm8k generation prompt.
pub fn rank_context(ex: &Example) -> String {
    format!("Question: {}\nAnswer:", ex.question)
}

/// The rank context preceded by `{message}\n\n` when a non-empty sharer message is given.
pub fn rank_context_with_message(ex: &Example, message: Option<&str>) -> String {
    let context = rank_context(ex);
    match message {
        Some(m) if !m.is_empty() => format!("{m}\n\n{context}"),
        _ => context,
    }
}

/// The context regime's passage wrapper: the passage, then a blank line (`{passage}\n\n`,
/// raw text, no chat template). The sharer prefills exactly this text; the receiver's upper
/// bound and raw-passage text baseline tokenize it the same way and put the rank context's
/// tokens after it.
pub fn passage_context(passage: &str) -> String {
    format!("{passage}\n\n")
}

/// The continuation scored for one choice: a space then the choice text.
pub fn rank_continuation(choice: &str) -> String {
    format!(" {choice}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(question: &str, choices: [&str; 2]) -> Example {
        let choices = choices.map(str::to_owned).to_vec();
        Example::new("1".into(), question.into(), choices, "B").unwrap()
    }

    #[test]
    fn spec_prompt_text_is_exact() {
        let ex = example("Which is a planet?", ["Sun", "Mars"]);
        let expected = "Accurately answer the following question:\n\nWhich is a planet?\n\nChoices:\nA. Sun\nB. Mars\n\n\
Instructions:\n- Carefully read the question and all options.\n- Select the single most correct answer.\n\
- Respond ONLY in the following format: \"The correct answer is A/B/C/D\".\n\
- Do not include any explanations, additional text, or punctuation besides the answer.";
        assert_eq!(evaluation_prompt(&ex), expected);
        assert_eq!(evaluation_prompt_with_context(&ex, Some("")), expected);
        assert_eq!(
            evaluation_prompt_with_context(&ex, Some("hint")),
            format!("Context from another model:\nhint\n\n{expected}")
        );
        assert_eq!(rank_context(&ex), "Question: Which is a planet?\nAnswer:");
        assert_eq!(rank_continuation("Mars"), " Mars");
        assert_eq!(passage_context("Mars is red."), "Mars is red.\n\n");
    }

    #[test]
    fn rank_context_puts_the_message_first() {
        let ex = example("Which is red?", ["sky", "a rose"]);
        assert_eq!(
            rank_context_with_message(&ex, None),
            "Question: Which is red?\nAnswer:"
        );
        assert_eq!(rank_context_with_message(&ex, Some("")), rank_context(&ex));
        assert_eq!(
            rank_context_with_message(&ex, Some("roses are red")),
            "roses are red\n\nQuestion: Which is red?\nAnswer:"
        );
    }
}
