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

/// Parameters of `projectors` projectors of shape `dims`.
pub fn parameters(dims: ProjectorDims, projectors: usize) -> usize {
    let one: usize = c2c::projector::tensor_shapes(&dims)
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    one * projectors
}

/// The projector shape of a random fuser of width `hidden` for `receiver` <- `sharer`.
pub fn dims(receiver: &ModelConfig, sharer: &ModelConfig, hidden: usize) -> ProjectorDims {
    ProjectorDims {
        sharer_heads: sharer.n_kv_heads,
        sharer_head_dim: sharer.head_dim,
        receiver_heads: receiver.n_kv_heads,
        receiver_head_dim: receiver.head_dim,
        hidden,
        intermediate: hidden,
        proj_blocks: 1,
    }
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
    let dims = dims(receiver, sharer, hidden);
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
    let parameters = parameters(dims, receiver.n_layers);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper pair at hidden 1024: 28 projectors, as the released fuser.
    #[test]
    fn the_paper_shapes_count_the_released_fusers_parameters() {
        let (r, s) = (ModelConfig::qwen3_0_6b(), ModelConfig::qwen2_5_0_5b());
        let n = parameters(dims(&r, &s, 1024), r.n_layers);
        println!("paper-shape fuser: {n} parameters");
        assert!((477_000_000..479_000_000).contains(&n), "{n}");
    }

    #[test]
    fn a_tiny_fuser_is_written_and_loads() {
        let dir = std::env::temp_dir().join(format!("bench-fuser-{}", std::process::id()));
        let (r, s) = (
            ModelConfig::tiny(model_runtime::Arch::Qwen3),
            ModelConfig::tiny(model_runtime::Arch::Qwen2),
        );
        let made = write(&dir, &r, &s, 8, 3).unwrap();
        assert_eq!(made.projectors, r.n_layers);
        let fuser = c2c::checkpoint::load(
            &dir.join("fuser.safetensors"),
            &dir.join("fuser.json"),
            model_runtime::candle_core::DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let loaded: usize = fuser
            .projectors
            .iter()
            .flat_map(|p| p.named_tensors())
            .map(|(_, t)| t.elem_count())
            .sum();
        assert_eq!(loaded, made.parameters);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
