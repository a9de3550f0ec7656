//! Quantization-aware sharer caches: each sharer K/V passes through the wire's own quantizer
//! (kvwire per-block int8/int4, fp16 scales) and back, so a fuser trained on them sees what a
//! receiver reconstructs from the wire.

use kvwire::{Granularity, QuantMode, QuantParams, ScaleDtype};
use model_runtime::{KvCache, LayerKv};

use crate::error::{Ctx, Result};

/// Quantize-dequantize of every layer of `cache` with `mode` per-block scales (fp16).
pub fn fake_quantize_cache(cache: &KvCache, mode: QuantMode) -> Result<KvCache> {
    let params = QuantParams {
        mode,
        granularity: Granularity::PerBlock,
        scale_dtype: ScaleDtype::Fp16,
    };
    let one = |t: &candle_core::Tensor| -> Result<candle_core::Tensor> {
        let (b, h, n, d) = t.dims4().ctx("reading sharer cache dims")?;
        let values = t
            .to_dtype(candle_core::DType::F32)
            .and_then(|x| x.flatten_all())
            .and_then(|x| x.to_vec1::<f32>())
            .ctx("reading sharer cache")?;
        let q = kvwire::quant::fake_quantize(&values, [b, h, n, d], params)?;
        candle_core::Tensor::from_vec(q, (b, h, n, d), t.device())
            .and_then(|x| x.to_dtype(t.dtype()))
            .ctx("rebuilding sharer cache")
    };
    let layers = cache
        .layers
        .iter()
        .map(|l| {
            Ok(LayerKv {
                k: one(&l.k)?,
                v: one(&l.v)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(KvCache { layers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn int8_is_close_and_int4_coarser() {
        let k = Tensor::randn(0f32, 1.0, (1, 2, 5, 16), &Device::Cpu).unwrap();
        let v = Tensor::randn(0f32, 1.0, (1, 2, 5, 16), &Device::Cpu).unwrap();
        let cache = KvCache {
            layers: vec![LayerKv {
                k: k.clone(),
                v: v.clone(),
            }],
        };
        let err = |mode| {
            let q = fake_quantize_cache(&cache, mode).unwrap();
            (&q.layers[0].k - &k)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        let (e8, e4) = (err(QuantMode::Int8), err(QuantMode::Int4));
        assert!(e8 > 0.0 && e8 < 0.05, "int8 error {e8}");
        assert!(e4 > e8, "int4 {e4} vs int8 {e8}");
    }
}
