//! Hugging Face folders: a tiny random Qwen3 checkpoint written as safetensors loads, its
//! logits match candle-transformers' own Qwen3 on the same folder, and a missing or
//! misshapen tensor is a typed error that names it.

use candle_transformers::models::qwen3;
use model_runtime::candle_core::{DType, Device, Tensor};
use model_runtime::{LoadOptions, Model, RuntimeError};
use std::collections::HashMap;
use std::path::Path;

const CONFIG: &str = r#"{"model_type":"qwen3","vocab_size":300,"hidden_size":64,"intermediate_size":128,
"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,
"attention_bias":false,"max_position_embeddings":512,"sliding_window":null,"max_window_layers":2,
"tie_word_embeddings":true,"rope_theta":10000.0,"rms_norm_eps":1e-6,"use_sliding_window":false,
"hidden_act":"silu","bos_token_id":0,"eos_token_id":1}"#;

/// Seeded weights with the Hugging Face names of a tiny Qwen3.
fn tensors() -> HashMap<String, Tensor> {
    let dev = Device::Cpu;
    let mut seed = 0u64;
    let mut t = |shape: &[usize], center: f32, scale: f32| {
        seed += 1;
        let n: usize = shape.iter().product();
        // A small LCG keeps the test independent of the runtime's own generator.
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005);
        let values: Vec<f32> = (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                center + scale * (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
            })
            .collect();
        Tensor::from_vec(values, shape, &dev).unwrap()
    };
    let mut map = HashMap::new();
    map.insert(
        "model.embed_tokens.weight".to_string(),
        t(&[300, 64], 0.0, 1.0),
    );
    map.insert("model.norm.weight".to_string(), t(&[64], 1.0, 0.1));
    for i in 0..2 {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        map.insert(p("input_layernorm.weight"), t(&[64], 1.0, 0.1));
        map.insert(p("post_attention_layernorm.weight"), t(&[64], 1.0, 0.1));
        map.insert(p("self_attn.q_proj.weight"), t(&[64, 64], 0.0, 0.125));
        map.insert(p("self_attn.k_proj.weight"), t(&[32, 64], 0.0, 0.125));
        map.insert(p("self_attn.v_proj.weight"), t(&[32, 64], 0.0, 0.125));
        map.insert(p("self_attn.o_proj.weight"), t(&[64, 64], 0.0, 0.125));
        map.insert(p("self_attn.q_norm.weight"), t(&[16], 1.0, 0.1));
        map.insert(p("self_attn.k_norm.weight"), t(&[16], 1.0, 0.1));
        map.insert(p("mlp.gate_proj.weight"), t(&[128, 64], 0.0, 0.125));
        map.insert(p("mlp.up_proj.weight"), t(&[128, 64], 0.0, 0.125));
        map.insert(p("mlp.down_proj.weight"), t(&[64, 128], 0.0, 0.09));
    }
    map
}

fn write_folder(dir: &Path, map: &HashMap<String, Tensor>) {
    std::fs::write(dir.join("config.json"), CONFIG).unwrap();
    model_runtime::candle_core::safetensors::save(map, dir.join("model.safetensors")).unwrap();
}

#[test]
fn tiny_qwen3_folder_matches_candle_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let map = tensors();
    write_folder(dir.path(), &map);
    let ours = Model::from_hf_dir(dir.path(), &LoadOptions::cpu()).unwrap();
    let ids = [3u32, 44, 5, 187, 9, 9, 120, 42];
    let logits = ours.next_token_logits(&ids).unwrap();

    let cfg: qwen3::Config = serde_json::from_str(CONFIG).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
    let mut reference = qwen3::ModelForCausalLM::new(&cfg, vb).unwrap();
    let input = Tensor::new(&ids[..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let expected = reference
        .forward(&input, 0)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let diff = logits
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "max abs logit diff {diff}");
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut map = tensors();
    map.remove("model.layers.1.self_attn.k_norm.weight");
    write_folder(dir.path(), &map);
    match Model::from_hf_dir(dir.path(), &LoadOptions::cpu()) {
        Err(RuntimeError::MissingTensor { name }) => {
            assert_eq!(name, "model.layers.1.self_attn.k_norm.weight")
        }
        other => panic!("expected MissingTensor, got {:?}", other.err()),
    }

    let mut map = tensors();
    map.insert(
        "model.layers.0.mlp.up_proj.weight".into(),
        Tensor::zeros((96, 64), DType::F32, &Device::Cpu).unwrap(),
    );
    write_folder(dir.path(), &map);
    match Model::from_hf_dir(dir.path(), &LoadOptions::cpu()) {
        Err(RuntimeError::ShapeMismatch {
            name,
            expected,
            got,
        }) => {
            assert_eq!(name, "model.layers.0.mlp.up_proj.weight");
            assert_eq!((expected, got), (vec![128, 64], vec![96, 64]));
        }
        other => panic!("expected ShapeMismatch, got {:?}", other.err()),
    }
}
