//! What the sharer keeps of a session for refinement: the full-precision cache, which
//! positions the receiver holds, and the receiver's view of them (the dequantized values it
//! decoded), so a residual upgrade sends exactly `full - held`.

use std::sync::Mutex;

use kvwire::v2::{FrameKind, decode_frame};

use crate::engine::HostLayer;
use crate::error::SharerError;
use crate::produce::CacheShape;
use crate::select::gather_rows;

/// The receiver's view and bookkeeping, changed by each round.
#[derive(Debug)]
pub struct SentState {
    /// Per position: does the receiver hold it.
    pub sent: Vec<bool>,
    /// Dequantized values the receiver holds, full `[1, H, T, D]` layout (zeros where unsent).
    pub view: Vec<HostLayer>,
    /// Last round sent.
    pub round: u8,
}

/// A session held for Refine.
#[derive(Debug)]
pub struct HeldSession {
    /// Full-precision cache.
    pub layers: Vec<HostLayer>,
    /// Its shape.
    pub shape: CacheShape,
    /// Round state, one refinement at a time.
    pub state: Mutex<SentState>,
}

impl HeldSession {
    /// A session whose round 1 has not been recorded yet.
    pub fn new(layers: Vec<HostLayer>, shape: CacheShape) -> Self {
        let n = shape.heads * shape.tokens * shape.head_dim;
        let view = layers
            .iter()
            .map(|_| HostLayer {
                k: vec![0.0; n],
                v: vec![0.0; n],
            })
            .collect();
        Self {
            layers,
            shape,
            state: Mutex::new(SentState {
                sent: vec![false; shape.tokens],
                view,
                round: 0,
            }),
        }
    }

    /// Bytes held (full cache plus view).
    pub fn size_bytes(&self) -> u64 {
        let per_layer = 2 * self.shape.heads * self.shape.tokens * self.shape.head_dim * 4;
        (2 * per_layer * self.layers.len()) as u64
    }
}

impl SentState {
    /// Applies a frame the sharer just sent, as the receiver will: store (base) or add
    /// (residual) its dequantized rows.
    pub fn record_frame(&mut self, shape: CacheShape, frame: &[u8]) -> Result<(), SharerError> {
        let frame = decode_frame(frame)
            .map_err(|e| SharerError::Worker(format!("re-decoding own frame: {e}")))?;
        let (k, v) = frame.dequantize();
        let layer = usize::from(frame.header().layer);
        let positions = frame.indices();
        let [_, heads, t, d] = frame.shape();
        let view = self.view.get_mut(layer).ok_or_else(|| {
            SharerError::Worker(format!("frame for layer {layer} outside the session"))
        })?;
        let residual = frame.header().kind == FrameKind::Residual;
        for h in 0..heads {
            for (row, &p) in positions.iter().enumerate() {
                let dst = (h * shape.tokens + p as usize) * d;
                let src = (h * t + row) * d;
                for (target, source) in [(&mut view.k, &k), (&mut view.v, &v)] {
                    let out = &mut target[dst..dst + d];
                    let add = &source[src..src + d];
                    if residual {
                        out.iter_mut().zip(add).for_each(|(o, a)| *o += a);
                    } else {
                        out.copy_from_slice(add);
                    }
                }
            }
        }
        for &p in positions.iter() {
            self.sent[p as usize] = true;
        }
        Ok(())
    }

    /// `full - view` rows at `positions` of one layer, K then V.
    pub fn residual_rows(
        &self,
        full: &HostLayer,
        layer: usize,
        shape: CacheShape,
        positions: &[u32],
    ) -> (Vec<f32>, Vec<f32>) {
        let g =
            |data: &[f32]| gather_rows(data, shape.heads, shape.tokens, shape.head_dim, positions);
        let sub =
            |a: Vec<f32>, b: Vec<f32>| a.iter().zip(&b).map(|(x, y)| x - y).collect::<Vec<f32>>();
        let view = &self.view[layer];
        (sub(g(&full.k), g(&view.k)), sub(g(&full.v), g(&view.v)))
    }
}
