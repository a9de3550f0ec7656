//! A prompt as both models see it: each side's token ids and, for every receiver token, the
//! sharer token it is paired with.
//!
//! Where alignment runs: wherever both tokenizers and the prompt text are at hand. In-process
//! training and evaluation align here; in the services the receiver aligns (it holds the
//! prompt text, its own tokenizer and the sharer's tokenizer named by the pair config), so the
//! wire carries plain sharer positions and the sharer needs to know nothing about receivers.
//! Prompts here are plain text (no chat template: the rank-classification context), one text
//! segment; templated prompts go through `c2c::align` with template segments.

use c2c::align::{Segment, SegmentKind, Side, TokenSpan, align};
use model_runtime::Tokenizer;

use crate::error::{FuserError, Result};

/// One prompt tokenized by both models, with the receiver-to-sharer token map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlignedPrompt {
    /// Receiver token ids.
    pub receiver: Vec<u32>,
    /// Sharer token ids.
    pub sharer: Vec<u32>,
    /// `map[i]`: the sharer token paired with receiver token `i`.
    pub map: Vec<usize>,
}

impl AlignedPrompt {
    /// Receiver prompt length.
    pub fn len(&self) -> usize {
        self.receiver.len()
    }

    /// True when the receiver side has no tokens.
    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }
}

/// Tokenizes `text` on both sides and pairs each receiver token with the sharer token covering
/// its last byte (c2c's rule). Identical token sequences pair by identity.
pub fn align_text(receiver: &Tokenizer, sharer: &Tokenizer, text: &str) -> Result<AlignedPrompt> {
    let r = receiver.encode_with_spans(text)?;
    let s = sharer.encode_with_spans(text)?;
    if r.is_empty() || s.is_empty() {
        return Err(FuserError::input("prompt", "the text has no tokens"));
    }
    let receiver_ids: Vec<u32> = r.iter().map(|t| t.id).collect();
    let sharer_ids: Vec<u32> = s.iter().map(|t| t.id).collect();
    let same = r.len() == s.len()
        && r.iter()
            .zip(&s)
            .all(|(a, b)| (a.start, a.end) == (b.start, b.end));
    let map = if same {
        c2c::align::identity(r.len())
    } else {
        let segment = [Segment {
            kind: SegmentKind::Text,
            start: 0,
            end: text.len(),
        }];
        let spans = |v: &[model_runtime::TokenSpan]| -> Vec<TokenSpan> {
            v.iter()
                .map(|t| TokenSpan {
                    start: t.start,
                    end: t.end,
                    special: false,
                })
                .collect()
        };
        let (rs, ss) = (spans(&r), spans(&s));
        align(
            &Side {
                segments: &segment,
                tokens: &rs,
            },
            &Side {
                segments: &segment,
                tokens: &ss,
            },
        )?
    };
    Ok(AlignedPrompt {
        receiver: receiver_ids,
        sharer: sharer_ids,
        map,
    })
}

/// A map from `receiver_len` receiver tokens onto `sharer_len` sharer tokens by relative
/// position, for a sharer prompt unrelated to the receiver's (the random-prompt control).
pub fn proportional_map(receiver_len: usize, sharer_len: usize) -> Vec<usize> {
    if sharer_len == 0 {
        return Vec::new();
    }
    (0..receiver_len)
        .map(|i| ((i * sharer_len) / receiver_len.max(1)).min(sharer_len - 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportional_map_covers_the_sharer_monotonically() {
        let m = proportional_map(10, 4);
        assert_eq!(m, vec![0, 0, 0, 1, 1, 2, 2, 2, 3, 3]);
        assert_eq!(proportional_map(3, 9), vec![0, 3, 6]);
        assert!(proportional_map(3, 0).is_empty());
    }

    #[test]
    fn same_tokenizer_aligns_by_identity() {
        let tok = Tokenizer::tiny().unwrap();
        let p = align_text(&tok, &tok, "Question: why is the sky blue?\nAnswer:").unwrap();
        assert_eq!(p.receiver, p.sharer);
        assert_eq!(p.map, (0..p.len()).collect::<Vec<_>>());
        assert!(align_text(&tok, &tok, "").is_err());
    }
}
