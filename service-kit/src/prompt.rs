//! The evaluation item as both services see it, and the task prompt ("Accurately answer
//! the following question: ...") that goes inside each model's chat template, with the answer
//! prefix "The correct answer is" (docs/EVALUATION.md).
//!
//! The text is the same as `eval_harness::prompt::evaluation_prompt`: a second copy (the services
//! link the harness anyway, for rank scoring); each copy's unit test pins the same expected text.

/// Letters of the choices, by position.
pub const LETTERS: &[char] = &['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J'];

/// What the assistant turn starts with; the next token is the answer letter.
pub const ANSWER_PREFIX: &str = "The correct answer is";

/// A multiple-choice item (domain type; the gRPC `Example` converts into it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Stable id within its dataset.
    pub id: String,
    /// Question text.
    pub question: String,
    /// Choice texts, lettered A, B, ... by position (2 to 10 of them).
    pub choices: Vec<String>,
    /// Index of the gold choice, when known.
    pub gold: Option<usize>,
}

/// Why an example is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExampleError {
    /// Too few or too many choices.
    #[error("example {id}: {n} choices, need 2 to {max}")]
    ChoiceCount {
        /// Example id.
        id: String,
        /// Choices given.
        n: usize,
        /// Most allowed.
        max: usize,
    },
    /// The gold letter is not one of the choices' letters.
    #[error("example {id}: gold {gold:?} is not a choice letter")]
    Gold {
        /// Example id.
        id: String,
        /// Gold given.
        gold: String,
    },
}

impl Example {
    /// Builds and checks an example; `gold` is a letter or empty.
    pub fn new(
        id: String,
        question: String,
        choices: Vec<String>,
        gold: &str,
    ) -> Result<Self, ExampleError> {
        if !(2..=LETTERS.len()).contains(&choices.len()) {
            return Err(ExampleError::ChoiceCount {
                id,
                n: choices.len(),
                max: LETTERS.len(),
            });
        }
        let gold = match gold.trim() {
            "" => None,
            g => {
                let index = LETTERS[..choices.len()]
                    .iter()
                    .position(|l| g.len() == 1 && g.starts_with(*l));
                Some(index.ok_or_else(|| ExampleError::Gold {
                    id: id.clone(),
                    gold: g.to_string(),
                })?)
            }
        };
        Ok(Self {
            id,
            question,
            choices,
            gold,
        })
    }

    /// The letters of this example's choices.
    pub fn letters(&self) -> impl Iterator<Item = char> + '_ {
        LETTERS.iter().copied().take(self.choices.len())
    }

    /// The gold letter, if known.
    pub fn gold_letter(&self) -> Option<char> {
        self.gold.map(|i| LETTERS[i])
    }

    /// The task prompt's user message, optionally preceded by a text message from the sharer.
    pub fn user_message(&self, context: Option<&str>) -> String {
        let choices: Vec<String> = self
            .letters()
            .zip(&self.choices)
            .map(|(l, c)| format!("{l}. {c}"))
            .collect();
        let context = match context {
            Some(text) if !text.is_empty() => format!("Context from another model:\n{text}\n\n"),
            _ => String::new(),
        };
        format!(
            "{context}Accurately answer the following question:\n\n{}\n\nChoices:\n{}\n\n\
             Instructions:\n- Carefully read the question and all options.\n\
             - Select the single most correct answer.\n\
             - Respond ONLY in the following format: \"The correct answer is A/B/C/D\".\n\
             - Do not include any explanations, additional text, or punctuation besides the answer.",
            self.question,
            choices.join("\n")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gold_letter_must_name_a_choice() {
        let choices = vec!["x".to_string(), "y".to_string(), "z".to_string()];
        let ok = Example::new("1".into(), "q".into(), choices.clone(), "C").unwrap();
        assert_eq!(ok.gold, Some(2));
        assert!(Example::new("1".into(), "q".into(), choices.clone(), "D").is_err());
        assert!(Example::new("1".into(), "q".into(), vec!["x".into()], "").is_err());
        assert_eq!(
            Example::new("1".into(), "q".into(), choices, "")
                .unwrap()
                .gold,
            None
        );
    }

    #[test]
    fn user_message_is_the_spec_text_exactly() {
        // The same expected text as eval-harness's `spec_prompt_text_is_exact`.
        let e = Example::new(
            "1".into(),
            "Which is a planet?".into(),
            vec!["Sun".into(), "Mars".into()],
            "B",
        )
        .unwrap();
        let expected = "Accurately answer the following question:\n\nWhich is a planet?\n\nChoices:\nA. Sun\nB. Mars\n\n\
Instructions:\n- Carefully read the question and all options.\n- Select the single most correct answer.\n\
- Respond ONLY in the following format: \"The correct answer is A/B/C/D\".\n\
- Do not include any explanations, additional text, or punctuation besides the answer.";
        assert_eq!(e.user_message(None), expected);
        assert_eq!(
            e.user_message(Some("hint")),
            format!("Context from another model:\nhint\n\n{expected}")
        );
    }
}
