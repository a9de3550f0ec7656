//! GGUF files: opening them with typed errors, typed metadata access, and the
//! [`ModelConfig`] implied by the llama.cpp metadata keys.

use crate::config::{Arch, ModelConfig, RopeStyle};
use crate::error::{Result, RuntimeError};
use candle_core::quantized::gguf_file::{Content, Value};
use std::fs::File;
use std::path::Path;

/// Opens a GGUF file and parses its header, metadata and tensor directory.
pub fn open(path: &Path) -> Result<(Content, File)> {
    let mut file = File::open(path).map_err(|source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let content = Content::read(&mut file).map_err(|e| RuntimeError::BadGguf {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((content, file))
}

/// Typed read access to GGUF metadata; errors name the missing or mistyped key.
#[derive(Debug, Clone, Copy)]
pub struct Metadata<'a>(pub &'a Content);

impl<'a> Metadata<'a> {
    /// The raw value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.metadata.get(key)
    }

    fn need(&self, key: &str) -> Result<&'a Value> {
        self.get(key)
            .ok_or_else(|| RuntimeError::config(key, "missing from GGUF metadata"))
    }

    /// An unsigned integer of any width.
    pub fn u64(&self, key: &str) -> Result<u64> {
        value_u64(self.need(key)?)
            .ok_or_else(|| RuntimeError::config(key, "not an unsigned integer"))
    }

    /// An optional unsigned integer.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key).map(|_| self.u64(key)).transpose()
    }

    /// A float (f32 or f64).
    pub fn f64(&self, key: &str) -> Result<f64> {
        match self.need(key)? {
            Value::F32(v) => Ok(f64::from(*v)),
            Value::F64(v) => Ok(*v),
            _ => Err(RuntimeError::config(key, "not a float")),
        }
    }

    /// A string.
    pub fn str(&self, key: &str) -> Result<&'a str> {
        match self.need(key)? {
            Value::String(s) => Ok(s.as_str()),
            _ => Err(RuntimeError::config(key, "not a string")),
        }
    }

    /// An array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&'a str>> {
        match self.need(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    _ => Err(RuntimeError::config(key, "array element is not a string")),
                })
                .collect(),
            _ => Err(RuntimeError::config(key, "not an array")),
        }
    }

    /// An array of integers.
    pub fn ints(&self, key: &str) -> Result<Vec<i64>> {
        match self.need(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    value_i64(v)
                        .ok_or_else(|| RuntimeError::config(key, "array element is not an integer"))
                })
                .collect(),
            _ => Err(RuntimeError::config(key, "not an array")),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        usize::try_from(self.u64(key)?).map_err(|_| RuntimeError::config(key, "too large"))
    }
}

fn value_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(u64::from(*x)),
        Value::U16(x) => Some(u64::from(*x)),
        Value::U32(x) => Some(u64::from(*x)),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}

fn value_i64(v: &Value) -> Option<i64> {
    match v {
        Value::I8(x) => Some(i64::from(*x)),
        Value::I16(x) => Some(i64::from(*x)),
        Value::I32(x) => Some(i64::from(*x)),
        Value::I64(x) => Some(*x),
        other => value_u64(other).and_then(|x| i64::try_from(x).ok()),
    }
}

/// The model config stated by a GGUF file's metadata and tensor directory.
pub fn config_from_gguf(content: &Content) -> Result<ModelConfig> {
    let md = Metadata(content);
    let arch_name = md.str("general.architecture")?;
    let arch = Arch::parse(arch_name)?;
    let key = |k: &str| format!("{arch_name}.{k}");
    let hidden = md.usize(&key("embedding_length"))?;
    let n_heads = md.usize(&key("attention.head_count"))?;
    if n_heads == 0 {
        return Err(RuntimeError::config(
            key("attention.head_count"),
            "must be positive",
        ));
    }
    let head_dim = match md.opt_u64(&key("attention.key_length"))? {
        Some(d) => usize::try_from(d)
            .map_err(|_| RuntimeError::config(key("attention.key_length"), "too large"))?,
        None => hidden / n_heads,
    };
    let vocab_size = match content.tensor_infos.get("token_embd.weight") {
        Some(info) => info.shape.dims().first().copied().unwrap_or(0),
        None => {
            return Err(RuntimeError::MissingTensor {
                name: "token_embd.weight".into(),
            });
        }
    };
    let eos = md.opt_u64("tokenizer.ggml.eos_token_id")?;
    let cfg = ModelConfig {
        arch,
        vocab_size,
        hidden_size: hidden,
        intermediate_size: md.usize(&key("feed_forward_length"))?,
        n_layers: md.usize(&key("block_count"))?,
        n_heads,
        n_kv_heads: match md.opt_u64(&key("attention.head_count_kv"))? {
            Some(v) => v as usize,
            None => n_heads,
        },
        head_dim,
        rope_theta: md.f64(&key("rope.freq_base")).unwrap_or(10_000.0),
        // llama.cpp permutes q/k rows of Llama-family checkpoints for interleaved RoPE.
        rope_style: match arch {
            Arch::Llama | Arch::Mistral => RopeStyle::Interleaved,
            Arch::Qwen2 | Arch::Qwen3 => RopeStyle::Half,
        },
        rms_eps: md.f64(&key("attention.layer_norm_rms_epsilon"))?,
        tie_embeddings: !content.tensor_infos.contains_key("output.weight"),
        qkv_bias: content.tensor_infos.contains_key("blk.0.attn_q.bias"),
        qk_norm: content
            .tensor_infos
            .contains_key("blk.0.attn_q_norm.weight"),
        max_position: md.usize(&key("context_length"))?,
        bos_token_id: md.opt_u64("tokenizer.ggml.bos_token_id")?.map(|v| v as u32),
        eos_token_ids: eos.map(|v| v as u32).into_iter().collect(),
    };
    cfg.validate()?;
    Ok(cfg)
}
