//! Secure transport and access, said once for both services and their clients: TLS and mutual
//! TLS (rustls through tonic), bearer tokens, and bounds on connections. The configuration
//! sections are in [`settings`]; [`ServerTransport`] is what a server loads from them at
//! start-up; [`client::ClientTransport`] is a client's side. `docs/SECURITY.md` has the keys,
//! how to make certificates for a deployment, and what each failure looks like.

pub mod auth;
pub mod bounds;
pub mod client;
pub mod http2;
pub mod identity;
pub mod pem;
pub mod settings;

use std::fmt;
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::{ConfigError, Problems};
use auth::{TokenSet, load_tokens};
use bounds::Bounds;
use http2::Http2Tuning;
use pem::{load_ca, load_key_pair};
use settings::{AuthMode, AuthSettings, ConnectionSettings, TlsMode, TlsSettings};

/// A server's transport sections, as a service's configuration holds them.
#[derive(Debug, Clone, Copy)]
pub struct ServerSections<'a> {
    /// `[tls]`.
    pub tls: &'a TlsSettings,
    /// `[auth]`.
    pub auth: &'a AuthSettings,
    /// `[connections]`.
    pub connections: &'a ConnectionSettings,
}

impl ServerSections<'_> {
    /// Records every problem of the three sections.
    pub fn check(&self, p: &mut Problems) {
        self.tls.check(p);
        self.auth.check(p);
        self.connections.check(p);
    }
}

/// What a server applies to its connections and calls, loaded from [`ServerSections`].
#[derive(Debug, Clone)]
pub struct ServerTransport {
    /// TLS (and the client CA for mutual TLS); `None`: plain TCP.
    pub tls: Option<ServerTlsConfig>,
    /// The accepted bearer tokens; `None`: no token check.
    pub tokens: Option<TokenSet>,
    /// Connection bounds.
    pub bounds: Bounds,
    /// HTTP/2 windows and frame size.
    pub http2: Http2Tuning,
    mode: TlsMode,
}

impl ServerTransport {
    /// Loads certificates, keys and tokens; every problem is reported together.
    pub fn load(s: ServerSections<'_>) -> Result<Self, ConfigError> {
        let mut p = Problems::new();
        s.check(&mut p);
        p.into_result()?;
        let c = s.connections;
        let handshake = Duration::from_secs(c.handshake_timeout_secs);
        let tls = match s.tls.mode {
            TlsMode::Off => None,
            TlsMode::Tls | TlsMode::Mutual => {
                let pair = load_key_pair(&s.tls.cert, &s.tls.key).map_err(|e| invalid("tls", e))?;
                let mut tls = ServerTlsConfig::new()
                    .identity(Identity::from_pem(pair.cert_pem, pair.key_pem))
                    .timeout(handshake);
                if s.tls.mode == TlsMode::Mutual {
                    let ca = load_ca(&s.tls.client_ca).map_err(|e| invalid("tls.client_ca", e))?;
                    tls = tls.client_ca_root(Certificate::from_pem(ca));
                }
                Some(tls)
            }
        };
        let tokens = match s.auth.mode {
            AuthMode::None => None,
            AuthMode::Token => Some(
                load_tokens(&s.auth.tokens_file, &s.auth.tokens_env)
                    .map_err(|e| invalid("auth", e))?,
            ),
        };
        Ok(Self {
            tls,
            tokens,
            bounds: Bounds {
                max_connections: c.max_connections,
                handshake,
                idle: Duration::from_secs(c.idle_timeout_secs),
            },
            http2: Http2Tuning::Tuned(c.http2()),
            mode: s.tls.mode,
        })
    }

    /// Plain TCP, no tokens, default bounds (tests and the embedded services).
    pub fn plaintext() -> Self {
        let c = ConnectionSettings::default();
        Self {
            tls: None,
            tokens: None,
            bounds: Bounds {
                max_connections: c.max_connections,
                handshake: Duration::from_secs(c.handshake_timeout_secs),
                idle: Duration::from_secs(c.idle_timeout_secs),
            },
            http2: Http2Tuning::Tuned(c.http2()),
            mode: TlsMode::Off,
        }
    }

    /// How often a quiet connection is pinged: a third of the idle timeout.
    pub fn ping_interval(&self) -> Duration {
        self.bounds.idle / 3
    }
}

fn invalid(field: &str, e: impl fmt::Display) -> ConfigError {
    let mut p = Problems::new();
    p.push(field, e);
    ConfigError::Invalid(p)
}

impl fmt::Display for ServerTransport {
    /// What the start-up log says is in force.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tls = match self.mode {
            TlsMode::Off => "plain TCP (no TLS)",
            TlsMode::Tls => "TLS",
            TlsMode::Mutual => "mutual TLS (client certificates required)",
        };
        let auth = match &self.tokens {
            None => "no token check".to_string(),
            Some(t) => format!("bearer token required ({} accepted)", t.len()),
        };
        let b = &self.bounds;
        write!(
            f,
            "{tls}, {auth}, at most {} connections, handshake timeout {:?}, idle timeout {:?}, {}",
            b.max_connections, b.handshake, b.idle, self.http2
        )
    }
}

#[cfg(test)]
mod tests;
