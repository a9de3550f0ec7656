//! Incremental decoding of a KVWire v2 transfer into a host cache, with the byte accounting of
//! every frame. Pure: the gRPC client feeds it one frame at a time as messages arrive.

use kvwire::Breakdown;
use kvwire::v2::{
    FrameHeader, FrameKind, FrameOptions, IndexEncoding, SessionHeader, decode_frame_ref,
    estimate_frame_bytes,
};

use crate::error::ReceiverError;

/// One layer's dequantized K and V, `[1, H, n, D]` over the transfer's positions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodedLayer {
    /// Keys.
    pub k: Vec<f32>,
    /// Values.
    pub v: Vec<f32>,
}

/// The sharer cache as the receiver holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DecodedCache {
    /// The sharer's model id (session header).
    pub sharer_model: String,
    /// Prompt length on the sharer (from the session header).
    pub prompt_tokens: usize,
    /// KV heads.
    pub heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Positions held, ascending (same for every layer).
    pub positions: Vec<u32>,
    /// One entry per sharer layer.
    pub layers: Vec<DecodedLayer>,
}

/// Accumulates a transfer: session header, then frames in any layer order.
#[derive(Debug, Default)]
pub struct TransferDecoder {
    header: Option<SessionHeader>,
    cache: DecodedCache,
    seen: Vec<bool>,
    base_positions: Vec<u32>,
    /// Bytes by section over every record so far.
    pub breakdown: Breakdown,
    /// Records (session header and frames) so far.
    pub records: usize,
    /// kvwire's formula for the same records (drift report).
    pub estimated: u64,
}

impl TransferDecoder {
    /// A decoder for a new transfer (round 1).
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder that refines `cache` (round 2 and later).
    pub fn refining(cache: DecodedCache) -> Self {
        Self {
            cache,
            ..Self::default()
        }
    }

    /// Feeds one record: the session header first, then frames.
    pub fn push(&mut self, record: &[u8]) -> Result<(), ReceiverError> {
        self.records += 1;
        let Some(header) = &self.header else {
            let header = SessionHeader::decode(record)?;
            self.breakdown.header += record.len() as u64;
            self.estimated += header.encoded_len() as u64;
            self.start(header)?;
            return Ok(());
        };
        // Borrowed: the payload is read in place, dequantized by the whole-tensor kernels.
        let frame = decode_frame_ref(record)?;
        self.breakdown += frame.breakdown();
        let h = frame.header();
        self.estimated += estimate_of(h, frame.indices().last().copied().unwrap_or(0));
        let layer = usize::from(h.layer);
        let [b, heads, _, d] = frame.shape();
        if layer >= usize::from(header.layers)
            || b != 1
            || heads != self.cache.heads
            || d != self.cache.head_dim
        {
            return Err(ReceiverError::Transfer(format!(
                "frame layer {layer} shape {:?} does not match the session ({} layers, {} heads, {} dims)",
                frame.shape(),
                header.layers,
                self.cache.heads,
                self.cache.head_dim
            )));
        }
        if std::mem::replace(&mut self.seen[layer], true) {
            return Err(ReceiverError::Transfer(format!(
                "layer {layer} sent twice in one round"
            )));
        }
        let positions = frame.indices();
        if positions
            .iter()
            .any(|&p| p as usize + 1 >= self.cache.prompt_tokens)
        {
            return Err(ReceiverError::Transfer(
                "a frame position is outside the shareable prompt".into(),
            ));
        }
        let (k, v) = frame.dequantize();
        match h.kind {
            FrameKind::Base => self.store(layer, &positions, k, v),
            FrameKind::Residual => self.add(layer, &positions, &k, &v),
        }
    }

    fn start(&mut self, header: SessionHeader) -> Result<(), ReceiverError> {
        let layers = usize::from(header.layers);
        if self.cache.layers.is_empty() {
            self.cache = DecodedCache {
                sharer_model: header.sharer_model.clone(),
                prompt_tokens: header.tokens as usize,
                heads: usize::from(header.kv_heads),
                head_dim: usize::from(header.head_dim),
                positions: Vec::new(),
                layers: vec![DecodedLayer::default(); layers],
            };
        } else if self.cache.layers.len() != layers
            || self.cache.prompt_tokens != header.tokens as usize
        {
            return Err(ReceiverError::Transfer(
                "refinement session header does not match round 1".into(),
            ));
        }
        self.seen = vec![false; layers];
        self.base_positions = self.cache.positions.clone();
        self.header = Some(header);
        Ok(())
    }

    /// Stores new positions: merged with those held before this round, in ascending order.
    fn store(
        &mut self,
        layer: usize,
        positions: &[u32],
        k: Vec<f32>,
        v: Vec<f32>,
    ) -> Result<(), ReceiverError> {
        let (heads, d) = (self.cache.heads, self.cache.head_dim);
        let base = &self.base_positions;
        let mut merged: Vec<(u32, bool, usize)> = base
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, false, i))
            .collect();
        merged.extend(positions.iter().enumerate().map(|(i, &p)| (p, true, i)));
        merged.sort_unstable_by_key(|m| m.0);
        if merged.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(ReceiverError::Transfer(format!(
                "layer {layer} received a position it already holds"
            )));
        }
        let merged_positions: Vec<u32> = merged.iter().map(|m| m.0).collect();
        let first_of_round = self.seen.iter().filter(|s| **s).count() == 1;
        if !first_of_round && merged_positions != self.cache.positions {
            return Err(ReceiverError::Transfer(format!(
                "layer {layer} positions differ from other layers"
            )));
        }
        let l = &mut self.cache.layers[layer];
        if base.is_empty() {
            l.k = k;
            l.v = v;
        } else {
            let (n_old, n_new) = (base.len(), positions.len());
            let rebuild = |old: &[f32], new: &[f32]| {
                let mut out = Vec::with_capacity((n_old + n_new) * heads * d);
                for h in 0..heads {
                    for &(_, is_new, i) in &merged {
                        let (src, n) = if is_new { (new, n_new) } else { (old, n_old) };
                        out.extend_from_slice(&src[(h * n + i) * d..][..d]);
                    }
                }
                out
            };
            l.k = rebuild(&l.k, &k);
            l.v = rebuild(&l.v, &v);
        }
        self.cache.positions = merged_positions;
        Ok(())
    }

    fn add(
        &mut self,
        layer: usize,
        positions: &[u32],
        k: &[f32],
        v: &[f32],
    ) -> Result<(), ReceiverError> {
        let (heads, d) = (self.cache.heads, self.cache.head_dim);
        let held = &self.base_positions;
        let rows: Vec<usize> = positions
            .iter()
            .map(|p| {
                held.binary_search(p).map_err(|_| {
                    ReceiverError::Transfer(format!("residual for position {p} not held"))
                })
            })
            .collect::<Result<_, _>>()?;
        let l = &mut self.cache.layers[layer];
        let n = held.len();
        for h in 0..heads {
            for (i, &row) in rows.iter().enumerate() {
                let (dst, src) = ((h * n + row) * d, (h * positions.len() + i) * d);
                l.k[dst..dst + d]
                    .iter_mut()
                    .zip(&k[src..src + d])
                    .for_each(|(a, b)| *a += b);
                l.v[dst..dst + d]
                    .iter_mut()
                    .zip(&v[src..src + d])
                    .for_each(|(a, b)| *a += b);
            }
        }
        Ok(())
    }

    /// The session header, once received.
    pub fn header(&self) -> Option<&SessionHeader> {
        self.header.as_ref()
    }

    /// The cache, when every layer of the round arrived.
    pub fn finish(self) -> Result<DecodedCache, ReceiverError> {
        let header = self
            .header
            .ok_or_else(|| ReceiverError::Transfer("no session header".into()))?;
        let got = self.seen.iter().filter(|s| **s).count();
        if got != usize::from(header.layers) {
            return Err(ReceiverError::Transfer(format!(
                "{got} of {} layers arrived",
                header.layers
            )));
        }
        Ok(self.cache)
    }
}

/// kvwire's size formula for a frame with this header.
fn estimate_of(h: &FrameHeader, max_position: u32) -> u64 {
    let opts = FrameOptions {
        payload: h.payload,
        granularity: h.granularity,
        scale_dtype: h.scale_dtype,
        layer: h.layer,
        group: h.group,
        round: h.round,
        kind: h.kind,
        entropy: h.entropy,
    };
    let n_indices = match h.index {
        IndexEncoding::Contiguous { .. } => 0,
        IndexEncoding::U16 | IndexEncoding::U32 => h.shape[2],
    };
    estimate_frame_bytes(&opts, h.shape, n_indices, max_position)
}
