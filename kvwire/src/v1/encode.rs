//! v1 encoder.

use super::{IndexWidth, MAGIC, V1Header, V1Options, json, sections_for};
use crate::error::EncodeError;
use crate::layer::LayerKv;
use crate::limits::MAX_JSON_LEN;
use crate::quant::{QuantParams, quantize_tensor};
use crate::reader::append_le;

/// Encodes one layer as a v1 blob.
pub fn encode(layer: &LayerKv<'_>, opts: &V1Options) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(layer, opts, &mut out)?;
    Ok(out)
}

/// Appends one layer's v1 blob to `out` (on error `out` keeps its original length).
pub fn encode_into(
    layer: &LayerKv<'_>,
    opts: &V1Options,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    layer.validate()?;
    let (positions, order) = layer.sorted_positions();
    let max_position = positions.last().copied().unwrap_or(0);
    let width = IndexWidth::resolve(opts.index_dtype, max_position).ok_or_else(|| {
        let slot = layer
            .indices
            .iter()
            .position(|&p| p > u32::from(u16::MAX))
            .unwrap_or(0);
        EncodeError::IndexOverflow {
            slot,
            position: layer.indices.get(slot).copied().unwrap_or(max_position),
            dtype: "uint16",
        }
    })?;
    let shape = layer.shape;
    let sections = sections_for(opts.mode, opts.granularity, width, shape, shape, shape[2]);
    let header = V1Header {
        mode: opts.mode,
        index_width: width,
        scale_dtype: opts.scale_dtype,
        granularity: opts.granularity,
        k_shape: shape,
        v_shape: shape,
        indices_len: shape[2],
        sections,
        json_len: 0,
    };
    let text = json::write_header(&header);
    if text.len() > MAX_JSON_LEN {
        return Err(EncodeError::TooLarge {
            field: "json_len",
            value: text.len() as u64,
            max: MAX_JSON_LEN as u64,
        });
    }
    let params = QuantParams {
        mode: opts.mode,
        granularity: opts.granularity,
        scale_dtype: opts.scale_dtype,
    };
    let start = out.len();
    let body = sections.indices + sections.k_quant + sections.v_quant + sections.scales;
    out.reserve(MAGIC.len() + 4 + text.len() + body);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
    match width {
        IndexWidth::U16 => append_le(out, positions.iter().map(|&p| (p as u16).to_le_bytes())),
        IndexWidth::U32 => append_le(out, positions.iter().map(|&p| p.to_le_bytes())),
    }
    let mut scales = Vec::with_capacity(sections.scales / 2);
    let result = quantize_tensor(layer.k, shape, &order, params, "k", out, &mut scales)
        .and_then(|()| quantize_tensor(layer.v, shape, &order, params, "v", out, &mut scales));
    if let Err(e) = result {
        out.truncate(start);
        return Err(e);
    }
    append_le(out, scales.iter().map(|s| s.to_le_bytes()));
    Ok(())
}
