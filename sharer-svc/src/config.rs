//! The sharer's one typed configuration: defaults, then a TOML file, then `KVWIRE_SHARER__*`
//! environment variables; validated once at start-up with every problem reported together.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use service_kit::config::{CommonSettings, Problems, ServiceConfig};
use service_kit::telemetry::TelemetryConfig;
use service_kit::transport::settings::{AuthSettings, ConnectionSettings, TlsSettings};

/// Environment prefix of the sharer (`KVWIRE_SHARER__LIMITS__MAX_MESSAGE_BYTES=...`).
pub const ENV_PREFIX: &str = "KVWIRE_SHARER";

/// Everything the sharer needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharerConfig {
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
    /// Request and resource limits.
    pub limits: SharerLimits,
    /// Refinement session store.
    pub sessions: SessionConfig,
    /// Logs and metrics.
    pub telemetry: TelemetryConfig,
    /// TLS of the server: `off` (plain TCP, the default), `tls` or `mutual`.
    pub tls: TlsSettings,
    /// Bearer tokens callers must present (none by default).
    pub auth: AuthSettings,
    /// Connection limit and handshake/idle timeouts.
    pub connections: ConnectionSettings,
}

/// Request and resource limits of the sharer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SharerLimits {
    /// Largest gRPC message accepted or sent (both directions), bytes.
    pub max_message_bytes: usize,
    /// Longest prompt, in sharer tokens.
    pub max_prompt_tokens: usize,
    /// Most UTF-8 bytes of prompt text in one request (question, choices, passage and query,
    /// or the raw text, together), checked before tokenizing; unset: 16 per prompt token.
    pub max_prompt_bytes: Option<usize>,
    /// Frames buffered between the producer and the gRPC stream.
    pub stream_buffer_frames: usize,
    /// Default and maximum tokens of a generated hint.
    pub max_hint_tokens: usize,
    /// Concurrent model jobs (prefill, generation); further requests wait.
    pub max_concurrent_jobs: usize,
    /// Jobs that may wait for a slot; beyond them a call is refused at once
    /// (RESOURCE_EXHAUSTED, `overloaded`).
    pub max_queued_jobs: usize,
}

/// Bounds of the refinement session store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Most sessions held (kept or reserved); a kept Share beyond it is refused with
    /// RESOURCE_EXHAUSTED (`session_store_full`), no other client's session evicted.
    pub capacity: usize,
    /// Most bytes of cached K/V held over all sessions; refused beyond it the same way.
    pub max_bytes: u64,
    /// Seconds a session lives after its last use.
    pub ttl_secs: u64,
    /// Most sessions one client holds (a client: its certificate under mutual TLS, else its
    /// token, else its IP address); beyond it the client's own least recently used goes.
    pub max_per_client: usize,
    /// Most bytes of cached K/V one client holds, the same way.
    pub max_bytes_per_client: u64,
}

impl Default for SharerConfig {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([0, 0, 0, 0], 50051)),
            model: "random:tiny-llama:0".into(),
            device: "cpu".into(),
            dtype: "f32".into(),
            prefill_chunk_tokens: model_runtime::DEFAULT_PREFILL_CHUNK_TOKENS,
            limits: SharerLimits::default(),
            sessions: SessionConfig::default(),
            telemetry: TelemetryConfig::default(),
            tls: TlsSettings::default(),
            auth: AuthSettings::default(),
            connections: ConnectionSettings::default(),
        }
    }
}

impl Default for SharerLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 << 20,
            max_prompt_tokens: 8192,
            stream_buffer_frames: 4,
            max_prompt_bytes: None,
            max_hint_tokens: 64,
            max_concurrent_jobs: 1,
            max_queued_jobs: 16,
        }
    }
}

impl SharerLimits {
    /// Most UTF-8 bytes of prompt text in one request (`max_prompt_bytes`, else 16 per
    /// prompt token).
    pub fn prompt_bytes(&self) -> usize {
        service_kit::config::prompt_bytes_limit(self.max_prompt_bytes, self.max_prompt_tokens)
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            capacity: 64,
            max_bytes: 2 << 30,
            ttl_secs: 300,
            max_per_client: 64,
            max_bytes_per_client: 2 << 30,
        }
    }
}

impl ServiceConfig for SharerConfig {
    const ENV_PREFIX: &'static str = ENV_PREFIX;

    fn common(&self) -> CommonSettings<'_> {
        service_kit::common_settings!(self)
    }

    fn check_own(&self, p: &mut Problems) {
        let l = &self.limits;
        p.check(
            l.stream_buffer_frames > 0,
            "limits.stream_buffer_frames",
            "must be positive",
        );
        p.check(
            l.max_hint_tokens > 0,
            "limits.max_hint_tokens",
            "must be positive",
        );
        let s = &self.sessions;
        p.check(s.capacity > 0, "sessions.capacity", "must be positive");
        p.check(s.max_bytes > 0, "sessions.max_bytes", "must be positive");
        p.check(s.ttl_secs > 0, "sessions.ttl_secs", "must be positive");
        p.check(
            s.max_per_client > 0,
            "sessions.max_per_client",
            "must be positive",
        );
        p.check(
            s.max_bytes_per_client > 0,
            "sessions.max_bytes_per_client",
            "must be positive",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        SharerConfig::default().validate().unwrap();
    }

    #[test]
    fn every_problem_is_reported() {
        let mut c = SharerConfig {
            model: "nonsense".into(),
            ..SharerConfig::default()
        };
        c.limits.stream_buffer_frames = 0;
        c.sessions.ttl_secs = 0;
        let err = c.validate().unwrap_err().to_string();
        for field in ["model", "limits.stream_buffer_frames", "sessions.ttl_secs"] {
            assert!(err.contains(field), "{field} missing from {err}");
        }
    }

    #[test]
    fn example_file_loads_and_validates() {
        let path =
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/sharer.example.toml"));
        let c = SharerConfig::load(Some(path)).unwrap();
        assert!(c.telemetry.metrics_addr.is_some());
        assert_eq!(c.prefill_chunk_tokens, 512);
    }

    #[test]
    fn the_prepared_model_runs_with_the_configured_chunk_length() {
        let config = SharerConfig {
            prefill_chunk_tokens: 7,
            ..SharerConfig::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let prepared = runtime
            .block_on(service_kit::server::prepare("sharer", &config))
            .unwrap();
        assert_eq!(prepared.model.model.prefill_chunk_tokens(), 7);
    }
}
