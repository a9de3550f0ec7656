//! One model config for every supported architecture, parsed from a Hugging Face
//! `config.json` (GGUF metadata is parsed in [`crate::gguf`]), plus presets for tests
//! and real-shape timing runs.

use crate::error::{Result, RuntimeError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Decoder families the runtime implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// Qwen2 / Qwen2.5: bias on the q, k, v projections.
    Qwen2,
    /// Qwen3: per-head RMSNorm on q and k, no bias.
    Qwen3,
    /// Llama, including SmolLM2.
    Llama,
    /// Mistral (Llama layout; sliding window is not used at our lengths).
    Mistral,
}

impl Arch {
    /// Every supported architecture, for tests and CLIs.
    pub const ALL: [Arch; 4] = [Arch::Qwen2, Arch::Qwen3, Arch::Llama, Arch::Mistral];

    /// Parses a `model_type` / `general.architecture` string.
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            "llama" => Ok(Arch::Llama),
            "mistral" => Ok(Arch::Mistral),
            _ => Err(RuntimeError::UnknownArchitecture {
                name: name.to_string(),
            }),
        }
    }

    /// Lower-case name as used in configs and manifests.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
        }
    }
}

/// How RoPE pairs the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RopeStyle {
    /// Dimension i rotates with i + D/2 (Hugging Face checkpoints, and Qwen GGUFs).
    Half,
    /// Dimension 2i rotates with 2i + 1: llama.cpp permutes the q/k rows of Llama-family
    /// GGUFs into this layout.
    Interleaved,
}

/// Shapes and constants of one decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Architecture family.
    pub arch: Arch,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Residual width.
    pub hidden_size: usize,
    /// MLP inner width.
    pub intermediate_size: usize,
    /// Number of decoder layers.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (GQA when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RoPE dimension pairing of the loaded weights.
    pub rope_style: RopeStyle,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// Output layer shares the embedding matrix.
    pub tie_embeddings: bool,
    /// Bias on q, k, v projections (Qwen2).
    pub qkv_bias: bool,
    /// Per-head RMSNorm on q and k before RoPE (Qwen3).
    pub qk_norm: bool,
    /// Longest position the RoPE tables cover.
    pub max_position: usize,
    /// Beginning-of-sequence token, if the model has one.
    pub bos_token_id: Option<u32>,
    /// Tokens that end generation.
    pub eos_token_ids: Vec<u32>,
}

/// The subset of a Hugging Face `config.json` the runtime reads.
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f64>,
    rms_norm_eps: Option<f64>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    max_position_embeddings: Option<usize>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
}

fn ids_of(value: &Option<serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| v as u32).into_iter().collect(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_u64().map(|v| v as u32))
            .collect(),
        _ => Vec::new(),
    }
}

impl ModelConfig {
    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| RuntimeError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_hf_json(&text).map_err(|e| match e {
            RuntimeError::BadConfig { field, reason } => RuntimeError::BadConfig {
                field: format!("{}: {field}", path.display()),
                reason,
            },
            other => other,
        })
    }

    /// Parses the text of a Hugging Face `config.json`.
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let hf: HfConfig = serde_json::from_str(text)
            .map_err(|e| RuntimeError::config("config.json", e.to_string()))?;
        let arch_name = match (&hf.model_type, hf.architectures.first()) {
            (Some(t), _) => t.clone(),
            (None, Some(a)) => a.trim_end_matches("ForCausalLM").to_ascii_lowercase(),
            (None, None) => return Err(RuntimeError::config("model_type", "missing")),
        };
        let arch = Arch::parse(&arch_name)?;
        let n_heads = hf.num_attention_heads;
        let cfg = Self {
            arch,
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            n_layers: hf.num_hidden_layers,
            n_heads,
            n_kv_heads: hf.num_key_value_heads.unwrap_or(n_heads),
            head_dim: hf.head_dim.unwrap_or(hf.hidden_size / n_heads.max(1)),
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            rope_style: RopeStyle::Half,
            rms_eps: hf.rms_norm_eps.unwrap_or(1e-6),
            tie_embeddings: hf.tie_word_embeddings.unwrap_or(false),
            qkv_bias: match arch {
                Arch::Qwen2 => true,
                _ => hf.attention_bias.unwrap_or(false),
            },
            qk_norm: arch == Arch::Qwen3,
            max_position: hf.max_position_embeddings.unwrap_or(4096),
            bos_token_id: ids_of(&hf.bos_token_id).first().copied(),
            eos_token_ids: ids_of(&hf.eos_token_id),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the shapes are consistent; every loader calls it.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("max_position", self.max_position),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(RuntimeError::config(field, "must be positive"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(RuntimeError::config(
                "n_kv_heads",
                format!(
                    "{} does not divide n_heads {}",
                    self.n_kv_heads, self.n_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(RuntimeError::config(
                "head_dim",
                "RoPE needs an even head_dim",
            ));
        }
        let positive_finite = |x: f64| x.is_finite() && x > 0.0;
        if !positive_finite(self.rope_theta) || !positive_finite(self.rms_eps) {
            return Err(RuntimeError::config(
                "rope_theta/rms_eps",
                "must be positive",
            ));
        }
        Ok(())
    }

    /// A tiny config of the given family for fast CPU tests (2 layers, GQA 4:2, head_dim 16).
    pub fn tiny(arch: Arch) -> Self {
        Self {
            arch,
            vocab_size: 300,
            hidden_size: 64,
            intermediate_size: 128,
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            rope_theta: 10_000.0,
            rope_style: RopeStyle::Half,
            rms_eps: 1e-6,
            tie_embeddings: matches!(arch, Arch::Llama | Arch::Qwen3),
            qkv_bias: arch == Arch::Qwen2,
            qk_norm: arch == Arch::Qwen3,
            max_position: 512,
            bos_token_id: None,
            eos_token_ids: vec![1],
        }
    }

    /// Qwen3-0.6B shapes (from its Hugging Face `config.json`).
    pub fn qwen3_0_6b() -> Self {
        Self {
            arch: Arch::Qwen3,
            vocab_size: 151_936,
            hidden_size: 1024,
            intermediate_size: 3072,
            n_layers: 28,
            n_heads: 16,
            n_kv_heads: 8,
            head_dim: 128,
            rope_theta: 1_000_000.0,
            rope_style: RopeStyle::Half,
            rms_eps: 1e-6,
            tie_embeddings: true,
            qkv_bias: false,
            qk_norm: true,
            max_position: 40_960,
            bos_token_id: Some(151_643),
            eos_token_ids: vec![151_645, 151_643],
        }
    }

    /// Qwen2.5-0.5B(-Instruct) shapes (from its Hugging Face `config.json`).
    pub fn qwen2_5_0_5b() -> Self {
        Self {
            arch: Arch::Qwen2,
            vocab_size: 151_936,
            hidden_size: 896,
            intermediate_size: 4864,
            n_layers: 24,
            n_heads: 14,
            n_kv_heads: 2,
            head_dim: 64,
            rope_theta: 1_000_000.0,
            rope_style: RopeStyle::Half,
            rms_eps: 1e-6,
            tie_embeddings: true,
            qkv_bias: true,
            qk_norm: false,
            max_position: 32_768,
            bos_token_id: Some(151_643),
            eos_token_ids: vec![151_645, 151_643],
        }
    }

    /// Qwen3-8B shapes (from its Hugging Face `config.json`): the receiver of the 7-8B pair.
    pub fn qwen3_8b() -> Self {
        Self {
            arch: Arch::Qwen3,
            vocab_size: 151_936,
            hidden_size: 4096,
            intermediate_size: 12_288,
            n_layers: 36,
            n_heads: 32,
            n_kv_heads: 8,
            head_dim: 128,
            rope_theta: 1_000_000.0,
            rope_style: RopeStyle::Half,
            rms_eps: 1e-6,
            tie_embeddings: false,
            qkv_bias: false,
            qk_norm: true,
            max_position: 40_960,
            bos_token_id: Some(151_643),
            eos_token_ids: vec![151_645, 151_643],
        }
    }

    /// Qwen2.5-7B-Instruct shapes (from its Hugging Face `config.json`): the sharer of the
    /// 7-8B pair.
    pub fn qwen2_5_7b() -> Self {
        Self {
            arch: Arch::Qwen2,
            vocab_size: 152_064,
            hidden_size: 3584,
            intermediate_size: 18_944,
            n_layers: 28,
            n_heads: 28,
            n_kv_heads: 4,
            head_dim: 128,
            rope_theta: 1_000_000.0,
            rope_style: RopeStyle::Half,
            rms_eps: 1e-6,
            tie_embeddings: false,
            qkv_bias: true,
            qk_norm: false,
            max_position: 32_768,
            bos_token_id: Some(151_643),
            eos_token_ids: vec![151_645, 151_643],
        }
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_qwen3_hf_config() {
        let text = r#"{"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","vocab_size":151936,
            "hidden_size":1024,"intermediate_size":3072,"num_hidden_layers":28,"num_attention_heads":16,
            "num_key_value_heads":8,"head_dim":128,"rope_theta":1000000,"rms_norm_eps":1e-6,
            "tie_word_embeddings":true,"attention_bias":false,"max_position_embeddings":40960,
            "bos_token_id":151643,"eos_token_id":[151645,151643]}"#;
        let cfg = ModelConfig::from_hf_json(text).unwrap();
        assert_eq!(cfg, ModelConfig::qwen3_0_6b());
    }

    /// The 7-8B presets against the public `config.json` values of Qwen3-8B and
    /// Qwen2.5-7B-Instruct (their `eos_token_id` is one id; the presets also stop at
    /// `<|endoftext|>`, as the 0.6B presets do).
    #[test]
    fn the_7_8b_presets_match_the_public_configs() {
        let qwen3_8b = r#"{"architectures":["Qwen3ForCausalLM"],"model_type":"qwen3","vocab_size":151936,
            "hidden_size":4096,"intermediate_size":12288,"num_hidden_layers":36,"num_attention_heads":32,
            "num_key_value_heads":8,"head_dim":128,"rope_theta":1000000,"rms_norm_eps":1e-6,
            "tie_word_embeddings":false,"attention_bias":false,"max_position_embeddings":40960,
            "bos_token_id":151643,"eos_token_id":151645}"#;
        let qwen2_5_7b = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","vocab_size":152064,
            "hidden_size":3584,"intermediate_size":18944,"num_hidden_layers":28,"num_attention_heads":28,
            "num_key_value_heads":4,"rope_theta":1000000.0,"rms_norm_eps":1e-6,
            "tie_word_embeddings":false,"max_position_embeddings":32768,
            "bos_token_id":151643,"eos_token_id":151645}"#;
        for (text, preset) in [
            (qwen3_8b, ModelConfig::qwen3_8b()),
            (qwen2_5_7b, ModelConfig::qwen2_5_7b()),
        ] {
            let mut cfg = ModelConfig::from_hf_json(text).unwrap();
            assert_eq!(cfg.eos_token_ids, [151_645]);
            cfg.eos_token_ids = preset.eos_token_ids.clone();
            assert_eq!(cfg, preset);
            preset.validate().unwrap();
        }
    }

    #[test]
    fn unknown_architecture_is_named() {
        let text = r#"{"model_type":"gpt_neox","vocab_size":10,"hidden_size":8,"intermediate_size":8,
            "num_hidden_layers":1,"num_attention_heads":2}"#;
        match ModelConfig::from_hf_json(text) {
            Err(RuntimeError::UnknownArchitecture { name }) => assert_eq!(name, "gpt_neox"),
            other => panic!("expected UnknownArchitecture, got {other:?}"),
        }
    }

    #[test]
    fn rejects_heads_not_divisible() {
        let mut cfg = ModelConfig::tiny(Arch::Llama);
        cfg.n_kv_heads = 3;
        assert!(matches!(
            cfg.validate(),
            Err(RuntimeError::BadConfig { .. })
        ));
    }
}
