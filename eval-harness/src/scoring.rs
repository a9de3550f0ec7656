//! Scoring math as pure functions over log-probabilities: letter forced choice (softmax over
//! the answer-letter logits) and OLMES-style rank classification (summed continuation
//! log-probability, raw / per token / per character).

use serde::{Deserialize, Serialize};

/// Result of a forced choice over answer letters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LetterScore {
    /// Index of the most probable letter.
    pub prediction: usize,
    /// Softmax probabilities over the letters only.
    pub probs: Vec<f64>,
    /// Highest probability.
    pub p1: f64,
    /// Second-highest probability (0 with one letter).
    pub p2: f64,
    /// `p1 - p2`.
    pub margin: f64,
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// Index of the largest and the two largest values; ties go to the lower index.
fn top_two(values: &[f64]) -> Option<(usize, f64, f64)> {
    let (best, &v1) =
        values
            .iter()
            .enumerate()
            .fold(None, |acc: Option<(usize, &f64)>, (i, v)| match acc {
                Some((_, b)) if b >= v => acc,
                _ => Some((i, v)),
            })?;
    let v2 = values
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != best)
        .map(|(_, &v)| v)
        .fold(f64::NEG_INFINITY, f64::max);
    Some((best, v1, v2))
}

/// Forced choice from the next-token logits of the answer letters (A, B, ... in order).
/// `None` for an empty slice or non-finite logits.
pub fn letter_choice(letter_logits: &[f32]) -> Option<LetterScore> {
    if letter_logits.is_empty() || letter_logits.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let probs = softmax(
        &letter_logits
            .iter()
            .map(|&x| f64::from(x))
            .collect::<Vec<_>>(),
    );
    let (prediction, p1, p2) = top_two(&probs)?;
    let p2 = if p2.is_finite() { p2 } else { 0.0 };
    Some(LetterScore {
        prediction,
        p1,
        p2,
        margin: p1 - p2,
        probs,
    })
}

/// Log-probability of one choice's continuation after the context.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ChoiceLogprob {
    /// Sum of the continuation tokens' log-probabilities (natural log).
    pub logprob: f64,
    /// Number of continuation tokens.
    pub tokens: usize,
    /// Number of characters of the continuation (including its leading space).
    pub chars: usize,
}

/// How summed log-probabilities are normalised before ranking (OLMES `acc_raw`,
/// `acc_per_token`, `acc_per_char`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Normalization {
    /// Summed log-probability.
    Raw,
    /// Divided by the token count.
    PerToken,
    /// Divided by the character count.
    PerChar,
}

impl Normalization {
    /// All three, in report order.
    pub const ALL: [Normalization; 3] = [
        Normalization::Raw,
        Normalization::PerToken,
        Normalization::PerChar,
    ];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Normalization::Raw => "raw",
            Normalization::PerToken => "per_token",
            Normalization::PerChar => "per_char",
        }
    }
}

/// Rank-classification result under one normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankScore {
    /// Normalisation used.
    pub normalization: Normalization,
    /// Index of the best-scoring choice.
    pub prediction: usize,
    /// Normalised score of each choice.
    pub scores: Vec<f64>,
    /// Best minus second-best normalised score.
    pub margin: f64,
}

/// Ranks choices under `norm`; `None` when empty, a count is zero, or a value is not finite.
pub fn rank_choice(choices: &[ChoiceLogprob], norm: Normalization) -> Option<RankScore> {
    let scores: Vec<f64> = choices
        .iter()
        .map(|c| match norm {
            Normalization::Raw => Some(c.logprob),
            Normalization::PerToken => (c.tokens > 0).then(|| c.logprob / c.tokens as f64),
            Normalization::PerChar => (c.chars > 0).then(|| c.logprob / c.chars as f64),
        })
        .collect::<Option<_>>()?;
    if scores.iter().any(|s| !s.is_finite()) {
        return None;
    }
    let (prediction, s1, s2) = top_two(&scores)?;
    let margin = if s2.is_finite() { s1 - s2 } else { 0.0 };
    Some(RankScore {
        normalization: norm,
        prediction,
        scores,
        margin,
    })
}

/// Ranks under all three normalisations (raw, per token, per char).
pub fn rank_all(choices: &[ChoiceLogprob]) -> Option<[RankScore; 3]> {
    Some([
        rank_choice(choices, Normalization::Raw)?,
        rank_choice(choices, Normalization::PerToken)?,
        rank_choice(choices, Normalization::PerChar)?,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letter_softmax_prediction_and_margin() {
        let s = letter_choice(&[0.0, 2.0_f32.ln(), 0.0, 0.0]).unwrap();
        assert_eq!(s.prediction, 1);
        assert!(
            (s.p1 - 0.4).abs() < 1e-6 && (s.p2 - 0.2).abs() < 1e-6 && (s.margin - 0.2).abs() < 1e-6
        );
        assert!((s.probs.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Ties go to the earlier letter with zero margin; large logits do not overflow.
        let t = letter_choice(&[1000.0, 1000.0]).unwrap();
        assert_eq!((t.prediction, t.margin), (0, 0.0));
        assert!(letter_choice(&[]).is_none() && letter_choice(&[f32::NAN, 0.0]).is_none());
    }

    #[test]
    fn normalisations_can_disagree_as_in_olmes() {
        // Long choice: best raw? no. Short choice wins raw; long choice wins per token.
        let choices = [
            ChoiceLogprob {
                logprob: -3.0,
                tokens: 1,
                chars: 4,
            },
            ChoiceLogprob {
                logprob: -4.0,
                tokens: 8,
                chars: 40,
            },
        ];
        let [raw, tok, chr] = rank_all(&choices).unwrap();
        assert_eq!((raw.prediction, tok.prediction, chr.prediction), (0, 1, 1));
        assert!((raw.margin - 1.0).abs() < 1e-12);
        assert!((tok.margin - 2.5).abs() < 1e-12);
        assert!((chr.scores[0] + 0.75).abs() < 1e-12);
        let zero = [ChoiceLogprob {
            logprob: -1.0,
            tokens: 0,
            chars: 0,
        }];
        assert!(rank_choice(&zero, Normalization::PerToken).is_none());
        assert_eq!(rank_choice(&zero, Normalization::Raw).unwrap().margin, 0.0);
    }
}
