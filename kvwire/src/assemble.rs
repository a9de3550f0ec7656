//! The cache a transfer builds, and the one routine that applies frames to it.
//!
//! A receiver applies every frame it gets to a [`HostCache`]; a sharer that keeps a session for
//! refinement applies every frame it sends to its own copy, so that a residual upgrade carries
//! exactly `full - held`. Both run [`CacheAssembler`]: the two views cannot drift apart.
//!
//! Round rules (kvwire/FORMAT.md, "Rounds"): a round starts with its session header. Each sharer
//! layer then receives either one residual frame, which adds its values to positions the cache
//! held before the round, or one or more base frames, each of its own precision group, over
//! disjoint positions the cache does not hold yet (merged in ascending order). When the round
//! ends every layer holds the same positions, and as many frames arrived as the header announced.
//! Pure and synchronous; buffers are reused across frames and, through
//! [`HostCache::into_buffers`] and [`CacheAssembler::reusing`], across transfers.
//! Over 400 lines on purpose: every round rule is checked here and only here, so the sharer's
//! record and the receiver's cache cannot disagree on one.

use crate::v2::{FrameKind, FrameRef, SessionHeader, decode_frame_ref};

mod error;
pub use error::AssembleError;

/// One layer's K and V on the host, `[1, H, n, D]` each over the cache's positions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostLayer {
    /// Keys (post-RoPE).
    pub k: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
}

/// A sharer cache as a transfer delivered it: the rows of the positions held, every layer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostCache {
    /// The sharer's model id (session header).
    pub sharer_model: String,
    /// Tokens of the sharer prompt (session header).
    pub prompt_tokens: usize,
    /// KV heads.
    pub heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Positions held, strictly ascending, the same for every layer.
    pub positions: Vec<u32>,
    /// One entry per sharer layer.
    pub layers: Vec<HostLayer>,
}

impl HostCache {
    /// The rows at `positions` (each held) of one layer, K then V, `[1, H, n, D]`.
    pub fn gather(
        &self,
        layer: usize,
        positions: &[u32],
    ) -> Result<(Vec<f32>, Vec<f32>), AssembleError> {
        let rows = self.rows_of(positions)?;
        let l = self
            .layers
            .get(layer)
            .ok_or(AssembleError::NoSuchLayer { layer })?;
        let n = self.positions.len();
        let pick = |data: &[f32]| gather_rows(data, self.heads, n, self.head_dim, &rows);
        Ok((pick(&l.k), pick(&l.v)))
    }

    /// The row index of each of `positions` in this cache.
    fn rows_of(&self, positions: &[u32]) -> Result<Vec<usize>, AssembleError> {
        positions
            .iter()
            .map(|&position| {
                self.positions
                    .binary_search(&position)
                    .map_err(|_| AssembleError::NotHeld { position })
            })
            .collect()
    }

    /// The layer buffers, for a later transfer to decode into ([`CacheAssembler::reusing`]).
    pub fn into_buffers(self) -> Vec<HostLayer> {
        self.layers
    }
}

/// Rows `rows` of a `[1, heads, n, d]` tensor, `[1, heads, rows.len(), d]`.
pub fn gather_rows(data: &[f32], heads: usize, n: usize, d: usize, rows: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(heads * rows.len() * d);
    for h in 0..heads {
        for &r in rows {
            out.extend_from_slice(&data[(h * n + r) * d..][..d]);
        }
    }
    out
}

/// The frames one layer received in the current round.
#[derive(Debug, Clone, Default, PartialEq)]
enum LayerRound {
    /// None yet.
    #[default]
    Nothing,
    /// Base frames of these precision groups.
    Base(Vec<u8>),
    /// One residual frame.
    Residual,
}

/// Applies one round's records to a host cache.
#[derive(Debug, Default)]
pub struct CacheAssembler {
    header: Option<SessionHeader>,
    cache: HostCache,
    /// Buffers to decode into (from an earlier transfer).
    spare: Vec<HostLayer>,
    /// What each layer received in this round.
    received: Vec<LayerRound>,
    /// Frames of this round so far.
    frames: usize,
    /// Positions held before this round.
    base_positions: Vec<u32>,
    /// Positions each layer holds now (they may differ until the round ends).
    layer_positions: Vec<Vec<u32>>,
    /// Scratch for residual rows and merges, reused across frames.
    scratch: HostLayer,
    /// Rows of the prompt's last position are accepted too (see [`Self::every_position`]).
    every_position: bool,
}

impl CacheAssembler {
    /// An assembler for a new transfer (round 1).
    pub fn new() -> Self {
        Self::default()
    }

    /// An assembler for a new transfer that decodes into `buffers` (from
    /// [`HostCache::into_buffers`]) instead of fresh allocations.
    pub fn reusing(buffers: Vec<HostLayer>) -> Self {
        Self {
            spare: buffers,
            ..Self::default()
        }
    }

    /// An assembler that refines `cache` (round 2 and later).
    pub fn refining(cache: HostCache) -> Self {
        Self {
            cache,
            ..Self::default()
        }
    }

    /// Accepts rows of every prompt position, the last one included: the context layout,
    /// where the receiver runs its own tokens after the sharer's whole prompt. By default the
    /// last position is the receiver's to run and a row for it is refused.
    pub fn every_position(mut self, every: bool) -> Self {
        self.every_position = every;
        self
    }

    /// The round's session header, once received.
    pub fn header(&self) -> Option<&SessionHeader> {
        self.header.as_ref()
    }

    /// Applies one record as it came off the wire: the session header first, then frames.
    pub fn push_record(&mut self, record: &[u8]) -> Result<(), AssembleError> {
        if self.header.is_none() {
            self.push_session(SessionHeader::decode(record)?)
        } else {
            self.push_frame(&decode_frame_ref(record)?)
        }
    }

    /// Starts the round.
    pub fn push_session(&mut self, header: SessionHeader) -> Result<(), AssembleError> {
        let layers = usize::from(header.layers);
        let tokens = header.tokens as usize;
        if self.cache.layers.is_empty() {
            let mut buffers = std::mem::take(&mut self.spare);
            buffers.resize_with(layers, HostLayer::default);
            buffers.truncate(layers);
            self.cache = HostCache {
                sharer_model: header.sharer_model.clone(),
                prompt_tokens: tokens,
                heads: usize::from(header.kv_heads),
                head_dim: usize::from(header.head_dim),
                positions: Vec::new(),
                layers: buffers,
            };
        } else if self.cache.layers.len() != layers || self.cache.prompt_tokens != tokens {
            return Err(AssembleError::SessionMismatch {
                round: header.round,
                layers,
                tokens,
                held_layers: self.cache.layers.len(),
                held_tokens: self.cache.prompt_tokens,
            });
        }
        self.received = vec![LayerRound::Nothing; layers];
        self.frames = 0;
        self.base_positions = self.cache.positions.clone();
        self.layer_positions = vec![self.cache.positions.clone(); layers];
        self.header = Some(header);
        Ok(())
    }

    /// Applies one frame of the round: base rows stored, residual rows added.
    pub fn push_frame(&mut self, frame: &FrameRef<'_>) -> Result<(), AssembleError> {
        let layer = self.check_frame(frame)?;
        let positions = frame.indices();
        let shareable = if self.every_position {
            self.cache.prompt_tokens
        } else {
            self.cache.prompt_tokens.saturating_sub(1)
        };
        if let Some(&position) = positions.iter().find(|&&p| p as usize >= shareable) {
            return Err(AssembleError::OutsidePrompt {
                position,
                prompt_tokens: self.cache.prompt_tokens,
            });
        }
        match frame.header().kind {
            FrameKind::Base => self.store(layer, frame, &positions),
            FrameKind::Residual => self.add(layer, frame, &positions),
        }
    }

    /// The frame's layer, after checking it belongs to this round and that the layer may take
    /// it: one residual frame, or base frames of distinct precision groups.
    fn check_frame(&mut self, frame: &FrameRef<'_>) -> Result<usize, AssembleError> {
        let header = self.header.as_ref().ok_or(AssembleError::NoSession)?;
        let layer = usize::from(frame.header().layer);
        let shape = frame.shape();
        let [b, heads, _, d] = shape;
        if layer >= usize::from(header.layers)
            || b != 1
            || heads != self.cache.heads
            || d != self.cache.head_dim
        {
            return Err(AssembleError::Shape {
                layer,
                shape,
                layers: usize::from(header.layers),
                heads: self.cache.heads,
                head_dim: self.cache.head_dim,
            });
        }
        let group = frame.header().group;
        let received = &mut self.received[layer];
        match (frame.header().kind, &mut *received) {
            (FrameKind::Base, LayerRound::Base(groups)) if groups.contains(&group) => {
                return Err(AssembleError::DuplicateGroup { layer, group });
            }
            (FrameKind::Base, LayerRound::Base(groups)) => groups.push(group),
            (FrameKind::Base, LayerRound::Nothing) => *received = LayerRound::Base(vec![group]),
            (FrameKind::Residual, LayerRound::Nothing) => *received = LayerRound::Residual,
            (FrameKind::Residual, LayerRound::Residual) => {
                return Err(AssembleError::DuplicateLayer { layer });
            }
            (_, _) => return Err(AssembleError::MixedKinds { layer }),
        }
        self.frames += 1;
        Ok(layer)
    }

    /// Stores new positions, merged with those the layer holds in ascending order.
    fn store(
        &mut self,
        layer: usize,
        frame: &FrameRef<'_>,
        positions: &[u32],
    ) -> Result<(), AssembleError> {
        let held = &self.layer_positions[layer];
        let merged = merge_positions(held, positions, layer)?;
        let (heads, d) = (self.cache.heads, self.cache.head_dim);
        let elements = heads * positions.len() * d;
        let l = &mut self.cache.layers[layer];
        if held.is_empty() {
            resize(l, elements);
            frame.dequantize_into(&mut l.k, &mut l.v)?;
        } else {
            resize(&mut self.scratch, elements);
            frame.dequantize_into(&mut self.scratch.k, &mut self.scratch.v)?;
            let n_old = held.len();
            let new = (&self.scratch, positions.len());
            l.k = interleave(&merged, (&l.k, n_old), (&new.0.k, new.1), heads, d);
            l.v = interleave(&merged, (&l.v, n_old), (&new.0.v, new.1), heads, d);
        }
        self.layer_positions[layer] = merged.iter().map(|m| m.position).collect();
        Ok(())
    }

    /// Adds residual rows to positions held before this round.
    fn add(
        &mut self,
        layer: usize,
        frame: &FrameRef<'_>,
        positions: &[u32],
    ) -> Result<(), AssembleError> {
        let held = &self.base_positions;
        let rows = positions
            .iter()
            .map(|&position| {
                held.binary_search(&position)
                    .map_err(|_| AssembleError::NotHeld { position })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (heads, d) = (self.cache.heads, self.cache.head_dim);
        resize(&mut self.scratch, heads * positions.len() * d);
        frame.dequantize_into(&mut self.scratch.k, &mut self.scratch.v)?;
        let l = &mut self.cache.layers[layer];
        let n = held.len();
        for (held, add) in [(&mut l.k, &self.scratch.k), (&mut l.v, &self.scratch.v)] {
            for h in 0..heads {
                for (i, &row) in rows.iter().enumerate() {
                    let dst = &mut held[(h * n + row) * d..][..d];
                    let src = &add[(h * positions.len() + i) * d..][..d];
                    dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
                }
            }
        }
        Ok(())
    }

    /// The cache, once every layer of the round arrived and holds the same positions.
    pub fn finish(mut self) -> Result<HostCache, AssembleError> {
        let header = self.header.ok_or(AssembleError::NoSession)?;
        let got = self
            .received
            .iter()
            .filter(|r| **r != LayerRound::Nothing)
            .count();
        let expected = usize::from(header.layers);
        if got != expected {
            return Err(AssembleError::MissingLayers { got, expected });
        }
        // As the stream decoder: a header that announced frames (0: not known) gets them all,
        // and no more.
        let frames = self.frames as u64;
        let announced = u64::from(header.frames);
        if announced != 0 && frames < announced {
            return Err(AssembleError::MissingFrames {
                got: self.frames,
                announced: header.frames,
            });
        }
        if announced != 0 && frames > announced {
            return Err(AssembleError::ExtraFrames {
                got: self.frames,
                announced: header.frames,
            });
        }
        let mut layers = self.layer_positions.into_iter().enumerate();
        let first = layers.next().map(|(_, p)| p).unwrap_or_default();
        if let Some((layer, _)) = layers.find(|(_, p)| *p != first) {
            return Err(AssembleError::PositionsDiffer { layer });
        }
        self.cache.positions = first;
        Ok(self.cache)
    }
}

/// A position of the merged cache and where its rows come from.
struct MergedRow {
    position: u32,
    /// From this round's frame (else from the rows held before it).
    is_new: bool,
    /// Row index in its source.
    row: usize,
}

/// Held and new positions in ascending order; a position in both is an error.
fn merge_positions(
    held: &[u32],
    new: &[u32],
    layer: usize,
) -> Result<Vec<MergedRow>, AssembleError> {
    let mut merged: Vec<MergedRow> = held
        .iter()
        .enumerate()
        .map(|(row, &position)| MergedRow {
            position,
            is_new: false,
            row,
        })
        .collect();
    merged.extend(new.iter().enumerate().map(|(row, &position)| MergedRow {
        position,
        is_new: true,
        row,
    }));
    merged.sort_unstable_by_key(|m| m.position);
    if let Some(w) = merged.windows(2).find(|w| w[0].position == w[1].position) {
        return Err(AssembleError::AlreadyHeld {
            layer,
            position: w[0].position,
        });
    }
    Ok(merged)
}

/// The `[1, heads, merged.len(), d]` tensor whose rows come from `old` or `new` (each
/// `(data, rows)`) as `merged` says.
fn interleave(
    merged: &[MergedRow],
    old: (&[f32], usize),
    new: (&[f32], usize),
    heads: usize,
    d: usize,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(merged.len() * heads * d);
    for h in 0..heads {
        for m in merged {
            let (src, n) = if m.is_new { new } else { old };
            out.extend_from_slice(&src[(h * n + m.row) * d..][..d]);
        }
    }
    out
}

/// Sets both buffers to `elements` values, keeping their allocations.
fn resize(layer: &mut HostLayer, elements: usize) {
    for buf in [&mut layer.k, &mut layer.v] {
        buf.clear();
        buf.resize(elements, 0.0);
    }
}

#[cfg(test)]
mod tests;
