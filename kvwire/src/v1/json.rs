//! The v1 JSON header: written by hand (key order and compact form are part of the format),
//! read with serde_json into a strict schema.

use serde::Deserialize;

use super::{IndexWidth, V1Header, V1Sections};
use crate::error::DecodeError;
use crate::limits::{MAX_DIM, MAX_TOKENS};
use crate::quant::{Granularity, QuantMode, ScaleDtype};

fn shape_json(s: [usize; 4]) -> String {
    format!("[{},{},{},{}]", s[0], s[1], s[2], s[3])
}

/// The compact JSON text, keys in reference order, no spaces.
pub(crate) fn write_header(h: &V1Header) -> String {
    let s = &h.sections;
    format!(
        concat!(
            r#"{{"version":"kvwire_v1","quant_mode":"{}","index_dtype":"{}","scale_dtype":"{}","#,
            r#""scale_granularity":"{}","k_shape":{},"v_shape":{},"indices_len":{},"#,
            r#""sections":{{"indices":{},"k_quant":{},"v_quant":{},"scales":{}}},"#,
            r#""scale_meta":{{"scale_dtype":"{}","scale_k_shape":{},"scale_v_shape":{}}}}}"#
        ),
        h.mode.name(),
        h.index_width.name(),
        h.scale_dtype.name(),
        h.granularity.name(),
        shape_json(h.k_shape),
        shape_json(h.v_shape),
        h.indices_len,
        s.indices,
        s.k_quant,
        s.v_quant,
        s.scales,
        h.scale_dtype.name(),
        shape_json(h.granularity.scale_shape(h.k_shape)),
        shape_json(h.granularity.scale_shape(h.v_shape)),
    )
}

#[derive(Deserialize)]
struct RawSections {
    indices: u64,
    k_quant: u64,
    v_quant: u64,
    scales: u64,
}

#[derive(Deserialize)]
struct RawScaleMeta {
    scale_dtype: String,
    scale_k_shape: Vec<u64>,
    scale_v_shape: Vec<u64>,
}

#[derive(Deserialize)]
struct RawHeader {
    version: String,
    quant_mode: String,
    index_dtype: String,
    scale_dtype: String,
    scale_granularity: String,
    k_shape: Vec<u64>,
    v_shape: Vec<u64>,
    indices_len: u64,
    sections: RawSections,
    scale_meta: RawScaleMeta,
}

fn bad(offset: usize, message: String) -> DecodeError {
    DecodeError::Json { offset, message }
}

fn shape4(v: &[u64], name: &str, offset: usize) -> Result<[usize; 4], DecodeError> {
    let arr: [u64; 4] = v
        .try_into()
        .map_err(|_| bad(offset, format!("{name} has {} dims, expected 4", v.len())))?;
    let limits = [MAX_DIM, MAX_DIM, MAX_TOKENS, MAX_DIM];
    let mut out = [0usize; 4];
    for i in 0..4 {
        if arr[i] > limits[i] as u64 {
            return Err(DecodeError::TooLarge {
                field: "shape dim",
                offset,
                value: arr[i],
                max: limits[i] as u64,
            });
        }
        out[i] = arr[i] as usize;
    }
    Ok(out)
}

/// Parses and checks the JSON text found at absolute offset `offset`.
pub(crate) fn read_header(text: &[u8], offset: usize) -> Result<V1Header, DecodeError> {
    let raw: RawHeader = serde_json::from_slice(text).map_err(|e| bad(offset, e.to_string()))?;
    if raw.version != "kvwire_v1" {
        return Err(bad(
            offset,
            format!("version {:?}, expected \"kvwire_v1\"", raw.version),
        ));
    }
    let mode = match raw.quant_mode.as_str() {
        "int8" => QuantMode::Int8,
        "int4" => QuantMode::Int4,
        other => return Err(bad(offset, format!("quant_mode {other:?}"))),
    };
    let index_width = match raw.index_dtype.as_str() {
        "uint16" => IndexWidth::U16,
        "uint32" => IndexWidth::U32,
        other => return Err(bad(offset, format!("index_dtype {other:?}"))),
    };
    let scale_dtype = ScaleDtype::from_name(&raw.scale_dtype)
        .ok_or_else(|| bad(offset, format!("scale_dtype {:?}", raw.scale_dtype)))?;
    if raw.scale_meta.scale_dtype != raw.scale_dtype {
        return Err(bad(
            offset,
            "scale_meta.scale_dtype differs from scale_dtype".into(),
        ));
    }
    let granularity = Granularity::from_name(&raw.scale_granularity).ok_or_else(|| {
        bad(
            offset,
            format!("scale_granularity {:?}", raw.scale_granularity),
        )
    })?;
    let k_shape = shape4(&raw.k_shape, "k_shape", offset)?;
    let v_shape = shape4(&raw.v_shape, "v_shape", offset)?;
    for (name, shape) in [("k_shape", k_shape), ("v_shape", v_shape)] {
        if crate::layer::checked_elements(shape).is_none() {
            return Err(DecodeError::TooLarge {
                field: name,
                offset,
                value: shape.iter().map(|&d| d as u64).product(),
                max: crate::limits::MAX_TENSOR_ELEMENTS as u64,
            });
        }
    }
    let scale_k = shape4(&raw.scale_meta.scale_k_shape, "scale_k_shape", offset)?;
    let scale_v = shape4(&raw.scale_meta.scale_v_shape, "scale_v_shape", offset)?;
    if scale_k != granularity.scale_shape(k_shape) || scale_v != granularity.scale_shape(v_shape) {
        return Err(bad(
            offset,
            "scale shapes do not match scale_granularity".into(),
        ));
    }
    if raw.indices_len > MAX_TOKENS as u64 {
        return Err(DecodeError::TooLarge {
            field: "indices_len",
            offset,
            value: raw.indices_len,
            max: MAX_TOKENS as u64,
        });
    }
    let indices_len = raw.indices_len as usize;
    if indices_len != k_shape[2] || indices_len != v_shape[2] {
        return Err(DecodeError::LengthMismatch {
            field: "indices_len",
            offset,
            expected: k_shape[2] as u64,
            found: raw.indices_len,
        });
    }
    let mut header = V1Header {
        mode,
        index_width,
        scale_dtype,
        granularity,
        k_shape,
        v_shape,
        indices_len,
        sections: V1Sections {
            indices: 0,
            k_quant: 0,
            v_quant: 0,
            scales: 0,
        },
        json_len: text.len(),
    };
    let want = header.expected_sections();
    let got = &raw.sections;
    let pairs = [
        ("sections.indices", want.indices, got.indices),
        ("sections.k_quant", want.k_quant, got.k_quant),
        ("sections.v_quant", want.v_quant, got.v_quant),
        ("sections.scales", want.scales, got.scales),
    ];
    for (field, expected, found) in pairs {
        if expected as u64 != found {
            return Err(DecodeError::LengthMismatch {
                field,
                offset,
                expected: expected as u64,
                found,
            });
        }
    }
    header.sections = want;
    Ok(header)
}
