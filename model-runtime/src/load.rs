//! Building a [`Model`] from a GGUF file, a Hugging Face folder, or seeded random weights.

use crate::config::ModelConfig;
use crate::error::{Result, RuntimeError};
use crate::gguf;
use crate::layer::{Layer, Rope};
use crate::model::Model;
use crate::weights::{GgufReader, Param, Source, WeightsMode};
use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// How to load weights.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Device for weights and activations.
    pub device: Device,
    /// Activation / dense-weight dtype (F32 on CPU; BF16 or F16 on GPU).
    pub dtype: DType,
    /// What to do with quantized GGUF weights.
    pub weights: WeightsMode,
}

impl LoadOptions {
    /// CPU default: f32, GGUF weights dequantized at load (see [`WeightsMode::Dequantized`]).
    pub fn cpu() -> Self {
        Self {
            device: Device::Cpu,
            dtype: DType::F32,
            weights: WeightsMode::Dequantized,
        }
    }
}

/// Where a model's weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WeightsSource {
    /// A GGUF file.
    Gguf {
        /// The file.
        path: PathBuf,
    },
    /// A Hugging Face folder with safetensors shards.
    HfFolder {
        /// The folder.
        path: PathBuf,
    },
    /// Seeded random weights (no accuracy may be reported from these).
    Random {
        /// The seed.
        seed: u64,
    },
}

/// Provenance and precision of loaded weights, for manifests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsInfo {
    /// Where they came from.
    pub source: WeightsSource,
    /// Quantized or dequantized (only meaningful for GGUF).
    pub mode: WeightsMode,
    /// Activation dtype, e.g. "f32".
    pub dtype: String,
    /// Device, e.g. "cpu" or "cuda:0".
    pub device: String,
}

impl WeightsInfo {
    fn new(source: WeightsSource, opts: &LoadOptions) -> Self {
        let mode = match source {
            WeightsSource::Gguf { .. } => opts.weights,
            _ => WeightsMode::Dequantized,
        };
        let device = match opts.device.location() {
            candle_core::DeviceLocation::Cpu => "cpu".to_string(),
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
        };
        Self {
            source,
            mode,
            dtype: format!("{:?}", opts.dtype).to_lowercase(),
            device,
        }
    }

    /// One line: `weights=gguf:<file> mode=dequantized dtype=f32 device=cpu`.
    pub fn describe(&self) -> String {
        let source = match &self.source {
            WeightsSource::Gguf { path } => format!("gguf:{}", path.display()),
            WeightsSource::HfFolder { path } => format!("hf:{}", path.display()),
            WeightsSource::Random { seed } => format!("random(seed={seed})"),
        };
        let mode = match (&self.source, self.mode) {
            (WeightsSource::Gguf { .. }, WeightsMode::Quantized) => "quantized",
            (WeightsSource::Gguf { .. }, WeightsMode::Dequantized) => "dequantized",
            _ => "dense",
        };
        format!(
            "weights={source} mode={mode} dtype={} device={}",
            self.dtype, self.device
        )
    }
}

impl Model {
    /// Loads a GGUF file (config and weights from the file).
    pub fn from_gguf(path: &Path, opts: &LoadOptions) -> Result<Self> {
        let (content, file) = gguf::open(path)?;
        let config = gguf::config_from_gguf(&content)?;
        let source = Source::Gguf {
            reader: GgufReader {
                path: path.to_path_buf(),
                content,
                file: RefCell::new(file),
            },
            mode: opts.weights,
        };
        let info = WeightsInfo::new(
            WeightsSource::Gguf {
                path: path.to_path_buf(),
            },
            opts,
        );
        build(config, &source, opts, info)
    }

    /// Loads a Hugging Face folder: `config.json` and `model.safetensors` or the shards
    /// listed in `model.safetensors.index.json`, memory-mapped.
    pub fn from_hf_dir(dir: &Path, opts: &LoadOptions) -> Result<Self> {
        let config = ModelConfig::from_hf_file(&dir.join("config.json"))?;
        let shards = safetensors_shards(dir)?;
        // SAFETY: the shards are mapped read-only; the project never writes model files
        // while a model is loaded from them (candle's VarBuilder makes the same assumption).
        #[allow(unsafe_code)]
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&shards) }.map_err(
            |e| RuntimeError::Io {
                path: dir.to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            },
        )?;
        let info = WeightsInfo::new(
            WeightsSource::HfFolder {
                path: dir.to_path_buf(),
            },
            opts,
        );
        build(config, &Source::Hf(st), opts, info)
    }

    /// A model of the given shapes with uniform random weights from `seed` (same seed,
    /// same weights, on any device).
    pub fn random(config: &ModelConfig, seed: u64, device: &Device, dtype: DType) -> Result<Self> {
        config.validate()?;
        let opts = LoadOptions {
            device: device.clone(),
            dtype,
            weights: WeightsMode::Dequantized,
        };
        let info = WeightsInfo::new(WeightsSource::Random { seed }, &opts);
        build(config.clone(), &Source::random(seed), &opts, info)
    }
}

fn safetensors_shards(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&index_path).map_err(|source| RuntimeError::Io {
        path: index_path.clone(),
        source,
    })?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| RuntimeError::Json {
            path: index_path.clone(),
            source,
        })?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            RuntimeError::config("weight_map", "missing from model.safetensors.index.json")
        })?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    files.sort();
    files.dedup();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

fn build(
    config: ModelConfig,
    src: &Source,
    opts: &LoadOptions,
    info: WeightsInfo,
) -> Result<Model> {
    let (dev, dt) = (&opts.device, opts.dtype);
    let c = &config;
    let embed = src.dense(
        Param::Embed,
        "weight",
        &[c.vocab_size, c.hidden_size],
        dev,
        dt,
    )?;
    let mut layers = Vec::with_capacity(c.n_layers);
    for i in 0..c.n_layers {
        let norm = |p: Param, n: usize| src.dense(p, "weight", &[n], dev, dt);
        let qk_norm = |p: Param| -> Result<Option<_>> {
            if c.qk_norm {
                Ok(Some(norm(p, c.head_dim)?))
            } else {
                Ok(None)
            }
        };
        layers.push(Layer {
            attn_norm: norm(Param::AttnNorm(i), c.hidden_size)?,
            q: src.linear(Param::Q(i), c.q_dim(), c.hidden_size, c.qkv_bias, dev, dt)?,
            k: src.linear(Param::K(i), c.kv_dim(), c.hidden_size, c.qkv_bias, dev, dt)?,
            v: src.linear(Param::V(i), c.kv_dim(), c.hidden_size, c.qkv_bias, dev, dt)?,
            o: src.linear(Param::O(i), c.hidden_size, c.q_dim(), false, dev, dt)?,
            q_norm: qk_norm(Param::QNorm(i))?,
            k_norm: qk_norm(Param::KNorm(i))?,
            mlp_norm: norm(Param::MlpNorm(i), c.hidden_size)?,
            gate: src.linear(
                Param::Gate(i),
                c.intermediate_size,
                c.hidden_size,
                false,
                dev,
                dt,
            )?,
            up: src.linear(
                Param::Up(i),
                c.intermediate_size,
                c.hidden_size,
                false,
                dev,
                dt,
            )?,
            down: src.linear(
                Param::Down(i),
                c.hidden_size,
                c.intermediate_size,
                false,
                dev,
                dt,
            )?,
        });
    }
    let final_norm = src.dense(Param::FinalNorm, "weight", &[c.hidden_size], dev, dt)?;
    // HF folders of tied models sometimes still ship lm_head; the config decides.
    let lm_head = if c.tie_embeddings {
        src.tied_output(&embed, c.vocab_size, c.hidden_size, dev)?
    } else {
        src.linear(Param::Output, c.vocab_size, c.hidden_size, false, dev, dt)?
    };
    let rope = Rope::new(c, dt, dev)?;
    Ok(Model {
        config,
        embed,
        layers,
        final_norm,
        lm_head,
        rope,
        device: dev.clone(),
        dtype: dt,
        info,
        autograd: false,
        prefill_chunk_tokens: crate::chunked::DEFAULT_PREFILL_CHUNK_TOKENS,
    })
}
