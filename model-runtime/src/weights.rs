//! Where weights come from (GGUF, Hugging Face safetensors, seeded random) and how they
//! become layers: one name scheme per source, shape checks against the config, and
//! linear layers that are either dense or kept quantized.

use crate::error::{Result, RuntimeError};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

/// How GGUF weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsMode {
    /// Kept in their GGUF block format; matmuls run candle's quantized kernels.
    Quantized,
    /// Dequantized to the load dtype once at load. On CPU this is 18-25x faster for the
    /// Q4_1/Q5_0 files of this project (candle has no SIMD path for them), at 4-8x the RAM.
    Dequantized,
}

/// One parameter of a decoder, independent of the file's naming scheme.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Param {
    Embed,
    FinalNorm,
    Output,
    AttnNorm(usize),
    Q(usize),
    K(usize),
    V(usize),
    O(usize),
    QNorm(usize),
    KNorm(usize),
    MlpNorm(usize),
    Gate(usize),
    Up(usize),
    Down(usize),
}

impl Param {
    /// Name prefix in Hugging Face checkpoints (append `.weight` / `.bias`).
    fn hf(self) -> String {
        let layer = |i: usize, rest: &str| format!("model.layers.{i}.{rest}");
        match self {
            Param::Embed => "model.embed_tokens".into(),
            Param::FinalNorm => "model.norm".into(),
            Param::Output => "lm_head".into(),
            Param::AttnNorm(i) => layer(i, "input_layernorm"),
            Param::Q(i) => layer(i, "self_attn.q_proj"),
            Param::K(i) => layer(i, "self_attn.k_proj"),
            Param::V(i) => layer(i, "self_attn.v_proj"),
            Param::O(i) => layer(i, "self_attn.o_proj"),
            Param::QNorm(i) => layer(i, "self_attn.q_norm"),
            Param::KNorm(i) => layer(i, "self_attn.k_norm"),
            Param::MlpNorm(i) => layer(i, "post_attention_layernorm"),
            Param::Gate(i) => layer(i, "mlp.gate_proj"),
            Param::Up(i) => layer(i, "mlp.up_proj"),
            Param::Down(i) => layer(i, "mlp.down_proj"),
        }
    }

    /// Name prefix in GGUF files (llama.cpp scheme).
    fn gguf(self) -> String {
        let layer = |i: usize, rest: &str| format!("blk.{i}.{rest}");
        match self {
            Param::Embed => "token_embd".into(),
            Param::FinalNorm => "output_norm".into(),
            Param::Output => "output".into(),
            Param::AttnNorm(i) => layer(i, "attn_norm"),
            Param::Q(i) => layer(i, "attn_q"),
            Param::K(i) => layer(i, "attn_k"),
            Param::V(i) => layer(i, "attn_v"),
            Param::O(i) => layer(i, "attn_output"),
            Param::QNorm(i) => layer(i, "attn_q_norm"),
            Param::KNorm(i) => layer(i, "attn_k_norm"),
            Param::MlpNorm(i) => layer(i, "ffn_norm"),
            Param::Gate(i) => layer(i, "ffn_gate"),
            Param::Up(i) => layer(i, "ffn_up"),
            Param::Down(i) => layer(i, "ffn_down"),
        }
    }
}

/// A linear layer `y = x W^T + b`, dense or quantized.
#[derive(Debug, Clone)]
pub(crate) struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
    quantized: bool,
}

impl Linear {
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = if self.quantized && x.dtype() != DType::F32 {
            // candle's quantized kernels take f32 activations.
            self.weight
                .forward(&x.to_dtype(DType::F32)?)?
                .to_dtype(x.dtype())?
        } else {
            self.weight.forward(x)?
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Reader over an opened GGUF file.
pub(crate) struct GgufReader {
    pub(crate) path: PathBuf,
    pub(crate) content: gguf_file::Content,
    pub(crate) file: RefCell<File>,
}

/// A source of named tensors for one model build.
pub(crate) enum Source {
    Gguf {
        reader: GgufReader,
        mode: WeightsMode,
    },
    Hf(candle_core::safetensors::MmapedSafetensors),
    Random(RefCell<ChaCha8Rng>),
}

impl Source {
    pub(crate) fn random(seed: u64) -> Self {
        Source::Random(RefCell::new(ChaCha8Rng::seed_from_u64(seed)))
    }

    fn check(name: &str, expected: &[usize], got: &[usize]) -> Result<()> {
        if expected == got {
            Ok(())
        } else {
            Err(RuntimeError::ShapeMismatch {
                name: name.to_string(),
                expected: expected.to_vec(),
                got: got.to_vec(),
            })
        }
    }

    fn qtensor(reader: &GgufReader, name: &str, shape: &[usize], dev: &Device) -> Result<QTensor> {
        let info =
            reader
                .content
                .tensor_infos
                .get(name)
                .ok_or_else(|| RuntimeError::MissingTensor {
                    name: name.to_string(),
                })?;
        Self::check(name, shape, info.shape.dims())?;
        let mut file = reader.file.borrow_mut();
        info.read(&mut *file, reader.content.tensor_data_offset, dev)
            .map_err(|e| RuntimeError::BadGguf {
                path: reader.path.clone(),
                reason: format!("tensor `{name}`: {e}"),
            })
    }

    fn uniform(
        rng: &RefCell<ChaCha8Rng>,
        shape: &[usize],
        center: f32,
        half_width: f32,
    ) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let mut rng = rng.borrow_mut();
        (0..n)
            .map(|_| center + half_width * (2.0 * rng.random::<f32>() - 1.0))
            .collect()
    }

    /// A dense tensor in `dtype` (norm weights, biases, embeddings).
    pub(crate) fn dense(
        &self,
        p: Param,
        suffix: &str,
        shape: &[usize],
        dev: &Device,
        dtype: DType,
    ) -> Result<Tensor> {
        let t = match self {
            Source::Gguf { reader, .. } => {
                let name = format!("{}.{suffix}", p.gguf());
                Self::qtensor(reader, &name, shape, dev)?.dequantize(dev)?
            }
            Source::Hf(st) => {
                let name = format!("{}.{suffix}", p.hf());
                let view = st
                    .get(&name)
                    .map_err(|_| RuntimeError::MissingTensor { name: name.clone() })?;
                Self::check(&name, shape, view.shape())?;
                st.load(&name, dev)?
            }
            Source::Random(rng) => {
                let values = match (p, suffix) {
                    (Param::Embed, _) => Self::uniform(rng, shape, 0.0, 1.0),
                    (_, "bias") => Self::uniform(rng, shape, 0.0, 0.1),
                    // Norm weights near one, so every norm is exercised but stays tame.
                    _ => Self::uniform(rng, shape, 1.0, 0.1),
                };
                Tensor::from_vec(values, shape, dev)?
            }
        };
        Ok(t.to_dtype(dtype)?)
    }

    /// A linear layer of `[out, inp]`, with a bias of `[out]` when `bias` is set.
    pub(crate) fn linear(
        &self,
        p: Param,
        out: usize,
        inp: usize,
        bias: bool,
        dev: &Device,
        dtype: DType,
    ) -> Result<Linear> {
        let shape = [out, inp];
        let (weight, quantized) = match self {
            Source::Gguf { reader, mode } => {
                let name = format!("{}.weight", p.gguf());
                let q = Self::qtensor(reader, &name, &shape, dev)?;
                let keep = *mode == WeightsMode::Quantized
                    && !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
                if keep {
                    (QMatMul::QTensor(Arc::new(q)), true)
                } else {
                    (QMatMul::Tensor(q.dequantize(dev)?.to_dtype(dtype)?), false)
                }
            }
            Source::Hf(_) => (
                QMatMul::Tensor(self.dense(p, "weight", &shape, dev, dtype)?),
                false,
            ),
            Source::Random(rng) => {
                let scale = 1.0 / (inp as f32).sqrt();
                let values = Self::uniform(rng, &shape, 0.0, scale);
                let w = Tensor::from_vec(values, &shape[..], dev)?.to_dtype(dtype)?;
                (QMatMul::Tensor(w), false)
            }
        };
        let bias = if bias {
            Some(self.dense(p, "bias", &[out], dev, dtype)?)
        } else {
            None
        };
        Ok(Linear {
            weight,
            bias,
            quantized,
        })
    }

    /// The output layer tied to the embedding: quantized from the GGUF embedding when the
    /// mode keeps weights quantized, otherwise the dense embedding itself.
    pub(crate) fn tied_output(
        &self,
        embed: &Tensor,
        vocab: usize,
        hidden: usize,
        dev: &Device,
    ) -> Result<Linear> {
        if let Source::Gguf {
            reader,
            mode: WeightsMode::Quantized,
        } = self
        {
            let name = format!("{}.weight", Param::Embed.gguf());
            let q = Self::qtensor(reader, &name, &[vocab, hidden], dev)?;
            if !matches!(q.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) {
                return Ok(Linear {
                    weight: QMatMul::QTensor(Arc::new(q)),
                    bias: None,
                    quantized: true,
                });
            }
        }
        Ok(Linear {
            weight: QMatMul::Tensor(embed.clone()),
            bias: None,
            quantized: false,
        })
    }
}
