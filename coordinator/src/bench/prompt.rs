//! Synthetic items whose receiver prompt is exactly T tokens.
//!
//! The benchmark scores by rank classification in the shared-prompt layout (both models read
//! the prompt, as in the C2C paper): the receiver's prompt is the OLMES context
//! `Question: {question}\nAnswer:` in its own tokenizer, and the four choices are one-word
//! continuations. The question is seeded filler words: the longest run of words whose prompt
//! fits in T tokens (binary search; a byte-level BPE encodes each space-led word on its own, so
//! the count grows with the words), then ` the` (one token in Qwen's, SmolLM2's and the tiny
//! test tokenizer) until the prompt is exactly T tokens. A length that cannot be met exactly
//! is an error, never a rounded prompt.

use eval_harness::{Example, rank_prompt};
use kvwire_proto::v1 as pb;
use model_runtime::Tokenizer;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::error::BenchError;

/// Filler vocabulary: common English words (each a single token or two in real tokenizers).
const WORDS: &[&str] = &[
    "river", "stone", "light", "north", "garden", "window", "paper", "market", "winter", "silver",
    "forest", "engine", "letter", "bridge", "summer", "cloud", "table", "animal", "valley",
    "ocean", "number", "friend", "school", "simple", "yellow", "little", "house", "water",
    "moving", "energy", "planet", "season", "farmer", "castle", "signal", "metal", "island",
    "corner", "circle", "mountain", "morning", "evening", "family", "village", "history",
    "science", "picture", "machine", "country", "weather", "kitchen", "journey", "balance",
    "pattern", "measure", "surface", "current", "harvest", "station", "captain", "blanket",
    "thunder", "lantern", "compass",
];

/// The word that tops a prompt up one token at a time.
const PAD: &str = "the";

/// The choices of every item (one word each, so the continuations are short).
const CHOICES: [&str; 4] = ["red", "blue", "green", "white"];

/// Tokens of the receiver's rank prompt for `question`.
fn prompt_tokens(
    tokenizer: &Tokenizer,
    question: &str,
    tokens: usize,
) -> Result<usize, BenchError> {
    let example = example(question, "probe", tokens)?;
    let prompt = rank_prompt(tokenizer, &example, None).map_err(|e| BenchError::Prompt {
        tokens,
        reason: e.to_string(),
    })?;
    Ok(prompt.ids.len())
}

fn example(question: &str, id: &str, tokens: usize) -> Result<Example, BenchError> {
    let choices = CHOICES.map(str::to_owned).to_vec();
    Example::new(id.into(), question.into(), choices, "A").map_err(|e| BenchError::Prompt {
        tokens,
        reason: e.to_string(),
    })
}

/// The wire item `id` whose receiver rank prompt is exactly `tokens` tokens of `tokenizer`,
/// with filler words drawn from `seed`.
pub fn item_of_length(
    tokenizer: &Tokenizer,
    tokens: usize,
    seed: u64,
    id: &str,
) -> Result<pb::Example, BenchError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let words: Vec<&str> = (0..tokens)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect();
    let question = |n: usize| words[..n].join(" ");
    let shortest = prompt_tokens(tokenizer, "", tokens)?;
    if shortest > tokens {
        return Err(BenchError::Prompt {
            tokens,
            reason: format!("the shortest prompt (an empty question) has {shortest} tokens"),
        });
    }
    // Largest n with prompt(n) <= tokens; prompt(0) <= tokens holds.
    let (mut lo, mut hi) = (0usize, words.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if prompt_tokens(tokenizer, &question(mid), tokens)? <= tokens {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let mut text = question(lo);
    let mut have = prompt_tokens(tokenizer, &text, tokens)?;
    // Each pad word adds one token, or none where it merges with the space before it (after
    // an empty question); a pad that jumps past the length is an error.
    let mut pads = 0;
    while have < tokens {
        if pads > tokens {
            return Err(BenchError::Prompt {
                tokens,
                reason: format!("{pads} words of {PAD:?} did not lengthen the prompt past {have}"),
            });
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(PAD);
        pads += 1;
        let next = prompt_tokens(tokenizer, &text, tokens)?;
        if next > tokens {
            return Err(BenchError::Prompt {
                tokens,
                reason: format!(
                    "adding the word {PAD:?} took the prompt from {have} to {next} tokens: this \
                     tokenizer cannot reach the length exactly"
                ),
            });
        }
        have = next;
    }
    let e = example(&text, id, tokens)?;
    Ok(pb::Example {
        id: e.id,
        question: e.question,
        choices: e.choices,
        gold: "A".into(),
        passage: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_have_exactly_the_asked_length() {
        let tok = Tokenizer::tiny().unwrap();
        for t in [15, 16, 17, 32, 100, 161] {
            let item = item_of_length(&tok, t, 7, "x").unwrap();
            assert_eq!(prompt_tokens(&tok, &item.question, t).unwrap(), t, "{t}");
        }
    }

    #[test]
    fn too_short_a_length_is_a_typed_error() {
        let tok = Tokenizer::tiny().unwrap();
        let err = item_of_length(&tok, 3, 7, "x").unwrap_err();
        assert!(matches!(err, BenchError::Prompt { tokens: 3, .. }), "{err}");
    }

    #[test]
    fn items_depend_on_the_seed() {
        let tok = Tokenizer::tiny().unwrap();
        let a = item_of_length(&tok, 64, 1, "x").unwrap();
        let b = item_of_length(&tok, 64, 2, "x").unwrap();
        assert_eq!(a, item_of_length(&tok, 64, 1, "x").unwrap());
        assert_ne!(a.question, b.question);
    }
}
