//! The byte cap is never exceeded: for random cache shapes, codings, selection policies,
//! precision plans and caps, the frames the sharer plans encode (session header plus every real
//! kvwire frame) to no more than the cap and to exactly the size the plan computed, and they
//! make a valid round (kvwire's assembler accepts it; every layer holds the same positions).

use c2c::select::{PolicySpec, ScoreKind};
use kvwire::v2::{FrameOptions, Payload, SessionHeader, encode_frame};
use kvwire::{CacheAssembler, Granularity, HostLayer, KvData, LayerKv};
use proptest::prelude::*;
use sharer_svc::SharerError;
use sharer_svc::plan::{
    FrameSpec, PrecisionPlan, RoundCost, importance_weights, measure, plan_frames,
};
use sharer_svc::select::{Selection, preferred_positions};

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

/// Deterministic K and V rows of one layer at `positions`, `[1, heads, n, head_dim]`.
fn rows(s: Shape, layer: usize, positions: &[u32], seed: u64) -> HostLayer {
    let mut k = Vec::new();
    for h in 0..s.heads {
        for &p in positions {
            for e in 0..s.head_dim {
                let i = ((layer * 31 + h) * 4099 + p as usize) * 67 + e;
                k.push(
                    (((i as u64).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 37.0 - 13.5,
                );
            }
        }
    }
    HostLayer {
        v: k.iter().map(|x| x * 0.5 + 1.0).collect(),
        k,
    }
}

/// The real records of a round: the session header (announcing the frames) and every frame.
fn encoded(s: Shape, base: &FrameOptions, frames: &[FrameSpec], seed: u64) -> Vec<Vec<u8>> {
    let mut h = header(s);
    h.frames = frames.len() as u32;
    let mut records = vec![h.encode().expect("header")];
    for f in frames {
        let r = rows(s, f.layer, &f.positions, seed);
        let kv = LayerKv {
            k: KvData::F32(&r.k),
            v: KvData::F32(&r.v),
            shape: [1, s.heads, f.positions.len(), s.head_dim],
            indices: &f.positions,
        };
        let opts = FrameOptions {
            layer: f.layer as u16,
            group: f.group,
            payload: f.payload,
            ..*base
        };
        records.push(encode_frame(&kv, &opts).expect("frame"));
    }
    records
}

fn precision_plan(layers: usize) -> impl Strategy<Value = PrecisionPlan> {
    prop_oneof![
        Just(PrecisionPlan::Uniform),
        (1..=layers).prop_map(|fp16_layers| PrecisionPlan::MixedLayers { fp16_layers }),
        Just(PrecisionPlan::LayerSensitivity),
        Just(PrecisionPlan::TokenRate { int4: true }),
        Just(PrecisionPlan::TokenRate { int4: false }),
    ]
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
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn planned_rounds_encode_within_the_cap(
        (layers, plan) in (1usize..4).prop_flat_map(|l| (Just(l), precision_plan(l))),
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
        // The measured plans choose int4/int8 with per-block scales themselves.
        let (payload, granularity) = if plan.is_measured() {
            (Payload::Int8, Granularity::PerBlock)
        } else {
            (payload, granularity)
        };
        let base = FrameOptions { payload, granularity, ..FrameOptions::default() };
        let cost = RoundCost {
            layers, heads, head_dim,
            header: header(s).encoded_len() as u64,
            base,
        };
        let selection = Selection { policy, keep_fraction };
        let scores: Vec<f32> = (0..tokens).map(|i| ((i as u64 * 7919 + seed) % 97) as f32).collect();
        let preferred = preferred_positions(selection, tokens, &scores).expect("selection");
        let mut every = preferred.clone();
        every.sort_unstable();
        let everything = cost.round_bytes(&cost.one_per_layer(&every, &vec![Payload::Fp16; layers]));
        let cap = (everything as f64 * cap_share) as u64;
        let measure_rows = |positions: &[u32]| -> Result<_, SharerError> {
            let host: Vec<HostLayer> = (0..layers).map(|l| rows(s, l, positions, seed)).collect();
            measure(&host, heads, head_dim, &importance_weights(&scores, positions))
        };
        match plan_frames(plan, payload, &cost, &preferred, cap, measure_rows) {
            Ok(frames) => {
                let records = encoded(s, &base, &frames, seed);
                let actual: u64 = records.iter().map(|r| r.len() as u64).sum();
                prop_assert_eq!(actual, cost.round_bytes(&frames), "the plan's size is the real size");
                prop_assert!(cap == 0 || actual <= cap, "{} bytes over a cap of {}", actual, cap);
                let mut assembler = CacheAssembler::new().every_position(true);
                for r in &records {
                    assembler.push_record(r).expect("a valid round");
                }
                let held = assembler.finish().expect("a complete round");
                prop_assert!(!held.positions.is_empty());
                prop_assert!(held.positions.iter().all(|p| preferred.contains(p)));
            }
            Err(SharerError::CapTooSmall { minimum, .. }) => {
                // Refused only when not even the most preferred position fits.
                prop_assert!(cap > 0 && minimum > cap, "refused, yet one position is {} <= {}", minimum, cap);
            }
            Err(e) => prop_assert!(false, "{}", e),
        }
    }
}
