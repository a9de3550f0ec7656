//! What the sharer keeps of a session for refinement: the full cache on the model's device,
//! and the receiver's view of it (the values it decoded), assembled by kvwire's
//! [`CacheAssembler`] from the very records sent, so a residual upgrade sends exactly
//! `full - held` and both sides agree by construction.

use std::sync::Mutex;

use kvwire::{CacheAssembler, HostCache, HostLayer};
use model_runtime::KvCache;

use crate::error::SharerError;
use crate::produce::CacheShape;

/// The receiver's view and the round counter, changed by each round.
#[derive(Debug, Default)]
pub struct SentState {
    /// What the receiver holds: the positions sent and their dequantized values.
    pub view: HostCache,
    /// Last round sent.
    pub round: u8,
    /// Rows of the prompt's last position are shareable too (a Share with `all_positions`).
    pub every_position: bool,
}

/// A session held for Refine.
#[derive(Debug)]
pub struct HeldSession {
    /// The full-precision cache of the prompt, on the model's device.
    pub cache: KvCache,
    /// Its shape.
    pub shape: CacheShape,
    /// Round state, one refinement at a time.
    pub state: Mutex<SentState>,
}

impl HeldSession {
    /// A session whose round 1 has not been recorded yet; `every_position` as its Share's
    /// `all_positions`.
    pub fn new(cache: KvCache, shape: CacheShape, every_position: bool) -> Self {
        Self {
            cache,
            shape,
            state: Mutex::new(SentState {
                every_position,
                ..SentState::default()
            }),
        }
    }

    /// Bytes a session of `cache` would hold: the cache, plus the view at its largest (every
    /// position, f32); known after prefill, before anything is sent.
    pub fn size_of(cache: &KvCache, shape: CacheShape) -> u64 {
        let view = 2 * shape.heads * shape.tokens * shape.head_dim * 4;
        (cache.size_in_bytes() + view * cache.layers.len()) as u64
    }
}

impl SentState {
    /// Whether the receiver holds `position`.
    pub fn holds(&self, position: u32) -> bool {
        self.view.positions.binary_search(&position).is_ok()
    }

    /// Applies one round's records (session header, then frames) as the receiver does.
    pub fn record_round(&mut self, records: &[Vec<u8>]) -> Result<(), SharerError> {
        let view = std::mem::take(&mut self.view);
        let assembler = if view.layers.is_empty() {
            CacheAssembler::new()
        } else {
            CacheAssembler::refining(view)
        };
        let mut assembler = assembler.every_position(self.every_position);
        let own =
            |e: kvwire::AssembleError| SharerError::Worker(format!("re-decoding own frame: {e}"));
        for record in records {
            assembler.push_record(record).map_err(own)?;
        }
        self.view = assembler.finish().map_err(own)?;
        Ok(())
    }

    /// `full - held` at `positions` (each held) of one layer, K then V; `full` holds the
    /// full-precision rows at the same positions.
    pub fn residual_rows(
        &self,
        full: HostLayer,
        layer: usize,
        positions: &[u32],
    ) -> Result<HostLayer, SharerError> {
        let (k, v) = self
            .view
            .gather(layer, positions)
            .map_err(|e| SharerError::Worker(format!("residual rows: {e}")))?;
        let sub = |a: Vec<f32>, b: Vec<f32>| a.iter().zip(&b).map(|(x, y)| x - y).collect();
        Ok(HostLayer {
            k: sub(full.k, k),
            v: sub(full.v, v),
        })
    }
}
