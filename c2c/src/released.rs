//! The released C2C fuser format (thu-nics/C2C): a folder with `projector_config.json` (the layer
//! map), and per projector i `projector_{i}.json` (`{"class": "C2CProjector", "init_args": {...}}`,
//! written by upstream's `save_object`) and `projector_{i}.pt` (a `torch.save` of the module's
//! `state_dict`: a zip holding a pickle and raw storages), read with candle's pickle reader.
//! Absent `init_args` take upstream's constructor defaults.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use crate::checkpoint::{FORMAT, Fuser, FuserConfig, MAX_PROJECTORS, check_tensors, read_json};
use crate::error::{C2cError, Result};
use crate::layer_map::LayerMap;
use crate::projector::{Projector, ProjectorDims, tensor_shapes};

/// Upper bound on a `.pt` file's size (the released 1024-wide projectors are ~40 MB each).
pub const MAX_PT_BYTES: u64 = 1 << 30;
/// State-dict entries that are buffers, not weights (the annealed gate temperature).
const BUFFERS: &[&str] = &["gate_temperature"];

/// `projector_{i}.json` as written upstream.
#[derive(Debug, Clone, Deserialize)]
pub struct ReleasedProjectorJson {
    /// Python class name; only `C2CProjector` is supported.
    pub class: String,
    /// Constructor arguments.
    pub init_args: ReleasedInitArgs,
}

/// The constructor arguments of upstream `C2CProjector` that fix tensor shapes.
#[derive(Debug, Clone, Deserialize)]
pub struct ReleasedInitArgs {
    /// Sharer head dim (upstream calls the sharer "source").
    pub source_dim: usize,
    /// Receiver head dim ("target").
    pub target_dim: usize,
    /// Sharer KV heads.
    #[serde(default = "one")]
    pub source_num_heads: usize,
    /// Receiver KV heads.
    #[serde(default = "one")]
    pub target_num_heads: usize,
    /// FFN inner width of mlp1 and proj_mlp2.
    #[serde(default = "width")]
    pub intermediate_dim: usize,
    /// Hidden width.
    #[serde(default = "width")]
    pub hidden_dim: usize,
    /// Depth; proj_mlp2 has `num_layers - 2` blocks (upstream requires >= 3).
    #[serde(default = "three")]
    pub num_layers: usize,
}

fn one() -> usize {
    1
}
fn width() -> usize {
    1024
}
fn three() -> usize {
    3
}

impl ReleasedInitArgs {
    /// Our dims for these arguments.
    pub fn dims(&self) -> Result<ProjectorDims> {
        if self.num_layers < 3 {
            return Err(C2cError::Range {
                what: "num_layers",
                value: self.num_layers as f64,
                range: ">= 3",
            });
        }
        let dims = ProjectorDims {
            sharer_heads: self.source_num_heads,
            sharer_head_dim: self.source_dim,
            receiver_heads: self.target_num_heads,
            receiver_head_dim: self.target_dim,
            hidden: self.hidden_dim,
            intermediate: self.intermediate_dim,
            proj_blocks: self.num_layers - 2,
        };
        dims.validate()?;
        Ok(dims)
    }
}

/// Loads a released fuser folder; tensors are converted to `dtype` on `device`.
pub fn load_released(dir: &Path, dtype: DType, device: &Device) -> Result<Fuser> {
    let map_path = dir.join("projector_config.json");
    let map_text = std::fs::read_to_string(&map_path).map_err(|source| C2cError::Io {
        path: map_path.clone(),
        source,
    })?;
    let layer_map = LayerMap::from_released_json(&map_text)?;
    let count = (0..=MAX_PROJECTORS)
        .find(|i| !dir.join(format!("projector_{i}.json")).exists())
        .unwrap_or(MAX_PROJECTORS);
    let mut dims_all = Vec::with_capacity(count);
    let mut projectors = Vec::with_capacity(count);
    for i in 0..count {
        let json_path = dir.join(format!("projector_{i}.json"));
        let json: ReleasedProjectorJson = read_json(&json_path)?;
        if json.class != "C2CProjector" {
            return Err(C2cError::Config {
                path: json_path,
                message: format!(
                    "class {:?} is not supported (only C2CProjector)",
                    json.class
                ),
            });
        }
        let dims = json.init_args.dims()?;
        let pt_path = dir.join(format!("projector_{i}.pt"));
        let tensors = read_state_dict(&pt_path, device)?;
        let expected: HashMap<String, Vec<usize>> = tensor_shapes(&dims).into_iter().collect();
        check_tensors(&tensors, &expected, &pt_path)?;
        let vb = VarBuilder::from_tensors(tensors, dtype, device);
        projectors.push(Projector::new(dims, vb)?);
        dims_all.push(dims);
    }
    let receiver_layers = layer_map
        .links()
        .iter()
        .map(|l| l.receiver + 1)
        .max()
        .unwrap_or(0);
    let sharer_layers = layer_map
        .links()
        .iter()
        .map(|l| l.sharer + 1)
        .max()
        .unwrap_or(0);
    let config = FuserConfig {
        format: FORMAT.to_string(),
        receiver_layers,
        sharer_layers,
        projectors: dims_all,
        layer_map,
    };
    config.validate()?;
    Ok(Fuser { config, projectors })
}

/// Reads a `torch.save`d state dict, dropping buffers. candle's pickle reader is not hardened
/// against every malformed input, so a panic inside it is turned into a typed error.
pub fn read_state_dict(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let len = std::fs::metadata(path)
        .map_err(|source| C2cError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if len > MAX_PT_BYTES {
        return Err(C2cError::Config {
            path: path.to_path_buf(),
            message: format!("{len} bytes > {MAX_PT_BYTES}"),
        });
    }
    let bad = |message: String| C2cError::Config {
        path: path.to_path_buf(),
        message,
    };
    let read = std::panic::catch_unwind(|| candle_core::pickle::read_all(path))
        .map_err(|_| bad("malformed torch pickle (reader panicked)".into()))?
        .map_err(|e| bad(format!("torch pickle: {e}")))?;
    let mut out = HashMap::with_capacity(read.len());
    for (name, t) in read {
        if BUFFERS.contains(&name.as_str()) {
            continue;
        }
        let t = t.to_device(device).map_err(|e| bad(e.to_string()))?;
        out.insert(name, t);
    }
    Ok(out)
}
