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
                let overlap = content_words(sentences[i])
                    .iter()
                    .filter(|w| choice_words.contains(w))
                    .count();
                (overlap, std::cmp::Reverse(i))
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
    fn raw_lists_every_choice() {
        let r = raw_text(&example());
        assert!(r.contains("B. darkness and no light\nC. soil\n"), "{r}");
    }
}
