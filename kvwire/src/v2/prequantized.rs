//! v2 frames from payloads quantized elsewhere (a sharer that quantizes on its GPU): the caller
//! hands over each tensor's payload bytes and scale bits, already in wire order, and this
//! module checks their lengths against the shape and writes the frame around them, byte for
//! byte as [`super::encode_frame`] would have written it from the values.

use super::FrameOptions;
use super::frame::{begin_frame, finish_frame};
use crate::error::EncodeError;
use crate::layer::{check_shape, sort_positions};

/// One tensor as it goes on the wire.
#[derive(Debug, Clone, Copy)]
pub struct QuantizedTensor<'a> {
    /// The payload of `[B, H, T, D]` with rows in ascending position order: int8 bytes (two's
    /// complement, `n` bytes), packed int4 (element 2i in the low nibble of byte i, `ceil(n/2)`
    /// bytes) or little-endian fp16 (`2n` bytes), as `FrameOptions::payload` says.
    pub payload: &'a [u8],
    /// Scale bits (fp16 or bf16, as `FrameOptions::scale_dtype` says) in the granularity's
    /// order; empty for an fp16 payload.
    pub scales: &'a [u16],
}

/// One layer's K and V, quantized, with the positions of their T rows.
#[derive(Debug, Clone, Copy)]
pub struct PrequantizedLayer<'a> {
    /// Keys.
    pub k: QuantizedTensor<'a>,
    /// Values.
    pub v: QuantizedTensor<'a>,
    /// `[B, H, T, D]`.
    pub shape: [usize; 4],
    /// Position of each of the T rows, ascending (the rows are already in wire order); empty
    /// means positions `0..T`.
    pub positions: &'a [u32],
}

/// Encodes one pre-quantized layer as one frame.
pub fn encode_prequantized_frame(
    layer: &PrequantizedLayer<'_>,
    opts: &FrameOptions,
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_prequantized_frame_into(layer, opts, &mut out)?;
    Ok(out)
}

/// Appends one pre-quantized frame to `out` (on error `out` keeps its original length).
///
/// Refuses, before writing anything, a shape over the limits, a position count other than T
/// (`ShapeMismatch`), positions that go down (`NotAscending`), and a payload or scale count
/// other than the shape, payload and granularity imply (`ShapeMismatch`, field `k payload`,
/// `v scales`, ...).
pub fn encode_prequantized_frame_into(
    layer: &PrequantizedLayer<'_>,
    opts: &FrameOptions,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let n = check_shape(layer.shape, layer.positions.len())?;
    if let Some(slot) = layer.positions.windows(2).position(|w| w[1] < w[0]) {
        return Err(EncodeError::NotAscending {
            slot: slot + 1,
            position: layer.positions[slot + 1],
        });
    }
    let scale_count = match opts.payload.quant_mode() {
        Some(_) => opts.granularity.scale_count(layer.shape),
        None => 0,
    };
    let checks = [
        (
            "k payload",
            opts.payload.tensor_bytes(n),
            layer.k.payload.len(),
        ),
        (
            "v payload",
            opts.payload.tensor_bytes(n),
            layer.v.payload.len(),
        ),
        ("k scales", scale_count, layer.k.scales.len()),
        ("v scales", scale_count, layer.v.scales.len()),
    ];
    for (field, expected, found) in checks {
        if expected != found {
            return Err(EncodeError::ShapeMismatch {
                field,
                expected,
                found,
            });
        }
    }
    let (positions, _) = sort_positions(layer.positions, layer.shape[2]);
    let regions = begin_frame(layer.shape, &positions, opts, out)?;
    let scale_dst = &mut out[regions.scales_at..regions.payload_at];
    let scales = layer.k.scales.iter().chain(layer.v.scales);
    for (d, s) in scale_dst.chunks_exact_mut(2).zip(scales) {
        d.copy_from_slice(&s.to_le_bytes());
    }
    out.extend_from_slice(layer.k.payload);
    out.extend_from_slice(layer.v.payload);
    finish_frame(out, regions, opts)
}
