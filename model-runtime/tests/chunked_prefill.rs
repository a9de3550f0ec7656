//! Chunked prefill against the one-pass forward on tiny random models: logits, exported K/V,
//! attention-probe scores and gradients agree for every chunk length (1, 3, T-1, T, > T, T not
//! a multiple of C), with and without a cache before the call (also a pruned one at a larger
//! offset), with GQA groups of 2 and 4; the chunks' masks keep causality at chunk borders.
//!
//! Tolerance: chunking changes only the length of the masked rows the softmax and the
//! probabilities x V matmul reduce over (masked entries are exact zeros), so the two agree to
//! f32 summation order; we require a max abs difference <= 1e-4 (the logits of these models
//! are of order 1-10).

use model_runtime::candle_core::{DType, Device, IndexOp, Tensor, Var};
use model_runtime::{
    Arch, DEFAULT_PREFILL_CHUNK_TOKENS, KvCache, LayerKv, Model, ModelConfig, RuntimeError,
};

const TOL: f32 = 1e-4;
/// Eleven new tokens: not a multiple of 3.
const NEW: [u32; 11] = [5, 17, 42, 99, 3, 250, 7, 7, 128, 64, 200];
const PAST: [u32; 5] = [9, 8, 7, 6, 5];

fn host(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    host(a)
        .iter()
        .zip(host(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn cache_diff(a: &KvCache, b: &KvCache) -> f32 {
    assert_eq!(a.layers.len(), b.layers.len());
    a.layers
        .iter()
        .zip(&b.layers)
        .map(|(x, y)| max_abs_diff(&x.k, &y.k).max(max_abs_diff(&x.v, &y.v)))
        .fold(0.0, f32::max)
}

/// Tiny models with GQA groups of 2 (`ModelConfig::tiny`: 4 query, 2 KV heads) and of 4.
fn models() -> Vec<(String, Model)> {
    let mut out = Vec::new();
    for arch in Arch::ALL {
        let cfg = ModelConfig::tiny(arch);
        out.push((format!("{arch:?} groups 2"), random(&cfg, 3)));
    }
    let groups4 = ModelConfig {
        n_kv_heads: 1,
        ..ModelConfig::tiny(Arch::Qwen3)
    };
    out.push(("Qwen3 groups 4".to_string(), random(&groups4, 4)));
    out
}

fn random(cfg: &ModelConfig, seed: u64) -> Model {
    Model::random(cfg, seed, &Device::Cpu, DType::F32).unwrap()
}

/// Chunk lengths to try against the unchunked pass for `t` new tokens.
fn chunks(t: usize) -> [usize; 5] {
    [1, 3, t - 1, t, t + 5]
}

/// All-position logits and the extended cache of `new` after `past` (a clone) at `offset`.
fn run(model: &Model, new: &[u32], offset: usize, past: &KvCache) -> (Tensor, KvCache) {
    let mut cache = past.clone();
    let logits = model
        .forward_all(&model.ids_tensor(new).unwrap(), offset, &mut cache)
        .unwrap();
    (logits, cache)
}

/// Prefill of `PAST` (unchunked), whole or pruned to positions 0, 2 and 4.
fn pasts(model: &Model) -> Vec<(&'static str, KvCache)> {
    let (_, full) = model
        .clone()
        .with_prefill_chunk_tokens(0)
        .prefill(&model.ids_tensor(&PAST).unwrap())
        .unwrap();
    let pruned = full.select_positions(&[0, 2, 4]).unwrap();
    vec![
        ("no past", KvCache::new()),
        ("past", full),
        ("pruned past", pruned),
    ]
}

#[test]
fn chunked_logits_and_cache_match_the_one_pass_forward() {
    for (name, model) in models() {
        let whole = model.clone().with_prefill_chunk_tokens(0);
        for (label, past) in pasts(&model) {
            // A pruned cache runs at the absolute offset after the full past.
            let offset = if past.is_empty() { 0 } else { PAST.len() };
            let (want_logits, want_cache) = run(&whole, &NEW, offset, &past);
            for c in chunks(NEW.len()) {
                let chunked = model.clone().with_prefill_chunk_tokens(c);
                let (logits, cache) = run(&chunked, &NEW, offset, &past);
                let what = format!("{name}, {label}, chunk {c}");
                assert_eq!(cache.seq_len(), past.seq_len() + NEW.len(), "{what}");
                assert!(max_abs_diff(&logits, &want_logits) <= TOL, "{what}: logits");
                assert!(cache_diff(&cache, &want_cache) <= TOL, "{what}: cache");
                // Last-position logits and the probe go through the same chunks.
                let mut c2 = past.clone();
                let last = chunked
                    .forward(&chunked.ids_tensor(&NEW).unwrap(), offset, &mut c2)
                    .unwrap();
                let want_last = want_logits.i((.., NEW.len() - 1, ..)).unwrap();
                assert!(max_abs_diff(&last, &want_last) <= TOL, "{what}: last");
                assert!(cache_diff(&c2, &want_cache) <= TOL, "{what}: forward cache");
            }
        }
    }
}

#[test]
fn prefill_chunks_by_default_and_matches_unchunked() {
    let model = random(&ModelConfig::tiny(Arch::Qwen2), 1);
    assert_eq!(model.prefill_chunk_tokens(), DEFAULT_PREFILL_CHUNK_TOKENS);
    let ids = model.ids_tensor(&NEW).unwrap();
    let (want, want_cache) = model
        .clone()
        .with_prefill_chunk_tokens(0)
        .prefill(&ids)
        .unwrap();
    let (got, cache) = model.with_prefill_chunk_tokens(4).prefill(&ids).unwrap();
    assert!(max_abs_diff(&got, &want) <= TOL);
    assert!(cache_diff(&cache, &want_cache) <= TOL);
}

#[test]
fn probe_scores_add_up_over_chunks() {
    for (name, model) in models() {
        let (_, past) = model.prefill(&model.ids_tensor(&PAST).unwrap()).unwrap();
        let query = model.ids_tensor(&NEW).unwrap();
        let want = model
            .clone()
            .with_prefill_chunk_tokens(0)
            .query_attention(&query, PAST.len(), &past)
            .unwrap();
        for c in chunks(NEW.len()) {
            let got = model
                .clone()
                .with_prefill_chunk_tokens(c)
                .query_attention(&query, PAST.len(), &past)
                .unwrap();
            assert_eq!(got.len(), PAST.len());
            let diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(diff <= TOL, "{name}, chunk {c}: {got:?} vs {want:?}");
        }
    }
}

/// Would fail if a chunk's mask were offset wrongly: a chunk that could see a later key of its
/// own chunk changes earlier positions, and one that missed the earlier chunks (or its own
/// earlier keys) would not change at every later position.
#[test]
fn every_token_changes_exactly_the_positions_from_it_on_across_chunk_borders() {
    let model = random(&ModelConfig::tiny(Arch::Llama), 7).with_prefill_chunk_tokens(3);
    let (_, past) = model.prefill(&model.ids_tensor(&PAST).unwrap()).unwrap();
    let offset = PAST.len();
    let (base, _) = run(&model, &NEW, offset, &past);
    for j in 0..NEW.len() {
        let mut changed = NEW;
        changed[j] = 290 - changed[j] % 7;
        let (logits, _) = run(&model, &changed, offset, &past);
        for p in 0..NEW.len() {
            let d = max_abs_diff(
                &base.i((.., p, ..)).unwrap(),
                &logits.i((.., p, ..)).unwrap(),
            );
            if p < j {
                assert_eq!(d, 0.0, "token {j} changed earlier position {p}");
            } else {
                assert!(d > 0.0, "token {j} did not reach position {p}");
            }
        }
    }
}

#[test]
fn a_failing_chunk_leaves_the_cache_as_it_was() {
    let model = random(&ModelConfig::tiny(Arch::Qwen3), 2).with_prefill_chunk_tokens(3);
    let (_, past) = model.prefill(&model.ids_tensor(&PAST).unwrap()).unwrap();
    let mut bad = NEW;
    bad[7] = 10_000; // outside the vocabulary of 300, in the third chunk
    let mut cache = past.clone();
    let err = model
        .forward_all(&model.ids_tensor(&bad).unwrap(), PAST.len(), &mut cache)
        .unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidInput { .. }), "{err}");
    assert_eq!(cache.seq_len(), PAST.len());
    assert_eq!(cache_diff(&cache, &past), 0.0);
}

/// Gradients with respect to a cache given to the model (what fuser training differentiates)
/// are the same chunked and unchunked.
#[test]
fn gradients_through_a_chunked_forward_match() {
    let model = random(&ModelConfig::tiny(Arch::Qwen3), 5).with_autograd(true);
    let (_, past) = model.prefill(&model.ids_tensor(&PAST).unwrap()).unwrap();
    let grads = |chunk: usize| -> (Tensor, Tensor) {
        let vars: Vec<(Var, Var)> = past
            .layers
            .iter()
            .map(|l| {
                (
                    Var::from_tensor(&l.k).unwrap(),
                    Var::from_tensor(&l.v).unwrap(),
                )
            })
            .collect();
        let layers = vars
            .iter()
            .map(|(k, v)| LayerKv {
                k: k.as_tensor().clone(),
                v: v.as_tensor().clone(),
            })
            .collect();
        let mut cache = KvCache::from_layers(layers).unwrap();
        let m = model.clone().with_prefill_chunk_tokens(chunk);
        let logits = m
            .forward_all(&m.ids_tensor(&NEW).unwrap(), PAST.len(), &mut cache)
            .unwrap();
        let loss = logits.sqr().unwrap().mean_all().unwrap();
        let store = loss.backward().unwrap();
        let (k, v) = &vars[0];
        (
            store.get(k.as_tensor()).unwrap().clone(),
            store.get(v.as_tensor()).unwrap().clone(),
        )
    };
    let (want_k, want_v) = grads(0);
    let scale = host(&want_k)
        .iter()
        .chain(host(&want_v).iter())
        .fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(scale > 0.0, "the loss must depend on the cache");
    for c in [1, 3, 10] {
        let (k, v) = grads(c);
        let diff = max_abs_diff(&k, &want_k).max(max_abs_diff(&v, &want_v));
        assert!(
            diff <= TOL * scale.max(1.0),
            "chunk {c}: {diff} (scale {scale})"
        );
    }
}
