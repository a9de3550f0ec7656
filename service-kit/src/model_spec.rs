//! Model specs: how a service names the model it loads.
//!
//! - `gguf:<path-or-asset-name>`: a GGUF file (a path, or an asset name the `assets` store
//!   resolves), weights dequantized to f32 on CPU.
//! - `hf:<dir>`: a Hugging Face folder (`config.json`, `*.safetensors`, `tokenizer.json`).
//! - `random:<preset>:<seed>`: seeded random weights at a preset shape (`tiny-llama`,
//!   `tiny-qwen2`, `tiny-qwen3`, `tiny-mistral`, `qwen3-0.6b`, `qwen2.5-0.5b`). Timing only:
//!   manifests say `weights = "random"` and no accuracy is reported from them.

use std::fmt;
use std::path::PathBuf;

/// Random-weight shape presets.
pub const RANDOM_PRESETS: &[&str] = &[
    "tiny-llama",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-mistral",
    "qwen3-0.6b",
    "qwen2.5-0.5b",
];

/// A parsed model spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A GGUF file path or asset name.
    Gguf(String),
    /// A Hugging Face model folder.
    Hf(PathBuf),
    /// Seeded random weights at a preset shape.
    Random {
        /// One of [`RANDOM_PRESETS`].
        preset: String,
        /// Weight seed.
        seed: u64,
    },
}

/// Why a spec string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No known `kind:` prefix.
    #[error("model spec {spec:?}: expected gguf:<file>, hf:<dir> or random:<preset>:<seed>")]
    UnknownKind {
        /// The spec given.
        spec: String,
    },
    /// The part after the prefix is empty or malformed.
    #[error("model spec {spec:?}: {reason}")]
    Malformed {
        /// The spec given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
}

impl ModelSpec {
    /// Parses `gguf:...`, `hf:...` or `random:<preset>:<seed>`.
    pub fn parse(spec: &str) -> Result<Self, SpecError> {
        let malformed = |reason: &str| SpecError::Malformed {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (kind, rest) = spec.split_once(':').ok_or_else(|| SpecError::UnknownKind {
            spec: spec.to_string(),
        })?;
        if rest.is_empty() {
            return Err(malformed("nothing after the kind"));
        }
        match kind {
            "gguf" => Ok(ModelSpec::Gguf(rest.to_string())),
            "hf" => Ok(ModelSpec::Hf(PathBuf::from(rest))),
            "random" => {
                let (preset, seed) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| malformed("missing :<seed>"))?;
                if !RANDOM_PRESETS.contains(&preset) {
                    return Err(malformed(&format!(
                        "unknown preset {preset:?}; known: {}",
                        RANDOM_PRESETS.join(", ")
                    )));
                }
                let seed = seed
                    .parse()
                    .map_err(|_| malformed("seed is not an unsigned integer"))?;
                Ok(ModelSpec::Random {
                    preset: preset.to_string(),
                    seed,
                })
            }
            _ => Err(SpecError::UnknownKind {
                spec: spec.to_string(),
            }),
        }
    }

    /// True for random weights (no accuracy may be reported).
    pub fn is_random(&self) -> bool {
        matches!(self, ModelSpec::Random { .. })
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::Gguf(s) => write!(f, "gguf:{s}"),
            ModelSpec::Hf(p) => write!(f, "hf:{}", p.display()),
            ModelSpec::Random { preset, seed } => write!(f, "random:{preset}:{seed}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_each_kind() {
        for s in [
            "gguf:smollm2-135m",
            "hf:/models/qwen",
            "random:tiny-qwen2:7",
        ] {
            assert_eq!(ModelSpec::parse(s).unwrap().to_string(), s);
        }
        assert!(ModelSpec::parse("random:qwen3-0.6b:1").unwrap().is_random());
    }

    #[test]
    fn rejects_bad_specs_with_a_reason() {
        for s in [
            "",
            "llama",
            "gguf:",
            "random:tiny-llama",
            "random:huge:1",
            "random:tiny-llama:x",
            "onnx:m",
        ] {
            assert!(ModelSpec::parse(s).is_err(), "{s}");
        }
    }
}
