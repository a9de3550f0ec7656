//! The transport sections of a service's configuration (`[tls]`, `[auth]`, `[connections]`)
//! and of a client's (`[sharer_client]` in the receiver, the coordinator's `--tls-*` flags),
//! with their start-up checks: every problem (a missing file, a key that does not match its
//! certificate, an empty token file) is recorded, not only the first.

use serde::{Deserialize, Serialize};

use crate::config::Problems;
use crate::transport::auth::load_tokens;
use crate::transport::http2::Http2Settings;
use crate::transport::pem::{load_ca, load_key_pair};

/// How a server's connections are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Plain TCP (the loopback default).
    #[default]
    Off,
    /// TLS with the server's certificate (`cert`, `key`).
    Tls,
    /// Mutual TLS: as `tls`, and every client must present a certificate signed by
    /// `client_ca`; a client without one fails the handshake.
    Mutual,
}

/// `[tls]`: the server's certificate and, for mutual TLS, the CA of its clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// `off` (plain TCP), `tls` or `mutual`.
    pub mode: TlsMode,
    /// PEM certificate chain of this server (leaf first).
    pub cert: String,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// PEM certificate(s) of the CA that signs client certificates (`mode = "mutual"`).
    pub client_ca: String,
}

/// How callers are authenticated beyond TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// Every caller is served.
    #[default]
    None,
    /// Every call but gRPC health must carry `authorization: Bearer <token>` with an accepted
    /// token; others are refused with UNAUTHENTICATED.
    Token,
}

/// `[auth]`: the bearer tokens a server accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// `none` or `token`.
    pub mode: AuthMode,
    /// File of accepted tokens, one a line (blank lines and lines starting with `#` skipped).
    pub tokens_file: String,
    /// Name of an environment variable holding accepted tokens, comma-separated.
    pub tokens_env: String,
}

/// Most connections `connections.max_connections` may allow.
pub const MAX_CONNECTIONS: usize = 1 << 20;

/// Longest handshake or idle timeout, seconds (a day).
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

/// `[connections]`: bounds on the server's connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionSettings {
    /// Most open connections; one more is accepted and closed at once.
    pub max_connections: usize,
    /// Seconds a new connection has to send its first bytes (the TLS ClientHello or the
    /// HTTP/2 preface) and, with TLS, to finish the handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds without a byte from the peer after which a connection is closed. A quiet
    /// HTTP/2 connection is pinged every third of it and closed when a ping goes unanswered
    /// for another third, so a live client, which answers pings, keeps its connection through
    /// a long call, while a dead or silent peer loses it within two thirds to all of it.
    pub idle_timeout_secs: u64,
    /// HTTP/2 flow-control window of each call, bytes (`docs/OPERATIONS.md`, "Transport
    /// tuning").
    pub stream_window_bytes: u32,
    /// HTTP/2 flow-control window of each connection, bytes.
    pub connection_window_bytes: u32,
    /// Largest HTTP/2 frame the server accepts, bytes (16384 to 16777215).
    pub max_frame_bytes: u32,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        let h = Http2Settings::default();
        Self {
            max_connections: 256,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 120,
            stream_window_bytes: h.stream_window_bytes,
            connection_window_bytes: h.connection_window_bytes,
            max_frame_bytes: h.max_frame_bytes,
        }
    }
}

/// A client's side of the transport: the receiver's `[sharer_client]`, the coordinator's
/// and the binaries' `--tls-ca`, `--tls-cert`, `--tls-key`, `--token-file`, `--token-env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct ClientSettings {
    /// PEM CA certificate(s) that sign the server's certificate; needed for `https://`.
    #[arg(long = "tls-ca", value_name = "FILE", default_value = "")]
    pub ca: String,
    /// PEM client certificate presented to a server that requires one (mutual TLS).
    #[arg(long = "tls-cert", value_name = "FILE", default_value = "")]
    pub cert: String,
    /// PEM private key of the client certificate.
    #[arg(long = "tls-key", value_name = "FILE", default_value = "")]
    pub key: String,
    /// File whose first token line is sent as `authorization: Bearer <token>`.
    #[arg(long = "token-file", value_name = "FILE", default_value = "")]
    pub token_file: String,
    /// Name of an environment variable holding the bearer token to send.
    #[arg(long = "token-env", value_name = "VAR", default_value = "")]
    pub token_env: String,
}

impl TlsSettings {
    /// Records every problem of `[tls]`.
    pub fn check(&self, p: &mut Problems) {
        match self.mode {
            TlsMode::Off => {}
            TlsMode::Tls | TlsMode::Mutual => {
                if let Err(e) = load_key_pair(&self.cert, &self.key) {
                    p.push(&e.field("tls"), e);
                }
            }
        }
        if self.mode == TlsMode::Mutual
            && let Err(e) = load_ca(&self.client_ca)
        {
            p.push("tls.client_ca", e);
        }
    }
}

impl AuthSettings {
    /// Records every problem of `[auth]`.
    pub fn check(&self, p: &mut Problems) {
        if self.mode == AuthMode::Token
            && let Err(e) = load_tokens(&self.tokens_file, &self.tokens_env)
        {
            p.push("auth", e);
        }
    }
}

impl ConnectionSettings {
    /// The HTTP/2 settings of `[connections]`.
    pub fn http2(&self) -> Http2Settings {
        Http2Settings {
            stream_window_bytes: self.stream_window_bytes,
            connection_window_bytes: self.connection_window_bytes,
            max_frame_bytes: self.max_frame_bytes,
        }
    }

    /// Records every problem of `[connections]`.
    pub fn check(&self, p: &mut Problems) {
        self.http2().check("connections", p);
        p.check(
            (1..=MAX_CONNECTIONS).contains(&self.max_connections),
            "connections.max_connections",
            format!("must be 1 to {MAX_CONNECTIONS}"),
        );
        p.check(
            (1..=MAX_TIMEOUT_SECS).contains(&self.handshake_timeout_secs),
            "connections.handshake_timeout_secs",
            format!("must be 1 to {MAX_TIMEOUT_SECS}"),
        );
        p.check(
            (3..=MAX_TIMEOUT_SECS).contains(&self.idle_timeout_secs),
            "connections.idle_timeout_secs",
            format!(
                "must be 3 (the server pings a quiet connection every third of it) to \
                 {MAX_TIMEOUT_SECS}"
            ),
        );
    }
}
