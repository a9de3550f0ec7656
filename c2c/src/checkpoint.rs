//! The project's own fuser checkpoint: one safetensors file holding every projector (tensor
//! names `projector.{i}.<released name>`) and one JSON config (format tag, projector shapes,
//! layer map). Loading checks every expected tensor name and shape before building anything.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::error::{C2cError, Result, TensorContext};
use crate::layer_map::LayerMap;
use crate::projector::{Projector, ProjectorDims, tensor_shapes};

/// Format tag written into every config.
pub const FORMAT: &str = "kvwire-c2c-fuser-v1";
/// Upper bound on projectors in one checkpoint (one per receiver layer).
pub const MAX_PROJECTORS: usize = 512;
/// Upper bound on a config file's size in bytes.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The JSON half of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FuserConfig {
    /// Always [`FORMAT`].
    pub format: String,
    /// Receiver layer count.
    pub receiver_layers: usize,
    /// Sharer layer count.
    pub sharer_layers: usize,
    /// Shapes of projector i.
    pub projectors: Vec<ProjectorDims>,
    /// Which sharer layer and projector feed each receiver layer.
    pub layer_map: LayerMap,
}

impl FuserConfig {
    /// Checks the format tag, bounds, shapes and layer map together.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| C2cError::Config {
            path: "fuser config".into(),
            message,
        };
        if self.format != FORMAT {
            return Err(bad(format!(
                "format {:?}, expected {FORMAT:?}",
                self.format
            )));
        }
        if self.projectors.len() > MAX_PROJECTORS {
            return Err(bad(format!(
                "{} projectors > {MAX_PROJECTORS}",
                self.projectors.len()
            )));
        }
        for d in &self.projectors {
            d.validate()?;
        }
        self.layer_map.validate(
            self.receiver_layers,
            self.sharer_layers,
            self.projectors.len(),
        )
    }
}

/// A loaded fuser: config and projectors.
#[derive(Debug, Clone)]
pub struct Fuser {
    /// Shapes and layer map.
    pub config: FuserConfig,
    /// Projector i of `config.projectors[i]`.
    pub projectors: Vec<Projector>,
}

/// Writes `weights` (safetensors) and `config` (JSON).
pub fn save(fuser: &Fuser, weights: &Path, config: &Path) -> Result<()> {
    fuser.config.validate()?;
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (i, p) in fuser.projectors.iter().enumerate() {
        for (name, t) in p.named_tensors() {
            tensors.insert(format!("projector.{i}.{name}"), t);
        }
    }
    candle_core::safetensors::save(&tensors, weights).ctx("writing safetensors")?;
    let text = serde_json::to_string_pretty(&fuser.config).map_err(|e| C2cError::Config {
        path: config.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(config, text).map_err(|source| C2cError::Io {
        path: config.to_path_buf(),
        source,
    })
}

/// Reads a checkpoint written by [`save`]; tensors are converted to `dtype` on `device`.
pub fn load(weights: &Path, config: &Path, dtype: DType, device: &Device) -> Result<Fuser> {
    let config_value: FuserConfig = read_json(config)?;
    config_value.validate()?;
    let tensors = candle_core::safetensors::load(weights, device).ctx("reading safetensors")?;
    let mut expected = HashMap::new();
    for (i, dims) in config_value.projectors.iter().enumerate() {
        for (name, shape) in tensor_shapes(dims) {
            expected.insert(format!("projector.{i}.{name}"), shape);
        }
    }
    check_tensors(&tensors, &expected, weights)?;
    if let Some(extra) = tensors.keys().find(|k| !expected.contains_key(*k)) {
        return Err(C2cError::Config {
            path: weights.to_path_buf(),
            message: format!("unexpected tensor {extra}"),
        });
    }
    let vb = VarBuilder::from_tensors(tensors, dtype, device);
    let projectors = config_value
        .projectors
        .iter()
        .enumerate()
        .map(|(i, dims)| Projector::new(*dims, vb.pp("projector").pp(i)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Fuser {
        config: config_value,
        projectors,
    })
}

/// Errors on the first expected tensor that is missing or has another shape.
pub(crate) fn check_tensors(
    tensors: &HashMap<String, Tensor>,
    expected: &HashMap<String, Vec<usize>>,
    path: &Path,
) -> Result<()> {
    let mut names: Vec<&String> = expected.keys().collect();
    names.sort();
    for name in names {
        let shape = &expected[name];
        let t = tensors.get(name).ok_or_else(|| C2cError::MissingTensor {
            path: path.to_path_buf(),
            name: name.clone(),
        })?;
        if t.dims() != shape.as_slice() {
            return Err(C2cError::Shape {
                what: format!("{} in {}", name, path.display()),
                expected: shape.clone(),
                got: t.dims().to_vec(),
            });
        }
    }
    Ok(())
}

/// Reads a bounded JSON file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let io = |source| C2cError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(C2cError::Config {
            path: path.to_path_buf(),
            message: format!("{len} bytes > {MAX_CONFIG_BYTES}"),
        });
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    serde_json::from_str(&text).map_err(|e| C2cError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
