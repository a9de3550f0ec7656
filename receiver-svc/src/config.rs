//! The receiver's one typed configuration: defaults, then a TOML file, then `KVWIRE_RECEIVER__*`
//! environment variables; validated once at start-up with every problem reported together.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use service_kit::config::{CommonSettings, Problems, ServiceConfig};
use service_kit::telemetry::TelemetryConfig;
use service_kit::transport::client::ClientTransport;
use service_kit::transport::settings::{
    AuthSettings, ClientSettings, ConnectionSettings, TlsSettings,
};

use crate::allow::SharerAddress;

/// Environment prefix of the receiver (`KVWIRE_RECEIVER__SHARER_ENDPOINT=...`).
pub const ENV_PREFIX: &str = "KVWIRE_RECEIVER";

/// How sharer caches become receiver caches for this pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FuserKind {
    /// Same model on both sides: the decoded sharer cache is the receiver's prompt cache.
    #[default]
    Identity,
    /// No fuser: KV and C2C methods are refused (text and single-model methods still work).
    None,
    /// A trained C2C fuser (`[c2c]` names it): the `c2c` method projects the sharer's cache
    /// into the receiver's and fuses it, in the layout its checkpoint was trained for (shared
    /// prompt; or, with `context.json` beside it, the context layout: the passage rows into
    /// context slots before the question); the `kv` method is refused (different models).
    C2c,
}

/// Where the C2C fuser and the sharer's tokenizer come from (for `fuser = "c2c"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct C2cSettings {
    /// Folder with `fuser.safetensors` and `fuser.json` (written by `fuser train`); a folder of
    /// `fuser train --layout context` also has `context.json` (filler, slots, sharer RoPE) and
    /// `gating.json`, and then serves the context layout only (docs/FUSER.md).
    pub fuser_dir: String,
    /// The sharer's tokenizer: a `tokenizer.json`, or a GGUF file whose metadata holds it. The
    /// receiver aligns the prompt text across the two tokenizers, so the wire carries plain
    /// sharer positions (shared layout; the context layout needs no alignment, one slot per
    /// sharer row).
    pub sharer_tokenizer: String,
}

/// Everything the receiver needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiverConfig {
    /// gRPC listen address (used by the binary; `serve` takes a bound listener).
    pub listen_addr: SocketAddr,
    /// Model spec: `gguf:<path-or-asset>`, `hf:<dir>` or `random:<preset>:<seed>`.
    pub model: String,
    /// Compute device: `"cpu"` (default), `"cuda"` or `"cuda:N"` (a GPU needs a binary built
    /// with the `cuda` feature).
    pub device: String,
    /// Activation and KV cache dtype on the device: `"f32"` (default), `"bf16"` or `"f16"`
    /// (GGUF weights are dequantized at load, then converted).
    pub dtype: String,
    /// Query-chunk length of a multi-token forward pass (prefill): a prompt of T tokens runs as
    /// chunks of at most this many, each attending to the cache so far, so attention memory is
    /// `[heads, chunk, T]` instead of `[heads, T, T]` (docs/GPU.md, "Chunked prefill"). `0` runs
    /// every prompt in one pass. Default 512.
    pub prefill_chunk_tokens: usize,
    /// Sharer endpoint used when a request names none (`http://host:port`); empty means none:
    /// requests must then name their sharer. Always allowed.
    pub sharer_endpoint: String,
    /// Further sharers a request may name (`http://host:port`), besides `sharer_endpoint`; a
    /// request naming any other is refused (PERMISSION_DENIED, `sharer_not_allowed`). Empty
    /// (the default): only `sharer_endpoint`; with that empty too, requests may name none.
    /// In the environment: comma-separated.
    pub allowed_sharers: Vec<String>,
    /// How this receiver reaches its sharers: the CA of their certificates (needed for an
    /// `https://` sharer), a client certificate for mutual TLS, a bearer token.
    pub sharer_client: ClientSettings,
    /// The fuser of this pair.
    pub fuser: FuserKind,
    /// The C2C fuser, when `fuser = "c2c"`.
    pub c2c: C2cSettings,
    /// Request and resource limits.
    pub limits: ReceiverLimits,
    /// Logs and metrics.
    pub telemetry: TelemetryConfig,
    /// TLS of the server: `off` (plain TCP, the default), `tls` or `mutual`.
    pub tls: TlsSettings,
    /// Bearer tokens callers must present (none by default).
    pub auth: AuthSettings,
    /// Connection limit and handshake/idle timeouts.
    pub connections: ConnectionSettings,
}

/// Request and resource limits of the receiver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiverLimits {
    /// Largest gRPC message accepted or sent, on both the server and the sharer client, bytes.
    pub max_message_bytes: usize,
    /// Longest receiver prompt, tokens.
    pub max_prompt_tokens: usize,
    /// Most UTF-8 bytes of prompt text in one request (question, choices and passage
    /// together; with a sharer's text message, that too), checked before tokenizing; unset:
    /// 16 per prompt token.
    pub max_prompt_bytes: Option<usize>,
    /// Default and maximum new tokens for generation scoring.
    pub max_new_tokens: usize,
    /// Deadline of one evaluation when the caller sets none, seconds.
    pub default_timeout_secs: u64,
    /// Seconds to wait for the TCP connection to the sharer.
    pub connect_timeout_secs: u64,
    /// Seconds a connection to a sharer may sit idle and still be reused by the next
    /// evaluation (one evaluation at a time per connection; keep it below the sharer's
    /// `connections.idle_timeout_secs`); 0: a fresh connection per evaluation.
    pub sharer_reuse_idle_secs: u64,
    /// Concurrent model jobs; further requests wait.
    pub max_concurrent_jobs: usize,
    /// Jobs that may wait for a slot; beyond them a call is refused at once
    /// (RESOURCE_EXHAUSTED, `overloaded`).
    pub max_queued_jobs: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([0, 0, 0, 0], 50052)),
            model: "random:tiny-llama:0".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            prefill_chunk_tokens: model_runtime::DEFAULT_PREFILL_CHUNK_TOKENS,
            sharer_endpoint: "http://127.0.0.1:50051".into(),
            allowed_sharers: Vec::new(),
            sharer_client: ClientSettings::default(),
            fuser: FuserKind::Identity,
            c2c: C2cSettings::default(),
            limits: ReceiverLimits::default(),
            telemetry: TelemetryConfig::default(),
            tls: TlsSettings::default(),
            auth: AuthSettings::default(),
            connections: ConnectionSettings::default(),
        }
    }
}

impl Default for ReceiverLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 20,
            max_prompt_tokens: 8192,
            max_prompt_bytes: None,
            max_new_tokens: 64,
            default_timeout_secs: 300,
            connect_timeout_secs: 10,
            sharer_reuse_idle_secs: 60,
            max_concurrent_jobs: 1,
            max_queued_jobs: 16,
        }
    }
}

impl ServiceConfig for ReceiverConfig {
    const ENV_PREFIX: &'static str = ENV_PREFIX;
    // KVWIRE_RECEIVER__ALLOWED_SHARERS=http://a:50051,http://b:50051
    const ENV_LIST_KEYS: &'static [&'static str] = &["allowed_sharers"];

    fn common(&self) -> CommonSettings<'_> {
        service_kit::common_settings!(self)
    }

    fn check_own(&self, p: &mut Problems) {
        ClientTransport::check(&self.sharer_client, "sharer_client", p);
        let tls = !self.sharer_client.ca.is_empty();
        // Empty is allowed: every request names its sharer (one of `allowed_sharers`).
        if !self.sharer_endpoint.is_empty()
            && let Err(e) = SharerAddress::parse(&self.sharer_endpoint, tls)
        {
            p.push("sharer_endpoint", e);
        }
        for (i, endpoint) in self.allowed_sharers.iter().enumerate() {
            if let Err(e) = SharerAddress::parse(endpoint, tls) {
                p.push("allowed_sharers", format!("entry {i} ({endpoint:?}): {e}"));
            }
        }
        if self.fuser == FuserKind::C2c {
            p.check(
                !self.c2c.fuser_dir.is_empty(),
                "c2c.fuser_dir",
                "fuser = \"c2c\" needs the fuser folder",
            );
            p.check(
                !self.c2c.sharer_tokenizer.is_empty(),
                "c2c.sharer_tokenizer",
                "fuser = \"c2c\" needs the sharer's tokenizer",
            );
        }
        let l = &self.limits;
        p.check(
            l.max_new_tokens > 0,
            "limits.max_new_tokens",
            "must be positive",
        );
        p.check(
            l.default_timeout_secs > 0,
            "limits.default_timeout_secs",
            "must be positive",
        );
        p.check(
            l.connect_timeout_secs > 0,
            "limits.connect_timeout_secs",
            "must be positive",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_problems_are_collected() {
        ReceiverConfig::default().validate().unwrap();
        let mut c = ReceiverConfig {
            sharer_endpoint: "not a uri at all".into(),
            ..ReceiverConfig::default()
        };
        c.limits.max_new_tokens = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("sharer_endpoint") && err.contains("limits.max_new_tokens"),
            "{err}"
        );
    }

    #[test]
    fn https_and_malformed_sharers_are_refused_at_start() {
        let c = ReceiverConfig {
            sharer_endpoint: "https://sharer:443".into(),
            allowed_sharers: vec!["http://ok:1".into(), "sharer:50051".into()],
            ..ReceiverConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("sharer_endpoint: https:// (TLS) needs sharer_client.ca")
                && err.contains("allowed_sharers: entry 1 (\"sharer:50051\")"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_default_sharer_is_valid() {
        let c = ReceiverConfig {
            sharer_endpoint: String::new(),
            ..ReceiverConfig::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn example_file_loads_and_validates() {
        let path = std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/receiver.example.toml"
        ));
        let c = ReceiverConfig::load(Some(path)).unwrap();
        assert!(c.telemetry.metrics_addr.is_some());
        assert_eq!(c.prefill_chunk_tokens, 512);
        assert_eq!(c.limits.max_queued_jobs, 16);
        assert!(c.allowed_sharers.is_empty());
    }

    #[test]
    fn prefill_chunk_tokens_is_a_key_and_a_misspelling_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.toml");
        std::fs::write(&file, "prefill_chunk_tokens = 0\n").unwrap();
        assert_eq!(
            ReceiverConfig::load(Some(&file))
                .unwrap()
                .prefill_chunk_tokens,
            0
        );
        std::fs::write(&file, "prefill_chunk_token = 64\n").unwrap();
        let err = ReceiverConfig::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("prefill_chunk_token"), "{err}");
    }
}
