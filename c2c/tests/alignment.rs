//! Alignment of a hetero tokenizer pair: ChatML-style receiver vs [INST]-style sharer over the
//! same user text, with hand-made token spans.

use c2c::align::{Segment, SegmentKind, Side, TokenSpan, align, identity};

fn tok(start: usize, end: usize) -> TokenSpan {
    TokenSpan {
        start,
        end,
        special: false,
    }
}
fn special(start: usize, end: usize) -> TokenSpan {
    TokenSpan {
        start,
        end,
        special: true,
    }
}
fn seg(kind: SegmentKind, start: usize, end: usize) -> Segment {
    Segment { kind, start, end }
}

#[test]
fn hetero_pair_aligns_by_last_character_and_template_position() {
    use SegmentKind::{Template, Text};
    // Receiver: "<|im_start|>user\n" + "The cat sat." + "<|im_end|>\n"
    let r_segments = [
        seg(Template, 0, 17),
        seg(Text, 17, 29),
        seg(Template, 29, 40),
    ];
    let r_tokens = [
        special(0, 12),  // <|im_start|>
        tok(12, 16),     // user
        tok(16, 17),     // \n
        tok(17, 20),     // The
        tok(20, 24),     // " cat"
        tok(24, 28),     // " sat"
        tok(28, 29),     // .
        special(29, 39), // <|im_end|>
        tok(39, 40),     // \n
    ];
    // Sharer: "<s>[INST] " + "The cat sat." + " [/INST]"
    let s_segments = [
        seg(Template, 0, 10),
        seg(Text, 10, 22),
        seg(Template, 22, 30),
    ];
    let s_tokens = [
        special(0, 3), // <s>
        special(3, 9), // [INST]
        tok(9, 13),    // " The" (crosses into the text segment)
        tok(13, 15),   // " c"
        tok(15, 17),   // at
        tok(17, 21),   // " sat"
        tok(21, 22),   // .
        tok(22, 25),   // " [/"
        tok(25, 29),   // INST
        tok(29, 30),   // ]
    ];
    let receiver = Side {
        segments: &r_segments,
        tokens: &r_tokens,
    };
    let sharer = Side {
        segments: &s_segments,
        tokens: &s_tokens,
    };
    let a = align(&receiver, &sharer).expect("align");
    // Text tokens: "The" -> " The", " cat" ends on 't' -> "at", " sat" -> " sat", "." -> ".".
    // <|im_start|> (special) -> nearest special of the first template segment, [INST];
    // "user" and "\n" -> the sharer token nearest their relative position, [INST];
    // <|im_end|> has no special counterpart in its segment: the covering token "]".
    assert_eq!(a, vec![1, 1, 1, 2, 4, 5, 6, 9, 9]);
}

#[test]
fn same_tokenization_aligns_to_itself() {
    use SegmentKind::{Template, Text};
    let segments = [seg(Template, 0, 5), seg(Text, 5, 12)];
    let tokens = [special(0, 5), tok(5, 8), tok(8, 12)];
    let side = Side {
        segments: &segments,
        tokens: &tokens,
    };
    assert_eq!(align(&side, &side).expect("align"), identity(3));
}

#[test]
fn mismatched_segments_are_rejected() {
    use SegmentKind::{Template, Text};
    let tokens = [tok(0, 3)];
    let r = [seg(Template, 0, 3), seg(Text, 3, 8)];
    let s_kinds = [seg(Text, 0, 3), seg(Text, 3, 8)];
    let s_len = [seg(Template, 0, 3), seg(Text, 3, 9)];
    let s_count = [seg(Template, 0, 3)];
    let receiver = Side {
        segments: &r,
        tokens: &tokens,
    };
    for s in [&s_kinds[..], &s_len[..], &s_count[..]] {
        let sharer = Side {
            segments: s,
            tokens: &tokens,
        };
        assert!(align(&receiver, &sharer).is_err());
    }
    let sharer = Side {
        segments: &r,
        tokens: &[],
    };
    assert!(align(&receiver, &sharer).is_err());
}
