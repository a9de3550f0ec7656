//! Our safetensors + JSON fuser checkpoint: save, load, same tensors and same outputs; broken
//! checkpoints are typed errors.

use c2c::checkpoint::{FORMAT, Fuser, FuserConfig, load, save};
use c2c::train::trainable_projector;
use c2c::{GateMode, LayerMap, ProjectorDims};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

fn dims(hr: usize) -> ProjectorDims {
    ProjectorDims {
        sharer_heads: 2,
        sharer_head_dim: 4,
        receiver_heads: hr,
        receiver_head_dim: 3,
        hidden: 8,
        intermediate: 6,
        proj_blocks: 1,
    }
}

fn fuser() -> (Fuser, Vec<VarMap>) {
    let dev = Device::Cpu;
    let mut maps = Vec::new();
    let mut projectors = Vec::new();
    for (i, d) in [dims(1), dims(2)].into_iter().enumerate() {
        let vm = VarMap::new();
        projectors.push(trainable_projector(d, &vm, "", 100 + i as u64, &dev).expect("projector"));
        // Open the gates so the outputs depend on every weight.
        for (name, var) in vm.data().lock().expect("lock").iter() {
            if name.ends_with("gate_logit") {
                var.set(&Tensor::new(0.5f32, &dev).expect("t"))
                    .expect("set");
            }
        }
        maps.push(vm);
    }
    let config = FuserConfig {
        format: FORMAT.into(),
        receiver_layers: 2,
        sharer_layers: 1,
        projectors: vec![dims(1), dims(2)],
        layer_map: LayerMap::last_aligned(2, 1),
    };
    (Fuser { config, projectors }, maps)
}

#[test]
fn save_then_load_gives_identical_tensors_and_outputs() {
    let (f, _maps) = fuser();
    let tmp = tempfile::tempdir().expect("tmp");
    let (w, c) = (
        tmp.path().join("fuser.safetensors"),
        tmp.path().join("fuser.json"),
    );
    save(&f, &w, &c).expect("save");
    let back = load(&w, &c, DType::F32, &Device::Cpu).expect("load");
    assert_eq!(back.config, f.config);
    for (a, b) in f.projectors.iter().zip(&back.projectors) {
        let (ta, tb) = (a.named_tensors(), b.named_tensors());
        assert_eq!(ta.len(), tb.len());
        for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
            assert_eq!(na, nb);
            let xa = xa
                .flatten_all()
                .and_then(|x| x.to_vec1::<f32>())
                .expect("a");
            let xb = xb
                .flatten_all()
                .and_then(|x| x.to_vec1::<f32>())
                .expect("b");
            assert_eq!(xa, xb, "{na}");
        }
        let n = 5;
        let d = a.dims();
        let s = Tensor::arange(0f32, (n * d.sharer_width()) as f32, &Device::Cpu)
            .and_then(|t| t.reshape((n, d.sharer_width())))
            .and_then(|t| t * 0.01)
            .expect("s");
        let r = Tensor::ones((n, d.receiver_width()), DType::F32, &Device::Cpu).expect("r");
        let (ka, va) = a.forward_rows(&s, &r, &s, &r, &GateMode::Hard).expect("a");
        let (kb, vb) = b.forward_rows(&s, &r, &s, &r, &GateMode::Hard).expect("b");
        assert_eq!(
            ka.to_vec2::<f32>().expect("ka"),
            kb.to_vec2::<f32>().expect("kb")
        );
        assert_eq!(
            va.to_vec2::<f32>().expect("va"),
            vb.to_vec2::<f32>().expect("vb")
        );
        assert_ne!(
            ka.to_vec2::<f32>().expect("ka"),
            r.to_vec2::<f32>().expect("r")
        );
    }
}

#[test]
fn broken_checkpoints_are_typed_errors() {
    let (f, _maps) = fuser();
    let tmp = tempfile::tempdir().expect("tmp");
    let (w, c) = (
        tmp.path().join("fuser.safetensors"),
        tmp.path().join("fuser.json"),
    );
    save(&f, &w, &c).expect("save");
    let dev = Device::Cpu;
    // Config shapes that disagree with the weights.
    let mut cfg = f.config.clone();
    cfg.projectors[1].hidden = 16;
    std::fs::write(&c, serde_json::to_string(&cfg).expect("json")).expect("write");
    let err = load(&w, &c, DType::F32, &dev).expect_err("shape");
    assert!(matches!(err, c2c::C2cError::Shape { .. }), "{err}");
    // One projector more than the file holds.
    let mut cfg = f.config.clone();
    cfg.projectors.push(dims(1));
    std::fs::write(&c, serde_json::to_string(&cfg).expect("json")).expect("write");
    let err = load(&w, &c, DType::F32, &dev).expect_err("missing");
    assert!(matches!(err, c2c::C2cError::MissingTensor { .. }), "{err}");
    // Wrong format tag, then a layer map pointing past the projectors.
    let mut cfg = f.config.clone();
    cfg.format = "something-else".into();
    std::fs::write(&c, serde_json::to_string(&cfg).expect("json")).expect("write");
    assert!(load(&w, &c, DType::F32, &dev).is_err());
    let mut cfg = f.config.clone();
    cfg.layer_map = LayerMap::last_aligned(3, 1);
    cfg.receiver_layers = 3;
    std::fs::write(&c, serde_json::to_string(&cfg).expect("json")).expect("write");
    assert!(load(&w, &c, DType::F32, &dev).is_err());
    // Truncated weights.
    std::fs::write(&c, serde_json::to_string(&f.config).expect("json")).expect("write");
    let bytes = std::fs::read(&w).expect("read");
    std::fs::write(&w, &bytes[..bytes.len() / 3]).expect("write");
    assert!(load(&w, &c, DType::F32, &dev).is_err());
}
