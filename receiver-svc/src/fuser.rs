//! The fuser slot: how a decoded sharer cache becomes the receiver's prompt cache. The pair
//! config picks one: identity (same model on both sides) or a trained C2C fuser
//! ([`C2cFuser`], which also needs the receiver's model and the prompt text).

use std::path::Path;

use model_runtime::candle_core::{DType, Tensor};
use model_runtime::{KvCache, Model, Tokenizer};

use crate::config::{C2cSettings, FuserKind};
use crate::decode::{DecodedCache, DecodedLayer};
use crate::error::ReceiverError;

/// Turns a sharer cache into a receiver prompt cache.
pub trait Fuser: Send + Sync + std::fmt::Debug {
    /// Name for logs, errors and manifests.
    fn name(&self) -> &'static str;
    /// The receiver's prompt cache built from the sharer's.
    fn fuse(&self, sharer: DecodedCache) -> Result<DecodedCache, ReceiverError>;
}

/// Same model on both sides: the dequantized sharer cache is used as is, which measures what
/// quantization and selection alone do to accuracy.
#[derive(Debug)]
pub struct IdentityFuser {
    receiver_model: String,
}

impl IdentityFuser {
    /// An identity fuser for a receiver running `receiver_model` (its spec).
    pub fn new(receiver_model: String) -> Self {
        Self { receiver_model }
    }
}

impl Fuser for IdentityFuser {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn fuse(&self, sharer: DecodedCache) -> Result<DecodedCache, ReceiverError> {
        if sharer.sharer_model != self.receiver_model {
            return Err(ReceiverError::Transfer(format!(
                "identity fuser needs the same model on both sides: sharer {:?}, receiver {:?}",
                sharer.sharer_model, self.receiver_model
            )));
        }
        Ok(sharer)
    }
}

/// The fuser a pair config names for the `kv` method, if any.
pub fn fuser_for(kind: FuserKind, receiver_model: &str) -> Option<Box<dyn Fuser>> {
    match kind {
        FuserKind::Identity => Some(Box::new(IdentityFuser::new(receiver_model.to_string()))),
        FuserKind::None | FuserKind::C2c => None,
    }
}

/// A trained C2C fuser with the sharer's tokenizer: the receiver aligns the prompt text across
/// the two tokenizers, projects the sharer rows that arrived into its own cache space and fuses
/// them into its own prompt cache (positions whose sharer token did not arrive keep the
/// receiver's K/V).
pub struct C2cFuser {
    fuser: c2c::checkpoint::Fuser,
    sharer_tokenizer: Tokenizer,
    source: String,
}

impl std::fmt::Debug for C2cFuser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("C2cFuser")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl C2cFuser {
    /// Loads the fuser folder and the sharer's tokenizer, checking the fuser fits `receiver`.
    pub fn load(settings: &C2cSettings, receiver: &Model) -> Result<Self, ReceiverError> {
        let dir = Path::new(&settings.fuser_dir);
        let fuser = c2c::checkpoint::load(
            &dir.join("fuser.safetensors"),
            &dir.join("fuser.json"),
            DType::F32,
            receiver.device(),
        )
        .map_err(|e| ReceiverError::invalid("c2c.fuser_dir", e.to_string()))?;
        let c = receiver.config();
        let dims = fuser.config.projectors.first().copied();
        if fuser.config.receiver_layers != c.n_layers
            || dims.is_some_and(|d| {
                d.receiver_heads != c.n_kv_heads || d.receiver_head_dim != c.head_dim
            })
        {
            return Err(ReceiverError::invalid(
                "c2c.fuser_dir",
                format!(
                    "fuser for {} receiver layers ({:?}) does not fit this receiver ({} layers, {} x {})",
                    fuser.config.receiver_layers, dims, c.n_layers, c.n_kv_heads, c.head_dim
                ),
            ));
        }
        let path = Path::new(&settings.sharer_tokenizer);
        let is_gguf = path.extension().is_some_and(|e| e == "gguf");
        let sharer_tokenizer = if is_gguf {
            Tokenizer::from_gguf_file(path)
        } else {
            Tokenizer::from_file(path)
        }
        .map_err(|e| ReceiverError::invalid("c2c.sharer_tokenizer", e.to_string()))?;
        Ok(Self {
            fuser,
            sharer_tokenizer,
            source: settings.fuser_dir.clone(),
        })
    }

    /// The receiver's prompt cache (positions `0..n-1` of `ids`, the tokens of `text`) with the
    /// sharer's rows fused in.
    pub fn fuse(
        &self,
        receiver: &Model,
        receiver_tokenizer: &Tokenizer,
        text: &str,
        ids: &[u32],
        sharer: &DecodedCache,
    ) -> Result<DecodedCache, ReceiverError> {
        let bad = |m: String| ReceiverError::Transfer(m);
        let cfg = &self.fuser.config;
        if sharer.layers.len() != cfg.sharer_layers {
            return Err(bad(format!(
                "sharer cache has {} layers, the fuser expects {}",
                sharer.layers.len(),
                cfg.sharer_layers
            )));
        }
        if let Some(d) = cfg.projectors.first()
            && (d.sharer_heads != sharer.heads || d.sharer_head_dim != sharer.head_dim)
        {
            return Err(bad(format!(
                "sharer cache is {} x {}, the fuser expects {} x {}",
                sharer.heads, sharer.head_dim, d.sharer_heads, d.sharer_head_dim
            )));
        }
        let aligned = fuser::align_text(receiver_tokenizer, &self.sharer_tokenizer, text)
            .map_err(|e| bad(format!("aligning the prompt: {e}")))?;
        if aligned.receiver != ids {
            return Err(bad("the receiver prompt is not the aligned text".into()));
        }
        if aligned.sharer.len() != sharer.prompt_tokens {
            return Err(bad(format!(
                "sharer prompt has {} tokens, the sharer tokenizer gives {}: not the same prompt \
                 or not the same tokenizer",
                sharer.prompt_tokens,
                aligned.sharer.len()
            )));
        }
        let n = ids.len();
        let shape = (1, sharer.heads, sharer.positions.len(), sharer.head_dim);
        let dev = receiver.device();
        let layers = sharer
            .layers
            .iter()
            .map(|l| {
                let t = |x: &Vec<f32>| {
                    Tensor::from_slice(x, shape, dev).map_err(|e| bad(format!("sharer rows: {e}")))
                };
                let layer =
                    c2c::KvLayer::new(t(&l.k)?, t(&l.v)?).map_err(|e| bad(e.to_string()))?;
                Ok(Some(layer))
            })
            .collect::<Result<Vec<_>, ReceiverError>>()?;
        let run = || -> fuser::Result<KvCache> {
            let rows =
                fuser::fused::rows_from_transfer(&layers, &sharer.positions, &aligned.map, n - 1)?;
            let own = fuser::receiver_prompt_cache(receiver, ids)?;
            fuser::fuse_prompt(&self.fuser, &rows, &own, &mut fuser::fused::HardGate)
        };
        let fused = run().map_err(|e| bad(format!("c2c fusion: {e}")))?;
        let c = receiver.config();
        let layers = fused
            .layers
            .iter()
            .map(|l| {
                let v = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
                Ok(DecodedLayer {
                    k: v(&l.k)?,
                    v: v(&l.v)?,
                })
            })
            .collect::<Result<Vec<_>, model_runtime::candle_core::Error>>()
            .map_err(|e| ReceiverError::Model(e.into()))?;
        Ok(DecodedCache {
            sharer_model: self.source.clone(),
            prompt_tokens: n,
            heads: c.n_kv_heads,
            head_dim: c.head_dim,
            positions: (0..(n - 1) as u32).collect(),
            layers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use c2c::checkpoint::save;
    use c2c::projector::ProjectorDims;
    use model_runtime::candle_core::Device;
    use model_runtime::{Arch, ModelConfig};

    /// A tiny receiver/sharer pair, a fuser whose gates are closed (logits 0) written to disk,
    /// and the sharer tokenizer as a file.
    fn setup(dir: &Path) -> (Model, Model, Tokenizer, C2cFuser) {
        let (rc, sc) = (
            ModelConfig::tiny(Arch::Llama),
            ModelConfig::tiny(Arch::Qwen2),
        );
        let receiver = Model::random(&rc, 1, &Device::Cpu, DType::F32).unwrap();
        let sharer = Model::random(&sc, 2, &Device::Cpu, DType::F32).unwrap();
        let dims = ProjectorDims {
            sharer_heads: sc.n_kv_heads,
            sharer_head_dim: sc.head_dim,
            receiver_heads: rc.n_kv_heads,
            receiver_head_dim: rc.head_dim,
            hidden: 8,
            intermediate: 8,
            proj_blocks: 1,
        };
        let varmap = candle_nn::VarMap::new();
        let fuser =
            c2c::train::trainable_fuser(dims, rc.n_layers, sc.n_layers, &varmap, 3, &Device::Cpu)
                .unwrap();
        save(
            &fuser,
            &dir.join("fuser.safetensors"),
            &dir.join("fuser.json"),
        )
        .unwrap();
        let tokenizer = Tokenizer::tiny().unwrap();
        let tok_path = dir.join("tokenizer.json");
        tokenizer.inner().save(&tok_path, false).unwrap();
        let settings = C2cSettings {
            fuser_dir: dir.display().to_string(),
            sharer_tokenizer: tok_path.display().to_string(),
        };
        let c2c = C2cFuser::load(&settings, &receiver).unwrap();
        (receiver, sharer, tokenizer, c2c)
    }

    fn decoded(
        model: &Model,
        cache: &KvCache,
        positions: Vec<u32>,
        prompt_tokens: usize,
    ) -> DecodedCache {
        let c = model.config();
        let idx = Tensor::new(positions.as_slice(), &Device::Cpu).unwrap();
        let flat = |t: &Tensor| {
            t.index_select(&idx, 2)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        DecodedCache {
            sharer_model: "tiny".into(),
            prompt_tokens,
            heads: c.n_kv_heads,
            head_dim: c.head_dim,
            layers: cache
                .layers
                .iter()
                .map(|l| DecodedLayer {
                    k: flat(&l.k),
                    v: flat(&l.v),
                })
                .collect(),
            positions,
        }
    }

    #[test]
    fn closed_gates_give_the_receivers_own_cache_and_bad_transfers_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let (receiver, sharer, tok, c2c) = setup(dir.path());
        let text = "Question: why?\nAnswer:";
        let ids = tok.encode(text).unwrap();
        let s_cache = fuser::sharer_cache(&sharer, &ids).unwrap();
        let n = ids.len();
        // Sparse: only some sharer positions arrived.
        let transfer = decoded(&sharer, &s_cache, vec![0, 2, (n - 2) as u32], n);
        let fused = c2c.fuse(&receiver, &tok, text, &ids, &transfer).unwrap();
        let own = fuser::receiver_prompt_cache(&receiver, &ids).unwrap();
        let own = decoded(&receiver, &own, (0..(n - 1) as u32).collect(), n);
        assert_eq!(fused.positions, own.positions);
        assert_eq!(
            fused.layers, own.layers,
            "closed gates must leave the receiver cache bit for bit"
        );

        let mut short = transfer.clone();
        short.layers.pop();
        assert!(matches!(
            c2c.fuse(&receiver, &tok, text, &ids, &short),
            Err(ReceiverError::Transfer(_))
        ));
        let mut other_prompt = transfer.clone();
        other_prompt.prompt_tokens += 3;
        assert!(matches!(
            c2c.fuse(&receiver, &tok, text, &ids, &other_prompt),
            Err(ReceiverError::Transfer(_))
        ));
        assert!(
            c2c.fuse(&receiver, &tok, "another text", &ids, &transfer)
                .is_err()
        );
    }

    #[test]
    fn a_fuser_for_other_shapes_is_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let _ = setup(dir.path());
        let other =
            Model::random(&ModelConfig::tiny(Arch::Qwen3), 1, &Device::Cpu, DType::F32).unwrap();
        let mut cfg = model_runtime::ModelConfig::tiny(Arch::Qwen3);
        cfg.n_layers = 3;
        let deeper = Model::random(&cfg, 1, &Device::Cpu, DType::F32).unwrap();
        let settings = C2cSettings {
            fuser_dir: dir.path().display().to_string(),
            sharer_tokenizer: dir.path().join("tokenizer.json").display().to_string(),
        };
        assert!(
            C2cFuser::load(&settings, &other).is_ok(),
            "same layer count and KV shapes fit"
        );
        assert!(C2cFuser::load(&settings, &deeper).is_err());
        let missing = C2cSettings {
            fuser_dir: "/nonexistent".into(),
            ..settings
        };
        assert!(C2cFuser::load(&missing, &other).is_err());
    }
}
