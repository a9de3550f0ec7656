//! The synthetic passkey task: the deterministic check of the context regime's path. The
//! passage is neutral filler with one line `The passkey is NNNN.` (four digits) at a seeded
//! place; the question is `What is the passkey?`, with four four-digit choices (the passkey and
//! three distinct seeded distractors, the gold at a seeded letter), scored by rank. A model that
//! reads the passage finds the passkey; one that does not is at chance (25%).
//!
//! Pure: every item follows from (seed, index, length) alone, on every machine.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::example::{Example, letter_labels};
use crate::sample::order_key;

/// The question of every passkey item.
pub const PASSKEY_QUESTION: &str = "What is the passkey?";

/// Choices per item (chance is one in this).
pub const PASSKEY_CHOICES: usize = 4;

/// The neutral filler sentences the passage is drawn from.
const FILLER: [&str; 6] = [
    "The grass is green.",
    "The sky is blue.",
    "The sun is yellow.",
    "Here we go.",
    "There and back again.",
    "The river flows past the hill.",
];

/// The line that hides the passkey.
pub fn passkey_line(passkey: u16) -> String {
    format!("The passkey is {passkey}.")
}

/// Item `index` of the passkey task under `seed`, with at least `words` words of filler
/// (sentences drawn by the seed from a fixed set) around the one passkey line, which goes
/// before a seeded filler sentence (or last). Id `passkey-{index}`, dataset
/// `passkey/{words}`.
pub fn passkey_example(seed: u64, index: usize, words: usize) -> Example {
    let mut rng = ChaCha8Rng::seed_from_u64(order_key(seed, &format!("passkey-{index}")));
    let passkey: u16 = rng.random_range(1000..10_000);
    let mut choices = vec![passkey];
    while choices.len() < PASSKEY_CHOICES {
        let d: u16 = rng.random_range(1000..10_000);
        if !choices.contains(&d) {
            choices.push(d);
        }
    }
    choices.shuffle(&mut rng);
    let gold = choices.iter().position(|&c| c == passkey);
    let mut sentences: Vec<String> = Vec::new();
    let mut count = 0;
    while count < words {
        let s = FILLER[rng.random_range(0..FILLER.len())];
        count += s.split_whitespace().count();
        sentences.push(s.to_owned());
    }
    let at = rng.random_range(0..=sentences.len());
    sentences.insert(at, passkey_line(passkey));
    Example {
        id: format!("passkey-{index}"),
        dataset: format!("passkey/{words}"),
        question: PASSKEY_QUESTION.to_owned(),
        labels: letter_labels(PASSKEY_CHOICES),
        choices: choices.iter().map(u16::to_string).collect(),
        gold,
        answer_text: None,
        passage: None,
    }
    .with_passage(sentences.join(" "))
}

/// Items `0..n` of the passkey task under `seed` at `words` words of filler.
pub fn passkey_examples(seed: u64, n: usize, words: usize) -> Vec<Example> {
    (0..n).map(|i| passkey_example(seed, i, words)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_deterministic_and_hide_exactly_one_passkey() {
        let a = passkey_examples(7, 20, 120);
        assert_eq!(a, passkey_examples(7, 20, 120));
        assert_ne!(a, passkey_examples(8, 20, 120));
        for ex in &a {
            let passage = ex.passage.as_deref().unwrap();
            assert_eq!(passage.matches("The passkey is").count(), 1, "{passage}");
            let gold = &ex.choices[ex.gold.unwrap()];
            assert!(
                passage.contains(&format!("The passkey is {gold}.")),
                "{passage}"
            );
            assert!(passage.split_whitespace().count() >= 120);
            let mut distinct = ex.choices.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), PASSKEY_CHOICES);
            assert!(ex.choices.iter().all(|c| c.len() == 4));
            assert_eq!(ex.question, PASSKEY_QUESTION);
        }
        // The gold letter and the line's place vary with the item.
        let golds: std::collections::HashSet<_> = a.iter().map(|e| e.gold).collect();
        assert!(golds.len() > 1);
        let starts: std::collections::HashSet<_> = a
            .iter()
            .map(|e| e.passage.as_deref().unwrap().find("The passkey").unwrap())
            .collect();
        assert!(starts.len() > 1);
    }

    #[test]
    fn one_item_does_not_depend_on_how_many_are_drawn() {
        assert_eq!(passkey_examples(3, 5, 40)[4], passkey_example(3, 4, 40));
        let short = passkey_example(3, 0, 0);
        assert_eq!(
            short.passage.as_deref(),
            Some(passkey_line(short.choices[short.gold.unwrap()].parse().unwrap()).as_str())
        );
    }
}
