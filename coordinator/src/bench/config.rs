//! The config files the benchmark starts each service with (TOML, the services' own format:
//! `sharer-svc --config FILE`). Only the keys the benchmark sets are written; every other key
//! keeps the service's default.

use std::path::Path;

use toml::{Table, Value};

use super::error::BenchError;

/// Where and how a service runs.
#[derive(Debug, Clone)]
pub struct Placement {
    /// `cpu`, `cuda`, `cuda:N`.
    pub device: String,
    /// `f32`, `bf16`, `f16`.
    pub dtype: String,
    /// The longest prompt a service must accept, tokens (with room for a T2T message).
    pub max_prompt_tokens: usize,
    /// The deadline of one evaluation, seconds.
    pub timeout_secs: u64,
}

/// How the receiver turns sharer caches into its own.
#[derive(Debug, Clone, PartialEq)]
pub enum ReceiverFuser {
    /// Same model: the decoded cache is the receiver's (the `kv` method).
    Identity,
    /// A C2C fuser folder and the sharer's tokenizer file (the `c2c` method).
    C2c {
        /// `fuser.safetensors` + `fuser.json`.
        dir: String,
        /// The sharer's tokenizer (a `tokenizer.json` or GGUF file).
        sharer_tokenizer: String,
    },
    /// None: only text and receiver-only.
    None,
}

fn common(model: &str, port: u16, placement: &Placement) -> Table {
    let mut t = Table::new();
    t.insert("listen_addr".into(), format!("127.0.0.1:{port}").into());
    t.insert("model".into(), model.into());
    t.insert("device".into(), placement.device.clone().into());
    t.insert("dtype".into(), placement.dtype.clone().into());
    t
}

fn tokens(n: usize) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The sharer's config.
pub fn sharer(model: &str, port: u16, placement: &Placement) -> Table {
    let mut t = common(model, port, placement);
    let mut limits = Table::new();
    limits.insert(
        "max_prompt_tokens".into(),
        tokens(placement.max_prompt_tokens),
    );
    t.insert("limits".into(), limits.into());
    t
}

/// The receiver's config: its model, its sharer, its fuser.
pub fn receiver(
    model: &str,
    port: u16,
    sharer_port: u16,
    fuser: &ReceiverFuser,
    placement: &Placement,
) -> Table {
    let mut t = common(model, port, placement);
    t.insert(
        "sharer_endpoint".into(),
        format!("http://127.0.0.1:{sharer_port}").into(),
    );
    let kind = match fuser {
        ReceiverFuser::Identity => "identity",
        ReceiverFuser::C2c { .. } => "c2c",
        ReceiverFuser::None => "none",
    };
    t.insert("fuser".into(), kind.into());
    if let ReceiverFuser::C2c {
        dir,
        sharer_tokenizer,
    } = fuser
    {
        let mut c2c = Table::new();
        c2c.insert("fuser_dir".into(), dir.clone().into());
        c2c.insert("sharer_tokenizer".into(), sharer_tokenizer.clone().into());
        t.insert("c2c".into(), c2c.into());
    }
    let mut limits = Table::new();
    limits.insert(
        "max_prompt_tokens".into(),
        tokens(placement.max_prompt_tokens),
    );
    let secs = i64::try_from(placement.timeout_secs).unwrap_or(i64::MAX);
    limits.insert("default_timeout_secs".into(), Value::Integer(secs));
    t.insert("limits".into(), limits.into());
    t
}

/// Writes `table` to `path`.
pub fn write(table: &Table, path: &Path) -> Result<(), BenchError> {
    let text = toml::to_string(table).map_err(|e| BenchError::Invalid(e.to_string()))?;
    std::fs::write(path, text).map_err(BenchError::io("writing", path))
}
