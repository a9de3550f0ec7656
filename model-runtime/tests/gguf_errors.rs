//! GGUF files that cannot be used give typed errors naming the cause.

use model_runtime::candle_core::quantized::gguf_file::{self, Value};
use model_runtime::candle_core::quantized::{GgmlDType, QTensor};
use model_runtime::candle_core::{Device, Tensor};
use model_runtime::{LoadOptions, Model, RuntimeError};
use std::path::Path;

fn write_gguf(path: &Path, metadata: &[(&str, &Value)]) {
    let embd = QTensor::quantize(
        &Tensor::zeros(
            (8, 32),
            model_runtime::candle_core::DType::F32,
            &Device::Cpu,
        )
        .unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let mut file = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut file, metadata, &[("token_embd.weight", &embd)]).unwrap();
}

#[test]
fn garbage_file_is_bad_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.gguf");
    std::fs::write(&path, b"not a gguf file at all").unwrap();
    match Model::from_gguf(&path, &LoadOptions::cpu()) {
        Err(RuntimeError::BadGguf { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected BadGguf, got {:?}", other.err()),
    }
}

#[test]
fn unknown_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("falcon.gguf");
    write_gguf(
        &path,
        &[("general.architecture", &Value::String("falcon".into()))],
    );
    match Model::from_gguf(&path, &LoadOptions::cpu()) {
        Err(RuntimeError::UnknownArchitecture { name }) => assert_eq!(name, "falcon"),
        other => panic!("expected UnknownArchitecture, got {:?}", other.err()),
    }
}

#[test]
fn missing_metadata_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llama.gguf");
    write_gguf(
        &path,
        &[
            ("general.architecture", &Value::String("llama".into())),
            ("llama.embedding_length", &Value::U32(32)),
            ("llama.attention.head_count", &Value::U32(4)),
        ],
    );
    match Model::from_gguf(&path, &LoadOptions::cpu()) {
        Err(RuntimeError::BadConfig { field, .. }) => {
            assert_eq!(field, "llama.feed_forward_length")
        }
        other => panic!("expected BadConfig, got {:?}", other.err()),
    }
}
