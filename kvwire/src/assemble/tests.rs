use super::*;
use crate::layer::{KvData, LayerKv};
use crate::v2::{FrameOptions, Payload, encode_frame};

const HEADS: usize = 2;
const D: usize = 4;
const TOKENS: u32 = 8;

fn session(layers: u16, round: u8) -> Vec<u8> {
    session_of(layers, round, u32::from(layers))
}

fn session_of(layers: u16, round: u8, frames: u32) -> Vec<u8> {
    SessionHeader {
        layers,
        kv_heads: HEADS as u16,
        head_dim: D as u16,
        tokens: TOKENS,
        round,
        frames,
        ..Default::default()
    }
    .encode()
    .unwrap()
}

/// A value that names its layer, tensor, head, position and element.
fn value(layer: usize, tensor: usize, h: usize, p: u32, e: usize) -> f32 {
    (layer * 1000 + tensor * 500 + h * 100 + p as usize * 10 + e) as f32
}

fn rows(layer: usize, tensor: usize, positions: &[u32]) -> Vec<f32> {
    let mut out = Vec::new();
    for h in 0..HEADS {
        for &p in positions {
            out.extend((0..D).map(|e| value(layer, tensor, h, p, e)));
        }
    }
    out
}

fn frame(layer: u16, positions: &[u32], kind: FrameKind, k: &[f32], v: &[f32]) -> Vec<u8> {
    let kv = LayerKv {
        k: KvData::F32(k),
        v: KvData::F32(v),
        shape: [1, HEADS, positions.len(), D],
        indices: positions,
    };
    let opts = FrameOptions {
        payload: Payload::Fp16,
        layer,
        kind,
        ..FrameOptions::default()
    };
    encode_frame(&kv, &opts).unwrap()
}

fn base(layer: u16, positions: &[u32]) -> Vec<u8> {
    grouped(layer, 0, Payload::Fp16, positions)
}

/// A base frame of precision group `group` at `payload`.
fn grouped(layer: u16, group: u8, payload: Payload, positions: &[u32]) -> Vec<u8> {
    let l = usize::from(layer);
    let (k, v) = (rows(l, 0, positions), rows(l, 1, positions));
    let kv = LayerKv {
        k: KvData::F32(&k),
        v: KvData::F32(&v),
        shape: [1, HEADS, positions.len(), D],
        indices: positions,
    };
    let opts = FrameOptions {
        payload,
        layer,
        group,
        ..FrameOptions::default()
    };
    encode_frame(&kv, &opts).unwrap()
}

fn round(asm: &mut CacheAssembler, layers: u16, round_no: u8, positions: &[u32]) {
    asm.push_record(&session(layers, round_no)).unwrap();
    for layer in 0..layers {
        asm.push_record(&base(layer, positions)).unwrap();
    }
}

#[test]
fn a_second_round_merges_new_positions_in_order() {
    let mut asm = CacheAssembler::new();
    round(&mut asm, 2, 1, &[1, 5]);
    let mut asm = CacheAssembler::refining(asm.finish().unwrap());
    round(&mut asm, 2, 2, &[0, 3]);
    let cache = asm.finish().unwrap();
    assert_eq!(cache.positions, vec![0, 1, 3, 5]);
    for (layer, l) in cache.layers.iter().enumerate() {
        assert_eq!(l.k, rows(layer, 0, &[0, 1, 3, 5]));
        assert_eq!(l.v, rows(layer, 1, &[0, 1, 3, 5]));
    }
    let (k, v) = cache.gather(1, &[3, 0]).unwrap();
    assert_eq!((k, v), (rows(1, 0, &[3, 0]), rows(1, 1, &[3, 0])));
    assert!(matches!(
        cache.gather(0, &[2]),
        Err(AssembleError::NotHeld { position: 2 })
    ));
}

#[test]
fn a_residual_adds_to_the_rows_held() {
    let mut asm = CacheAssembler::new();
    round(&mut asm, 1, 1, &[2, 4, 6]);
    let mut asm = CacheAssembler::refining(asm.finish().unwrap());
    asm.push_record(&session(1, 2)).unwrap();
    let ones = vec![1.0; HEADS * D];
    asm.push_record(&frame(0, &[4], FrameKind::Residual, &ones, &ones))
        .unwrap();
    let cache = asm.finish().unwrap();
    let plus_one = |t: usize, p: &[u32]| rows(0, t, p).iter().map(|x| x + 1.0).collect();
    assert_eq!(
        cache.gather(0, &[4]).unwrap(),
        (plus_one(0, &[4]), plus_one(1, &[4]))
    );
    assert_eq!(
        cache.gather(0, &[2, 6]).unwrap(),
        (rows(0, 0, &[2, 6]), rows(0, 1, &[2, 6]))
    );
}

#[test]
fn reused_buffers_keep_their_allocation() {
    let mut asm = CacheAssembler::new();
    round(&mut asm, 1, 1, &[0, 1, 2, 3]);
    let buffers = asm.finish().unwrap().into_buffers();
    let before = buffers[0].k.as_ptr();
    let mut asm = CacheAssembler::reusing(buffers);
    round(&mut asm, 1, 1, &[5, 6]);
    let cache = asm.finish().unwrap();
    assert_eq!(cache.layers[0].k.as_ptr(), before);
    assert_eq!(cache.layers[0].k, rows(0, 0, &[5, 6]));
}

#[test]
fn frames_that_break_the_round_rules_are_typed_errors() {
    let first = || {
        let mut asm = CacheAssembler::new();
        asm.push_record(&session(2, 1)).unwrap();
        asm
    };
    let mut a = first();
    a.push_record(&base(0, &[1])).unwrap();
    assert!(matches!(
        a.push_record(&base(0, &[1])),
        Err(AssembleError::DuplicateGroup { layer: 0, group: 0 })
    ));
    assert!(matches!(
        first().push_record(&base(2, &[1])),
        Err(AssembleError::Shape { layer: 2, .. })
    ));
    assert!(matches!(
        first().push_record(&base(0, &[TOKENS - 1])),
        Err(AssembleError::OutsidePrompt { .. })
    ));
    let mut a = first();
    a.push_record(&base(0, &[1, 2])).unwrap();
    a.push_record(&base(1, &[1, 3])).unwrap();
    assert!(matches!(
        a.finish(),
        Err(AssembleError::PositionsDiffer { layer: 1 })
    ));
    let mut a = first();
    a.push_record(&base(0, &[1])).unwrap();
    assert!(matches!(
        a.finish(),
        Err(AssembleError::MissingLayers {
            got: 1,
            expected: 2
        })
    ));
    assert!(matches!(
        CacheAssembler::new().finish(),
        Err(AssembleError::NoSession)
    ));
    assert!(matches!(
        CacheAssembler::new().push_frame(&decode_frame_ref(&base(0, &[1])).unwrap()),
        Err(AssembleError::NoSession)
    ));

    let mut held = CacheAssembler::new();
    round(&mut held, 2, 1, &[1, 2]);
    let held = held.finish().unwrap();
    let mut a = CacheAssembler::refining(held.clone());
    a.push_record(&session(2, 2)).unwrap();
    assert!(matches!(
        a.push_record(&base(0, &[2, 3])),
        Err(AssembleError::AlreadyHeld {
            layer: 0,
            position: 2
        })
    ));
    let mut a = CacheAssembler::refining(held.clone());
    a.push_record(&session(2, 2)).unwrap();
    let ones = vec![1.0; HEADS * D];
    assert!(matches!(
        a.push_record(&frame(0, &[5], FrameKind::Residual, &ones, &ones)),
        Err(AssembleError::NotHeld { position: 5 })
    ));
    assert!(matches!(
        CacheAssembler::refining(held).push_record(&session(3, 2)),
        Err(AssembleError::SessionMismatch { layers: 3, .. })
    ));
    assert!(matches!(
        CacheAssembler::new().push_record(b"not a record"),
        Err(AssembleError::Decode(_))
    ));
}

#[test]
fn every_position_accepts_the_last_prompt_position_and_nothing_beyond() {
    let mut a = CacheAssembler::new().every_position(true);
    a.push_record(&session(1, 1)).unwrap();
    a.push_record(&base(0, &[0, TOKENS - 1])).unwrap();
    assert_eq!(a.finish().unwrap().positions, [0, TOKENS - 1]);
    let mut a = CacheAssembler::new().every_position(true);
    a.push_record(&session(1, 1)).unwrap();
    assert!(matches!(
        a.push_record(&base(0, &[TOKENS])),
        Err(AssembleError::OutsidePrompt { .. })
    ));
}

/// Round 1 of a per-token precision plan: every layer gets an fp16 frame (group 0) and an int8
/// frame (group 1) over disjoint positions, in any order.
fn two_group_round(asm: &mut CacheAssembler) {
    asm.push_record(&session_of(2, 1, 4)).unwrap();
    asm.push_record(&grouped(0, 1, Payload::Int8, &[2, 6]))
        .unwrap();
    asm.push_record(&grouped(1, 0, Payload::Fp16, &[0, 5]))
        .unwrap();
    asm.push_record(&grouped(0, 0, Payload::Fp16, &[0, 5]))
        .unwrap();
    asm.push_record(&grouped(1, 1, Payload::Int8, &[2, 6]))
        .unwrap();
}

#[test]
fn a_layer_may_take_several_base_frames_over_disjoint_positions() {
    let mut asm = CacheAssembler::new();
    two_group_round(&mut asm);
    let cache = asm.finish().unwrap();
    assert_eq!(cache.positions, [0, 2, 5, 6]);
    for layer in 0..2 {
        // fp16 rows exact; int8 rows within their quantization step.
        let (k, _) = cache.gather(layer, &[0, 5]).unwrap();
        assert_eq!(k, rows(layer, 0, &[0, 5]));
        let (k, _) = cache.gather(layer, &[2, 6]).unwrap();
        let step = rows(layer, 0, &[2, 6])
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()))
            / 127.0;
        for (a, b) in k.iter().zip(rows(layer, 0, &[2, 6])) {
            assert!((a - b).abs() <= step, "{a} vs {b}");
        }
    }
    // A residual round on top upgrades positions of both groups.
    let mut asm = CacheAssembler::refining(cache.clone());
    asm.push_record(&session(2, 2)).unwrap();
    let ones = vec![1.0; HEADS * D * 2];
    for layer in 0..2 {
        asm.push_record(&frame(layer, &[2, 5], FrameKind::Residual, &ones, &ones))
            .unwrap();
    }
    let refined = asm.finish().unwrap();
    let (before, _) = cache.gather(1, &[2, 5]).unwrap();
    let (after, _) = refined.gather(1, &[2, 5]).unwrap();
    assert!(before.iter().zip(&after).all(|(b, a)| *a == b + 1.0));
}

#[test]
fn several_frames_per_layer_keep_their_rules() {
    let open = |frames: u32| {
        let mut asm = CacheAssembler::new();
        asm.push_record(&session_of(2, 1, frames)).unwrap();
        asm
    };
    // The same group twice, and overlapping positions within the round.
    let mut a = open(4);
    a.push_record(&grouped(0, 0, Payload::Fp16, &[1])).unwrap();
    assert!(matches!(
        a.push_record(&grouped(0, 0, Payload::Int8, &[2])),
        Err(AssembleError::DuplicateGroup { layer: 0, group: 0 })
    ));
    assert!(matches!(
        a.push_record(&grouped(0, 1, Payload::Int8, &[1, 2])),
        Err(AssembleError::AlreadyHeld {
            layer: 0,
            position: 1
        })
    ));
    // Layers that end the round over different positions.
    let mut a = open(3);
    a.push_record(&grouped(0, 0, Payload::Fp16, &[1])).unwrap();
    a.push_record(&grouped(0, 1, Payload::Int8, &[3])).unwrap();
    a.push_record(&grouped(1, 0, Payload::Fp16, &[1])).unwrap();
    assert!(matches!(
        a.finish(),
        Err(AssembleError::PositionsDiffer { layer: 1 })
    ));
    // The header's frame count: fewer and more frames than announced.
    // Three frames: layer 0 in two groups, layer 1 in one.
    let three = |announced: u32| {
        let mut a = open(announced);
        a.push_record(&grouped(0, 0, Payload::Fp16, &[1])).unwrap();
        a.push_record(&grouped(0, 1, Payload::Int8, &[2])).unwrap();
        a.push_record(&grouped(1, 0, Payload::Fp16, &[1, 2]))
            .unwrap();
        a
    };
    assert!(matches!(
        three(4).finish(),
        Err(AssembleError::MissingFrames {
            got: 3,
            announced: 4
        })
    ));
    assert!(matches!(
        three(2).finish(),
        Err(AssembleError::ExtraFrames {
            got: 3,
            announced: 2
        })
    ));
    // Base and residual frames for one layer in one round.
    let mut held = CacheAssembler::new();
    round(&mut held, 2, 1, &[1, 2]);
    let mut a = CacheAssembler::refining(held.finish().unwrap());
    a.push_record(&session_of(2, 2, 4)).unwrap();
    a.push_record(&base(0, &[4])).unwrap();
    let ones = vec![1.0; HEADS * D];
    assert!(matches!(
        a.push_record(&frame(0, &[1], FrameKind::Residual, &ones, &ones)),
        Err(AssembleError::MixedKinds { layer: 0 })
    ));
    a.push_record(&frame(1, &[1], FrameKind::Residual, &ones, &ones))
        .unwrap();
    assert!(matches!(
        a.push_record(&frame(1, &[2], FrameKind::Residual, &ones, &ones)),
        Err(AssembleError::DuplicateLayer { layer: 1 })
    ));
    assert!(matches!(
        a.push_record(&base(1, &[4])),
        Err(AssembleError::MixedKinds { layer: 1 })
    ));
}
