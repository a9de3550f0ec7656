//! Tokenizers: a thin wrapper over the `tokenizers` crate, loaded from `tokenizer.json`
//! or built from GGUF metadata (byte-level BPE: Qwen's "qwen2" and SmolLM2's "smollm"
//! pre-tokenizers), plus a tiny byte-level BPE for tests.

use crate::error::{Result, RuntimeError};
use crate::gguf::Metadata;
use candle_core::quantized::gguf_file::Content;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

/// The split regex of Qwen2/2.5/3's `tokenizer.json` (digits one by one).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The split regex of Llama-3 style byte-level BPE (digits in groups of up to three).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF `tokenizer.ggml.token_type` values.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// A tokenizer plus the special ids a runtime needs.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos_token_id: Option<u32>,
    eos_token_id: Option<u32>,
}

/// One token with the byte span of the input it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSpan {
    /// Token id.
    pub id: u32,
    /// Byte offsets `[start, end)` in the encoded text.
    pub start: usize,
    /// End byte offset (exclusive).
    pub end: usize,
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| RuntimeError::tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self {
            inner,
            bos_token_id: None,
            eos_token_id: None,
        })
    }

    /// Builds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf_file(path: &Path) -> Result<Self> {
        let (content, _) = crate::gguf::open(path)?;
        Self::from_gguf(&content)
    }

    /// Builds a byte-level BPE tokenizer from GGUF metadata (`tokenizer.ggml.*`).
    /// Control tokens become special added tokens, user-defined ones plain added tokens.
    pub fn from_gguf(content: &Content) -> Result<Self> {
        let md = Metadata(content);
        let model = md.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(RuntimeError::tokenizer(format!(
                "GGUF tokenizer model `{model}` is not byte-level BPE; load its tokenizer.json instead"
            )));
        }
        let tokens = md.strings("tokenizer.ggml.tokens")?;
        let merges = md
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        RuntimeError::config("tokenizer.ggml.merges", format!("bad merge `{m}`"))
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let types = match md.get("tokenizer.ggml.token_type") {
            Some(_) => md.ints("tokenizer.ggml.token_type")?,
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(RuntimeError::config(
                "tokenizer.ggml.token_type",
                format!("{} entries for {} tokens", types.len(), tokens.len()),
            ));
        }
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(RuntimeError::tokenizer)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        let pre = md.str("tokenizer.ggml.pre").unwrap_or("gpt2");
        match pre {
            "qwen2" => {
                inner
                    .with_normalizer(Some(NFC))
                    .with_pre_tokenizer(Some(split_then_bytes(QWEN2_REGEX)?));
            }
            "llama-bpe" | "llama3" | "smaug-bpe" => {
                inner.with_pre_tokenizer(Some(split_then_bytes(LLAMA3_REGEX)?));
            }
            // SmolLM2's tokenizer.json: digits one by one, then GPT-2 byte level with its
            // regex and no prefix space (candle's GGUF path adds one after specials).
            "smollm" => {
                inner.with_pre_tokenizer(Some(Sequence::new(vec![
                    Digits::new(true).into(),
                    ByteLevel::new(false, true, true).into(),
                ])));
            }
            "gpt2" | "default" => {
                inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            }
            other => {
                return Err(RuntimeError::config(
                    "tokenizer.ggml.pre",
                    format!(
                        "pre-tokenizer `{other}` is not supported (qwen2, smollm, llama-bpe, gpt2)"
                    ),
                ));
            }
        }
        inner.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
        let mut special = Vec::new();
        let mut user = Vec::new();
        for (token, kind) in tokens.iter().zip(&types) {
            match *kind {
                TOKEN_TYPE_CONTROL => {
                    special.push(AddedToken::from(token.to_string(), true).normalized(false))
                }
                TOKEN_TYPE_USER_DEFINED => {
                    user.push(AddedToken::from(token.to_string(), false).normalized(false))
                }
                _ => {}
            }
        }
        inner.add_special_tokens(&special);
        inner.add_tokens(&user);
        let id = |key: &str| -> Result<Option<u32>> { Ok(md.opt_u64(key)?.map(|v| v as u32)) };
        Ok(Self {
            inner,
            bos_token_id: id("tokenizer.ggml.bos_token_id")?,
            eos_token_id: id("tokenizer.ggml.eos_token_id")?,
        })
    }

    /// A tiny byte-level BPE for tests: ids 0-2 are `<|endoftext|>`, `<|im_end|>`,
    /// `<|im_start|>`; then the 256 byte tokens; then a few English merges (< 300 ids,
    /// fitting [`crate::ModelConfig::tiny`]).
    pub fn tiny() -> Result<Self> {
        let specials = ["<|endoftext|>", "<|im_end|>", "<|im_start|>"];
        let mut vocab = Vocab::new();
        for s in specials {
            vocab.insert(s.to_string(), vocab.len() as u32);
        }
        for c in byte_chars() {
            vocab.insert(c.to_string(), vocab.len() as u32);
        }
        let merge_list = [
            ("h", "e"),
            ("Ġ", "t"),
            ("Ġt", "he"),
            ("i", "n"),
            ("a", "n"),
            ("e", "r"),
            ("o", "n"),
            ("Ġ", "a"),
            ("r", "e"),
            ("a", "t"),
            ("e", "n"),
            ("Ġ", "s"),
            ("Ġ", "w"),
            ("o", "r"),
            ("i", "s"),
            ("Ġ", "o"),
            ("e", "s"),
            ("Ġ", "c"),
            ("i", "t"),
            ("Ġ", "b"),
        ];
        let mut merges = Vec::new();
        for (a, b) in merge_list {
            vocab.insert(format!("{a}{b}"), vocab.len() as u32);
            merges.push((a.to_string(), b.to_string()));
        }
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(RuntimeError::tokenizer)?;
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner
            .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
            .with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
        let added: Vec<AddedToken> = specials
            .iter()
            .map(|s| AddedToken::from(*s, true).normalized(false))
            .collect();
        inner.add_special_tokens(&added);
        Ok(Self {
            inner,
            bos_token_id: None,
            eos_token_id: Some(1),
        })
    }

    /// Encodes text; special tokens written in the text (`<|im_start|>`) are recognised.
    /// Nothing (no BOS) is added: chat templates write every special token explicitly.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_raw(text)?.get_ids().to_vec())
    }

    /// Encodes text and returns each token with the byte span it covers (for aligning
    /// the tokens of two different tokenizers).
    pub fn encode_with_spans(&self, text: &str) -> Result<Vec<TokenSpan>> {
        let enc = self.encode_raw(text)?;
        Ok(enc
            .get_ids()
            .iter()
            .zip(enc.get_offsets())
            .map(|(&id, &(start, end))| TokenSpan { id, start, end })
            .collect())
    }

    fn encode_raw(&self, text: &str) -> Result<tokenizers::Encoding> {
        self.inner
            .encode(text, false)
            .map_err(RuntimeError::tokenizer)
    }

    /// Decodes ids to text, optionally dropping special tokens.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(RuntimeError::tokenizer)
    }

    /// Id of a token string (including added and special tokens).
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// String of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// BOS id stated by the GGUF metadata, if any.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_token_id
    }

    /// EOS id stated by the GGUF metadata (or the tiny tokenizer), if any.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_token_id
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

fn split_then_bytes(regex: &str) -> Result<PreTokenizerWrapper> {
    let split = Split::new(
        SplitPattern::Regex(regex.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(RuntimeError::tokenizer)?;
    Ok(Sequence::new(vec![
        split.into(),
        ByteLevel::new(false, false, false).into(),
    ])
    .into())
}

/// GPT-2's byte-to-character table, in byte order.
fn byte_chars() -> Vec<char> {
    let printable =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap_or(' ')
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap_or(' ')
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_round_trips_text_and_specials() {
        let tok = Tokenizer::tiny().unwrap();
        let text = "<|im_start|>user\nthe cat is on 12 mats, ünïcode\t ok<|im_end|>";
        let ids = tok.encode(text).unwrap();
        assert_eq!(ids[0], 2, "special token recognised as one id");
        assert_eq!(*ids.last().unwrap(), 1);
        assert!(ids.iter().all(|&i| (i as usize) < 300));
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
        let the = tok.token_to_id("Ġthe").unwrap();
        assert_eq!(tok.encode(" the").unwrap(), vec![the]);
    }

    #[test]
    fn spans_cover_the_text_in_order() {
        let tok = Tokenizer::tiny().unwrap();
        let text = "<|im_start|>the cat sat on 42 mats";
        let spans = tok.encode_with_spans(text).unwrap();
        assert_eq!(
            spans.iter().map(|s| s.id).collect::<Vec<_>>(),
            tok.encode(text).unwrap()
        );
        assert_eq!((spans[0].start, spans[0].end), (0, "<|im_start|>".len()));
        assert_eq!(spans.last().unwrap().end, text.len());
        for pair in spans.windows(2) {
            assert!(pair[0].end <= pair[1].start + 1 && pair[0].start < pair[1].start);
        }
    }

    #[test]
    fn byte_table_is_gpt2() {
        let chars = byte_chars();
        assert_eq!(chars[b' ' as usize], 'Ġ');
        assert_eq!(chars[b'\n' as usize], 'Ċ');
        assert_eq!(chars[b'a' as usize], 'a');
        let unique: std::collections::HashSet<_> = chars.iter().collect();
        assert_eq!(unique.len(), 256);
    }
}
