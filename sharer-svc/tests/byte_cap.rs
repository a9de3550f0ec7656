//! The byte cap is never exceeded: for random cache shapes, codings, selection policies and
//! caps, the positions the sharer keeps encode (session header plus one real kvwire frame per
//! layer) to no more than the cap, and to exactly the size the selection estimated.

use c2c::select::{PolicySpec, ScoreKind};
use kvwire::v2::{FrameOptions, Payload, SessionHeader, encode_frame};
use kvwire::{Granularity, KvData, LayerKv};
use proptest::prelude::*;
use sharer_svc::select::{Selection, estimate_transfer_bytes, fit_to_cap, preferred_positions};

#[derive(Debug, Clone, Copy)]
struct Shape {
    layers: usize,
    heads: usize,
    head_dim: usize,
    tokens: usize,
}

fn header(s: Shape) -> SessionHeader {
    SessionHeader {
        session_id: [7; 16],
        sharer_model: "gguf:smollm2-135m".into(),
        receiver_model: String::new(),
        layers: s.layers as u16,
        kv_heads: s.heads as u16,
        head_dim: s.head_dim as u16,
        tokens: s.tokens as u32,
        round: 1,
        frames: s.layers as u32,
    }
}

/// Bytes of the real transfer of `positions`: the encoded header and every layer's frame.
fn encoded_bytes(s: Shape, opts: &FrameOptions, positions: &[u32], seed: u64) -> u64 {
    let n = s.heads * positions.len() * s.head_dim;
    let value = |i: usize| (((i as u64 * 2_654_435_761 + seed) % 1000) as f32 - 500.0) / 37.0;
    let k: Vec<f32> = (0..n).map(value).collect();
    let v: Vec<f32> = (0..n).map(|i| value(i + 17)).collect();
    let mut total = header(s).encode().expect("header").len() as u64;
    for layer in 0..s.layers {
        let kv = LayerKv {
            k: KvData::F32(&k),
            v: KvData::F32(&v),
            shape: [1, s.heads, positions.len(), s.head_dim],
            indices: positions,
        };
        let opts = FrameOptions {
            layer: layer as u16,
            ..*opts
        };
        total += encode_frame(&kv, &opts).expect("frame").len() as u64;
    }
    total
}

fn policy() -> impl Strategy<Value = PolicySpec> {
    prop_oneof![
        Just(PolicySpec::Front),
        Just(PolicySpec::Back),
        any::<u64>().prop_map(|seed| PolicySpec::Random { seed }),
        Just(PolicySpec::Scored(ScoreKind::Vnorm)),
        Just(PolicySpec::Scored(ScoreKind::QueryAttention)),
    ]
}

fn coding() -> impl Strategy<Value = (Payload, Granularity)> {
    (
        prop_oneof![
            Just(Payload::Fp16),
            Just(Payload::Int8),
            Just(Payload::Int4)
        ],
        prop_oneof![
            Just(Granularity::PerBlock),
            Just(Granularity::PerHead),
            Just(Granularity::PerTensor)
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn kept_positions_encode_within_the_cap(
        layers in 1usize..4,
        heads in 1usize..4,
        head_dim in prop_oneof![Just(2usize), Just(8), Just(64)],
        tokens in 1usize..300,
        (payload, granularity) in coding(),
        policy in policy(),
        keep_fraction in 0.05f64..=1.0,
        cap_share in 0.0f64..1.3,
        seed in any::<u64>(),
    ) {
        let s = Shape { layers, heads, head_dim, tokens };
        let opts = FrameOptions { payload, granularity, ..FrameOptions::default() };
        let selection = Selection { policy, keep_fraction };
        let scores: Vec<f32> = (0..tokens).map(|i| ((i as u64 * 7919 + seed) % 97) as f32).collect();
        let preferred = preferred_positions(selection, tokens, &scores).expect("selection");
        let estimate = |p: &[u32]| estimate_transfer_bytes(&header(s), &opts, layers, heads, head_dim, p);
        let mut every = preferred.clone();
        every.sort_unstable();
        let cap = (estimate(&every) as f64 * cap_share) as u64;
        match fit_to_cap(&preferred, cap, estimate) {
            Some(kept) => {
                let actual = encoded_bytes(s, &opts, &kept, seed);
                prop_assert_eq!(actual, estimate(&kept), "the estimate is the real size");
                prop_assert!(cap == 0 || actual <= cap, "{} bytes over a cap of {}", actual, cap);
                prop_assert!(kept.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(kept.iter().all(|p| preferred.contains(p)));
            }
            None => {
                // Refused only when not even the most preferred position fits.
                let one = encoded_bytes(s, &opts, &preferred[..1], seed);
                prop_assert!(cap > 0 && one > cap, "refused, yet one position is {} <= {}", one, cap);
            }
        }
    }
}
