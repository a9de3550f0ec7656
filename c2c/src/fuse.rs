//! The fuse step: from a receiver cache and the sharer rows that arrived to a fused receiver
//! cache. Sparse by construction: only the receiver positions the sharer sent are projected; every
//! other position keeps the receiver's own K/V exactly.

use candle_core::Tensor;

use crate::cache::{KvLayer, check_positions, index_tensor};
use crate::error::{C2cError, Result, TensorContext};
use crate::layer_map::LayerMap;
use crate::projector::{GateMode, Projector};

/// Sharer rows of one sharer layer as they arrived: `kv` holds `[B, Hs, n, Ds]` rows, row i
/// belonging to receiver position `positions[i]` (already aligned to receiver tokens).
#[derive(Debug, Clone)]
pub struct SharerLayer {
    /// The sharer K/V rows, `[B, Hs, n, Ds]`.
    pub kv: KvLayer,
    /// Receiver positions of the rows, strictly increasing.
    pub positions: Vec<usize>,
}

impl SharerLayer {
    /// A dense sharer layer whose token t already corresponds to receiver position t, cut to the
    /// first `count` positions (the prompt except its last token, by the C2C recipe).
    pub fn dense_prefix(kv: &KvLayer, count: usize) -> Result<Self> {
        let (_, _, t, _) = kv.dims()?;
        if count > t {
            return Err(C2cError::Mismatch {
                what: "dense prefix longer than the sharer layer",
                left: count,
                right: t,
            });
        }
        let kv = KvLayer {
            k: kv.k.narrow(2, 0, count).ctx("cutting sharer prefix")?,
            v: kv.v.narrow(2, 0, count).ctx("cutting sharer prefix")?,
        };
        Ok(Self {
            kv,
            positions: (0..count).collect(),
        })
    }
}

/// The receiver positions C2C fuses for a prompt of `prompt_len` tokens: all but the last.
pub fn prompt_positions(prompt_len: usize) -> Vec<usize> {
    (0..prompt_len.saturating_sub(1)).collect()
}

/// Fuses the sharer layers that arrived into the receiver cache.
///
/// `sharer[l]` is sharer layer l, `None` when it was not sent; `receiver` holds every receiver
/// layer. Receiver layers without a link in `map`, or whose sharer layer is absent, are returned
/// unchanged (cheap: tensors are reference counted).
pub fn fuse(
    projectors: &[Projector],
    map: &LayerMap,
    sharer: &[Option<SharerLayer>],
    receiver: &[KvLayer],
    gate: &GateMode,
) -> Result<Vec<KvLayer>> {
    map.validate(receiver.len(), sharer.len(), projectors.len())?;
    let mut fused = receiver.to_vec();
    for link in map.links() {
        let Some(rows) = &sharer[link.sharer] else {
            continue;
        };
        fused[link.receiver] = fuse_layer(
            &projectors[link.projector],
            rows,
            &receiver[link.receiver],
            gate,
        )?;
    }
    Ok(fused)
}

/// Fuses one sharer layer's rows into one receiver layer.
pub fn fuse_layer(
    projector: &Projector,
    rows: &SharerLayer,
    receiver: &KvLayer,
    gate: &GateMode,
) -> Result<KvLayer> {
    let (b, _, t, _) = receiver.dims()?;
    let (sb, _, n, _) = rows.kv.dims()?;
    if n != rows.positions.len() {
        return Err(C2cError::Mismatch {
            what: "sharer rows vs their positions",
            left: n,
            right: rows.positions.len(),
        });
    }
    if sb != b {
        return Err(C2cError::Mismatch {
            what: "sharer batch vs receiver batch",
            left: sb,
            right: b,
        });
    }
    check_positions(&rows.positions, t, "sharer row positions")?;
    if n == 0 {
        return Ok(receiver.clone());
    }
    let own = receiver.gather_tokens(&rows.positions)?;
    let projected = projector.forward_cache(&rows.kv, &own, gate)?;
    Ok(KvLayer {
        k: put_rows(&receiver.k, &projected.k, &rows.positions)?,
        v: put_rows(&receiver.v, &projected.v, &rows.positions)?,
    })
}

/// Writes `rows` (`[B, H, n, D]`, `n >= 1`) into `base` (`[B, H, T, D]`) at token `positions`
/// (strictly increasing, below `T`). A contiguous run uses narrow/cat (differentiable, for
/// training); otherwise a scatter.
pub fn put_rows(base: &Tensor, rows: &Tensor, positions: &[usize]) -> Result<Tensor> {
    let (b, h, t, d) = base.dims4().ctx("reading receiver dims")?;
    let n = positions.len();
    let first = positions[0];
    if positions[n - 1] - first + 1 == n {
        let mut parts = Vec::with_capacity(3);
        if first > 0 {
            parts.push(base.narrow(2, 0, first).ctx("head of receiver")?);
        }
        parts.push(rows.clone());
        if first + n < t {
            parts.push(
                base.narrow(2, first + n, t - first - n)
                    .ctx("tail of receiver")?,
            );
        }
        return Tensor::cat(&parts, 2).ctx("splicing fused rows");
    }
    let idx = index_tensor(positions, t, "fused positions", base.device())?
        .reshape((1, 1, n, 1))
        .and_then(|i| i.broadcast_as((b, h, n, d)))
        .and_then(|i| i.contiguous())
        .ctx("building scatter index")?;
    base.scatter(&idx, &rows.to_dtype(base.dtype()).ctx("casting rows")?, 2)
        .ctx("scattering fused rows")
}
