//! Golden vectors of the reference implementation (kvwire/FORMAT.md), and the committed files.

use kvwire::v1::{self, IndexDtype, V1Options};
use kvwire::{Granularity, KvData, LayerKv, QuantMode, ScaleDtype};

const K: [f32; 8] = [1.0, -2.0, 3.0, -4.0, 0.5, 0.25, -0.125, 0.0];
const V: [f32; 8] = [0.1, 0.2, 0.3, 0.4, -1.0, 1.0, -0.5, 0.5];
const INDICES: [u32; 2] = [7, 3];
const HEADER_JSON: &str = concat!(
    r#"{"version":"kvwire_v1","quant_mode":"int8","index_dtype":"uint16","scale_dtype":"fp16","#,
    r#""scale_granularity":"per_block","k_shape":[1,1,2,4],"v_shape":[1,1,2,4],"indices_len":2,"#,
    r#""sections":{"indices":4,"k_quant":8,"v_quant":8,"scales":8},"scale_meta":{"scale_dtype":"fp16","#,
    r#""scale_k_shape":[1,1,2,1],"scale_v_shape":[1,1,2,1]}}"#
);

fn layer() -> LayerKv<'static> {
    LayerKv {
        k: KvData::F32(&K),
        v: KvData::F32(&V),
        shape: [1, 1, 2, 4],
        indices: &INDICES,
    }
}

fn opts(mode: QuantMode) -> V1Options {
    V1Options {
        mode,
        granularity: Granularity::PerBlock,
        scale_dtype: ScaleDtype::Fp16,
        index_dtype: IndexDtype::U16,
    }
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn expected_blob(mode: QuantMode, body_hex: &str) -> Vec<u8> {
    let json = match mode {
        QuantMode::Int8 => HEADER_JSON.to_string(),
        QuantMode::Int4 => HEADER_JSON
            .replace("int8", "int4")
            .replace("\"k_quant\":8,\"v_quant\":8", "\"k_quant\":4,\"v_quant\":4"),
    };
    assert_eq!(json.len(), 323);
    let mut blob = b"KVWIRE01".to_vec();
    blob.extend_from_slice(&(json.len() as u32).to_le_bytes());
    blob.extend_from_slice(json.as_bytes());
    blob.extend_from_slice(&hex(body_hex));
    blob
}

const INT8_BODY: &str = "0300 0700 | 7f40e000 20c05f81 | 817fc040 20405f7f | 081c0828 0820731a";
const INT4_BODY: &str = "03000700 370e d295 793d 4275 922c9238 9230502b";

#[test]
fn int8_golden_vector_is_byte_exact() {
    let blob = v1::encode(&layer(), &opts(QuantMode::Int8)).unwrap();
    assert_eq!(blob.len(), 363);
    assert_eq!(blob, expected_blob(QuantMode::Int8, INT8_BODY));
}

#[test]
fn int4_golden_vector_is_byte_exact() {
    let blob = v1::encode(&layer(), &opts(QuantMode::Int4)).unwrap();
    assert_eq!(blob.len(), 355);
    assert_eq!(blob, expected_blob(QuantMode::Int4, INT4_BODY));
}

#[test]
fn golden_vector_decodes_to_sorted_rows_and_breakdown() {
    let blob = expected_blob(QuantMode::Int8, INT8_BODY);
    let decoded = v1::decode(&blob).unwrap();
    assert_eq!(decoded.indices, vec![3, 7]);
    let b = decoded.breakdown();
    assert_eq!(
        (b.header, b.indices, b.payload, b.scales),
        (8 + 4 + 323, 4, 16, 8)
    );
    assert_eq!(b.total(), blob.len() as u64);
    let (k, v) = decoded.dequantize();
    // Row order follows the sorted indices: position 3 (second input row) comes first.
    let (k_src, v_src) = ([&K[4..], &K[..4]].concat(), [&V[4..], &V[..4]].concat());
    for (got, want) in k.iter().zip(&k_src).chain(v.iter().zip(&v_src)) {
        assert!(
            (got - want).abs() <= 4.0 / 127.0 / 2.0 + 1e-3,
            "{got} vs {want}"
        );
    }
}

#[test]
fn auto_index_dtype_picks_uint16_for_the_golden_vector() {
    let auto = V1Options {
        index_dtype: IndexDtype::Auto,
        ..opts(QuantMode::Int8)
    };
    assert_eq!(
        v1::encode(&layer(), &auto).unwrap(),
        expected_blob(QuantMode::Int8, INT8_BODY)
    );
}
