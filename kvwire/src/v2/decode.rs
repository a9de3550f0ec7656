//! v2 frame decoding: [`FrameRef`] borrows the input (no copy of the payload), [`Frame`] owns
//! its data (what [`super::StreamDecoder`] hands out). Both dequantize the same way.
//! Over 400 lines on purpose: the borrowing and the owning decoder run one set of checks and
//! one dequantize path, kept side by side so they cannot diverge.

use std::borrow::Cow;

use super::Payload;
use super::header::{FrameHeader, IndexEncoding};
use super::record::{
    FRAME_HEADER_LEN, RECORD_TRAILER_LEN, checked_record, checksum_matches, record_parts,
};
use crate::breakdown::Breakdown;
use crate::error::DecodeError;
use half::f16;
use half::slice::HalfFloatSliceExt as _;

use crate::quant::{
    OutBuf, dequantize_tensor_le, dequantize_tensor_le_crc, dequantize_tensor_le_f16,
    f16_to_f32_row,
};
use crate::reader::{Reader, le_u16s, le_u32s};

/// One decoded frame: its header, positions, scales and (decoded) payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    header: FrameHeader,
    indices: Vec<u32>,
    k_scales: Vec<u16>,
    v_scales: Vec<u16>,
    payload: Vec<u8>,
    breakdown: Breakdown,
}

/// A checked frame that borrows the buffer it was decoded from: positions, scales and a raw
/// payload stay where they are (an entropy-coded payload is decoded into an owned buffer).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRef<'a> {
    header: FrameHeader,
    indices: &'a [u8],
    k_scales: &'a [u8],
    v_scales: &'a [u8],
    payload: Cow<'a, [u8]>,
    breakdown: Breakdown,
}

/// Decodes a buffer holding exactly one frame (for example one gRPC message).
pub fn decode_frame(buf: &[u8]) -> Result<Frame, DecodeError> {
    decode_frame_at(buf, 0)
}

/// Decodes exactly one frame found at absolute offset `base` of a larger stream.
pub fn decode_frame_at(buf: &[u8], base: usize) -> Result<Frame, DecodeError> {
    decode_frame_ref_at(buf, base).map(FrameRef::into_owned)
}

/// Checks a buffer holding exactly one frame (length, CRC32C, every section) and borrows it.
pub fn decode_frame_ref(buf: &[u8]) -> Result<FrameRef<'_>, DecodeError> {
    decode_frame_ref_at(buf, 0)
}

/// [`decode_frame_ref`] for a frame found at absolute offset `base` (used in error offsets).
pub fn decode_frame_ref_at(buf: &[u8], base: usize) -> Result<FrameRef<'_>, DecodeError> {
    let header = FrameHeader::read(buf, base)?;
    let body = checked_record(buf, base, header.record_len, "frame")?;
    sections(header, body, base)
}

/// Decodes a buffer holding exactly one frame straight into caller buffers of `B*H*T*D` values
/// each, and returns the checked frame (positions, header, breakdown). The same checks and the
/// same errors as [`decode_frame_ref`] followed by [`FrameRef::dequantize_into`], in one pass
/// over the payload: its CRC32C is folded in block by block as the rows are dequantized. The
/// outputs are written before the checksum is known, so on an error they hold unspecified
/// values (never read them after an `Err`).
pub fn decode_frame_into<'a>(
    buf: &'a [u8],
    k: &mut [f32],
    v: &mut [f32],
) -> Result<FrameRef<'a>, DecodeError> {
    decode_into(buf, 0, k, v)
}

/// [`decode_frame_into`] rounded to fp16, as [`FrameRef::dequantize_into_f16`].
pub fn decode_frame_into_f16<'a>(
    buf: &'a [u8],
    k: &mut [f16],
    v: &mut [f16],
) -> Result<FrameRef<'a>, DecodeError> {
    decode_into(buf, 0, k, v)
}

/// The value types a frame decodes into.
trait Decoded: Sized {
    /// The buffer for the fused kernel.
    fn out(x: &mut [Self]) -> OutBuf<'_>;
    /// The checked way: [`FrameRef::dequantize_into`] or its fp16 form.
    fn dequantize(frame: &FrameRef<'_>, k: &mut [Self], v: &mut [Self]) -> Result<(), DecodeError>;
}

impl Decoded for f32 {
    fn out(x: &mut [Self]) -> OutBuf<'_> {
        OutBuf::F32(x)
    }
    fn dequantize(frame: &FrameRef<'_>, k: &mut [Self], v: &mut [Self]) -> Result<(), DecodeError> {
        frame.dequantize_into(k, v)
    }
}

impl Decoded for f16 {
    fn out(x: &mut [Self]) -> OutBuf<'_> {
        OutBuf::F16(x)
    }
    fn dequantize(frame: &FrameRef<'_>, k: &mut [Self], v: &mut [Self]) -> Result<(), DecodeError> {
        frame.dequantize_into_f16(k, v)
    }
}

fn decode_into<'a, T: Decoded>(
    buf: &'a [u8],
    base: usize,
    k: &mut [T],
    v: &mut [T],
) -> Result<FrameRef<'a>, DecodeError> {
    // The fused pass takes a raw quantized frame that parses and fits the outputs; anything
    // else (and every malformed frame) goes the checked way, which reports the canonical error.
    let parts = FrameHeader::read(buf, base).ok().and_then(|header| {
        let (body, stored) = record_parts(buf, base, header.record_len, "frame").ok()?;
        let frame = sections(header, body, base).ok()?;
        let n = header.elements();
        let fits = !header.entropy && k.len() == n && v.len() == n;
        let mode = header.payload.quant_mode().filter(|_| fits)?;
        let payload_at = body.len() - frame.payload.len();
        Some((frame, mode, stored, &body[..payload_at]))
    });
    let Some((frame, mode, stored, before)) = parts else {
        let frame = decode_frame_ref_at(buf, base)?;
        T::dequantize(&frame, k, v)?;
        return Ok(frame);
    };
    let h = &frame.header;
    let (kp, vp) = frame.payload.split_at(h.tensor_payload_bytes());
    let (g, sd) = (h.granularity, h.scale_dtype);
    let crc = crate::checksum::crc32c_append(0, before);
    let crc = dequantize_tensor_le_crc(mode, g, h.shape, kp, (frame.k_scales, sd), T::out(k), crc)?;
    let crc = dequantize_tensor_le_crc(mode, g, h.shape, vp, (frame.v_scales, sd), T::out(v), crc)?;
    checksum_matches(base, stored, crc)?;
    Ok(frame)
}

/// The sections of a frame's record body (without its trailer), for the header read from it.
fn sections(header: FrameHeader, body: &[u8], base: usize) -> Result<FrameRef<'_>, DecodeError> {
    let mut r = Reader::new(body, base);
    r.take(FRAME_HEADER_LEN, "frame header")?;
    let t = header.shape[2];
    let indices = r.take(header.index.bytes(t), "indices")?;
    let scale_count = header.scale_count();
    let k_scales = r.take(2 * scale_count, "k scales")?;
    let v_scales = r.take(2 * scale_count, "v scales")?;
    let tensor_bytes = header.tensor_payload_bytes();
    let payload_at = r.offset();
    let stored_payload = r.remaining();
    let payload = if header.entropy {
        Cow::Owned(decode_entropy(
            r.take(stored_payload, "payload")?,
            tensor_bytes,
            header.payload,
            payload_at,
        )?)
    } else {
        if stored_payload != 2 * tensor_bytes {
            return Err(DecodeError::LengthMismatch {
                field: "payload",
                offset: payload_at,
                expected: 2 * tensor_bytes as u64,
                found: stored_payload as u64,
            });
        }
        Cow::Borrowed(r.take(stored_payload, "payload")?)
    };
    let breakdown = Breakdown {
        header: (FRAME_HEADER_LEN + RECORD_TRAILER_LEN) as u64,
        indices: indices.len() as u64,
        payload: stored_payload as u64,
        scales: 4 * scale_count as u64,
    };
    Ok(FrameRef {
        header,
        indices,
        k_scales,
        v_scales,
        payload,
        breakdown,
    })
}

#[cfg(feature = "entropy")]
fn decode_entropy(
    src: &[u8],
    tensor_bytes: usize,
    payload: Payload,
    offset: usize,
) -> Result<Vec<u8>, DecodeError> {
    super::entropy::decode_payload(src, tensor_bytes, payload, offset)
}

#[cfg(not(feature = "entropy"))]
fn decode_entropy(_: &[u8], _: usize, _: Payload, offset: usize) -> Result<Vec<u8>, DecodeError> {
    Err(DecodeError::EntropyUnsupported { offset })
}

impl FrameRef<'_> {
    /// The fixed header fields.
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// `[B, H, T, D]`.
    pub fn shape(&self) -> [usize; 4] {
        self.header.shape
    }

    /// Bytes by section; `total()` is the record length.
    pub fn breakdown(&self) -> Breakdown {
        self.breakdown
    }

    /// Dequantizes into caller buffers of `B*H*T*D` elements each (see
    /// [`Frame::dequantize_into`]).
    pub fn dequantize_into(&self, k: &mut [f32], v: &mut [f32]) -> Result<(), DecodeError> {
        let scales = (self.k_scales, self.v_scales);
        dequantize_frame(&self.header, &self.payload, scales, k, v)
    }

    /// Sorted token positions of the T rows (decoded from the stored bytes: owned).
    pub fn indices(&self) -> Cow<'_, [u32]> {
        match self.header.index {
            IndexEncoding::Contiguous { start } => Cow::Owned(contiguous(start, self.header.shape)),
            IndexEncoding::U16 => {
                Cow::Owned(le_u16s(self.indices).into_iter().map(u32::from).collect())
            }
            IndexEncoding::U32 => Cow::Owned(le_u32s(self.indices)),
        }
    }

    /// Dequantized K and V, `[B, H, T, D]` f32, rows in [`Self::indices`] order.
    pub fn dequantize(&self) -> (Vec<f32>, Vec<f32>) {
        dequantized(self.header.elements(), |k, v| self.dequantize_into(k, v))
    }

    /// [`Self::dequantize_into`] rounded to fp16 (nearest, ties to even: `f16::from_f32` of
    /// each f32 value), for a cache held as fp16: half the bytes written.
    pub fn dequantize_into_f16(&self, k: &mut [f16], v: &mut [f16]) -> Result<(), DecodeError> {
        let h = &self.header;
        let Some(mode) = h.payload.quant_mode() else {
            // An fp16 payload: through f32, exact both ways.
            let (mut wk, mut wv) = (vec![0f32; k.len()], vec![0f32; v.len()]);
            self.dequantize_into(&mut wk, &mut wv)?;
            k.convert_from_f32_slice(&wk);
            v.convert_from_f32_slice(&wv);
            return Ok(());
        };
        let (kp, vp) = self.payload.split_at(h.tensor_payload_bytes());
        let (g, d) = (h.granularity, h.scale_dtype);
        dequantize_tensor_le_f16(mode, g, h.shape, kp, (self.k_scales, d), k)?;
        dequantize_tensor_le_f16(mode, g, h.shape, vp, (self.v_scales, d), v)
    }

    /// Copies everything into an owned [`Frame`].
    pub fn into_owned(self) -> Frame {
        let indices = match self.header.index {
            IndexEncoding::Contiguous { .. } => Vec::new(),
            IndexEncoding::U16 => le_u16s(self.indices).into_iter().map(u32::from).collect(),
            IndexEncoding::U32 => le_u32s(self.indices),
        };
        Frame {
            header: self.header,
            indices,
            k_scales: le_u16s(self.k_scales),
            v_scales: le_u16s(self.v_scales),
            payload: self.payload.into_owned(),
            breakdown: self.breakdown,
        }
    }
}

/// The positions of a contiguous range: `start` and the next `T - 1`.
fn contiguous(start: u32, shape: [usize; 4]) -> Vec<u32> {
    (0..shape[2] as u32)
        .map(|i| start.wrapping_add(i))
        .collect()
}

/// K and V of `n` values each, filled by `into` (sizes match by construction: it cannot fail).
fn dequantized(
    n: usize,
    into: impl FnOnce(&mut [f32], &mut [f32]) -> Result<(), DecodeError>,
) -> (Vec<f32>, Vec<f32>) {
    let (mut k, mut v) = (vec![0f32; n], vec![0f32; n]);
    let done = into(&mut k, &mut v);
    debug_assert!(done.is_ok());
    (k, v)
}

/// Dequantizes both payloads of a frame (K then V, `tensor_payload_bytes` each; scales as
/// stored, little-endian) or converts an fp16 one into caller buffers.
fn dequantize_frame(
    h: &FrameHeader,
    payload: &[u8],
    (k_scales, v_scales): (&[u8], &[u8]),
    k: &mut [f32],
    v: &mut [f32],
) -> Result<(), DecodeError> {
    let (kp, vp) = payload.split_at(h.tensor_payload_bytes());
    match h.payload.quant_mode() {
        Some(mode) => {
            let (g, d) = (h.granularity, h.scale_dtype);
            dequantize_tensor_le(mode, g, h.shape, kp, (k_scales, d), k)?;
            dequantize_tensor_le(mode, g, h.shape, vp, (v_scales, d), v)
        }
        None => {
            fp16_into(kp, k)?;
            fp16_into(vp, v)
        }
    }
}

/// An fp16 payload (little-endian halves) into f32 values.
fn fp16_into(payload: &[u8], out: &mut [f32]) -> Result<(), DecodeError> {
    if out.len() * 2 != payload.len() {
        return Err(DecodeError::LengthMismatch {
            field: "out",
            offset: 0,
            expected: (payload.len() / 2) as u64,
            found: out.len() as u64,
        });
    }
    // Through a small stack buffer so the row kernel (F16C when present) does the work.
    let mut bits = [0u16; 256];
    for (o, c) in out.chunks_mut(256).zip(payload.chunks(512)) {
        let bits = &mut bits[..o.len()];
        for (b, c) in bits.iter_mut().zip(c.chunks_exact(2)) {
            *b = u16::from_le_bytes([c[0], c[1]]);
        }
        f16_to_f32_row(bits, o);
    }
    Ok(())
}

impl Frame {
    /// The fixed header fields.
    pub fn header(&self) -> &FrameHeader {
        &self.header
    }

    /// `[B, H, T, D]`.
    pub fn shape(&self) -> [usize; 4] {
        self.header.shape
    }

    /// Sorted token positions of the T rows.
    pub fn indices(&self) -> Cow<'_, [u32]> {
        match self.header.index {
            IndexEncoding::Contiguous { start } => Cow::Owned(contiguous(start, self.header.shape)),
            _ => Cow::Borrowed(&self.indices),
        }
    }

    /// Stored K payload bytes (after entropy decoding): fp16 LE, int8, or packed int4.
    pub fn k_payload(&self) -> &[u8] {
        &self.payload[..self.header.tensor_payload_bytes()]
    }

    /// Stored V payload bytes.
    pub fn v_payload(&self) -> &[u8] {
        &self.payload[self.header.tensor_payload_bytes()..]
    }

    /// K scale bits (empty for fp16).
    pub fn k_scales(&self) -> &[u16] {
        &self.k_scales
    }

    /// V scale bits (empty for fp16).
    pub fn v_scales(&self) -> &[u16] {
        &self.v_scales
    }

    /// Bytes by section; `total()` is the record length.
    pub fn breakdown(&self) -> Breakdown {
        self.breakdown
    }

    /// Dequantized K and V, `[B, H, T, D]` f32, rows in [`Frame::indices`] order.
    pub fn dequantize(&self) -> (Vec<f32>, Vec<f32>) {
        dequantized(self.header.elements(), |k, v| self.dequantize_into(k, v))
    }

    /// Dequantizes into caller buffers of `B*H*T*D` elements each.
    pub fn dequantize_into(&self, k: &mut [f32], v: &mut [f32]) -> Result<(), DecodeError> {
        // The scales back in their stored form (2 bytes a row), so the whole-tensor kernel
        // takes the payload as `FrameRef` gives it.
        let le = |s: &[u16]| s.iter().flat_map(|b| b.to_le_bytes()).collect::<Vec<u8>>();
        let scales = (&le(&self.k_scales)[..], &le(&self.v_scales)[..]);
        dequantize_frame(&self.header, &self.payload, scales, k, v)
    }

    /// Adds the dequantized values to `k` and `v`: how a receiver applies a residual frame to
    /// the values it already holds for the same rows.
    pub fn add_dequantized_into(&self, k: &mut [f32], v: &mut [f32]) -> Result<(), DecodeError> {
        let (dk, dv) = self.dequantize();
        for (held, add, field) in [(k, dk, "k"), (v, dv, "v")] {
            if held.len() != add.len() {
                return Err(DecodeError::LengthMismatch {
                    field,
                    offset: 0,
                    expected: add.len() as u64,
                    found: held.len() as u64,
                });
            }
            held.iter_mut().zip(&add).for_each(|(h, a)| *h += a);
        }
        Ok(())
    }
}
