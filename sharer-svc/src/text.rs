//! Text baselines: the raw question text, a deterministic extractive summary, and the UTF-8
//! byte cap (cut on a character boundary). Pure functions; the generated hint is the engine's.

use eval_harness::Example;

/// The longest prefix of `text` of at most `cap` bytes that ends on a character boundary, and
/// whether it was cut. `cap == 0` means no cap.
pub fn cap_utf8(text: &str, cap: usize) -> (&str, bool) {
    if cap == 0 || text.len() <= cap {
        return (text, false);
    }
    let mut end = cap;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// The example's passage as is (the context layout's raw-passage text baseline); an item
/// without one is an error the caller reports.
pub fn passage_text(example: &Example) -> Option<String> {
    example.passage.clone().filter(|p| !p.is_empty())
}

/// A deterministic question-aware extract of the passage (the context layout's heuristic
/// summary): the passage's sentences that share content words (over three letters, any case)
/// with the question or the choices, the most shared first (ties to the earlier sentence),
/// taken while they fit `cap` bytes with their joining spaces (0: no cap; a sentence that does
/// not fit is skipped for a shorter one), and given back in passage order. With no sentence
/// sharing a word, the first sentence. `None` without a passage.
pub fn passage_extract(example: &Example, cap: usize) -> Option<String> {
    let passage = passage_text(example)?;
    let sentences = split_sentences(&passage);
    let mut asked = content_words(&example.question);
    asked.extend(example.choices.iter().flat_map(|c| content_words(c)));
    let mut ranked: Vec<(usize, usize)> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| (shared_words(s, &asked), i))
        .filter(|&(overlap, _)| overlap > 0)
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    if ranked.is_empty() && !sentences.is_empty() {
        ranked.push((0, 0));
    }
    let mut kept = Vec::new();
    let mut used = 0usize;
    for (_, i) in ranked {
        let add = sentences[i].len() + usize::from(!kept.is_empty());
        if cap == 0 || used + add <= cap {
            kept.push(i);
            used += add;
        }
    }
    kept.sort_unstable();
    Some(
        kept.iter()
            .map(|&i| sentences[i])
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The question and its lettered choices, as plain text.
pub fn raw_text(example: &Example) -> String {
    let mut out = format!("Question: {}\nChoices:\n", example.question.trim());
    for (letter, choice) in example.letters().zip(&example.choices) {
        out.push_str(&format!("{letter}. {}\n", choice.trim()));
    }
    out
}

/// A deterministic extractive summary: the question's last sentence (usually the actual ask),
/// plus the earlier sentence sharing the most content words with the choices, then the
/// choices in compact form.
pub fn summary_text(example: &Example) -> String {
    let sentences = split_sentences(&example.question);
    let choice_words: Vec<String> = example
        .choices
        .iter()
        .flat_map(|c| content_words(c))
        .collect();
    let mut keep: Vec<usize> = Vec::new();
    if let Some(last) = sentences.len().checked_sub(1) {
        let best = (0..last)
            .map(|i| {
                (
                    shared_words(sentences[i], &choice_words),
                    std::cmp::Reverse(i),
                )
            })
            .max()
            .filter(|(overlap, _)| *overlap > 0)
            .map(|(_, std::cmp::Reverse(i))| i);
        keep.extend(best);
        keep.push(last);
    }
    let mut out: Vec<&str> = keep.iter().map(|&i| sentences[i]).collect();
    out.dedup();
    let mut text = out.join(" ");
    let options: Vec<String> = example
        .letters()
        .zip(&example.choices)
        .map(|(l, c)| format!("{l}) {}", c.trim()))
        .collect();
    text.push_str(" Options: ");
    text.push_str(&options.join("; "));
    text
}

fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '?' | '!') {
            let end = i + c.len_utf8();
            let s = text[start..end].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = end;
        }
    }
    let tail = text[start..].trim();
    if !tail.is_empty() {
        out.push(tail);
    }
    out
}

/// How many of `sentence`'s content words (repeats counted) are among `words`.
fn shared_words(sentence: &str, words: &[String]) -> usize {
    content_words(sentence)
        .iter()
        .filter(|w| words.contains(w))
        .count()
}

fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() > 3)
        .map(str::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Example {
        Example::new(
            "x".into(),
            "Plants need light. A seed was kept in a dark closet. Which factor stops the seed from growing?".into(),
            vec!["water".into(), "darkness and no light".into(), "soil".into(), "air".into()],
            "B",
        )
        .unwrap()
    }

    #[test]
    fn cap_never_splits_a_character() {
        let s = "aé日b";
        for cap in 1..s.len() + 2 {
            let (cut, truncated) = cap_utf8(s, cap);
            assert!(cut.len() <= cap);
            assert_eq!(truncated, cap < s.len());
            assert!(s.starts_with(cut));
        }
        assert_eq!(cap_utf8(s, 2), ("a", true));
        assert_eq!(cap_utf8(s, 0), (s, false));
    }

    #[test]
    fn summary_keeps_the_ask_and_the_relevant_sentence() {
        let s = summary_text(&example());
        assert!(s.starts_with("Plants need light. Which factor"), "{s}");
        assert!(!s.contains("closet"), "{s}");
        assert!(
            s.ends_with("Options: A) water; B) darkness and no light; C) soil; D) air"),
            "{s}"
        );
        assert_eq!(s, summary_text(&example()));
    }

    #[test]
    fn passage_extract_keeps_the_sentences_the_question_asks_about_within_the_cap() {
        let mut e = Example::new(
            "p".into(),
            "Which gas do plants release during photosynthesis?".into(),
            vec!["oxygen".into(), "nitrogen".into()],
            "A",
        )
        .unwrap();
        e.passage = Some(
            "Leaves are green. Photosynthesis in plants makes sugar. Plants release oxygen gas \
             during photosynthesis. Roots hold soil."
                .into(),
        );
        let all = passage_extract(&e, 0).unwrap();
        assert_eq!(
            all,
            "Photosynthesis in plants makes sugar. Plants release oxygen gas during photosynthesis."
        );
        // The best sentence alone fits 60 bytes; the second would not.
        let capped = passage_extract(&e, 60).unwrap();
        assert_eq!(capped, "Plants release oxygen gas during photosynthesis.");
        assert!(capped.len() <= 60);
        // Nothing in common: the first sentence.
        e.question = "Why?".into();
        e.choices = vec!["yes".into(), "no".into()];
        assert_eq!(passage_extract(&e, 0).unwrap(), "Leaves are green.");
        e.passage = None;
        assert_eq!(passage_extract(&e, 0), None);
    }

    #[test]
    fn raw_lists_every_choice() {
        let r = raw_text(&example());
        assert!(r.contains("B. darkness and no light\nC. soil\n"), "{r}");
    }
}
