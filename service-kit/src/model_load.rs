//! Resolves a [`ModelSpec`] into a loaded model, its tokenizer and chat template.
//!
//! The model runs on the configured device in the configured dtype ([`Placement`]: CPU f32 by
//! default). GGUF weights are dequantized at load (18-25x faster than the quantized CPU kernels
//! for these files: docs/ASSETS.md), then converted to that dtype; `gguf:<asset-name>` specs are
//! resolved through the asset cache ([`crate::model_spec::resolve_gguf`]). Random presets use
//! the tiny byte-level tokenizer; at real shapes that makes prompts longer in tokens than the
//! real tokenizer would, which is fine for timing and is why their manifests say
//! `weights = "random"`.

use std::path::{Path, PathBuf};

use model_runtime::{
    Arch, ChatTemplate, LoadOptions, Model, ModelConfig, RuntimeError, Tokenizer, WeightsMode,
};

use crate::device::{DeviceError, Placement};
use crate::model_spec::{ModelSpec, ResolveError, resolve_gguf};

/// A model ready for a service engine.
#[derive(Debug)]
pub struct LoadedModel {
    /// The decoder.
    pub model: Model,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Its chat format.
    pub template: ChatTemplate,
    /// The spec it was loaded from.
    pub spec: ModelSpec,
    /// Where the tokenizer came from (for Info and manifests).
    pub tokenizer_source: String,
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The folder does not exist.
    #[error("model folder {0} not found")]
    NotFound(PathBuf),
    /// A `gguf:` target is neither a file nor a fetched asset.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The device could not be opened.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// No such random preset.
    #[error("unknown random preset {0}")]
    UnknownPreset(String),
    /// The runtime rejected the weights, config or tokenizer.
    #[error("loading {spec}: {source}")]
    Runtime {
        /// The spec.
        spec: String,
        /// Runtime error.
        #[source]
        source: RuntimeError,
    },
}

/// The chat template of an architecture (Llama means SmolLM2 in this project).
pub fn template_for(arch: Arch) -> ChatTemplate {
    match arch {
        Arch::Qwen2 => ChatTemplate::Qwen2,
        Arch::Qwen3 => ChatTemplate::Qwen3,
        Arch::Llama => ChatTemplate::SmolLm2,
        Arch::Mistral => ChatTemplate::Mistral,
    }
}

/// Context length of the tiny presets: the task prompt is about 700 tokens with the tiny
/// byte-level tokenizer, beyond `ModelConfig::tiny`'s 512.
pub const TINY_MAX_POSITION: usize = 4096;

/// The shape config of a random preset (see [`crate::model_spec::RANDOM_PRESETS`]).
pub fn preset_config(preset: &str) -> Option<ModelConfig> {
    let tiny = |arch| ModelConfig {
        max_position: TINY_MAX_POSITION,
        ..ModelConfig::tiny(arch)
    };
    Some(match preset {
        "tiny-llama" => tiny(Arch::Llama),
        "tiny-qwen2" => tiny(Arch::Qwen2),
        "tiny-qwen3" => tiny(Arch::Qwen3),
        "tiny-mistral" => tiny(Arch::Mistral),
        "qwen3-0.6b" => ModelConfig::qwen3_0_6b(),
        "qwen2.5-0.5b" => ModelConfig::qwen2_5_0_5b(),
        "qwen3-8b" => ModelConfig::qwen3_8b(),
        "qwen2.5-7b" => ModelConfig::qwen2_5_7b(),
        _ => return None,
    })
}

/// Loads the model a spec names on the CPU in f32 (the default [`Placement`]; blocking).
pub fn load(spec: &ModelSpec) -> Result<LoadedModel, LoadError> {
    load_on(spec, Placement::default())
}

/// Loads the model a spec names on `placement`'s device and dtype (blocking; call from a
/// blocking thread).
pub fn load_on(spec: &ModelSpec, placement: Placement) -> Result<LoadedModel, LoadError> {
    let runtime = |source| LoadError::Runtime {
        spec: spec.to_string(),
        source,
    };
    let opts = LoadOptions {
        device: placement.device.open()?,
        dtype: placement.dtype.candle(),
        weights: WeightsMode::Dequantized,
    };
    let (model, tokenizer, tokenizer_source) = match spec {
        ModelSpec::Random { preset, seed } => {
            let config =
                preset_config(preset).ok_or_else(|| LoadError::UnknownPreset(preset.clone()))?;
            let model = Model::random(&config, *seed, &opts.device, opts.dtype).map_err(runtime)?;
            (
                model,
                Tokenizer::tiny().map_err(runtime)?,
                "tiny byte-level BPE (test)".to_string(),
            )
        }
        ModelSpec::Gguf(file) => {
            let path = resolve_gguf(file)?;
            let model = Model::from_gguf(&path, &opts).map_err(runtime)?;
            let tokenizer = Tokenizer::from_gguf_file(&path).map_err(runtime)?;
            (
                model,
                tokenizer,
                format!("gguf metadata of {}", path.display()),
            )
        }
        ModelSpec::Hf(dir) => {
            let dir = existing(dir)?;
            let model = Model::from_hf_dir(&dir, &opts).map_err(runtime)?;
            let file = dir.join("tokenizer.json");
            let tokenizer = Tokenizer::from_file(&file).map_err(runtime)?;
            (model, tokenizer, file.display().to_string())
        }
    };
    let template = template_for(model.config().arch);
    Ok(LoadedModel {
        model,
        tokenizer,
        template,
        spec: spec.clone(),
        tokenizer_source,
    })
}

fn existing(path: &Path) -> Result<PathBuf, LoadError> {
    if path.exists() {
        Ok(path.to_path_buf())
    } else {
        Err(LoadError::NotFound(path.to_path_buf()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceSpec, DtypeSpec};
    use model_runtime::candle_core::DType;

    #[test]
    fn the_model_runs_in_the_configured_dtype() {
        let spec = ModelSpec::parse("random:tiny-llama:3").unwrap();
        for (dtype, want) in [(DtypeSpec::F32, DType::F32), (DtypeSpec::Bf16, DType::BF16)] {
            let placement = Placement {
                device: DeviceSpec::Cpu,
                dtype,
            };
            let loaded = load_on(&spec, placement).unwrap();
            assert_eq!(loaded.model.dtype(), want);
            let info = loaded.model.weights_info();
            assert_eq!(
                (info.device.as_str(), info.dtype.as_str()),
                ("cpu", dtype.to_string().as_str())
            );
            let ids = loaded
                .tokenizer
                .encode("Question: 1 + 1?\nAnswer:")
                .unwrap();
            let logits = loaded.model.next_token_logits(&ids).unwrap();
            assert!(logits.iter().all(|x| x.is_finite()), "{dtype}");
        }
    }

    #[test]
    fn an_unknown_gguf_target_names_what_was_tried() {
        let spec = ModelSpec::parse("gguf:no/such/file.gguf").unwrap();
        let err = load(&spec).unwrap_err();
        assert!(
            matches!(err, LoadError::Resolve(ResolveError::NotFound { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("no/such/file.gguf"), "{err}");
    }
}
