//! Prompt texts: the evaluation prompt (placed inside each model's chat template by the
//! caller), the answer prefix, and the OLMES rank-classification context.

use crate::example::Example;

/// The assistant turn starts with this; the next token is the answer letter.
pub const ANSWER_PREFIX: &str = "The correct answer is";

/// The evaluation prompt for a multiple-choice item (exact text).
pub fn evaluation_prompt(ex: &Example) -> String {
    let choices: Vec<String> = ex
        .labels
        .iter()
        .zip(&ex.choices)
        .map(|(label, text)| format!("{label}. {text}"))
        .collect();
    format!(
        "Accurately answer the following question:\n\n{}\n\nChoices:\n{}\n\nInstructions:\n\
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

/// The continuation scored for one choice: a space then the choice text.
pub fn rank_continuation(choice: &str) -> String {
    format!(" {choice}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::letter_labels;

    #[test]
    fn spec_prompt_text_is_exact() {
        let ex = Example {
            id: "1".into(),
            dataset: "t".into(),
            question: "Which is a planet?".into(),
            choices: vec!["Sun".into(), "Mars".into()],
            labels: letter_labels(2),
            gold: Some(1),
            answer_text: None,
        };
        let expected = "Accurately answer the following question:\n\nWhich is a planet?\n\nChoices:\nA. Sun\nB. Mars\n\n\
Instructions:\n- Carefully read the question and all options.\n- Select the single most correct answer.\n\
- Respond ONLY in the following format: \"The correct answer is A/B/C/D\".\n\
- Do not include any explanations, additional text, or punctuation besides the answer.";
        assert_eq!(evaluation_prompt(&ex), expected);
        assert_eq!(rank_context(&ex), "Question: Which is a planet?\nAnswer:");
        assert_eq!(rank_continuation("Mars"), " Mars");
    }
}
