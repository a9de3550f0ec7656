//! Loading the released C2C format (`projector_{i}.pt` torch pickles + JSON) and checking the
//! projectors against outputs computed outside Rust (a float64 Python reference for the
//! hand-written fixture; PyTorch itself for the torch fixture).

use std::path::{Path, PathBuf};

use c2c::GateMode;
use c2c::released::load_released;
use candle_core::{DType, Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn rows(v: &serde_json::Value) -> Tensor {
    let data: Vec<Vec<f32>> = serde_json::from_value(v.clone()).expect("rows");
    let (n, w) = (data.len(), data[0].len());
    Tensor::from_vec(data.concat(), (n, w), &Device::Cpu).expect("tensor")
}

fn check_fixture(dir: &Path) {
    let fuser = load_released(dir, DType::F32, &Device::Cpu).expect("load released fuser");
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    let expected: serde_json::Value = serde_json::from_str(&text).expect("json");
    let cases = expected["projectors"].as_array().expect("projectors");
    assert_eq!(cases.len(), fuser.projectors.len());
    assert_eq!(fuser.config.layer_map.links().len(), fuser.projectors.len());
    for (i, case) in cases.iter().enumerate() {
        let p = &fuser.projectors[i];
        let (k, v) = p
            .forward_rows(
                &rows(&case["key"]["sharer"]),
                &rows(&case["key"]["receiver"]),
                &rows(&case["value"]["sharer"]),
                &rows(&case["value"]["receiver"]),
                &GateMode::Hard,
            )
            .expect("forward");
        for (got, branch) in [(k, "key"), (v, "value")] {
            let want: Vec<Vec<f32>> =
                serde_json::from_value(case[branch]["fused"].clone()).expect("fused");
            let got = got.to_vec2::<f32>().expect("vec");
            for (g, w) in got.concat().iter().zip(want.concat()) {
                assert!((g - w).abs() < 1e-4, "projector {i} {branch}: {g} vs {w}");
            }
        }
    }
}

#[test]
fn handmade_torch_zip_pickle_loads_and_matches_reference() {
    let dir = fixture("released_handmade");
    check_fixture(&dir);
    let fuser = load_released(&dir, DType::F32, &Device::Cpu).expect("load");
    let d = fuser.config.projectors[0];
    assert_eq!(
        (
            d.sharer_heads,
            d.sharer_head_dim,
            d.receiver_heads,
            d.receiver_head_dim
        ),
        (2, 2, 2, 3)
    );
    assert_eq!((d.hidden, d.intermediate, d.proj_blocks), (8, 6, 2));
    // projector_1.pt holds bf16 storages, as a checkpoint saved in a bf16 model's dtype would.
    let sd = c2c::released::read_state_dict(&dir.join("projector_1.pt"), &Device::Cpu).expect("sd");
    assert!(!sd.contains_key("gate_temperature"));
    assert!(sd.values().all(|t| t.dtype() == DType::BF16));
    let (gk, gv) = fuser.projectors[0].gate_logits().expect("gates");
    assert!(gk > 0.0 && gv <= 0.0);
}

#[test]
fn pytorch_written_fixture_loads_and_matches_torch() {
    check_fixture(&fixture("released_torch"));
}

#[test]
fn broken_released_files_are_typed_errors() {
    let src = fixture("released_handmade");
    let tmp = tempfile::tempdir().expect("tmp");
    for f in [
        "projector_config.json",
        "projector_0.json",
        "projector_1.json",
        "projector_0.pt",
        "projector_1.pt",
    ] {
        std::fs::copy(src.join(f), tmp.path().join(f)).expect("copy");
    }
    // Truncated pickle zip.
    let pt = tmp.path().join("projector_1.pt");
    let bytes = std::fs::read(&pt).expect("read");
    std::fs::write(&pt, &bytes[..bytes.len() / 2]).expect("write");
    assert!(load_released(tmp.path(), DType::F32, &Device::Cpu).is_err());
    // Garbage instead of a zip.
    std::fs::write(&pt, b"not a zip at all").expect("write");
    assert!(load_released(tmp.path(), DType::F32, &Device::Cpu).is_err());
    // Shapes in the JSON that disagree with the tensors.
    std::fs::copy(src.join("projector_1.pt"), &pt).expect("copy");
    let json = std::fs::read_to_string(tmp.path().join("projector_1.json")).expect("json");
    std::fs::write(
        tmp.path().join("projector_1.json"),
        json.replace("\"hidden_dim\": 8", "\"hidden_dim\": 16"),
    )
    .expect("write");
    let err = load_released(tmp.path(), DType::F32, &Device::Cpu).expect_err("shape mismatch");
    assert!(matches!(err, c2c::C2cError::Shape { .. }), "{err}");
    // Unknown class.
    std::fs::write(
        tmp.path().join("projector_1.json"),
        json.replace("C2CProjector", "AllInOneProjector"),
    )
    .expect("write");
    assert!(load_released(tmp.path(), DType::F32, &Device::Cpu).is_err());
}
