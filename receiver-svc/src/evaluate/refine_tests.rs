use kvwire::{HostCache, HostLayer};
use kvwire_proto::v1 as pb;

use super::*;

fn plan(threshold: f32, mode: pb::RefineMode) -> RefinePlan {
    RefinePlan {
        margin_threshold: threshold,
        upgrade_payload: pb::Payload::Int4,
        mode,
        reserve_fraction: 0.25,
        max_positions: 0,
    }
}

/// A held cache of `positions` out of `tokens`, 2 layers x 2 heads x 4 dims.
fn held(positions: &[u32], tokens: usize) -> HostCache {
    let n = 2 * positions.len() * 4;
    HostCache {
        sharer_model: "gguf:smollm2-135m".into(),
        prompt_tokens: tokens,
        heads: 2,
        head_dim: 4,
        positions: positions.to_vec(),
        layers: vec![
            HostLayer {
                k: vec![0.0; n],
                v: vec![0.0; n],
            };
            2
        ],
    }
}

#[test]
fn the_trigger_fires_below_the_threshold_and_only_then() {
    let p = plan(0.2, pb::RefineMode::Upgrade);
    for (margin, fires) in [
        (0.0, true),
        (0.1999, true),
        (0.2, false),
        (0.2001, false),
        (5.0, false),
        (f32::NAN, false),
    ] {
        assert_eq!(triggered(Some(&p), margin, "ab"), fires, "margin {margin}");
    }
    // No session kept, or no plan: never.
    assert!(!triggered(Some(&p), 0.0, ""));
    assert!(!triggered(None, 0.0, "ab"));
}

#[test]
fn round_one_keeps_the_reserve() {
    let p = plan(0.2, pb::RefineMode::Upgrade);
    assert_eq!(round1_cap(65_536, Some(&p)), 49_152);
    assert_eq!(round1_cap(0, Some(&p)), 0);
    assert_eq!(round1_cap(65_536, None), 65_536);
}

#[test]
fn round_two_is_bound_by_the_cap_only_with_a_reserve() {
    let mut p = plan(0.2, pb::RefineMode::Upgrade);
    assert_eq!(round2_budget(65_536, &p, 49_000), Some(16_536));
    assert_eq!(round2_budget(65_536, &p, 70_000), Some(0));
    assert_eq!(round2_budget(0, &p, 49_000), None);
    p.reserve_fraction = 0.0;
    assert_eq!(round2_budget(65_536, &p, 49_000), None);
}

#[test]
fn upgrades_follow_the_scores_and_extras_their_neighbours() {
    let held_positions = [2, 5, 9];
    let scores = [0.1, 0.7, 0.7];
    assert_eq!(upgrade_order(&held_positions, &scores), vec![5, 9, 2]);
    // 4 and 6 (next to 5) and 8 and 10 (next to 9) at 0.7, then 3 and 7 at 0.35 (distance 2
    // from 5 and 9, closer than 0.1 next to 2), then 1, ...
    let extra = extra_order(&held_positions, &scores, 12);
    assert_eq!(&extra[..6], &[4, 6, 8, 10, 3, 7]);
    assert_eq!(extra.len(), 12 - 3);
    assert!(extra.iter().all(|p| !held_positions.contains(p)));
}

#[test]
fn round_two_fits_the_budget_left_request_included() {
    let cache = held(&[0, 1, 2, 3], 10);
    let transfer = pb::TransferSettings {
        payload: pb::Payload::Int4 as i32,
        ..Default::default()
    };
    let scores = [0.4, 0.3, 0.2, 0.1];
    let extra = plan(1.0, pb::RefineMode::Extra);
    let all = round2_request(&extra, &transfer, &cache, &scores, None, "s").unwrap();
    let Some(pb::refine_request::Want::Extra(e)) = &all.want else {
        panic!("{all:?}")
    };
    assert_eq!(e.positions, (4..10).collect::<Vec<u32>>());
    // One int4 position per layer: 2 B index, 2 heads x (2 B K + 2 B V) scales, 2 heads x 4
    // dims x half a byte for K and for V; 40 B per frame; the session header carries the
    // model id.
    let header = 44 + "gguf:smollm2-135m".len() as u64 + 4;
    let per_token = 2 + 8 + 8;
    let request = |k: usize| {
        let mut r = all.clone();
        if let Some(pb::refine_request::Want::Extra(e)) = &mut r.want {
            e.positions.truncate(k);
        }
        r.encoded_len() as u64
    };
    let cost = |k: usize| header + 2 * (40 + per_token * k as u64) + request(k);
    for k in 1..=6 {
        let got = round2_request(&extra, &transfer, &cache, &scores, Some(cost(k)), "s").unwrap();
        let Some(pb::refine_request::Want::Extra(e)) = got.want else {
            panic!()
        };
        assert_eq!(e.positions.len(), k, "budget {}", cost(k));
        assert!(
            round2_request(&extra, &transfer, &cache, &scores, Some(cost(1) - 1), "s").is_none()
        );
    }
    // Upgrades: the held positions by score, at most max_positions.
    let mut upgrade = plan(1.0, pb::RefineMode::Upgrade);
    upgrade.max_positions = 2;
    let got = round2_request(&upgrade, &transfer, &cache, &scores, None, "s").unwrap();
    let Some(pb::refine_request::Want::Upgrade(u)) = got.want else {
        panic!()
    };
    assert_eq!(
        (u.positions, u.payload),
        (vec![0, 1], pb::Payload::Int4 as i32)
    );
}
