//! What the benchmark reads of a model spec without loading its weights: the shape (for a
//! random-initialised fuser) and the tokenizer (to build prompts of an exact length, and as the
//! sharer tokenizer file a C2C receiver aligns prompts with).
//!
//! Random presets use the tiny byte-level tokenizer in the services
//! (`service_kit::model_load`); for C2C the benchmark writes that tokenizer to a
//! `tokenizer.json` in its work folder, since the receiver reads the sharer's tokenizer from a
//! file.

use std::path::{Path, PathBuf};

use model_runtime::{ModelConfig, Tokenizer};
use service_kit::model_load::preset_config;
use service_kit::model_spec::{ModelSpec, resolve_gguf};

use super::error::BenchError;

/// A parsed spec with its shape.
#[derive(Debug, Clone)]
pub struct SpecInfo {
    /// The spec as given.
    pub spec: String,
    /// The parsed spec.
    pub parsed: ModelSpec,
    /// Its shape.
    pub config: ModelConfig,
}

fn model_err(spec: &str, reason: impl std::fmt::Display) -> BenchError {
    BenchError::Model {
        spec: spec.to_string(),
        reason: reason.to_string(),
    }
}

impl SpecInfo {
    /// Parses `spec` and reads its shape (a preset, a GGUF file's metadata, or an HF folder's
    /// `config.json`).
    pub fn read(spec: &str) -> Result<SpecInfo, BenchError> {
        let parsed = ModelSpec::parse(spec).map_err(|e| model_err(spec, e))?;
        let config = match &parsed {
            ModelSpec::Random { preset, .. } => preset_config(preset)
                .ok_or_else(|| model_err(spec, format!("unknown preset {preset}")))?,
            ModelSpec::Gguf(target) => {
                let path = resolve_gguf(target).map_err(|e| model_err(spec, e))?;
                let (content, _file) =
                    model_runtime::gguf::open(&path).map_err(|e| model_err(spec, e))?;
                model_runtime::gguf::config_from_gguf(&content).map_err(|e| model_err(spec, e))?
            }
            ModelSpec::Hf(dir) => ModelConfig::from_hf_file(&dir.join("config.json"))
                .map_err(|e| model_err(spec, e))?,
        };
        Ok(SpecInfo {
            spec: spec.to_string(),
            parsed,
            config,
        })
    }

    /// The tokenizer the service loading this spec uses.
    pub fn tokenizer(&self) -> Result<Tokenizer, BenchError> {
        let err = |e| model_err(&self.spec, e);
        match &self.parsed {
            ModelSpec::Random { .. } => Tokenizer::tiny().map_err(err),
            ModelSpec::Gguf(target) => {
                let path = resolve_gguf(target).map_err(|e| model_err(&self.spec, e))?;
                Tokenizer::from_gguf_file(&path).map_err(err)
            }
            ModelSpec::Hf(dir) => Tokenizer::from_file(&dir.join("tokenizer.json")).map_err(err),
        }
    }

    /// A file holding this spec's tokenizer, as a C2C receiver reads the sharer's: the GGUF
    /// file, the HF folder's `tokenizer.json`, or (random presets) the tiny tokenizer written
    /// to `work/sharer-tokenizer.json`.
    pub fn tokenizer_file(&self, work: &Path) -> Result<PathBuf, BenchError> {
        match &self.parsed {
            ModelSpec::Gguf(target) => resolve_gguf(target).map_err(|e| model_err(&self.spec, e)),
            ModelSpec::Hf(dir) => Ok(dir.join("tokenizer.json")),
            ModelSpec::Random { .. } => {
                let path = work.join("sharer-tokenizer.json");
                self.tokenizer()?.inner().save(&path, false).map_err(|e| {
                    model_err(&self.spec, format!("writing {}: {e}", path.display()))
                })?;
                Ok(path)
            }
        }
    }
}
