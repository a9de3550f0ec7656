//! The v1 JSON header: written by hand (key order and compact form are part of the format),
//! read back by a direct scan of that canonical form, or else with serde_json into a strict
//! schema (the same checks follow either way).

use std::borrow::Cow;

use serde::Deserialize;

use super::{IndexWidth, V1Header, V1Sections};
use crate::error::DecodeError;
use crate::limits::{MAX_DIM, MAX_TOKENS};
use crate::quant::{Granularity, QuantMode, ScaleDtype};

/// Appends the decimal digits of `n`.
fn push_number(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[at..].iter().for_each(|&d| out.push(char::from(d)));
}

/// Appends `[a,b,c,d]`.
fn push_shape(out: &mut String, s: [usize; 4]) {
    out.push('[');
    for (i, &x) in s.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_number(out, x as u64);
    }
    out.push(']');
}

/// The compact JSON text, keys in reference order, no spaces. Written piece by piece without
/// the formatting machinery: it is on the encode path of every blob.
pub(crate) fn write_header(h: &V1Header) -> String {
    let s = &h.sections;
    let mut out = String::with_capacity(400);
    out.push_str(r#"{"version":"kvwire_v1","quant_mode":""#);
    out.push_str(h.mode.name());
    out.push_str(r#"","index_dtype":""#);
    out.push_str(h.index_width.name());
    out.push_str(r#"","scale_dtype":""#);
    out.push_str(h.scale_dtype.name());
    out.push_str(r#"","scale_granularity":""#);
    out.push_str(h.granularity.name());
    out.push_str(r#"","k_shape":"#);
    push_shape(&mut out, h.k_shape);
    out.push_str(r#","v_shape":"#);
    push_shape(&mut out, h.v_shape);
    out.push_str(r#","indices_len":"#);
    push_number(&mut out, h.indices_len as u64);
    out.push_str(r#","sections":{"indices":"#);
    push_number(&mut out, s.indices as u64);
    out.push_str(r#","k_quant":"#);
    push_number(&mut out, s.k_quant as u64);
    out.push_str(r#","v_quant":"#);
    push_number(&mut out, s.v_quant as u64);
    out.push_str(r#","scales":"#);
    push_number(&mut out, s.scales as u64);
    out.push_str(r#"},"scale_meta":{"scale_dtype":""#);
    out.push_str(h.scale_dtype.name());
    out.push_str(r#"","scale_k_shape":"#);
    push_shape(&mut out, h.granularity.scale_shape(h.k_shape));
    out.push_str(r#","scale_v_shape":"#);
    push_shape(&mut out, h.granularity.scale_shape(h.v_shape));
    out.push_str("}}");
    out
}

#[derive(Deserialize)]
struct RawSections {
    indices: u64,
    k_quant: u64,
    v_quant: u64,
    scales: u64,
}

#[derive(Deserialize)]
struct RawScaleMeta<'a> {
    #[serde(borrow)]
    scale_dtype: Cow<'a, str>,
    scale_k_shape: Dims,
    scale_v_shape: Dims,
}

#[derive(Deserialize)]
struct RawHeader<'a> {
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    quant_mode: Cow<'a, str>,
    #[serde(borrow)]
    index_dtype: Cow<'a, str>,
    #[serde(borrow)]
    scale_dtype: Cow<'a, str>,
    #[serde(borrow)]
    scale_granularity: Cow<'a, str>,
    k_shape: Dims,
    v_shape: Dims,
    indices_len: u64,
    sections: RawSections,
    #[serde(borrow)]
    scale_meta: RawScaleMeta<'a>,
}

/// An array of integers as read: its length and its first four entries (no allocation).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Dims {
    len: usize,
    first: [u64; 4],
}

impl Dims {
    fn push(&mut self, x: u64) {
        if let Some(slot) = self.first.get_mut(self.len) {
            *slot = x;
        }
        self.len += 1;
    }
}

impl<'de> Deserialize<'de> for Dims {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Dims;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of integers")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Dims, A::Error> {
                let mut dims = Dims::default();
                while let Some(x) = seq.next_element::<u64>()? {
                    dims.push(x);
                }
                Ok(dims)
            }
        }
        de.deserialize_seq(Visit)
    }
}

/// The header in exactly the form [`write_header`] writes (keys in order, no spaces, plain
/// strings, integers without leading zeros), read without the general parser; `None` for any
/// other form, which serde_json then reads.
fn read_canonical(text: &[u8]) -> Option<RawHeader<'_>> {
    let mut at = 0;
    let lit = |at: &mut usize, l: &str| {
        let end = *at + l.len();
        (text.get(*at..end)? == l.as_bytes()).then(|| *at = end)
    };
    let string = |at: &mut usize| -> Option<Cow<'_, str>> {
        let len = text.get(*at..)?.iter().position(|&b| b == b'"')?;
        let bytes = &text[*at..*at + len];
        // Escapes and control characters: the general parser's business.
        if bytes.iter().any(|&b| b == b'\\' || b < 0x20) {
            return None;
        }
        *at += len + 1;
        std::str::from_utf8(bytes).ok().map(Cow::Borrowed)
    };
    let number = |at: &mut usize| -> Option<u64> {
        let digits = text
            .get(*at..)?
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let d = &text[*at..*at + digits];
        if digits == 0 || (digits > 1 && d[0] == b'0') {
            return None;
        }
        *at += digits;
        d.iter().try_fold(0u64, |n, &b| {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        })
    };
    let dims = |at: &mut usize| -> Option<Dims> {
        let mut dims = Dims::default();
        if text.get(*at) != Some(&b'[') {
            return None;
        }
        *at += 1;
        if text.get(*at) == Some(&b']') {
            *at += 1;
            return Some(dims);
        }
        loop {
            dims.push(number(at)?);
            match text.get(*at)? {
                b',' => *at += 1,
                b']' => {
                    *at += 1;
                    return Some(dims);
                }
                _ => return None,
            }
        }
    };
    lit(&mut at, r#"{"version":""#)?;
    let version = string(&mut at)?;
    lit(&mut at, r#","quant_mode":""#)?;
    let quant_mode = string(&mut at)?;
    lit(&mut at, r#","index_dtype":""#)?;
    let index_dtype = string(&mut at)?;
    lit(&mut at, r#","scale_dtype":""#)?;
    let scale_dtype = string(&mut at)?;
    lit(&mut at, r#","scale_granularity":""#)?;
    let scale_granularity = string(&mut at)?;
    lit(&mut at, r#","k_shape":"#)?;
    let k_shape = dims(&mut at)?;
    lit(&mut at, r#","v_shape":"#)?;
    let v_shape = dims(&mut at)?;
    lit(&mut at, r#","indices_len":"#)?;
    let indices_len = number(&mut at)?;
    lit(&mut at, r#","sections":{"indices":"#)?;
    let indices = number(&mut at)?;
    lit(&mut at, r#","k_quant":"#)?;
    let k_quant = number(&mut at)?;
    lit(&mut at, r#","v_quant":"#)?;
    let v_quant = number(&mut at)?;
    lit(&mut at, r#","scales":"#)?;
    let scales = number(&mut at)?;
    lit(&mut at, r#"},"scale_meta":{"scale_dtype":""#)?;
    let meta_dtype = string(&mut at)?;
    lit(&mut at, r#","scale_k_shape":"#)?;
    let scale_k_shape = dims(&mut at)?;
    lit(&mut at, r#","scale_v_shape":"#)?;
    let scale_v_shape = dims(&mut at)?;
    lit(&mut at, "}}")?;
    (at == text.len()).then_some(RawHeader {
        version,
        quant_mode,
        index_dtype,
        scale_dtype,
        scale_granularity,
        k_shape,
        v_shape,
        indices_len,
        sections: RawSections {
            indices,
            k_quant,
            v_quant,
            scales,
        },
        scale_meta: RawScaleMeta {
            scale_dtype: meta_dtype,
            scale_k_shape,
            scale_v_shape,
        },
    })
}

fn bad(offset: usize, message: String) -> DecodeError {
    DecodeError::Json { offset, message }
}

fn shape4(v: Dims, name: &str, offset: usize) -> Result<[usize; 4], DecodeError> {
    if v.len != 4 {
        return Err(bad(
            offset,
            format!("{name} has {} dims, expected 4", v.len),
        ));
    }
    let arr = v.first;
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
    let raw = match read_canonical(text) {
        Some(raw) => raw,
        None => serde_json::from_slice(text).map_err(|e| bad(offset, e.to_string()))?,
    };
    if raw.version != "kvwire_v1" {
        return Err(bad(
            offset,
            format!("version {:?}, expected \"kvwire_v1\"", raw.version),
        ));
    }
    let mode = match &*raw.quant_mode {
        "int8" => QuantMode::Int8,
        "int4" => QuantMode::Int4,
        other => return Err(bad(offset, format!("quant_mode {other:?}"))),
    };
    let index_width = match &*raw.index_dtype {
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
    let k_shape = shape4(raw.k_shape, "k_shape", offset)?;
    let v_shape = shape4(raw.v_shape, "v_shape", offset)?;
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
    let scale_k = shape4(raw.scale_meta.scale_k_shape, "scale_k_shape", offset)?;
    let scale_v = shape4(raw.scale_meta.scale_v_shape, "scale_v_shape", offset)?;
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

#[cfg(test)]
#[path = "json_tests.rs"]
mod tests;
