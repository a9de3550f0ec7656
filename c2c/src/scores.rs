//! Receiver-side selection scores over candle tensors: for the sharer rows a receiver holds (or
//! is offered), `proj_vnorm` (norm of the V branch's projection P) and `delta` (norm of what
//! fusion changes, ||fused - own|| over K and V at the hard gate), one value per row.

use candle_core::{DType, Tensor};

use crate::cache::{KvLayer, to_token_rows};
use crate::error::{C2cError, Result, TensorContext};
use crate::fuse::SharerLayer;
use crate::projector::{GateMode, Projector};

/// Scores of the rows of one sharer layer, in the rows' order.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceiverScores {
    /// Receiver positions of the rows.
    pub positions: Vec<usize>,
    /// ||P_v|| per row.
    pub proj_vnorm: Vec<f32>,
    /// ||fused - own|| over K and V per row (0 when both gates are closed).
    pub delta: Vec<f32>,
}

/// Scores `rows` against the receiver layer (batch 1).
pub fn receiver_scores(
    projector: &Projector,
    rows: &SharerLayer,
    receiver: &KvLayer,
) -> Result<ReceiverScores> {
    let (b, _, _, _) = receiver.dims()?;
    if b != 1 {
        return Err(C2cError::Mismatch {
            what: "receiver scores need batch 1",
            left: b,
            right: 1,
        });
    }
    let own = receiver.gather_tokens(&rows.positions)?;
    let fused = projector.forward_cache(&rows.kv, &own, &GateMode::Hard)?;
    let (_, value) = projector.parts(
        &to_token_rows(&rows.kv.k)?,
        &to_token_rows(&own.k)?,
        &to_token_rows(&rows.kv.v)?,
        &to_token_rows(&own.v)?,
    )?;
    let sq = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
        let d = (to_token_rows(a)? - to_token_rows(b)?).ctx("fused minus own")?;
        d.to_dtype(DType::F32)
            .and_then(|d| d.sqr())
            .and_then(|d| d.sum(1))
            .ctx("row norms")
    };
    let delta = (sq(&fused.k, &own.k)? + sq(&fused.v, &own.v)?)
        .and_then(|d| d.sqrt())
        .and_then(|d| d.to_vec1::<f32>())
        .ctx("delta scores")?;
    let proj_vnorm = value
        .projected
        .to_dtype(DType::F32)
        .and_then(|p| p.sqr())
        .and_then(|p| p.sum(1))
        .and_then(|p| p.sqrt())
        .and_then(|p| p.to_vec1::<f32>())
        .ctx("proj_vnorm scores")?;
    Ok(ReceiverScores {
        positions: rows.positions.clone(),
        proj_vnorm,
        delta,
    })
}
