//! Real GGUF models (fetched and cached by the `assets` crate): logit parity with
//! candle-transformers' own quantized implementations, and tokenizer parity.
//!
//! Tolerances: our Quantized mode runs the same candle kernels on the same weights as
//! candle-transformers, so last-position logits must agree within 1e-3 (max abs over the
//! whole vocabulary; measured 0.0 for SmolLM2). Our Dequantized mode multiplies f32
//! activations by f32 weights, whereas candle's quantized kernels first quantize the
//! activations to 8-bit blocks, so it is held to 1.5 max abs over the vocabulary
//! (measured 1.06 for SmolLM2 on this prompt) and the same top-1 token.

use assets::{AssetId, Store};
use candle_transformers::models::{quantized_llama, quantized_qwen2};
use model_runtime::candle_core::{Device, Tensor};
use model_runtime::{ChatTemplate, LoadOptions, Model, Tokenizer, WeightsMode};
use std::path::{Path, PathBuf};

fn asset(id: AssetId) -> PathBuf {
    let store = Store::from_env().unwrap_or_else(|e| panic!("asset store: {e}"));
    store.ensure(id).unwrap_or_else(|e| panic!("{e}"))
}

const QUESTION: &str = "Which gas do plants absorb from the air? Answer in 12 words.";

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn argmax(v: &[f32]) -> usize {
    (0..v.len()).fold(0, |best, i| if v[i] > v[best] { i } else { best })
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Compares our logits (both modes) with the reference's on one prompt.
fn check_parity(path: &Path, ids: &[u32], reference: &[f32], name: &str) {
    for (mode, tol) in [
        (WeightsMode::Quantized, 1e-3f32),
        (WeightsMode::Dequantized, 1.5),
    ] {
        let opts = LoadOptions {
            weights: mode,
            ..LoadOptions::cpu()
        };
        let model = Model::from_gguf(path, &opts).unwrap();
        let ours = model.next_token_logits(ids).unwrap();
        let diff = max_abs_diff(&ours, reference);
        eprintln!(
            "{name} {mode:?}: {} prompt tokens, max |logit diff| = {diff:.6}",
            ids.len()
        );
        assert!(diff <= tol, "{name} {mode:?}: max abs diff {diff} > {tol}");
        assert_eq!(
            argmax(&ours),
            argmax(reference),
            "{name} {mode:?}: top-1 differs"
        );
    }
}

#[test]
fn smollm2_logits_match_candle_quantized_llama() {
    let path = asset(AssetId::Smollm2_135m);
    let tok = Tokenizer::from_gguf_file(&path).unwrap();
    let ids = tok
        .encode(&ChatTemplate::SmolLm2.prompt(QUESTION, ""))
        .unwrap();
    let mut file = std::fs::File::open(&path).unwrap();
    let content =
        model_runtime::candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut reference =
        quantized_llama::ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let expected = host(&reference.forward(&input, 0).unwrap());
    check_parity(&path, &ids, &expected, "SmolLM2-135M Q4_1");
}

#[test]
fn qwen_logits_match_candle_quantized_qwen2() {
    let path = asset(AssetId::QwenCoder0_5b);
    let tok = Tokenizer::from_gguf_file(&path).unwrap();
    let ids = tok
        .encode(&ChatTemplate::Qwen2.prompt(QUESTION, ""))
        .unwrap();
    let mut file = std::fs::File::open(&path).unwrap();
    let content =
        model_runtime::candle_core::quantized::gguf_file::Content::read(&mut file).unwrap();
    let mut reference =
        quantized_qwen2::ModelWeights::from_gguf(content, &mut file, &Device::Cpu).unwrap();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let expected = host(&reference.forward(&input, 0).unwrap());
    check_parity(&path, &ids, &expected, "Qwen2.5-Coder-0.5B Q4_K_M");
}

/// Varied strings: digits, punctuation, unicode, whitespace runs, code, special tokens.
const TEXTS: &[&str] = &[
    "Hello, world!",
    "The year 2024 had 366 days; 3.14159 is pi.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\n\n\nand\r\nCRLF",
    "Ünïcödé: naïve café, Straße, 東京タワー, Привет мир, مرحبا, 🙂👍🏽",
    "I'm sure they'll say we've done what's RIGHT, didn't we?",
    "fn main() { println!(\"{}\", 1 + 2 * 3); }",
    "x = [1,2,3]\nfor i in range(10):\n    print(i ** 2)",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n",
    "Question: Which of these is a mammal?\nA. shark\nB. dolphin\nC. trout\nD. eel\nAnswer:",
    "1234567890 00 007 1,000,000 1e-6 0x1F",
    "email@example.com https://example.org/path?q=1&r=2#frag",
    "multiple     spaces    between     words",
    "MiXeD CaSe WoRdS and ALLCAPS",
    "— en–dash, ellipsis… “quotes” ‘single’ «guillemets»",
    "αβγδε ∑∫√∞ ≤≥≠",
    "<|endoftext|>after end",
    "line1\n  indented\n\tTabbed\n",
    "A. 4 B. 5 C. 6 D. 7",
    "Accurately answer the following question:\n\nWhat is 12 + 30?\n\nChoices:\nA. 42\nB. 24",
    "emoji sequences 👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
    "",
    " ",
    "\n",
    "a",
    "don't DON'T Don'T",
    "    def f(x):\n        return x\n",
    "中文句子，带有标点。还有数字123。",
    "한국어 텍스트와 日本語のテキスト",
    "combining e\u{301} vs precomposed é (NFC)",
    "The correct answer is",
    "Photosynthesis converts CO2 and H2O into C6H12O6.",
];

#[test]
fn qwen_gguf_tokenizer_matches_npm_tokenizer_json() {
    let from_gguf = Tokenizer::from_gguf_file(&asset(AssetId::QwenCoder0_5b)).unwrap();
    let from_json = Tokenizer::from_file(&asset(AssetId::QwenTokenizer)).unwrap();
    for text in TEXTS {
        let a = from_gguf.encode(text).unwrap();
        let b = from_json.encode(text).unwrap();
        assert_eq!(a, b, "token mismatch on {text:?}");
        assert_eq!(
            from_gguf.decode(&a, false).unwrap(),
            from_json.decode(&b, false).unwrap()
        );
    }
    let im_start = from_gguf.encode("<|im_start|>").unwrap();
    assert_eq!(im_start, vec![151_644]);
}

#[test]
fn smollm2_tokenizer_splits_digits_and_adds_no_prefix_space() {
    let tok = Tokenizer::from_gguf_file(&asset(AssetId::Smollm2_135m)).unwrap();
    let digits = tok.encode("12345").unwrap();
    assert_eq!(digits.len(), 5, "digits one by one");
    for (id, d) in digits.iter().zip('1'..='5') {
        assert_eq!(tok.id_to_token(*id).unwrap(), d.to_string());
    }
    let ids = tok.encode("<|im_start|>user\nHi<|im_end|>").unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(
        tok.id_to_token(ids[1]).unwrap(),
        "user",
        "no prefix space after a special token"
    );
    assert_eq!(*ids.last().unwrap(), 2);
    for text in TEXTS {
        let ids = tok.encode(text).unwrap();
        assert_eq!(
            &tok.decode(&ids, false).unwrap(),
            text,
            "round trip of {text:?}"
        );
    }
}
