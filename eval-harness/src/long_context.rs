//! The long variant of the context regime (SciQ-context long): an item's support passage
//! placed at a seeded position among distractor passages from a pinned corpus, padded to a
//! target length in the sharer's tokens.
//!
//! The rule, the same on every machine (pure; the token counter is the caller's):
//! - **Seed**: [`placement_seed`]`(item id)` = `order_key(0x6c6f6e67, id)` (splitmix64 of
//!   FNV-1a-64 over the salt's little-endian bytes then the id's UTF-8; the salt is "long").
//! - **Distractor order**: the corpus sorted by `order_key(seed, distractor id)` (ties by id),
//!   so it does not depend on the corpus's order or on any RNG crate.
//! - **Fill**: first fit in that order: a distractor is taken when the support's count plus
//!   the counts of those taken plus its own stays within the target; the walk stops when the
//!   room left is below the shortest distractor. Passages are whole: none is ever cut, and the
//!   support is never cut (a support longer than the target is returned alone).
//! - **Placement**: the support goes before taken distractor `order_key(seed,
//!   "support-position") % (k + 1)` of the `k` taken (in the order taken), or last; passages
//!   are joined by [`PASSAGE_SEPARATOR`].
//! - **Exact length**: the joined passage is counted once; while it exceeds the target
//!   (tokens merging across joins), the last distractor taken is dropped and the position
//!   recomputed. So the result never exceeds the target unless the support alone does.
//!
//! The counter counts a text as the sharer prefills it; each distractor is counted alone once
//! ([`CountedCorpus::new`]), the support and the joined passage once per item. The corpus must
//! hold no evaluation passage: [`without_evaluation_passages`] drops any that overlaps one.

use std::collections::HashSet;

use crate::sample::order_key;

/// The targets a grid may ask for, in sharer tokens.
pub const LONG_CONTEXT_TARGETS: [usize; 3] = [1024, 2048, 8192];

/// What separates two passages of a long passage (a blank line).
pub const PASSAGE_SEPARATOR: &str = "\n\n";

/// The seed rule in one line, for run manifests.
pub const SEED_RULE: &str = "seed = order_key(0x6c6f6e67, item id) (splitmix64 of FNV-1a-64 over \
    the salt's 8 little-endian bytes then the id); distractors in the order of \
    order_key(seed, distractor id), ties by id; the support before taken distractor \
    order_key(seed, \"support-position\") % (k + 1)";

/// The length rule in one line, for run manifests.
pub const LENGTH_RULE: &str = "passages joined by a blank line; length counted with the sharer's \
    tokenizer on the passage as the sharer prefills it (\"{passage}\\n\\n\", no BOS); whole \
    distractors taken first fit in the seeded order while the total stays within the target; \
    the joined passage counted once and, while over, the last distractor taken dropped; the \
    support is never cut (a support over the target is sent alone)";

/// The salt of [`placement_seed`] ("long" in ASCII).
const PLACEMENT_SALT: u64 = 0x6c6f_6e67;

/// One passage of the distractor corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distractor {
    /// Stable id, unique in the corpus (`squad/<id>`, `boolq/<doc id>`, ...).
    pub id: String,
    /// The passage text, trimmed.
    pub text: String,
}

/// The distractor corpus with each passage's token count.
#[derive(Debug, Clone)]
pub struct CountedCorpus {
    passages: Vec<(Distractor, usize)>,
    shortest: usize,
}

impl CountedCorpus {
    /// Counts every distractor once with `count`.
    pub fn new<E>(
        distractors: Vec<Distractor>,
        mut count: impl FnMut(&str) -> Result<usize, E>,
    ) -> Result<Self, E> {
        let passages = distractors
            .into_iter()
            .map(|d| count(&d.text).map(|n| (d, n)))
            .collect::<Result<Vec<_>, E>>()?;
        let shortest = passages.iter().map(|p| p.1).min().unwrap_or(0);
        Ok(Self { passages, shortest })
    }

    /// Passages in the corpus.
    pub fn len(&self) -> usize {
        self.passages.len()
    }

    /// Whether the corpus has no passage.
    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }
}

/// Sentences at least this long (normalised) make a distractor overlap an evaluation passage.
const OVERLAP_SENTENCE_CHARS: usize = 40;

/// Lower case, whitespace runs collapsed to one space.
fn normalise(text: &str) -> String {
    text.to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The normalised sentences of `text` of at least [`OVERLAP_SENTENCE_CHARS`] characters.
fn long_sentences(normalised: &str) -> impl Iterator<Item = &str> {
    normalised
        .split(['.', '?', '!'])
        .map(str::trim)
        .filter(|s| s.chars().count() >= OVERLAP_SENTENCE_CHARS)
}

/// Drops every distractor that overlaps one of the `evaluation` passages: it shares a sentence
/// of at least 40 characters with one, or contains a shorter one whole (both compared lower
/// case with whitespace collapsed). Returns the distractors kept and the ids of those dropped.
pub fn without_evaluation_passages(
    distractors: Vec<Distractor>,
    evaluation: &[&str],
) -> (Vec<Distractor>, Vec<String>) {
    let evaluation: Vec<String> = evaluation.iter().map(|p| normalise(p)).collect();
    let sentences: HashSet<&str> = evaluation.iter().flat_map(|p| long_sentences(p)).collect();
    let short: Vec<&str> = evaluation
        .iter()
        .filter(|p| !p.is_empty() && long_sentences(p).next().is_none())
        .map(String::as_str)
        .collect();
    let mut dropped = Vec::new();
    let kept = distractors
        .into_iter()
        .filter(|d| {
            let text = normalise(&d.text);
            let overlaps = long_sentences(&text).any(|s| sentences.contains(s))
                || short.iter().any(|p| text.contains(p));
            if overlaps {
                dropped.push(d.id.clone());
            }
            !overlaps
        })
        .collect();
    (kept, dropped)
}

/// An item's long passage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LongPassage {
    /// The joined passage.
    pub text: String,
    /// Its token count (the counter's, of the whole text).
    pub tokens: usize,
    /// Index of the support among the passages joined (0 = first).
    pub support_index: usize,
    /// Ids of the distractors, in the order they appear.
    pub distractor_ids: Vec<String>,
}

/// The seed of an item's placement and distractor order (module docs).
pub fn placement_seed(item_id: &str) -> u64 {
    order_key(PLACEMENT_SALT, item_id)
}

/// Builds the long passage of one item (module docs give the rule).
pub fn build_long_passage<E>(
    support: &str,
    item_id: &str,
    corpus: &CountedCorpus,
    target_tokens: usize,
    mut count: impl FnMut(&str) -> Result<usize, E>,
) -> Result<LongPassage, E> {
    let seed = placement_seed(item_id);
    let mut order: Vec<(u64, &Distractor, usize)> = corpus
        .passages
        .iter()
        .map(|(d, n)| (order_key(seed, &d.id), d, *n))
        .collect();
    order.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));

    let mut used = count(support)?;
    let mut taken: Vec<&Distractor> = Vec::new();
    for (_, d, n) in order {
        if target_tokens.saturating_sub(used) < corpus.shortest.max(1) {
            break;
        }
        if used + n <= target_tokens {
            used += n;
            taken.push(d);
        }
    }
    let position_key = order_key(seed, "support-position");
    loop {
        let at = (position_key % (taken.len() as u64 + 1)) as usize;
        let mut parts: Vec<&str> = taken.iter().map(|d| d.text.as_str()).collect();
        parts.insert(at, support);
        let text = parts.join(PASSAGE_SEPARATOR);
        let tokens = count(&text)?;
        if tokens <= target_tokens || taken.is_empty() {
            return Ok(LongPassage {
                text,
                tokens,
                support_index: at,
                distractor_ids: taken.iter().map(|d| d.id.clone()).collect(),
            });
        }
        taken.pop();
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// Whitespace words: a stand-in tokenizer that is additive over the separator.
    fn words(text: &str) -> Result<usize, Infallible> {
        Ok(text.split_whitespace().count())
    }

    /// Twelve passages of 3 to 14 words, each with a unique marker word.
    fn corpus() -> Vec<Distractor> {
        (0..12)
            .map(|i| Distractor {
                id: format!("toy/{i}"),
                text: format!("marker{i} {}", "filler ".repeat(2 + i).trim()),
            })
            .collect()
    }

    fn counted(distractors: Vec<Distractor>) -> CountedCorpus {
        CountedCorpus::new(distractors, words).unwrap()
    }

    const SUPPORT: &str = "Mitochondria are the powerhouse of the cell.";

    fn build(id: &str, target: usize) -> LongPassage {
        build_long_passage(SUPPORT, id, &counted(corpus()), target, words).unwrap()
    }

    #[test]
    fn the_support_is_intact_and_present_exactly_once() {
        for id in ["a", "b", "q-17", "Mercury_7175875"] {
            let p = build(id, 40);
            assert_eq!(p.text.matches(SUPPORT).count(), 1, "{}", p.text);
            let parts: Vec<&str> = p.text.split(PASSAGE_SEPARATOR).collect();
            assert_eq!(parts[p.support_index], SUPPORT);
            assert_eq!(parts.len(), p.distractor_ids.len() + 1);
            // Every distractor appears whole, once, in the order recorded.
            let others: Vec<&str> = parts
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != p.support_index)
                .map(|(_, s)| *s)
                .collect();
            for (text, id) in others.iter().zip(&p.distractor_ids) {
                let d = corpus().into_iter().find(|d| &d.id == id).unwrap();
                assert_eq!(*text, d.text);
            }
        }
    }

    #[test]
    fn the_target_is_respected_and_no_distractor_left_out_would_fit() {
        for target in [8, 20, 40, 64] {
            for id in ["a", "b", "c", "d"] {
                let p = build(id, target);
                assert!(p.tokens <= target, "{target}: {}", p.tokens);
                assert_eq!(p.tokens, words(&p.text).unwrap());
                // With an additive counter the fill is exact first fit: every distractor left
                // out is longer than the room left.
                let room = target - p.tokens;
                for d in corpus()
                    .iter()
                    .filter(|d| !p.distractor_ids.contains(&d.id))
                {
                    assert!(
                        words(&d.text).unwrap() > room,
                        "{target} {id}: {} fits",
                        d.id
                    );
                }
            }
        }
        // A target above the whole corpus takes every distractor.
        assert_eq!(build("a", 10_000).distractor_ids.len(), corpus().len());
    }

    #[test]
    fn a_support_longer_than_the_target_is_returned_alone_and_uncut() {
        let p = build("a", 3);
        assert_eq!((p.text.as_str(), p.support_index), (SUPPORT, 0));
        assert!(p.distractor_ids.is_empty() && p.tokens > 3);
    }

    #[test]
    fn same_item_same_passage_whatever_the_corpus_order() {
        let mut reversed = corpus();
        reversed.reverse();
        for id in ["a", "b", "c"] {
            let p = build(id, 50);
            assert_eq!(p, build(id, 50));
            let q = build_long_passage(SUPPORT, id, &counted(reversed.clone()), 50, words);
            assert_eq!(p, q.unwrap());
        }
    }

    #[test]
    fn placement_and_distractors_follow_the_item_id() {
        let built: Vec<LongPassage> = (0..40).map(|i| build(&format!("item-{i}"), 40)).collect();
        let positions: std::collections::BTreeSet<usize> =
            built.iter().map(|p| p.support_index).collect();
        assert!(positions.len() >= 3, "{positions:?}");
        assert!(positions.contains(&0));
        let firsts: std::collections::BTreeSet<&String> = built
            .iter()
            .filter_map(|p| p.distractor_ids.first())
            .collect();
        assert!(firsts.len() > 1);
        // The seed is a fixed function of the id (pinned: changing it changes every passage).
        assert_eq!(placement_seed("item-0"), order_key(0x6c6f_6e67, "item-0"));
        assert_ne!(placement_seed("item-0"), placement_seed("item-1"));
    }

    #[test]
    fn an_overcount_at_the_joins_drops_distractors_until_it_fits() {
        // A counter that charges one extra token per separator: the estimate from the pieces
        // fits, the exact count of the joined text does not, and the builder backs off.
        let joins = |text: &str| -> Result<usize, Infallible> {
            Ok(words(text)? + text.matches(PASSAGE_SEPARATOR).count())
        };
        let corpus = counted(corpus());
        let p = build_long_passage(SUPPORT, "a", &corpus, 40, joins).unwrap();
        assert!(p.tokens <= 40, "{}", p.tokens);
        assert_eq!(p.text.matches(SUPPORT).count(), 1);
    }

    #[test]
    fn distractors_that_overlap_an_evaluation_passage_are_dropped() {
        let mut distractors = corpus();
        distractors.push(Distractor {
            id: "leak/sentence".into(),
            text: format!(
                "Unrelated start.  {}  Unrelated end.",
                SUPPORT.to_uppercase()
            ),
        });
        distractors.push(Distractor {
            id: "leak/short".into(),
            text: "It said: cells divide. Then more.".into(),
        });
        let evaluation = [SUPPORT, "Cells   divide", "Mitochondria are small."];
        let (kept, dropped) = without_evaluation_passages(distractors, &evaluation);
        assert_eq!(dropped, ["leak/sentence", "leak/short"]);
        assert_eq!(kept, corpus());
    }

    #[test]
    fn counter_errors_are_returned() {
        let counted = counted(corpus());
        let failing = |_: &str| -> Result<usize, &'static str> { Err("no tokenizer") };
        assert_eq!(
            build_long_passage(SUPPORT, "a", &counted, 40, failing),
            Err("no tokenizer")
        );
        assert!(CountedCorpus::new(corpus(), failing).is_err());
    }
}
