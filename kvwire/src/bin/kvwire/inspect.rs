//! `kvwire inspect`: sections, sizes, shapes, dtypes and checksums, as text or JSON.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use kvwire::v2::{Frame, StreamItem};
use kvwire::{Breakdown, Decoded, decode_any};
use serde_json::{Value, json};

fn breakdown_json(b: Breakdown) -> Value {
    json!({"header": b.header, "indices": b.indices, "payload": b.payload, "scales": b.scales, "total": b.total()})
}

fn section(name: &str, offset: usize, bytes: &[u8]) -> Value {
    json!({"name": name, "offset": offset, "bytes": bytes.len(), "crc32c": format!("{:08x}", kvwire::checksum::crc32c(bytes))})
}

fn frame_json(f: &Frame, offset: usize, record: &[u8]) -> Value {
    let h = f.header();
    let stored = record
        .get(record.len().saturating_sub(4)..)
        .map(|c| c.iter().rev().fold(0u32, |a, &b| (a << 8) | u32::from(b)));
    let quantized = h.payload.quant_mode().is_some();
    json!({
        "record": "frame", "offset": offset, "record_len": h.record_len,
        "layer": h.layer, "group": h.group, "round": h.round, "kind": format!("{:?}", h.kind).to_lowercase(),
        "payload": h.payload.name(), "entropy_coded": h.entropy,
        "granularity": if quantized { Value::from(h.granularity.name()) } else { Value::Null },
        "scale_dtype": if quantized { Value::from(h.scale_dtype.name()) } else { Value::Null },
        "scale_shape": if quantized { json!(h.granularity.scale_shape(h.shape)) } else { Value::Null },
        "shape": h.shape, "index_encoding": h.index.name(),
        "first_position": f.indices().first(), "crc32c": stored.map(|c| format!("{c:08x}")), "crc_ok": true,
        "breakdown": breakdown_json(f.breakdown()),
    })
}

/// Describes a file as JSON.
pub fn describe(bytes: &[u8]) -> anyhow::Result<Value> {
    let decoded = decode_any(bytes)?;
    Ok(match decoded {
        Decoded::V1(blob) => {
            let h = &blob.header;
            let s = h.sections;
            let mut at = 12 + h.json_len;
            let mut sections = Vec::new();
            for (name, len) in [
                ("indices", s.indices),
                ("k_quant", s.k_quant),
                ("v_quant", s.v_quant),
                ("scales", s.scales),
            ] {
                sections.push(section(name, at, &bytes[at..at + len]));
                at += len;
            }
            json!({
                "version": "v1", "bytes": bytes.len(), "json_len": h.json_len,
                "json_header": String::from_utf8_lossy(&bytes[12..12 + h.json_len]),
                "quant_mode": h.mode.name(), "index_dtype": h.index_width.name(),
                "scale_dtype": h.scale_dtype.name(), "granularity": h.granularity.name(),
                "k_shape": h.k_shape, "v_shape": h.v_shape, "indices_len": h.indices_len,
                "sections": sections, "crc32c_whole": format!("{:08x}", kvwire::checksum::crc32c(bytes)),
                "breakdown": breakdown_json(blob.breakdown()),
            })
        }
        Decoded::V2(items) => {
            let mut at = 0usize;
            let mut records = Vec::new();
            let mut total = Breakdown::default();
            for item in &items {
                match item {
                    StreamItem::Session(s) => {
                        let len = s.encoded_len();
                        total.header += len as u64;
                        records.push(json!({
                            "record": "session", "offset": at, "record_len": len,
                            "session_id": s.session_id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                            "sharer_model": s.sharer_model, "receiver_model": s.receiver_model,
                            "layers": s.layers, "kv_heads": s.kv_heads, "head_dim": s.head_dim,
                            "tokens": s.tokens, "round": s.round, "frames": s.frames,
                        }));
                        at += len;
                    }
                    StreamItem::Frame(f) => {
                        let len = f.header().record_len;
                        records.push(frame_json(f, at, &bytes[at..at + len]));
                        total += f.breakdown();
                        at += len;
                    }
                }
            }
            json!({"version": "v2", "bytes": bytes.len(), "records": records, "breakdown": breakdown_json(total)})
        }
    })
}

fn print_text(out: &mut impl Write, v: &Value, indent: usize) -> std::io::Result<()> {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                match val {
                    Value::Object(_) => {
                        writeln!(out, "{pad}{k}:")?;
                        print_text(out, val, indent + 2)?;
                    }
                    Value::Array(items) if items.iter().any(Value::is_object) => {
                        writeln!(out, "{pad}{k}:")?;
                        for (i, item) in items.iter().enumerate() {
                            writeln!(out, "{pad}  [{i}]")?;
                            print_text(out, item, indent + 4)?;
                        }
                    }
                    other => writeln!(
                        out,
                        "{pad}{k}: {}",
                        other
                            .as_str()
                            .map_or_else(|| other.to_string(), str::to_string)
                    )?,
                }
            }
        }
        other => writeln!(out, "{pad}{other}")?,
    }
    Ok(())
}

/// `kvwire inspect`.
pub fn run(file: &Path, as_json: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let v = describe(&bytes).with_context(|| format!("decoding {}", file.display()))?;
    let mut out = std::io::stdout().lock();
    if as_json {
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        print_text(&mut out, &v, 0)?;
    }
    out.flush()?;
    Ok(())
}
