//! Tiny random models of every architecture: shapes of the exported cache, exact
//! reproduction when a cache is injected, causal masking, determinism, scoring.

use model_runtime::candle_core::{DType, Device, IndexOp, Tensor};
use model_runtime::{Arch, GenerateParams, KvCache, LayerKv, Model, ModelConfig, RuntimeError};

const PROMPT: [u32; 9] = [5, 17, 42, 99, 3, 250, 7, 7, 128];

fn tiny(arch: Arch, seed: u64) -> Model {
    Model::random(&ModelConfig::tiny(arch), seed, &Device::Cpu, DType::F32).unwrap()
}

fn ids(model: &Model, ids: &[u32]) -> Tensor {
    model.ids_tensor(ids).unwrap()
}

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    host(a)
        .iter()
        .zip(host(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Rebuilds a cache from host memory, as a receiver does with a cache it was sent.
fn through_host(cache: &KvCache) -> KvCache {
    let layers = cache
        .layers
        .iter()
        .map(|l| LayerKv {
            k: Tensor::from_vec(host(&l.k), l.k.dims(), &Device::Cpu).unwrap(),
            v: Tensor::from_vec(host(&l.v), l.v.dims(), &Device::Cpu).unwrap(),
        })
        .collect();
    KvCache::from_layers(layers).unwrap()
}

#[test]
fn prefill_exports_post_rope_cache_of_every_layer() {
    for arch in Arch::ALL {
        let model = tiny(arch, 1);
        let cfg = model.config().clone();
        let (logits, cache) = model.prefill(&ids(&model, &PROMPT)).unwrap();
        assert_eq!(logits.dims(), [1, cfg.vocab_size], "{arch:?}");
        assert_eq!(cache.layers.len(), cfg.n_layers);
        for layer in &cache.layers {
            assert_eq!(
                layer.k.dims(),
                [1, cfg.n_kv_heads, PROMPT.len(), cfg.head_dim]
            );
            assert_eq!(
                layer.v.dims(),
                [1, cfg.n_kv_heads, PROMPT.len(), cfg.head_dim]
            );
        }
        assert!(host(&logits).iter().all(|x| x.is_finite()));
    }
}

#[test]
fn injected_own_cache_reproduces_logits_exactly() {
    for arch in Arch::ALL {
        let model = tiny(arch, 2);
        let (prefix, last) = PROMPT.split_at(PROMPT.len() - 1);
        let (_, own) = model.prefill(&ids(&model, prefix)).unwrap();
        let mut a = own.clone();
        let mut b = through_host(&own);
        let la = model
            .forward(&ids(&model, last), prefix.len(), &mut a)
            .unwrap();
        let lb = model
            .forward(&ids(&model, last), prefix.len(), &mut b)
            .unwrap();
        assert_eq!(
            host(&la),
            host(&lb),
            "{arch:?}: injected cache must give identical logits"
        );
        assert_eq!(a.seq_len(), PROMPT.len());

        // Incremental decoding agrees with one full prefill.
        let (full, _) = model.prefill(&ids(&model, &PROMPT)).unwrap();
        let diff = max_abs_diff(&full, &la);
        assert!(
            diff < 1e-4,
            "{arch:?}: incremental vs full prefill differ by {diff}"
        );
    }
}

#[test]
fn all_position_logits_are_causal() {
    for arch in Arch::ALL {
        let model = tiny(arch, 3);
        let mut c1 = KvCache::new();
        let all = model
            .forward_all(&ids(&model, &PROMPT), 0, &mut c1)
            .unwrap();
        let mut changed = PROMPT;
        changed[8] = 11;
        let mut c2 = KvCache::new();
        let all2 = model
            .forward_all(&ids(&model, &changed), 0, &mut c2)
            .unwrap();
        let early = max_abs_diff(
            &all.i((.., ..8, ..)).unwrap(),
            &all2.i((.., ..8, ..)).unwrap(),
        );
        assert_eq!(early, 0.0, "{arch:?}: a later token changed earlier logits");
        let last = max_abs_diff(&all.i((.., 8, ..)).unwrap(), &all2.i((.., 8, ..)).unwrap());
        assert!(last > 0.0, "{arch:?}: the last token must matter");
        let (only_last, _) = model.prefill(&ids(&model, &PROMPT)).unwrap();
        assert!(max_abs_diff(&all.i((.., 8, ..)).unwrap(), &only_last) < 1e-5);
    }
}

#[test]
fn same_seed_same_model_and_deterministic_generation() {
    let params = GenerateParams {
        max_new_tokens: 12,
        stop_ids: vec![],
    };
    let a = tiny(Arch::Qwen3, 7)
        .generate_greedy(&PROMPT, &params)
        .unwrap();
    let b = tiny(Arch::Qwen3, 7)
        .generate_greedy(&PROMPT, &params)
        .unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.tokens.len(), 12);
    let la = tiny(Arch::Qwen3, 7).next_token_logits(&PROMPT).unwrap();
    let lc = tiny(Arch::Qwen3, 8).next_token_logits(&PROMPT).unwrap();
    assert_ne!(la, lc, "a different seed must give different weights");
    assert_eq!(a.tokens[0] as usize, argmax(&la));
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

#[test]
fn generation_stops_on_stop_token() {
    let model = tiny(Arch::Llama, 4);
    let free = model
        .generate_greedy(
            &PROMPT,
            &GenerateParams {
                max_new_tokens: 6,
                stop_ids: vec![],
            },
        )
        .unwrap();
    let stop = free.tokens[2];
    let first = free.tokens.iter().position(|&t| t == stop).unwrap();
    let stopped = model
        .generate_greedy(
            &PROMPT,
            &GenerateParams {
                max_new_tokens: 6,
                stop_ids: vec![stop],
            },
        )
        .unwrap();
    assert_eq!(stopped.tokens, free.tokens[..=first].to_vec());
    assert_eq!(stopped.stop, model_runtime::StopReason::StopToken(stop));
}

#[test]
fn pruned_cache_runs_at_absolute_offset() {
    let model = tiny(Arch::Mistral, 6);
    let (_, cache) = model.prefill(&ids(&model, &PROMPT)).unwrap();
    let mut kept = cache.truncate(4).unwrap();
    let logits = model
        .forward(&ids(&model, &[9]), PROMPT.len(), &mut kept)
        .unwrap();
    assert_eq!(kept.seq_len(), 5);
    assert!(host(&logits).iter().all(|x| x.is_finite()));
}

#[test]
fn selected_positions_equal_truncation_for_a_prefix() {
    let model = tiny(Arch::Qwen3, 10);
    let (_, cache) = model.prefill(&ids(&model, &PROMPT)).unwrap();
    let picked = cache.select_positions(&[0, 1, 2]).unwrap();
    let cut = cache.truncate(3).unwrap();
    for (a, b) in picked.layers.iter().zip(&cut.layers) {
        assert_eq!(host(&a.k), host(&b.k));
        assert_eq!(host(&a.v), host(&b.v));
    }
    let odd = cache.select_positions(&[8, 2]).unwrap();
    assert_eq!(
        host(&odd.layers[1].v.i((.., .., 0, ..)).unwrap()),
        host(&cache.layers[1].v.i((.., .., 8, ..)).unwrap())
    );
    assert!(cache.select_positions(&[9]).is_err());
}

#[test]
fn bad_inputs_are_typed_errors() {
    let model = tiny(Arch::Qwen3, 9);
    let (_, cache) = model.prefill(&ids(&model, &PROMPT)).unwrap();
    let mut c = cache.clone();
    let err = model.forward(&ids(&model, &[1]), 3, &mut c).unwrap_err();
    assert!(
        matches!(err, RuntimeError::InvalidInput { what: "offset", .. }),
        "{err}"
    );
    let mut short = KvCache {
        layers: cache.layers[..1].to_vec(),
    };
    let err = model
        .forward(&ids(&model, &[1]), PROMPT.len(), &mut short)
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::InvalidInput { what: "cache", .. }),
        "{err}"
    );
    let err = model.prefill(&ids(&model, &[1, 300])).unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::InvalidInput {
                what: "input_ids",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn models_caches_and_tokenizers_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Model>();
    shareable::<KvCache>();
    shareable::<model_runtime::Tokenizer>();
    let model = std::sync::Arc::new(tiny(Arch::Llama, 11));
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let m = model.clone();
            std::thread::spawn(move || m.next_token_logits(&PROMPT).unwrap())
        })
        .collect();
    let outs: Vec<Vec<f32>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(outs[0], outs[1]);
}

#[test]
fn query_attention_scores_every_cached_position_and_leaves_the_cache_alone() {
    for arch in Arch::ALL {
        let model = tiny(arch, 3);
        let config = ModelConfig::tiny(arch);
        let (_, cache) = model.prefill(&ids(&model, &PROMPT)).unwrap();
        let query = [11u32, 12, 13];
        let scores = model
            .query_attention(&ids(&model, &query), PROMPT.len(), &cache)
            .unwrap();
        assert_eq!(scores.len(), PROMPT.len());
        assert_eq!(cache.seq_len(), PROMPT.len());
        // Each query token's probabilities sum to 1 per layer and head; part of that mass goes
        // to the query tokens themselves, the rest is spread over the cached positions.
        let most = (config.n_layers * config.n_heads * query.len()) as f32;
        let total: f32 = scores.iter().sum();
        assert!(scores.iter().all(|&s| s >= 0.0), "{arch:?}: {scores:?}");
        assert!(total > 0.0 && total < most, "{arch:?}: {total} vs {most}");
        let again = model
            .query_attention(&ids(&model, &query), PROMPT.len(), &cache)
            .unwrap();
        assert_eq!(scores, again);
    }
}
