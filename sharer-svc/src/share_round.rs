//! A Share's round 1 before anything is encoded: the selection's candidates, the precision
//! plan's frames under the byte cap, and where each frame's rows come from. Runs on the model's
//! device (scores, row gathering); the measured plans export their candidates' rows of every
//! layer to the host first and measure them there (`plan::measure`).

use kvwire::HostLayer;
use kvwire::assemble::gather_rows;
use model_runtime::KvCache;

use crate::device_quant::FrameRows;
use crate::domain::ShareParams;
use crate::engine::{Prefilled, SharerEngine};
use crate::error::SharerError;
use crate::plan::{FrameSpec, RoundCost, importance_weights, measure, plan_frames};
use crate::select::{ScoreKind, preferred_positions};

/// The frames of a round and their rows.
#[derive(Debug)]
pub struct PlannedRound {
    /// Frames in sending order (layer by layer).
    pub frames: Vec<FrameSpec>,
    /// Where their rows come from.
    pub rows: RowSource,
}

/// Rows of the frames of a round.
#[derive(Debug)]
pub enum RowSource {
    /// Every frame of a layer covers the cache's positions (one frame per layer): a device
    /// cache of exactly those rows, exported a layer at a time.
    Device(KvCache),
    /// Host rows of every layer over `positions` (ascending); frames take subsets.
    Host {
        /// Positions the layers hold.
        positions: Vec<u32>,
        /// `[1, H, positions.len(), D]` per layer.
        layers: Vec<HostLayer>,
    },
}

impl RowSource {
    /// The K and V rows of `frame`, `[1, heads, frame.positions.len(), head_dim]` (on a GPU
    /// still on it, to be quantized there).
    pub fn rows(
        &self,
        frame: &FrameSpec,
        heads: usize,
        head_dim: usize,
    ) -> Result<FrameRows, SharerError> {
        let missing = |what: String| SharerError::Worker(format!("planned rows: {what}"));
        match self {
            RowSource::Device(cache) => FrameRows::of(
                cache
                    .layers
                    .get(frame.layer)
                    .ok_or_else(|| missing(format!("no layer {}", frame.layer)))?,
            ),
            RowSource::Host { positions, layers } => {
                let l = layers
                    .get(frame.layer)
                    .ok_or_else(|| missing(format!("no layer {}", frame.layer)))?;
                let rows = frame
                    .positions
                    .iter()
                    .map(|p| {
                        positions
                            .binary_search(p)
                            .map_err(|_| missing(format!("position {p} not exported")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let n = positions.len();
                Ok(FrameRows::Host(HostLayer {
                    k: gather_rows(&l.k, heads, n, head_dim, &rows),
                    v: gather_rows(&l.v, heads, n, head_dim, &rows),
                }))
            }
        }
    }
}

/// Plans round 1 of a Share over the first `shareable` positions of `prefilled`.
pub fn plan_share(
    engine: &SharerEngine,
    prefilled: &Prefilled,
    params: &ShareParams,
    shareable: usize,
    cost: &RoundCost,
) -> Result<PlannedRound, SharerError> {
    let plan = params.plan;
    let selection = plan.selection;
    // The measured plans weigh tokens by the selection's score, else by their V norm.
    let score_kind = match selection.score_kind() {
        Some(kind) => Some(kind),
        None if plan.precision.is_measured() => Some(ScoreKind::Vnorm),
        None => None,
    };
    let scores = match score_kind {
        Some(kind) => engine.position_scores(prefilled, kind, params.query.as_deref())?,
        None => Vec::new(),
    };
    let preferred = preferred_positions(selection, shareable, &scores)
        .map_err(|e| SharerError::invalid("transfer.selection", e.to_string()))?;
    let cache = &prefilled.cache;
    let mut exported: Option<(Vec<u32>, Vec<HostLayer>)> = None;
    let measure_rows = |positions: &[u32]| {
        let layers = cache.select_positions(positions)?.to_host()?;
        let weights = importance_weights(&scores, positions);
        let measured = measure(&layers, cost.heads, cost.head_dim, &weights)?;
        exported = Some((positions.to_vec(), layers));
        Ok(measured)
    };
    let precision = plan.precision;
    let frames = plan_frames(
        precision,
        plan.payload,
        cost,
        &preferred,
        plan.byte_cap,
        measure_rows,
    )?;
    let rows = match exported {
        Some((positions, layers)) => RowSource::Host { positions, layers },
        // One frame per layer, every one over the same positions.
        None => {
            let positions = frames.first().map_or(&[][..], |f| &f.positions);
            RowSource::Device(cache.select_positions(positions)?)
        }
    };
    Ok(PlannedRound { frames, rows })
}
