//! Token alignment for sharer/receiver pairs whose tokenizers differ.
//!
//! Each side renders the same prompt through its own chat template, so the prompt is a list of
//! segments: template text (differs per model) and user text (identical on both sides). The
//! caller tokenizes each side and gives every token's character span in that side's rendered
//! text; no tokenizer is needed here.
//!
//! Rules: a receiver token in a text segment is paired with the sharer token covering the same
//! character as the receiver token's last character. A receiver token in a template segment is
//! paired by relative position inside the segment; a special receiver token goes to the nearest
//! special sharer token of the same segment when there is one. Same tokenizer: [`identity`].

use crate::error::{C2cError, Result};

/// What a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    /// Chat-template text: may differ between the two sides.
    Template,
    /// User text: identical characters on both sides.
    Text,
}

/// A segment of one side's rendered prompt, as a half-open character range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Kind of text.
    pub kind: SegmentKind,
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
}

/// A token's half-open character span in its side's rendered prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSpan {
    /// First character.
    pub start: usize,
    /// One past the last character (equal to `start` for zero-width tokens such as BOS).
    pub end: usize,
    /// A special (added/control) token.
    pub special: bool,
}

/// One side of the pair: its segments (in order, same count and kinds as the other side) and
/// its tokens (sorted by start).
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// Segments covering the rendered prompt.
    pub segments: &'a [Segment],
    /// Tokens of the rendered prompt.
    pub tokens: &'a [TokenSpan],
}

/// Same tokenizer: receiver token i is sharer token i.
pub fn identity(len: usize) -> Vec<usize> {
    (0..len).collect()
}

/// For every receiver token, the index of its sharer token.
pub fn align(receiver: &Side, sharer: &Side) -> Result<Vec<usize>> {
    validate(receiver, sharer)?;
    if sharer.tokens.is_empty() {
        return Err(C2cError::Mismatch {
            what: "sharer has no tokens to align to",
            left: receiver.tokens.len(),
            right: 0,
        });
    }
    let s_seg: Vec<usize> = sharer
        .tokens
        .iter()
        .map(|t| segment_of(sharer.segments, t))
        .collect();
    let mut out = Vec::with_capacity(receiver.tokens.len());
    for tok in receiver.tokens {
        let si = segment_of(receiver.segments, tok);
        let (rs, ss) = (receiver.segments[si], sharer.segments[si]);
        let offset = anchor(tok).saturating_sub(rs.start);
        let target = match rs.kind {
            SegmentKind::Text => ss.start + offset,
            SegmentKind::Template => {
                let (rlen, slen) = ((rs.end - rs.start).max(1), (ss.end - ss.start).max(1));
                ss.start + ((offset + 1) * slen).div_ceil(rlen).saturating_sub(1)
            }
        };
        let in_segment: Vec<usize> = (0..sharer.tokens.len())
            .filter(|&j| s_seg[j] == si)
            .collect();
        let specials: Vec<usize> = in_segment
            .iter()
            .copied()
            .filter(|&j| sharer.tokens[j].special)
            .collect();
        let pick = if tok.special && rs.kind == SegmentKind::Template && !specials.is_empty() {
            nearest(sharer.tokens, &specials, target)
        } else if let Some(j) = in_segment
            .iter()
            .copied()
            .find(|&j| covers(&sharer.tokens[j], target))
        {
            Some(j)
        } else {
            nearest(sharer.tokens, &in_segment, target)
        };
        // A segment with no sharer token at all: the last sharer token before it (or the first).
        let fallback = || {
            (0..sharer.tokens.len())
                .rev()
                .find(|&j| s_seg[j] < si)
                .unwrap_or(0)
        };
        out.push(pick.unwrap_or_else(fallback));
    }
    Ok(out)
}

/// The character a token is aligned by: its last character (its start if zero-width).
fn anchor(t: &TokenSpan) -> usize {
    if t.end > t.start { t.end - 1 } else { t.start }
}

fn covers(t: &TokenSpan, c: usize) -> bool {
    t.start <= c && c < t.end
}

fn segment_of(segments: &[Segment], t: &TokenSpan) -> usize {
    let a = anchor(t);
    segments.iter().rposition(|s| s.start <= a).unwrap_or(0)
}

fn nearest(tokens: &[TokenSpan], candidates: &[usize], target: usize) -> Option<usize> {
    candidates
        .iter()
        .copied()
        .min_by_key(|&j| (anchor(&tokens[j]).abs_diff(target), j))
}

fn validate(receiver: &Side, sharer: &Side) -> Result<()> {
    if receiver.segments.len() != sharer.segments.len() {
        return Err(C2cError::Mismatch {
            what: "segment counts (receiver vs sharer)",
            left: receiver.segments.len(),
            right: sharer.segments.len(),
        });
    }
    for (i, (r, s)) in receiver.segments.iter().zip(sharer.segments).enumerate() {
        let bad = |message: String| C2cError::Config {
            path: "alignment segments".into(),
            message,
        };
        if r.kind != s.kind {
            return Err(bad(format!(
                "segment {i}: kinds differ ({:?} vs {:?})",
                r.kind, s.kind
            )));
        }
        if r.start > r.end || s.start > s.end {
            return Err(bad(format!("segment {i}: start after end")));
        }
        if r.kind == SegmentKind::Text && r.end - r.start != s.end - s.start {
            return Err(bad(format!(
                "text segment {i}: lengths differ ({} vs {})",
                r.end - r.start,
                s.end - s.start
            )));
        }
    }
    for side in [receiver, sharer] {
        for (index, pair) in side.segments.windows(2).enumerate() {
            if pair[1].start < pair[0].end {
                return Err(C2cError::Position {
                    what: "segment starts (overlap)",
                    index: index + 1,
                    position: pair[1].start,
                    limit: pair[0].end,
                });
            }
        }
        for (index, t) in side.tokens.iter().enumerate() {
            if t.end < t.start {
                return Err(C2cError::Position {
                    what: "token span end before start",
                    index,
                    position: t.end,
                    limit: t.start,
                });
            }
        }
    }
    Ok(())
}
