//! The receiver's delta scores pick the held position that changes its answer, on a hand-made
//! case (docs/REFINEMENT.md, "Delta selection"). A tiny random-weight model reads a passage;
//! one passage position's K rows are scaled up in every layer (a token the question cannot
//! help attending to) and its V rows are made large (so what it carries moves the answer).
//! The ground truth is leave-one-out: the rank scores of the choices with each held position
//! dropped in turn. The position with the highest delta score must be the one whose removal
//! moves the scores most, and by far.

use eval_harness::Example;
use fuser::{IdentityFuser, PromptLayout};
use kvwire::{HostCache, HostLayer};
use receiver_svc::engine::{Injected, ReceiverEngine};
use service_kit::model_spec::ModelSpec;

const PLANTED: usize = 5;

fn example() -> Example {
    Example {
        id: "delta".into(),
        dataset: "hand-made".into(),
        question: "Which gas do plants take in to make sugar?".into(),
        choices: vec![
            "carbon dioxide".into(),
            "oxygen".into(),
            "nitrogen".into(),
            "helium".into(),
        ],
        labels: ["A", "B", "C", "D"].map(String::from).to_vec(),
        gold: Some(0),
        answer_text: None,
        passage: None,
    }
}

/// The rows of `host` without position index `drop` (every layer, every head).
fn without(host: &HostCache, drop: usize) -> HostCache {
    let (t, d) = (host.positions.len(), host.head_dim);
    let keep = |x: &[f32]| -> Vec<f32> {
        x.chunks(t * d)
            .flat_map(|head| {
                head.chunks(d)
                    .enumerate()
                    .filter(|(i, _)| *i != drop)
                    .flat_map(|(_, row)| row.to_vec())
            })
            .collect()
    };
    let mut positions = host.positions.clone();
    positions.remove(drop);
    HostCache {
        positions,
        layers: host
            .layers
            .iter()
            .map(|l| HostLayer {
                k: keep(&l.k),
                v: keep(&l.v),
            })
            .collect(),
        ..host.clone()
    }
}

fn rank_scores(engine: &ReceiverEngine, host: &HostCache, ex: &Example) -> (Vec<f64>, Injected) {
    let prompt = engine.rank_prompt_after_passage(ex, "").unwrap();
    let fused = engine
        .fuse(
            &IdentityFuser,
            host,
            &prompt.text,
            &prompt.ids,
            PromptLayout::Context,
        )
        .unwrap();
    let injected = Injected::from(fused);
    let ranked = engine.rank(&prompt, Some(injected.clone())).unwrap();
    (ranked.choices.iter().map(|c| c.logprob).collect(), injected)
}

#[test]
fn the_highest_delta_score_is_the_position_that_moves_the_answer() {
    let spec = ModelSpec::parse("random:tiny-llama:7").unwrap();
    let loaded = service_kit::model_load::load(&spec).unwrap();
    let model_id = loaded.spec.to_string();
    let engine = ReceiverEngine::new(loaded);
    let ex = example();
    let model = &engine.loaded().model;
    let passage = "Plants take in carbon dioxide from the air and use light to make sugar.\n\n";
    let ids = engine.loaded().tokenizer.encode(passage).unwrap();
    let (_, cache) = model.prefill(&model.ids_tensor(&ids).unwrap()).unwrap();
    let mut layers = cache.to_host().unwrap();
    let c = model.config();
    let (t, d) = (ids.len(), c.head_dim);
    assert!(t > PLANTED + 2, "passage of {t} tokens");
    for layer in &mut layers {
        for head in 0..c.n_kv_heads {
            let row = (head * t + PLANTED) * d..(head * t + PLANTED + 1) * d;
            layer.k[row.clone()].iter_mut().for_each(|x| *x *= 6.0);
            layer.v[row].iter_mut().for_each(|x| *x *= 20.0);
        }
    }
    let host = HostCache {
        sharer_model: model_id,
        prompt_tokens: t,
        heads: c.n_kv_heads,
        head_dim: d,
        positions: (0..t as u32).collect(),
        layers,
    };
    let (full, injected) = rank_scores(&engine, &host, &ex);
    let prompt = engine.rank_prompt_after_passage(&ex, "").unwrap();
    let delta = engine.delta_scores(&prompt.ids, &injected).unwrap();
    assert_eq!(delta.len(), t);
    // Leave-one-out: how far the choice scores move without each position.
    let moved: Vec<f64> = (0..t)
        .map(|i| {
            let (scores, _) = rank_scores(&engine, &without(&host, i), &ex);
            scores.iter().zip(&full).map(|(a, b)| (a - b).abs()).sum()
        })
        .collect();
    let argmax = |x: &[f64]| {
        (0..x.len())
            .max_by(|&a, &b| x[a].total_cmp(&x[b]).then(b.cmp(&a)))
            .unwrap()
    };
    let delta64: Vec<f64> = delta.iter().map(|&x| f64::from(x)).collect();
    assert_eq!(argmax(&delta64), PLANTED, "delta scores {delta:?}");
    assert_eq!(argmax(&moved), PLANTED, "leave-one-out {moved:?}");
    let mut others: Vec<f64> = (0..t).filter(|&i| i != PLANTED).map(|i| moved[i]).collect();
    others.sort_by(f64::total_cmp);
    let median = others[others.len() / 2];
    assert!(
        moved[PLANTED] > 5.0 * median,
        "dropping the planted position moves the scores {} (median of the others {median})",
        moved[PLANTED]
    );
    // The refinement order built on these scores asks for it first.
    let order = receiver_svc::evaluate::refine::upgrade_order(&host.positions, &delta);
    assert_eq!(order[0], PLANTED as u32);
}
