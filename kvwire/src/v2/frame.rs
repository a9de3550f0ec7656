//! v2 frames: encode one layer's K and V into one frame (decoding is in `decode.rs`).
//!
//! Body layout after the 36-byte header: indices | K scales | V scales | K payload | V payload,
//! then the CRC32C of the whole record before it. An entropy-coded frame replaces the two
//! payloads with `u32 k_coded_len | coded K | coded V`.

use half::f16;
use half::slice::HalfFloatSliceExt as _;

use super::header::{FrameHeader, IndexEncoding};
use super::record::{FRAME_HEADER_LEN, RECORD_TRAILER_LEN};
use super::{FrameOptions, Payload};
use crate::error::EncodeError;
use crate::layer::{KvData, LayerKv};
use crate::quant::{QuantParams, quantize_tensor};
use crate::reader::append_le;

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
    let (positions, order) = layer.sorted_positions();
    let regions = begin_frame(layer.shape, &positions, opts, out)?;
    if let Err(e) = write_payloads(layer, opts, &order, out, regions) {
        out.truncate(regions.start);
        return Err(e);
    }
    finish_frame(out, regions, opts)
}

/// Appends the header and the index section of a frame over `shape` at the ascending
/// `positions` (exactly T), and a zeroed scales region; returns where the sections go. The
/// caller fills the scales, appends the two raw payloads, then calls [`finish_frame`].
pub(super) fn begin_frame(
    shape: [usize; 4],
    positions: &[u32],
    opts: &FrameOptions,
    out: &mut Vec<u8>,
) -> Result<Regions, EncodeError> {
    if opts.entropy && !cfg!(feature = "entropy") {
        return Err(EncodeError::Unsupported {
            what: "entropy coding without feature `entropy`",
        });
    }
    let index = IndexEncoding::for_sorted(positions);
    let header = frame_header(shape, opts, index);
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
        IndexEncoding::U16 => append_le(out, positions.iter().map(|&p| (p as u16).to_le_bytes())),
        IndexEncoding::U32 => append_le(out, positions.iter().map(|&p| p.to_le_bytes())),
    }
    let scales_at = out.len();
    let payload_at = scales_at + 4 * scale_count;
    // The scales region first (filled once the payload is quantized), then the payloads.
    out.resize(payload_at, 0);
    Ok(Regions {
        start,
        scales_at,
        payload_at,
        tensor_bytes,
    })
}

/// Entropy-codes the payloads when asked (and worth it), then seals the record.
pub(super) fn finish_frame(
    out: &mut Vec<u8>,
    regions: Regions,
    opts: &FrameOptions,
) -> Result<(), EncodeError> {
    #[cfg(feature = "entropy")]
    if opts.entropy {
        let Regions {
            start,
            payload_at,
            tensor_bytes,
            ..
        } = regions;
        entropy_code(out, start, payload_at, tensor_bytes, opts.payload);
    }
    #[cfg(not(feature = "entropy"))]
    let _ = opts;
    seal_record(out, regions.start)
}

/// The frame header for `shape` under `opts` (fp16 payloads carry no scales: their
/// granularity and scale dtype are fixed), `record_len` still 0.
fn frame_header(shape: [usize; 4], opts: &FrameOptions, index: IndexEncoding) -> FrameHeader {
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
        shape,
        record_len: 0,
    };
    if opts.payload == Payload::Fp16 {
        header.granularity = crate::quant::Granularity::PerBlock;
        header.scale_dtype = crate::quant::ScaleDtype::Fp16;
    }
    header
}

/// Where a frame starts in the output, where its scales and payloads start, and one tensor's
/// payload size.
#[derive(Clone, Copy)]
pub(super) struct Regions {
    pub(super) start: usize,
    pub(super) scales_at: usize,
    pub(super) payload_at: usize,
    pub(super) tensor_bytes: usize,
}

/// Appends the K and V payloads (rows in `order`) after `payload_at` and fills the scales
/// region `scales_at..payload_at`.
fn write_payloads(
    layer: &LayerKv<'_>,
    opts: &FrameOptions,
    order: &[usize],
    out: &mut Vec<u8>,
    regions: Regions,
) -> Result<(), EncodeError> {
    let Regions {
        scales_at,
        payload_at,
        tensor_bytes,
        ..
    } = regions;
    let shape = layer.shape;
    let Some(mode) = opts.payload.quant_mode() else {
        out.resize(payload_at + 2 * tensor_bytes, 0);
        let (k_dst, v_dst) = out[payload_at..].split_at_mut(tensor_bytes);
        write_fp16(layer.k, shape, order, k_dst);
        write_fp16(layer.v, shape, order, v_dst);
        return Ok(());
    };
    let params = QuantParams {
        mode,
        granularity: opts.granularity,
        scale_dtype: opts.scale_dtype,
    };
    let mut scales = Vec::with_capacity((payload_at - scales_at) / 2);
    quantize_tensor(layer.k, shape, order, params, "k", out, &mut scales)?;
    quantize_tensor(layer.v, shape, order, params, "v", out, &mut scales)?;
    let scale_dst = &mut out[scales_at..payload_at];
    for (d, s) in scale_dst.chunks_exact_mut(2).zip(scales) {
        d.copy_from_slice(&s.to_le_bytes());
    }
    Ok(())
}

/// Replaces the raw payloads after `payload_at` with their entropy coding when that is smaller
/// and within the expansion bound the decoder enforces (a constant or all-zero tensor codes to a
/// few hundred bytes whatever its size); otherwise clears the header's coding flag.
#[cfg(feature = "entropy")]
fn entropy_code(
    out: &mut Vec<u8>,
    start: usize,
    payload_at: usize,
    tensor_bytes: usize,
    payload: Payload,
) {
    let coded = super::entropy::encode_payload(&out[payload_at..], tensor_bytes, payload);
    let decodable = 2 * tensor_bytes <= crate::limits::max_entropy_decoded_len(coded.len());
    if coded.len() < 2 * tensor_bytes && decodable {
        out.truncate(payload_at);
        out.extend_from_slice(&coded);
    } else {
        // Not worth it (tiny frames: the frequency tables outweigh the saving) or too
        // compressible for the decoder's bound: stay raw.
        out[start + super::header::CODING_OFFSET] = 0;
    }
}

/// Writes the record length into the header at `start` and appends the CRC32C of the record;
/// a record over the format's limit is taken back out of `out`.
fn seal_record(out: &mut Vec<u8>, start: usize) -> Result<(), EncodeError> {
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
    let crc = crate::checksum::crc32c(&out[start..]);
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
