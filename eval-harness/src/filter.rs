//! Which items an evaluation keeps: multiple-choice items need 2-4 choices and a gold answer
//! among A-D, others skipped and counted (docs/EVALUATION.md); open-ended: a reference answer.

use serde::Serialize;

use crate::example::Example;

/// Largest number of choices a letter (A-D) evaluation accepts.
pub const MAX_LETTER_CHOICES: usize = 4;

/// Counts of skipped items by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SkipCounts {
    /// More than four choices (an E option exists).
    pub too_many_choices: usize,
    /// Fewer than two choices.
    pub too_few_choices: usize,
    /// No gold answer among the choices.
    pub no_gold: usize,
    /// Open-ended item without a reference answer.
    pub no_reference_answer: usize,
}

impl SkipCounts {
    /// Total skipped.
    pub fn total(&self) -> usize {
        self.too_many_choices + self.too_few_choices + self.no_gold + self.no_reference_answer
    }
}

/// Keeps multiple-choice items answerable with A-D; counts the rest.
pub fn filter_a_to_d(examples: Vec<Example>) -> (Vec<Example>, SkipCounts) {
    let mut skipped = SkipCounts::default();
    let kept = examples
        .into_iter()
        .filter(|ex| {
            if ex.choices.len() > MAX_LETTER_CHOICES {
                skipped.too_many_choices += 1;
            } else if ex.choices.len() < 2 {
                skipped.too_few_choices += 1;
            } else if ex.gold.is_none_or(|g| g >= ex.choices.len()) {
                skipped.no_gold += 1;
            } else {
                return true;
            }
            false
        })
        .collect();
    (kept, skipped)
}

/// Keeps open-ended items that have a reference answer.
pub fn filter_open_ended(examples: Vec<Example>) -> (Vec<Example>, SkipCounts) {
    let mut skipped = SkipCounts::default();
    let kept = examples
        .into_iter()
        .filter(|ex| {
            let ok = ex
                .answer_text
                .as_deref()
                .is_some_and(|a| !a.trim().is_empty());
            skipped.no_reference_answer += usize::from(!ok);
            ok
        })
        .collect();
    (kept, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::letter_labels;

    fn mc(n: usize, gold: Option<usize>) -> Example {
        let choices: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        Example {
            id: format!("{n}-{gold:?}"),
            dataset: "t".into(),
            question: "q".into(),
            labels: letter_labels(n),
            choices,
            gold,
            answer_text: None,
            passage: None,
        }
    }

    #[test]
    fn five_choice_and_goldless_items_are_skipped_and_counted() {
        let items = vec![
            mc(4, Some(3)),
            mc(3, Some(0)),
            mc(5, Some(0)),
            mc(4, None),
            mc(1, Some(0)),
            mc(4, Some(7)),
        ];
        let (kept, skipped) = filter_a_to_d(items);
        assert_eq!(
            kept.iter().map(|e| e.choices.len()).collect::<Vec<_>>(),
            [4, 3]
        );
        assert_eq!(
            skipped,
            SkipCounts {
                too_many_choices: 1,
                too_few_choices: 1,
                no_gold: 2,
                no_reference_answer: 0
            }
        );
        assert_eq!(skipped.total(), 4);
        let mut open = mc(0, None);
        open.answer_text = Some("18".into());
        let (kept, skipped) = filter_open_ended(vec![open, mc(0, None)]);
        assert_eq!((kept.len(), skipped.no_reference_answer), (1, 1));
    }
}
