//! Seeded randomized invariants of the rate allocator: the cap is never exceeded, no single
//! upgrade fits in what is left, the total gain grows with the cap, and the result is within one
//! step's gain of the exact optimum (dynamic programming on small instances).

use c2c::layer_policy::token_items;
use c2c::quant::token_distortions;
use c2c::rate::{Choice, Precision, TokenCost, allocate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random_items(rng: &mut ChaCha8Rng, n: usize) -> Vec<Vec<Choice>> {
    (0..n)
        .map(|_| {
            let drop = rng.random_range(0.5..10.0);
            let mut c = vec![Choice {
                precision: Precision::Drop,
                bytes: 0,
                distortion: drop,
            }];
            let b4 = rng.random_range(1..20);
            let b8 = b4 + rng.random_range(1..20);
            let b16 = b8 + rng.random_range(1..30);
            let d4 = drop * rng.random_range(0.0..0.9);
            let d8 = d4 * rng.random_range(0.0..0.9);
            c.push(Choice {
                precision: Precision::Int4,
                bytes: b4,
                distortion: d4,
            });
            c.push(Choice {
                precision: Precision::Int8,
                bytes: b8,
                distortion: d8,
            });
            if rng.random_bool(0.5) {
                c.push(Choice {
                    precision: Precision::Fp16,
                    bytes: b16,
                    distortion: d8 * 0.01,
                });
            }
            c
        })
        .collect()
}

fn gain(items: &[Vec<Choice>], distortion: f64) -> f64 {
    items.iter().map(|c| c[0].distortion).sum::<f64>() - distortion
}

/// Exact optimum of the multiple-choice knapsack by DP over bytes.
fn optimum(items: &[Vec<Choice>], cap: usize) -> f64 {
    let mut best = vec![0f64; cap + 1];
    for choices in items {
        let base = choices[0].distortion;
        let mut next = vec![f64::NEG_INFINITY; cap + 1];
        for b in 0..=cap {
            for c in choices {
                if c.bytes <= b {
                    let v = best[b - c.bytes] + (base - c.distortion);
                    if v > next[b] {
                        next[b] = v;
                    }
                }
            }
        }
        best = next;
    }
    best[cap]
}

#[test]
fn cap_is_never_exceeded_and_leftover_cannot_buy_an_upgrade() {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    for _ in 0..300 {
        let n = rng.random_range(1..40);
        let items = random_items(&mut rng, n);
        let cap = rng.random_range(0..600);
        let a = allocate(&items, cap).expect("alloc");
        assert!(a.bytes <= cap);
        let (mut bytes, mut dist) = (0usize, 0f64);
        for (choices, p) in items.iter().zip(&a.choices) {
            let c = choices
                .iter()
                .find(|c| c.precision == *p)
                .expect("choice exists");
            bytes += c.bytes;
            dist += c.distortion;
            let left = cap - a.bytes;
            assert!(
                !choices.iter().any(|u| u.bytes > c.bytes
                    && u.bytes - c.bytes <= left
                    && u.distortion < c.distortion),
                "an upgrade still fits in {left} bytes"
            );
        }
        assert_eq!(bytes, a.bytes);
        assert!((dist - a.distortion).abs() < 1e-9);
    }
}

#[test]
fn gain_is_monotone_in_the_cap_and_near_optimal() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..60 {
        let n = rng.random_range(1..12);
        let items = random_items(&mut rng, n);
        let max_step = items
            .iter()
            .map(|c| {
                c.iter()
                    .map(|x| c[0].distortion - x.distortion)
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max);
        let mut prev = -1.0;
        for cap in 0..200 {
            let a = allocate(&items, cap).expect("alloc");
            let g = gain(&items, a.distortion);
            assert!(
                g >= prev - 1e-9,
                "gain fell from {prev} to {g} at cap {cap}"
            );
            prev = g;
            let opt = optimum(&items, cap);
            assert!(g <= opt + 1e-9);
            assert!(
                g >= opt - max_step - 1e-9,
                "cap {cap}: {g} vs optimum {opt}"
            );
        }
    }
}

#[test]
fn allocation_on_measured_distortions_respects_wire_costs() {
    // Real distortions from quantizing random rows; costs of a uint16 index, fp16 per_block
    // scales (H=2 per K and V -> 8 B), payloads for H*D = 2*8 per K and V.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (h, t, d) = (2, 40, 8);
    let k: Vec<f32> = (0..h * t * d)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    let v: Vec<f32> = (0..h * t * d)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let dist = token_distortions(&k, &v, h, t, d).expect("dist");
    let cost = TokenCost {
        index: 2,
        scales: 8,
        int4: 16,
        int8: 32,
        fp16: 64,
    };
    let items = token_items(
        &dist,
        &cost,
        &[Precision::Drop, Precision::Int4, Precision::Int8],
    );
    let full = t * cost.bytes(Precision::Int8);
    let mut prev = f64::INFINITY;
    for cap in [0, 100, full / 16, full / 4, full / 2, full] {
        let a = allocate(&items, cap).expect("alloc");
        assert!(a.bytes <= cap);
        assert!(a.distortion <= prev + 1e-12);
        prev = a.distortion;
    }
    let a = allocate(&items, full).expect("alloc");
    assert!(a.choices.iter().all(|p| *p == Precision::Int8));
    assert_eq!(a.bytes, full);
}
