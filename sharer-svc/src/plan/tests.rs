//! Each plan picks what it claims on hand-made caches, within the cap.

use super::*;
use kvwire::HostLayer;

const HEADS: usize = 2;
const D: usize = 8;

fn cost(layers: usize) -> RoundCost {
    RoundCost {
        layers,
        heads: HEADS,
        head_dim: D,
        header: 60,
        base: FrameOptions::default(),
    }
}

/// A layer of `n` tokens whose every row is `row(token)` (each head the same).
fn layer(n: usize, row: impl Fn(usize) -> Vec<f32>) -> HostLayer {
    let mut k = Vec::new();
    for _ in 0..HEADS {
        for t in 0..n {
            k.extend(row(t));
        }
    }
    HostLayer { v: k.clone(), k }
}

/// Rows int4 codes up to its scale's fp16 rounding (every value +-1).
fn smooth(_: usize) -> Vec<f32> {
    (0..D)
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect()
}

/// Rows with an outlier and small values that int4 rounds away but int8 keeps.
fn spiky(_: usize) -> Vec<f32> {
    let mut r: Vec<f32> = (0..D).map(|i| 0.3 + 0.07 * i as f32).collect();
    r[0] = 9.0;
    r
}

#[test]
fn mixed_layers_put_the_last_layers_at_fp16() {
    let p = layer_payloads(
        PrecisionPlan::MixedLayers { fp16_layers: 2 },
        5,
        Payload::Int8,
    )
    .unwrap();
    assert_eq!(p[..3], [Payload::Int8; 3]);
    assert_eq!(p[3..], [Payload::Fp16; 2]);
    assert_eq!(
        layer_payloads(PrecisionPlan::Uniform, 2, Payload::Int4).unwrap(),
        [Payload::Int4; 2]
    );
    for bad in [0, 6] {
        let plan = PrecisionPlan::MixedLayers { fp16_layers: bad };
        assert!(layer_payloads(plan, 5, Payload::Int8).is_none());
    }
    assert!(layer_payloads(PrecisionPlan::LayerSensitivity, 5, Payload::Int8).is_none());
    // Under a cap the prefix shrinks to what fits with the fp16 layers.
    let c = cost(5);
    let payloads = layer_payloads(
        PrecisionPlan::MixedLayers { fp16_layers: 2 },
        5,
        Payload::Int8,
    )
    .unwrap();
    let order = [4, 0, 3, 1, 2];
    let cap = c.round_bytes(&c.one_per_layer(&[0, 3, 4], &payloads));
    assert_eq!(c.fit(&order, &payloads, cap).unwrap(), [0, 3, 4]);
    assert_eq!(c.fit(&order, &payloads, cap - 1).unwrap(), [0, 4]);
}

#[test]
fn the_layer_with_the_larger_int4_error_gets_int8() {
    let n = 4;
    let layers = [layer(n, smooth), layer(n, spiky), layer(n, smooth)];
    let m = measure(&layers, HEADS, D, &[1.0; 4]).unwrap();
    // +-1 rows lose only the fp16 rounding of their scale at int4.
    assert!(m.layers[0].0 < 1e-3 * m.layers[1].0);
    assert!(m.layers[1].0 > 10.0 * m.layers[1].1);
    let c = cost(3);
    let positions = [0, 1, 2, 3];
    let int4 = c.round_bytes(&c.one_per_layer(&positions, &[Payload::Int4; 3]));
    let step = c.frame_bytes(Payload::Int8, &positions) - c.frame_bytes(Payload::Int4, &positions);
    // Room for one upgrade: the spiky layer takes it.
    let p = sensitivity_payloads(&c, &positions, &m.layers, int4 + step).unwrap();
    assert_eq!(p, [Payload::Int4, Payload::Int8, Payload::Int4]);
    // Less room: every layer stays at int4; no cap: every layer int8.
    let p = sensitivity_payloads(&c, &positions, &m.layers, int4 + step - 1).unwrap();
    assert_eq!(p, [Payload::Int4; 3]);
    assert_eq!(
        sensitivity_payloads(&c, &positions, &m.layers, 0).unwrap(),
        [Payload::Int8; 3]
    );
    assert!(sensitivity_payloads(&c, &positions, &m.layers, int4 - 1).is_none());
}

/// Hand-made rows: token t has values of size `1 + t` (spiky when `t` is odd).
fn tokens(n: usize) -> Vec<HostLayer> {
    let rows = |t: usize| {
        let base = if t % 2 == 1 { spiky(t) } else { smooth(t) };
        base.into_iter().map(|x| x * (1 + t) as f32).collect()
    };
    vec![layer(n, rows), layer(n, rows)]
}

#[test]
fn rate_drops_the_unimportant_tokens_first_and_stays_within_the_cap() {
    let n = 6;
    let c = cost(2);
    let candidates: Vec<u32> = (0..n as u32).collect();
    // Tokens 1 and 4 do not matter to the receiver.
    let weights = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0];
    let m = measure(&tokens(n), HEADS, D, &weights).unwrap();
    let four = [0, 2, 3, 5];
    let all_int8 = c.round_bytes(&c.one_per_layer(&four, &[Payload::Int8; 2]));
    for int4 in [true, false] {
        let frames = rate_frames(&c, &candidates, &m.tokens, int4, all_int8).unwrap();
        assert!(c.round_bytes(&frames) <= all_int8);
        let mut sent: Vec<u32> = frames
            .iter()
            .filter(|f| f.layer == 0)
            .flat_map(|f| f.positions.clone())
            .collect();
        sent.sort_unstable();
        assert_eq!(sent, four, "int4 allowed: {int4}");
    }
    // Uncapped: every candidate at int8, one frame per layer.
    let frames = rate_frames(&c, &candidates, &m.tokens, true, 0).unwrap();
    assert_eq!(frames, c.one_per_layer(&candidates, &[Payload::Int8; 2]));
    // Below one token: nothing fits.
    let one = c.round_bytes(&c.one_per_layer(&[0], &[Payload::Int4; 2]));
    assert!(rate_frames(&c, &candidates, &m.tokens, true, one - 1).is_none());
}

#[test]
fn rate_spends_int8_where_int4_hurts_and_int4_where_it_is_exact() {
    let n = 8;
    let c = cost(1);
    let candidates: Vec<u32> = (0..n as u32).collect();
    let m = measure(&tokens(n)[..1], HEADS, D, &[1.0; 8]).unwrap();
    // Room for both groups with every token (but not for every token at int8): smooth tokens
    // (even) are near exact at int4, spiky ones (odd) need int8.
    let mixed = [
        FrameSpec {
            layer: 0,
            group: 0,
            payload: Payload::Int8,
            positions: vec![1, 3, 5, 7],
        },
        FrameSpec {
            layer: 0,
            group: 1,
            payload: Payload::Int4,
            positions: vec![0, 2, 4, 6],
        },
    ];
    let cap = c.round_bytes(&mixed);
    let frames = rate_frames(&c, &candidates, &m.tokens, true, cap).unwrap();
    assert_eq!(frames, mixed);
    assert!(c.round_bytes(&c.one_per_layer(&candidates, &[Payload::Int8])) > cap);
    // Top-k at the same cap sends 7 tokens at int8, dropping the one cheapest to lose (the
    // smallest rows: token 0).
    let top = rate_frames(&c, &candidates, &m.tokens, false, cap).unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].payload, Payload::Int8);
    assert_eq!(top[0].positions, (1..n as u32).collect::<Vec<_>>());
    assert!(c.round_bytes(&top) <= cap);
}

#[test]
fn importance_is_the_score_scaled_to_mean_one() {
    let scores = [2.0, 0.0, 4.0, 6.0];
    assert_eq!(importance_weights(&scores, &[0, 2, 3]), [0.5, 1.0, 1.5]);
    assert_eq!(
        importance_weights(&scores, &[1]),
        [1.0],
        "all zero: uniform"
    );
    assert_eq!(importance_weights(&[], &[0, 1]), [1.0, 1.0], "no scores");
    assert_eq!(importance_weights(&[f32::NAN, 1.0], &[0, 1]), [1.0, 1.0]);
}
