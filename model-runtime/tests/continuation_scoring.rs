//! Rank-classification scoring: every continuation scored in one packed forward pass agrees
//! with scoring each continuation on its own, for every architecture and dtype, with short
//! (one-token), medium and long continuations, from a prefilled or a pruned, injected cache.

use model_runtime::candle_core::{D, DType, Device, IndexOp, Tensor};
use model_runtime::{Arch, ContinuationScore, KvCache, Model, ModelConfig};

const PROMPT: [u32; 9] = [5, 17, 42, 99, 3, 250, 7, 7, 128];

/// Lengths 3, 1, 2, 40 (long), 1, 5: one-token continuations need no forward pass, the long
/// one spans more positions than the prompt.
fn continuations() -> Vec<Vec<u32>> {
    let long: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % 290).collect();
    vec![
        vec![10, 20, 30],
        vec![40],
        vec![50, 60],
        long,
        vec![299],
        vec![70, 80, 90, 100, 110],
    ]
}

fn model(arch: Arch, dtype: DType) -> Model {
    Model::random(&ModelConfig::tiny(arch), 5, &Device::Cpu, dtype).unwrap()
}

/// Natural-log probabilities of `targets` under `logits` `[T, V]`, row by row.
fn picked(logits: &Tensor, targets: &[u32]) -> Vec<f64> {
    let logits = logits.to_dtype(DType::F32).unwrap();
    let norm = logits.log_sum_exp(D::Minus1).unwrap();
    targets
        .iter()
        .enumerate()
        .map(|(j, &tok)| {
            let logit = logits
                .i((j, tok as usize))
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let norm = norm.i(j).unwrap().to_scalar::<f32>().unwrap();
            f64::from(logit - norm)
        })
        .collect()
}

/// One continuation alone: its first token from the prompt's logits, the rest in a forward
/// pass of its own on a copy of the cache.
fn one_by_one(model: &Model, last: &Tensor, cache: &KvCache, offset: usize, c: &[u32]) -> Vec<f64> {
    let mut lps = picked(&last.i(0).unwrap().unsqueeze(0).unwrap(), &c[..1]);
    if c.len() > 1 {
        let mut own = cache.clone();
        let ids = model.ids_tensor(&c[..c.len() - 1]).unwrap();
        let logits = model.forward_all(&ids, offset, &mut own).unwrap();
        lps.extend(picked(&logits.i(0).unwrap(), &c[1..]));
    }
    lps
}

/// Every continuation after the 9-token prompt scored packed, and each one by one.
fn packed_and_one_by_one(
    model: &Model,
    last: &Tensor,
    cache: &KvCache,
    conts: &[Vec<u32>],
) -> (Vec<ContinuationScore>, Vec<Vec<f64>>) {
    let scores = model.score_continuations(last, cache, 9, conts).unwrap();
    let expected = conts
        .iter()
        .map(|c| one_by_one(model, last, cache, 9, c))
        .collect();
    (scores, expected)
}

fn assert_close(scores: &[ContinuationScore], expected: &[Vec<f64>], tol: f64, what: &str) {
    assert_eq!(scores.len(), expected.len());
    for (i, (s, e)) in scores.iter().zip(expected).enumerate() {
        assert_eq!(s.n_tokens, e.len(), "{what} continuation {i}");
        assert_eq!(s.token_logprobs.len(), e.len());
        let sum: f64 = e.iter().sum();
        assert!(
            (s.sum_logprob - sum).abs() < tol,
            "{what} continuation {i}: {} vs {sum}",
            s.sum_logprob
        );
        for (a, b) in s.token_logprobs.iter().zip(e) {
            assert!(
                (f64::from(*a) - b).abs() < tol,
                "{what} continuation {i}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn packed_scores_equal_full_sequence_logprobs_in_f32() {
    for arch in Arch::ALL {
        let model = model(arch, DType::F32);
        let conts = continuations();
        let scores = model.continuation_logprobs(&PROMPT, &conts).unwrap();
        // Reference: prompt and continuation prefilled together from an empty cache.
        let expected: Vec<Vec<f64>> = conts
            .iter()
            .map(|c| {
                let seq: Vec<u32> = PROMPT.iter().chain(c).copied().collect();
                let ids = model.ids_tensor(&seq).unwrap();
                let all = model.forward_all(&ids, 0, &mut KvCache::new()).unwrap();
                let rows = all.i((0, PROMPT.len() - 1..seq.len() - 1)).unwrap();
                picked(&rows, c)
            })
            .collect();
        assert_close(&scores, &expected, 1e-4, &format!("{arch:?}"));
        assert!(scores.iter().all(|s| s.sum_logprob < 0.0));
    }
}

#[test]
fn packed_scores_equal_one_by_one_on_a_pruned_cache_in_every_dtype() {
    // Bounds per dtype: f32 rounding only (measured at most 1.2e-5); half precisions may
    // round the packed and the single forward differently (measured: bf16 identical, f16 at
    // most 2.0e-3 on the 40-token sum).
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 1e-2), (DType::F16, 1e-2)] {
        for arch in Arch::ALL {
            let model = model(arch, dtype);
            let (_, full) = model.prefill(&model.ids_tensor(&PROMPT).unwrap()).unwrap();
            // Positions 0, 2, 3, 5 kept: the cache is shorter than the next position.
            let cache = full.select_positions(&[0, 2, 3, 5]).unwrap();
            let last = model.ids_tensor(&PROMPT[8..]).unwrap();
            let mut injected = cache.clone();
            let logits = model.forward(&last, 8, &mut injected).unwrap();
            let (scores, expected) =
                packed_and_one_by_one(&model, &logits, &injected, &continuations());
            assert_close(&scores, &expected, tol, &format!("{arch:?} {dtype:?}"));
            assert_eq!(injected.seq_len(), 5, "the cache is left as it was");
        }
    }
}

#[test]
fn one_token_continuations_and_bad_tokens() {
    let model = model(Arch::Llama, DType::F32);
    let (logits, cache) = model.prefill(&model.ids_tensor(&PROMPT).unwrap()).unwrap();
    let conts = vec![vec![4u32], vec![9], vec![4]];
    let (scores, expected) = packed_and_one_by_one(&model, &logits, &cache, &conts);
    assert_close(&scores, &expected, 1e-6, "one-token");
    assert_eq!(scores[0], scores[2]);
    // A token outside the vocabulary, even one that is never fed, and an empty continuation.
    for bad in [
        vec![vec![4u32, 300]],
        vec![vec![300]],
        vec![vec![4], vec![]],
    ] {
        assert!(
            model.score_continuations(&logits, &cache, 9, &bad).is_err(),
            "{bad:?}"
        );
    }
    // Positions past max_position (512) are refused.
    let long = vec![vec![1u32; 600]];
    assert!(
        model
            .score_continuations(&logits, &cache, 9, &long)
            .is_err()
    );
}
