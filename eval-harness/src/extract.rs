//! Answer extraction from generated text: the letter after "The correct answer is" (with
//! fallbacks; the `eval` binary's rule), the first standalone letter of a continuation (the
//! receiver service's rule), and the final number of a gsm8k solution.

use crate::example::LETTERS;
use crate::prompt::ANSWER_PREFIX;

/// Which rule found the letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum LetterRule {
    /// After "The correct answer is".
    Prefix,
    /// After "answer is" / "answer:" elsewhere.
    AnswerMarker,
    /// The whole reply is a letter (`B`, `B.`, `(B)`).
    Bare,
    /// The only standalone choice letter in the reply.
    SoleLetter,
}

/// A letter at the start of `s` (after spaces, `:`, `*`, `(`), if it is one of the first `n`
/// capitals and not the start of a word or of the format echo `A/B/C/D`.
fn leading_letter(s: &str, n: usize) -> Option<usize> {
    let s = s.trim_start_matches(|c: char| {
        c.is_whitespace() || matches!(c, ':' | '*' | '(' | '[' | '"' | '\'')
    });
    let mut chars = s.chars();
    let c = chars.next()?;
    let next_is_word = chars
        .next()
        .is_some_and(|c| c.is_alphanumeric() || c == '/');
    let idx = (c as u32).checked_sub('A' as u32)? as usize;
    (c.is_ascii_uppercase() && idx < n && !next_is_word).then_some(idx)
}

/// The chosen option index (0 = A) among `n` choices, and the rule that found it.
pub fn extract_letter(text: &str, n: usize) -> Option<(usize, LetterRule)> {
    // ASCII lowering keeps byte offsets valid in the original text.
    let lower = text.to_ascii_lowercase();
    let prefix = ANSWER_PREFIX.to_ascii_lowercase();
    if let Some(pos) = lower.find(&prefix)
        && let Some(i) = leading_letter(&text[pos + prefix.len()..], n)
    {
        return Some((i, LetterRule::Prefix));
    }
    for marker in ["answer is", "answer:"] {
        if let Some(pos) = lower.rfind(marker)
            && let Some(i) = leading_letter(&text[pos + marker.len()..], n)
        {
            return Some((i, LetterRule::AnswerMarker));
        }
    }
    let bare = text
        .trim()
        .trim_matches(|c: char| matches!(c, '(' | ')' | '.' | '*' | '"'));
    if bare.len() == 1
        && let Some(i) = leading_letter(bare, n)
    {
        return Some((i, LetterRule::Bare));
    }
    let mut found: Vec<usize> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() == 1)
        .filter_map(|w| leading_letter(w, n))
        .collect();
    found.dedup();
    (found.len() == 1).then(|| (found[0], LetterRule::SoleLetter))
}

/// The receiver service's rule: the first standalone choice letter (0 = A) among `n_choices`
/// in a continuation generated after a prompt that already ends with "The correct answer is".
///
/// Kept apart from [`extract_letter`] because the two disagree on some replies and each
/// decides its own recorded results: here the first standalone letter wins (" B. A planet"
/// is B, " A/B/C/D" is A), where [`extract_letter`] wants a letter after the prefix or a
/// marker, a bare letter, or the only standalone letter (both give None there).
pub fn first_standalone_letter(text: &str, n_choices: usize) -> Option<usize> {
    let letters = &LETTERS[..n_choices.min(LETTERS.len())];
    let chars: Vec<char> = text.chars().collect();
    chars.iter().enumerate().find_map(|(i, c)| {
        let standalone = (i == 0 || !chars[i - 1].is_alphanumeric())
            && chars.get(i + 1).is_none_or(|n| !n.is_alphanumeric());
        letters.iter().position(|l| l == c).filter(|_| standalone)
    })
}

/// Numbers in `text` (digits with optional sign, commas, one decimal point), commas removed.
fn numbers(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next_digit = chars.get(i + 1).is_some_and(char::is_ascii_digit);
        let in_number = !cur.is_empty();
        if c.is_ascii_digit()
            || (c == '-' && !in_number && next_digit)
            || (in_number && (c == ',' || c == '.') && next_digit)
        {
            if c != ',' {
                cur.push(c);
            }
        } else if in_number {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The final answer of a generated gsm8k solution: the first number after the last `####`,
/// else inside the last `\boxed{..}`, else after "answer is", else the last number.
pub fn extract_final_number(text: &str) -> Option<String> {
    if let Some((_, tail)) = text.rsplit_once("####")
        && let Some(n) = numbers(tail).into_iter().next()
    {
        return Some(n);
    }
    // Qwen-style chat models box their result: `\boxed{940}`.
    if let Some((_, tail)) = text.rsplit_once("\\boxed{")
        && let Some(n) = numbers(tail.split('}').next().unwrap_or(""))
            .into_iter()
            .next()
    {
        return Some(n);
    }
    let lower = text.to_ascii_lowercase();
    if let Some(pos) = lower.rfind("answer is")
        && let Some(n) = numbers(&text[pos..]).into_iter().next()
    {
        return Some(n);
    }
    numbers(text).pop()
}

/// Whether two numeric answers are equal (as decimals, so `18` matches `18.00`).
pub fn numbers_match(predicted: &str, reference: &str) -> bool {
    let clean = |s: &str| s.trim().replace([',', '$'], "");
    match (
        clean(predicted).parse::<f64>(),
        clean(reference).parse::<f64>(),
    ) {
        (Ok(a), Ok(b)) => (a - b).abs() <= 1e-9 * b.abs().max(1.0),
        _ => clean(predicted) == clean(reference),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_are_found_by_prefix_then_fallbacks() {
        assert_eq!(
            extract_letter("The correct answer is C", 4),
            Some((2, LetterRule::Prefix))
        );
        assert_eq!(
            extract_letter("the correct answer is: (B).", 4),
            Some((1, LetterRule::Prefix))
        );
        assert_eq!(
            extract_letter("I think the answer is D because", 4),
            Some((3, LetterRule::AnswerMarker))
        );
        assert_eq!(extract_letter(" (A) ", 4), Some((0, LetterRule::Bare)));
        assert_eq!(
            extract_letter("Option B fits best.", 4),
            Some((1, LetterRule::SoleLetter))
        );
        // "A" as an article, E out of range, ambiguous or absent letters.
        assert_eq!(extract_letter("The correct answer is E", 4), None);
        assert_eq!(extract_letter("The correct answer is Alpha", 4), None);
        assert_eq!(extract_letter("B or C", 4), None);
        assert_eq!(extract_letter("no idea", 4), None);
        // Small models echo the instruction's format; that is no answer.
        assert_eq!(extract_letter("The correct answer is A/B/C/D.", 4), None);
        let accented = "Réponse — the correct answer is B";
        assert_eq!(extract_letter(accented, 4), Some((1, LetterRule::Prefix)));
    }

    #[test]
    fn first_standalone_letter_is_the_receivers_rule() {
        assert_eq!(first_standalone_letter(" B", 4), Some(1));
        assert_eq!(first_standalone_letter(" (C). Because", 4), Some(2));
        assert_eq!(first_standalone_letter(" Because D", 4), Some(3));
        assert_eq!(first_standalone_letter(" E", 4), None);
        assert_eq!(first_standalone_letter("And", 4), None);
        // Where the two rules part: the first letter wins here, extract_letter declines.
        assert_eq!(first_standalone_letter(" B. A planet", 4), Some(1));
        assert_eq!(extract_letter(" B. A planet", 4), None);
        assert_eq!(first_standalone_letter(" A/B/C/D", 4), Some(0));
        assert_eq!(extract_letter(" A/B/C/D", 4), None);
    }

    #[test]
    fn gsm8k_final_numbers() {
        assert_eq!(
            extract_final_number("9 * 2 = 18\n#### 18").as_deref(),
            Some("18")
        );
        assert_eq!(
            extract_final_number("so #### $1,234.50 total").as_deref(),
            Some("1234.50")
        );
        assert_eq!(
            extract_final_number("The answer is -3. Check: 5").as_deref(),
            Some("-3")
        );
        assert_eq!(
            extract_final_number("She makes 9 * 2 = 18 dollars.").as_deref(),
            Some("18")
        );
        assert_eq!(extract_final_number("none"), None);
        let boxed = "So 10 + 5 = 15, in 3 years: \\(\\boxed{15}\\) years.";
        assert_eq!(extract_final_number(boxed).as_deref(), Some("15"));
        assert!(numbers_match("18.00", "18"));
        assert!(!numbers_match("17", "18"));
    }
}
