//! Tests of `json`.

use super::*;

fn header(mode: QuantMode, width: IndexWidth, dtype: ScaleDtype, g: Granularity) -> V1Header {
    let shape = [1, 3, 70_000, 64];
    let mut h = V1Header {
        mode,
        index_width: width,
        scale_dtype: dtype,
        granularity: g,
        k_shape: shape,
        v_shape: shape,
        indices_len: shape[2],
        sections: V1Sections {
            indices: 0,
            k_quant: 0,
            v_quant: 0,
            scales: 0,
        },
        json_len: 0,
    };
    h.sections = h.expected_sections();
    h
}

/// The direct scan and serde_json read every header we write to the same thing, and the
/// scan gives way to serde_json for any other form.
#[test]
fn canonical_scan_agrees_with_serde_json() {
    for mode in [QuantMode::Int8, QuantMode::Int4] {
        for width in [IndexWidth::U16, IndexWidth::U32] {
            for dtype in [ScaleDtype::Fp16, ScaleDtype::Bf16] {
                for g in [
                    Granularity::PerBlock,
                    Granularity::PerHead,
                    Granularity::PerLayer,
                ] {
                    let h = header(mode, width, dtype, g);
                    let text = write_header(&h);
                    let fast = read_canonical(text.as_bytes()).expect("canonical");
                    let slow: RawHeader<'_> = serde_json::from_str(&text).unwrap();
                    assert_eq!(fast.version, slow.version);
                    assert_eq!(
                        (fast.k_shape, fast.v_shape, fast.indices_len),
                        (slow.k_shape, slow.v_shape, slow.indices_len)
                    );
                    assert_eq!(
                        (fast.scale_meta.scale_k_shape, fast.scale_meta.scale_v_shape),
                        (slow.scale_meta.scale_k_shape, slow.scale_meta.scale_v_shape)
                    );
                    let mut back = read_header(text.as_bytes(), 0).unwrap();
                    back.json_len = 0;
                    assert_eq!(back, h);
                    // Spaced out (as Python's json.dumps writes by default): not canonical,
                    // the same header through serde_json.
                    let spaced = text.replace(",\"", ", \"").replace("\":", "\": ");
                    assert!(read_canonical(spaced.as_bytes()).is_none());
                    let mut back = read_header(spaced.as_bytes(), 0).unwrap();
                    back.json_len = 0;
                    assert_eq!(back, h);
                }
            }
        }
    }
    let text = write_header(&header(
        QuantMode::Int8,
        IndexWidth::U32,
        ScaleDtype::Fp16,
        Granularity::PerBlock,
    ));
    // Forms JSON forbids or that need unescaping, and trailing bytes: left to serde_json.
    for odd in [
        text.replace("\"indices_len\":70000", "\"indices_len\":070000"),
        text.replace("kvwire_v1", "kvwire\\u005fv1"),
        text.replace("\"k_shape\":[1,", "\"k_shape\":[1 ,"),
        format!("{text} "),
        text.replace(
            "\"indices_len\":70000",
            "\"indices_len\":99999999999999999999999",
        ),
    ] {
        assert!(read_canonical(odd.as_bytes()).is_none(), "{odd}");
    }
    // An escaped but equal string is still the same header; a leading zero is an error.
    let escaped = text.replace("kvwire_v1", "kvwire\\u005fv1");
    assert!(read_header(escaped.as_bytes(), 0).is_ok());
    let zero = text.replace("\"indices_len\":70000", "\"indices_len\":070000");
    assert!(matches!(
        read_header(zero.as_bytes(), 7),
        Err(DecodeError::Json { offset: 7, .. })
    ));
    let five = text.replace("\"k_shape\":[1,3,70000,64]", "\"k_shape\":[1,3,70000,64,1]");
    let err = read_header(five.as_bytes(), 0).unwrap_err();
    assert!(format!("{err:?}").contains("k_shape has 5 dims"), "{err:?}");
}
