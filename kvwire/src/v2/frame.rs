//! v2 frames: encode one layer's K and V, decode and dequantize one frame.
//!
//! Body layout after the 36-byte header: indices | K scales | V scales | K payload | V payload,
//! then the CRC32C of the whole record before it. An entropy-coded frame replaces the two
//! payloads with `u32 k_coded_len | coded K | coded V`.

use std::borrow::Cow;

use half::f16;
use half::slice::HalfFloatSliceExt as _;

use super::header::{
    FRAME_HEADER_LEN, FrameHeader, IndexEncoding, RECORD_TRAILER_LEN, checked_record,
};
use super::{FrameOptions, Payload};
use crate::breakdown::Breakdown;
use crate::error::{DecodeError, EncodeError};
use crate::layer::{KvData, LayerKv};
use crate::quant::{QuantParams, dequantize_tensor, quantize_tensor, scale_from_bits};
use crate::reader::{Reader, le_u16s, le_u32s};

/// Encodes one layer as one frame.
pub fn encode_frame(layer: &LayerKv<'_>, opts: &FrameOptions) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_frame_into(layer, opts, &mut out)?;
    Ok(out)
}

/// Appends one frame to `out` (on error `out` keeps its original length).
pub fn encode_frame_into(
    layer: &LayerKv<'_>,
    opts: &FrameOptions,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    layer.validate()?;
    if opts.entropy && !cfg!(feature = "entropy") {
        return Err(EncodeError::Unsupported {
            what: "entropy coding without feature `entropy`",
        });
    }
    let (positions, order) = layer.sorted_positions();
    let index = IndexEncoding::for_sorted(&positions);
    let mut header = FrameHeader {
        layer: opts.layer,
        group: opts.group,
        round: opts.round,
        kind: opts.kind,
        payload: opts.payload,
        granularity: opts.granularity,
        scale_dtype: opts.scale_dtype,
        index,
        entropy: opts.entropy,
        shape: layer.shape,
        record_len: 0,
    };
    if opts.payload == Payload::Fp16 {
        header.granularity = crate::quant::Granularity::PerBlock;
        header.scale_dtype = crate::quant::ScaleDtype::Fp16;
    }
    let tensor_bytes = header.tensor_payload_bytes();
    let scale_count = header.scale_count();
    let start = out.len();
    out.reserve(
        FRAME_HEADER_LEN
            + index.bytes(positions.len())
            + 4 * scale_count
            + 2 * tensor_bytes
            + RECORD_TRAILER_LEN,
    );
    header.write(out);
    match index {
        IndexEncoding::Contiguous { .. } => {}
        IndexEncoding::U16 => positions
            .iter()
            .for_each(|&p| out.extend_from_slice(&(p as u16).to_le_bytes())),
        IndexEncoding::U32 => positions
            .iter()
            .for_each(|&p| out.extend_from_slice(&p.to_le_bytes())),
    }
    let scales_at = out.len();
    let payload_at = scales_at + 4 * scale_count;
    out.resize(payload_at + 2 * tensor_bytes, 0);
    let (scale_dst, payload) = out[scales_at..].split_at_mut(4 * scale_count);
    let (k_dst, v_dst) = payload.split_at_mut(tensor_bytes);
    let shape = layer.shape;
    let filled = match opts.payload.quant_mode() {
        None => {
            write_fp16(layer.k, shape, &order, k_dst);
            write_fp16(layer.v, shape, &order, v_dst);
            Ok(())
        }
        Some(mode) => {
            let params = QuantParams {
                mode,
                granularity: opts.granularity,
                scale_dtype: opts.scale_dtype,
            };
            let mut scales = Vec::with_capacity(2 * scale_count);
            quantize_tensor(layer.k, shape, &order, params, "k", k_dst, &mut scales)
                .and_then(|()| {
                    quantize_tensor(layer.v, shape, &order, params, "v", v_dst, &mut scales)
                })
                .map(|()| {
                    for (d, s) in scale_dst.chunks_exact_mut(2).zip(scales) {
                        d.copy_from_slice(&s.to_le_bytes());
                    }
                })
        }
    };
    if let Err(e) = filled {
        out.truncate(start);
        return Err(e);
    }
    #[cfg(feature = "entropy")]
    if opts.entropy {
        let coded = super::entropy::encode_payload(&out[payload_at..], tensor_bytes, opts.payload);
        if coded.len() < 2 * tensor_bytes {
            out.truncate(payload_at);
            out.extend_from_slice(&coded);
        } else {
            // Not worth it (tiny frames: the frequency tables outweigh the saving): stay raw.
            out[start + super::header::CODING_OFFSET] = 0;
        }
    }
    let record_len = out.len() - start + RECORD_TRAILER_LEN;
    if record_len > crate::limits::MAX_RECORD_BYTES {
        out.truncate(start);
        return Err(EncodeError::TooLarge {
            field: "record_len",
            value: record_len as u64,
            max: crate::limits::MAX_RECORD_BYTES as u64,
        });
    }
    out[start + 8..start + 12].copy_from_slice(&(record_len as u32).to_le_bytes());
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Writes a tensor as little-endian fp16 with rows in `order`.
fn write_fp16(data: KvData<'_>, shape: [usize; 4], order: &[usize], dst: &mut [u8]) {
    let [b, h, t, d] = shape;
    let mut row32 = vec![0f32; d];
    let mut row16 = vec![f16::ZERO; d];
    for bh in 0..b * h {
        for (to, &src_t) in order.iter().enumerate() {
            let src = (bh * t + src_t) * d;
            match data {
                KvData::F16(s) => row16.copy_from_slice(&s[src..src + d]),
                KvData::F32(s) => {
                    row32.copy_from_slice(&s[src..src + d]);
                    row16.convert_from_f32_slice(&row32);
                }
            }
            let out = &mut dst[(bh * t + to) * d * 2..][..d * 2];
            for (o, x) in out.chunks_exact_mut(2).zip(&row16) {
                o.copy_from_slice(&x.to_bits().to_le_bytes());
            }
        }
    }
}

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

/// Decodes a buffer holding exactly one frame (for example one gRPC message).
pub fn decode_frame(buf: &[u8]) -> Result<Frame, DecodeError> {
    decode_frame_at(buf, 0)
}

/// Decodes exactly one frame found at absolute offset `base` of a larger stream.
pub fn decode_frame_at(buf: &[u8], base: usize) -> Result<Frame, DecodeError> {
    let header = FrameHeader::read(buf, base)?;
    let len = header.record_len;
    let body = checked_record(buf, base, len, "frame")?;
    let mut r = Reader::new(body, base);
    r.take(FRAME_HEADER_LEN, "frame header")?;
    let t = header.shape[2];
    let idx = r.take(header.index.bytes(t), "indices")?;
    let indices = match header.index {
        IndexEncoding::Contiguous { .. } => Vec::new(),
        IndexEncoding::U16 => le_u16s(idx).into_iter().map(u32::from).collect(),
        IndexEncoding::U32 => le_u32s(idx),
    };
    let scale_count = header.scale_count();
    let k_scales = le_u16s(r.take(2 * scale_count, "k scales")?);
    let v_scales = le_u16s(r.take(2 * scale_count, "v scales")?);
    let tensor_bytes = header.tensor_payload_bytes();
    let payload_at = r.offset();
    let stored_payload = r.remaining();
    let payload = if header.entropy {
        decode_entropy(
            r.take(stored_payload, "payload")?,
            tensor_bytes,
            header.payload,
            payload_at,
        )?
    } else {
        if stored_payload != 2 * tensor_bytes {
            return Err(DecodeError::LengthMismatch {
                field: "payload",
                offset: payload_at,
                expected: 2 * tensor_bytes as u64,
                found: stored_payload as u64,
            });
        }
        r.take(stored_payload, "payload")?.to_vec()
    };
    let breakdown = Breakdown {
        header: (FRAME_HEADER_LEN + RECORD_TRAILER_LEN) as u64,
        indices: idx.len() as u64,
        payload: stored_payload as u64,
        scales: 4 * scale_count as u64,
    };
    Ok(Frame {
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
            IndexEncoding::Contiguous { start } => Cow::Owned(
                (0..self.header.shape[2] as u32)
                    .map(|i| start.wrapping_add(i))
                    .collect(),
            ),
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
        let n = self.header.elements();
        let (mut k, mut v) = (vec![0f32; n], vec![0f32; n]);
        // Sizes match by construction, so this cannot fail.
        let done = self.dequantize_into(&mut k, &mut v);
        debug_assert!(done.is_ok());
        (k, v)
    }

    /// Dequantizes into caller buffers of `B*H*T*D` elements each.
    pub fn dequantize_into(&self, k: &mut [f32], v: &mut [f32]) -> Result<(), DecodeError> {
        self.tensor_into(self.k_payload(), &self.k_scales, k)?;
        self.tensor_into(self.v_payload(), &self.v_scales, v)
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

    fn tensor_into(
        &self,
        payload: &[u8],
        scales: &[u16],
        out: &mut [f32],
    ) -> Result<(), DecodeError> {
        let h = &self.header;
        match h.payload.quant_mode() {
            Some(mode) => {
                let s: Vec<f32> = scales
                    .iter()
                    .map(|&b| scale_from_bits(b, h.scale_dtype))
                    .collect();
                dequantize_tensor(mode, h.granularity, h.shape, payload, &s, out)
            }
            None => {
                if out.len() * 2 != payload.len() {
                    return Err(DecodeError::LengthMismatch {
                        field: "out",
                        offset: 0,
                        expected: (payload.len() / 2) as u64,
                        found: out.len() as u64,
                    });
                }
                for (o, c) in out.iter_mut().zip(payload.chunks_exact(2)) {
                    *o = crate::quant::f16_bits_to_f32(u16::from_le_bytes([c[0], c[1]]));
                }
                Ok(())
            }
        }
    }
}
