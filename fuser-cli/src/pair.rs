//! Pair config files (`fuser/pairs/*.toml`): which receiver and sharer, where their weights and
//! tokenizers come from, and the projector shapes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use assets::{AssetId, Store};
use candle_core::{DType, Device};
use clap::Args;
use model_runtime::{LoadOptions, Model, Tokenizer, WeightsMode};
use serde::{Deserialize, Serialize};

/// One model of the pair: exactly one of `asset`, `gguf`, `hf_dir`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// A project asset by name (`smollm2-135m`, `qwen2.5-coder-0.5b`), fetched and verified by
    /// `assets fetch`.
    pub asset: Option<String>,
    /// A GGUF file of your own.
    pub gguf: Option<PathBuf>,
    /// A Hugging Face folder (config.json, *.safetensors, tokenizer.json).
    pub hf_dir: Option<PathBuf>,
}

/// Projector shapes (and, for the paper pair, the released fuser).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectorOpts {
    /// Width of h0/h1.
    pub hidden: usize,
    /// Inner width of the mlp1/proj FFN blocks.
    pub intermediate: usize,
    /// FFN blocks in the proj stack.
    pub proj_blocks: usize,
    /// A released C2C fuser folder for this pair (evaluation only).
    pub released_fuser: Option<PathBuf>,
}

/// A pair config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairConfig {
    /// Display name.
    pub name: String,
    /// The receiver.
    pub receiver: ModelRef,
    /// The sharer.
    pub sharer: ModelRef,
    /// Projector shapes.
    pub projector: ProjectorOpts,
}

impl PairConfig {
    /// Reads and checks a pair file.
    pub fn read(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let pair: PairConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        for (side, m) in [("receiver", &pair.receiver), ("sharer", &pair.sharer)] {
            let set = [m.asset.is_some(), m.gguf.is_some(), m.hf_dir.is_some()];
            if set.iter().filter(|&&b| b).count() != 1 {
                bail!(
                    "{}: [{side}] needs exactly one of asset, gguf, hf_dir",
                    path.display()
                );
            }
        }
        Ok(pair)
    }
}

/// A loaded model with its tokenizer.
pub struct Loaded {
    /// The model.
    pub model: Model,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
    /// Where it came from (manifests; file names, not the machine's paths).
    pub source: String,
    /// sha256 of its weight files (`name:sha256`, comma-separated): an asset's pinned sha256
    /// (verified when the store installed it), else computed from the files when loaded.
    pub weights_sha256: String,
}

/// `name:sha256` of each file, comma-separated (manifests: what exactly was loaded).
fn weights_digest(paths: &[PathBuf]) -> Result<String> {
    let mut parts = Vec::with_capacity(paths.len());
    for path in paths {
        let sha = assets::sha256_file(path, &mut |_| {})
            .with_context(|| format!("hashing {}", path.display()))?;
        parts.push(format!("{}:{sha}", file_name(path)));
    }
    Ok(parts.join(","))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The model's description with `path` replaced by its file name.
fn describe_without_path(model: &Model, path: &Path) -> String {
    model
        .describe()
        .replace(&path.display().to_string(), &file_name(path))
}

/// The device named on the command line.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0).context(
            "opening CUDA device 0 (build with `--features cuda` on a machine with a GPU)",
        ),
        other => bail!("unknown device {other:?} (cpu or cuda)"),
    }
}

/// Loads one side: GGUF weights dequantized to f32 (dense weights are what gradients and
/// CPU prefill need) or kept quantized.
pub fn load(m: &ModelRef, store: &Store, device: &Device, quantized: bool) -> Result<Loaded> {
    let opts = LoadOptions {
        device: device.clone(),
        dtype: DType::F32,
        weights: if quantized {
            WeightsMode::Quantized
        } else {
            WeightsMode::Dequantized
        },
    };
    // An asset's file was checked against its pinned sha256 when the store installed it.
    let gguf = match (&m.asset, &m.gguf) {
        (Some(name), _) => {
            let id: AssetId = name.parse()?;
            Some((store.ensure(id)?, Some(id.spec().sha256)))
        }
        (None, Some(path)) => Some((path.clone(), None)),
        _ => None,
    };
    if let Some((path, pinned)) = gguf {
        let model = Model::from_gguf(&path, &opts)
            .with_context(|| format!("loading {}", path.display()))?;
        let tokenizer = Tokenizer::from_gguf_file(&path)?;
        let weights_sha256 = match pinned {
            Some(sha) => format!("{}:{sha}", file_name(&path)),
            None => weights_digest(std::slice::from_ref(&path))?,
        };
        return Ok(Loaded {
            source: describe_without_path(&model, &path),
            weights_sha256,
            model,
            tokenizer,
        });
    }
    let Some(dir) = &m.hf_dir else {
        bail!("model reference names no source");
    };
    let model =
        Model::from_hf_dir(dir, &opts).with_context(|| format!("loading {}", dir.display()))?;
    let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
    let mut weights: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    weights.sort();
    Ok(Loaded {
        source: describe_without_path(&model, dir),
        weights_sha256: weights_digest(&weights)?,
        model,
        tokenizer,
    })
}

/// The pair, device and asset cache: what `train` and `eval` both take.
#[derive(Debug, Args, Serialize)]
pub struct PairArgs {
    /// Pair config file.
    #[arg(long, default_value = "fuser/pairs/smollm2-from-qwen-coder-0.5b.toml")]
    pub pair: PathBuf,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Keep the sharer's GGUF weights quantized (less memory; speed depends on the format).
    #[arg(long)]
    pub sharer_quantized: bool,
    /// Asset cache directory (default: $KVWIRE_CACHE_DIR, else ~/.cache/kvwire-c2c).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// A pair ready to run: its config, the asset store, the device and both models.
pub struct OpenPair {
    /// The pair config.
    pub config: PairConfig,
    /// The asset store (data sets come from it too).
    pub store: Store,
    /// The device both models run on.
    pub device: Device,
    /// The receiver (dense weights).
    pub receiver: Loaded,
    /// The sharer.
    pub sharer: Loaded,
}

impl PairArgs {
    /// Reads the pair config and loads both models on the device.
    pub fn open(&self) -> Result<OpenPair> {
        let config = PairConfig::read(&self.pair)?;
        let store = match &self.cache_dir {
            Some(dir) => Store::new(dir),
            None => Store::from_env()?,
        };
        let device = device(&self.device)?;
        eprintln!("loading models of {} on {}", config.name, self.device);
        let receiver = load(&config.receiver, &store, &device, false)?;
        let sharer = load(&config.sharer, &store, &device, self.sharer_quantized)?;
        eprintln!("receiver: {}\nsharer:   {}", receiver.source, sharer.source);
        Ok(OpenPair {
            config,
            store,
            device,
            receiver,
            sharer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weights_digest_names_each_file_and_its_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.safetensors"));
        std::fs::write(&a, b"abc").unwrap();
        std::fs::write(&b, b"").unwrap();
        assert_eq!(
            weights_digest(&[a.clone(), b]).unwrap(),
            "a.gguf:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad,\
             b.safetensors:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(weights_digest(&[dir.path().join("missing.gguf")]).is_err());
        assert_eq!(file_name(&a), "a.gguf");
    }
}
