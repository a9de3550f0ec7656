//! A random-initialised C2C fuser at a pair's real shapes, in the project's own checkpoint
//! format (`fuser.safetensors` + `fuser.json`, `c2c::checkpoint`): one projector per receiver
//! layer, the last-aligned layer map, weights drawn as the trainer initialises them
//! (`c2c::train::trainable_fuser`: PyTorch's `nn.Linear` default, gates at logit 0). With
//! `hidden = intermediate = 1024` and one FFN block it has the released C2C fuser's shapes, so
//! the paper-shape C2C timing needs no trained weights. Timing only: the answers mean nothing.

use std::path::Path;

use c2c::projector::ProjectorDims;
use model_runtime::ModelConfig;
use model_runtime::candle_core::Device;
use serde::{Deserialize, Serialize};

use super::error::BenchError;

/// What was written, for the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomFuser {
    /// Width of h0/h1 and of the FFN blocks.
    pub hidden: usize,
    /// Projectors (one per receiver layer).
    pub projectors: usize,
    /// Parameters in all projectors.
    pub parameters: usize,
    /// The initialisation seed.
    pub seed: u64,
}

/// Writes a random fuser for `receiver` <- `sharer` into `dir` (created).
pub fn write(
    dir: &Path,
    receiver: &ModelConfig,
    sharer: &ModelConfig,
    hidden: usize,
    seed: u64,
) -> Result<RandomFuser, BenchError> {
    let err = |reason: String| BenchError::Fuser {
        dir: dir.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(BenchError::io("creating", dir))?;
    let dims = ProjectorDims {
        sharer_heads: sharer.n_kv_heads,
        sharer_head_dim: sharer.head_dim,
        receiver_heads: receiver.n_kv_heads,
        receiver_head_dim: receiver.head_dim,
        hidden,
        intermediate: hidden,
        proj_blocks: 1,
    };
    let varmap = candle_nn::VarMap::new();
    let fuser = c2c::train::trainable_fuser(
        dims,
        receiver.n_layers,
        sharer.n_layers,
        &varmap,
        seed,
        &Device::Cpu,
    )
    .map_err(|e| err(e.to_string()))?;
    let parameters = fuser
        .projectors
        .iter()
        .flat_map(|p| p.named_tensors())
        .map(|(_, t)| t.elem_count())
        .sum();
    c2c::checkpoint::save(
        &fuser,
        &dir.join("fuser.safetensors"),
        &dir.join("fuser.json"),
    )
    .map_err(|e| err(e.to_string()))?;
    Ok(RandomFuser {
        hidden,
        projectors: fuser.projectors.len(),
        parameters,
        seed,
    })
}
