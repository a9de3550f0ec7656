//! Incremental decoding of a KVWire v2 transfer into a host cache, with the byte accounting of
//! every record. Pure: the gRPC client feeds it one record at a time as messages arrive; the
//! cache itself is built by kvwire's [`CacheAssembler`] (the routine the sharer runs on what it
//! sends, so both sides hold the same values).

use kvwire::v2::{
    FrameHeader, FrameOptions, IndexEncoding, SessionHeader, decode_frame_ref, estimate_frame_bytes,
};
use kvwire::{AssembleError, Breakdown, CacheAssembler, HostCache, HostLayer};

/// Accumulates one round of a transfer: session header, then frames in any layer order.
#[derive(Debug)]
pub struct TransferDecoder {
    assembler: CacheAssembler,
    /// Bytes by section over every record so far.
    pub breakdown: Breakdown,
    /// Records (session header and frames) so far.
    pub records: usize,
    /// kvwire's formula for the same records (drift report).
    pub estimated: u64,
}

impl TransferDecoder {
    fn with(assembler: CacheAssembler) -> Self {
        Self {
            assembler,
            breakdown: Breakdown::default(),
            records: 0,
            estimated: 0,
        }
    }

    /// A decoder for a new transfer (round 1) that decodes into `buffers` (from an earlier
    /// transfer's [`HostCache::into_buffers`]; empty for fresh ones).
    pub fn new(buffers: Vec<HostLayer>) -> Self {
        Self::with(CacheAssembler::reusing(buffers))
    }

    /// A decoder that refines `cache` (round 2 and later).
    pub fn refining(cache: HostCache) -> Self {
        Self::with(CacheAssembler::refining(cache))
    }

    /// Accepts rows of the sharer prompt's last position too (a Share with `all_positions`:
    /// the context layout).
    pub fn every_position(mut self, every: bool) -> Self {
        self.assembler = self.assembler.every_position(every);
        self
    }

    /// Feeds one record: the session header first, then frames.
    pub fn push(&mut self, record: &[u8]) -> Result<(), AssembleError> {
        self.records += 1;
        if self.assembler.header().is_none() {
            let header = SessionHeader::decode(record)?;
            self.breakdown.header += record.len() as u64;
            self.estimated += header.encoded_len() as u64;
            return self.assembler.push_session(header);
        }
        // Borrowed: the payload is read in place, dequantized by the whole-tensor kernels.
        let frame = decode_frame_ref(record)?;
        self.breakdown += frame.breakdown();
        let max_position = frame.indices().last().copied().unwrap_or(0);
        self.estimated += estimate_of(frame.header(), max_position);
        self.assembler.push_frame(&frame)
    }

    /// The cache, when every layer of the round arrived.
    pub fn finish(self) -> Result<HostCache, AssembleError> {
        self.assembler.finish()
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
