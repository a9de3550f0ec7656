//! Incremental decoding of a v2 byte stream: push bytes as they arrive, take out session
//! headers and frames as soon as each record is complete.

use super::decode::{Frame, decode_frame_at};
use super::record::{RECORD_PREFIX_LEN, TYPE_FRAME, read_prefix};
use super::session::SessionHeader;
use crate::error::DecodeError;
use crate::limits::MAX_STREAM_BUFFER;

/// One complete record of a v2 stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// A session header.
    Session(SessionHeader),
    /// A frame.
    Frame(Frame),
}

/// Buffers stream bytes and yields records as they complete.
///
/// Errors carry absolute stream offsets. After an error the decoder is poisoned: every later
/// call returns the same error (a byte stream cannot be resynchronised safely).
#[derive(Debug, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    start: usize,
    consumed: usize,
    failed: Option<DecodeError>,
    /// Frames the last session header announced (0: not known) and frames since it.
    announced: u32,
    received: u32,
}

impl StreamDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes. Buffering more than [`MAX_STREAM_BUFFER`] unconsumed bytes
    /// poisons the decoder with `TooLarge` (take records out with `next_item` as they arrive).
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let wanted = self.buffered().saturating_add(bytes.len());
        if wanted > MAX_STREAM_BUFFER {
            self.failed = Some(DecodeError::TooLarge {
                field: "stream buffer",
                offset: self.consumed,
                value: wanted as u64,
                max: MAX_STREAM_BUFFER as u64,
            });
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that do not yet form a complete record.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Absolute stream offset of the next record.
    pub fn offset(&self) -> usize {
        self.consumed
    }

    /// The next complete record, `Ok(None)` when more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<StreamItem>, DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.try_next();
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    fn try_next(&mut self) -> Result<Option<StreamItem>, DecodeError> {
        let avail = &self.buf[self.start..];
        if avail.len() < RECORD_PREFIX_LEN {
            // Reject a wrong magic as early as its bytes are here.
            let n = avail.len().min(4);
            if avail[..n] != super::MAGIC[..n] {
                return Err(crate::version::magic_error(&avail[..n], self.consumed));
            }
            return Ok(None);
        }
        let (record_type, len) = read_prefix(avail, self.consumed)?;
        if avail.len() < len {
            return Ok(None);
        }
        let record = &avail[..len];
        let item = if record_type == TYPE_FRAME {
            let frame = decode_frame_at(record, self.consumed)?;
            self.received = self.received.saturating_add(1);
            StreamItem::Frame(frame)
        } else {
            let session = SessionHeader::decode_at(record, self.consumed)?;
            // The round before must be complete before the next one opens.
            self.check_round_complete()?;
            (self.announced, self.received) = (session.frames, 0);
            StreamItem::Session(session)
        };
        self.start += len;
        self.consumed += len;
        Ok(Some(item))
    }

    /// Ends the stream: an error if bytes of an incomplete record remain (`Truncated`), or if
    /// the last session header announced more frames than arrived (`MissingFrames`; a header
    /// with `frames == 0` announces none and is not checked).
    pub fn finish(&self) -> Result<(), DecodeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.buffered() {
            0 => self.check_round_complete(),
            n => Err(DecodeError::Truncated {
                field: "record",
                offset: self.consumed,
                needed: self.pending_len().unwrap_or(RECORD_PREFIX_LEN),
                available: n,
            }),
        }
    }

    /// `MissingFrames` when the current round announced more frames than arrived.
    fn check_round_complete(&self) -> Result<(), DecodeError> {
        if self.announced != 0 && self.received < self.announced {
            return Err(DecodeError::MissingFrames {
                offset: self.consumed,
                announced: self.announced,
                received: self.received,
            });
        }
        Ok(())
    }

    fn pending_len(&self) -> Option<usize> {
        read_prefix(&self.buf[self.start..], self.consumed)
            .ok()
            .map(|(_, l)| l)
    }
}

/// Decodes a complete v2 stream held in memory.
pub fn decode_stream(bytes: &[u8]) -> Result<Vec<StreamItem>, DecodeError> {
    let mut dec = StreamDecoder::new();
    dec.push(bytes);
    let mut items = Vec::new();
    while let Some(item) = dec.next_item()? {
        items.push(item);
    }
    dec.finish()?;
    Ok(items)
}
