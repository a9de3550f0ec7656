//! Tests of `embedded`.

use super::*;

#[test]
fn sharer_tokenizer_reads_gguf_and_hf_specs() {
    let t = |spec: &str| sharer_tokenizer(spec, "p").map_err(|e| format!("{e:#}"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.gguf");
    std::fs::write(&file, b"gguf").unwrap();
    let file = file.display().to_string();
    assert_eq!(t(&format!("gguf:{file}")).unwrap(), file);
    assert!(t("gguf:/m/q.gguf").unwrap_err().contains("not found"));
    assert_eq!(t("hf:/m/qwen").unwrap(), "/m/qwen/tokenizer.json");
    assert!(
        t("random:tiny-llama:7")
            .unwrap_err()
            .contains("no tokenizer file")
    );
    assert!(t("gguf:").unwrap_err().contains("nothing after the kind"));
    assert!(t("onnx:m").unwrap_err().contains("expected gguf:"));
}

#[test]
fn only_gguf_asset_names_are_assets() {
    assert_eq!(spec_asset("gguf:smollm2-135m"), Some(AssetId::Smollm2_135m));
    assert_eq!(
        spec_asset("gguf:smollm2-135m-instruct-q4_1.gguf"),
        Some(AssetId::Smollm2_135m)
    );
    assert_eq!(spec_asset("gguf:/m/smollm2-135m"), None);
    assert_eq!(spec_asset("hf:smollm2-135m"), None);
    assert_eq!(spec_asset("gguf:"), None);
}

#[test]
fn placements_are_checked_before_anything_starts() {
    ServicePlacement::default().check().unwrap();
    let bad = ServicePlacement {
        device: "gpu".into(),
        dtype: "f64".into(),
        ..ServicePlacement::default()
    };
    let err = format!("{:#}", bad.check().unwrap_err());
    assert!(
        err.contains("--device gpu") && err.contains("cuda:N"),
        "{err}"
    );
    if !service_kit::device::CUDA_BUILT {
        let cuda = ServicePlacement {
            device: "cuda:0".into(),
            dtype: "bf16".into(),
            ..ServicePlacement::default()
        };
        let err = format!("{:#}", cuda.check().unwrap_err());
        assert!(err.contains("`cuda` feature"), "{err}");
    }
    let none = ServicePlacement {
        jobs: 0,
        ..ServicePlacement::default()
    };
    assert!(none.check().unwrap_err().to_string().contains("--jobs"));
}
