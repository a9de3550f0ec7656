//! A client's transport, loaded once from [`ClientSettings`]: `https://` endpoints get TLS with
//! the configured CA (and the client certificate, for mutual TLS), every call gets the bearer
//! token when one is configured; an `https://` endpoint without a CA is refused rather than
//! used as plaintext.

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::Problems;
use crate::transport::auth::{BearerToken, TokenError, read_tokens};
use crate::transport::http2::Http2Tuning;
use crate::transport::pem::{PemError, load_ca, load_key_pair};
use crate::transport::settings::ClientSettings;

/// A channel that sends the client's bearer token on every call.
pub type ClientChannel = InterceptedService<Channel, BearerToken>;

/// Why a client transport cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The certificate settings are unusable.
    #[error("{field}: {source}")]
    Pem {
        /// The setting at fault (`ca`, `cert`, `key`).
        field: String,
        /// Why.
        source: PemError,
    },
    /// A client certificate without its key, or a key without its certificate.
    #[error("cert and key go together (mutual TLS): set both or neither")]
    HalfIdentity,
    /// A certificate without a CA to check the server with.
    #[error("a client certificate needs ca (the CA of the server's certificate)")]
    CertWithoutCa,
    /// The token settings are unusable.
    #[error("token: {0}")]
    Token(#[from] TokenError),
    /// The URL is not an endpoint.
    #[error("{url}: not a valid endpoint: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// An `https://` URL without a CA.
    #[error("{url}: https:// needs a CA ({hint}); refusing to use it as plaintext")]
    NoCa {
        /// The URL.
        url: String,
        /// Where the CA is set.
        hint: &'static str,
    },
}

/// What a client uses on every connection and call.
#[derive(Debug, Clone, Default)]
pub struct ClientTransport {
    tls: Option<ClientTlsConfig>,
    identity: bool,
    token: BearerToken,
    ca_hint: &'static str,
    http2: Http2Tuning,
}

impl std::fmt::Display for ClientTransport {
    /// What a start-up log says of it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.tls, self.identity) {
            (None, _) => f.write_str("http:// only (no CA for https://)")?,
            (Some(_), false) => f.write_str("https:// with a CA, no client certificate")?,
            (Some(_), true) => f.write_str("https:// with a CA and a client certificate")?,
        }
        let token = if self.token.is_set() {
            "a bearer token"
        } else {
            "no token"
        };
        write!(f, ", {token}")
    }
}

impl ClientTransport {
    /// Loads `settings`; `ca_hint` says where a CA is set (`sharer_client.ca`, `--tls-ca`).
    pub fn load(settings: &ClientSettings, ca_hint: &'static str) -> Result<Self, ClientError> {
        let s = settings;
        let pem = |field: &str, source| ClientError::Pem {
            field: field.to_string(),
            source,
        };
        let identity = match (s.cert.is_empty(), s.key.is_empty()) {
            (true, true) => None,
            (false, false) => {
                let pair = load_key_pair(&s.cert, &s.key).map_err(|e| pem(&e.field(""), e))?;
                Some(Identity::from_pem(pair.cert_pem, pair.key_pem))
            }
            _ => return Err(ClientError::HalfIdentity),
        };
        let has_identity = identity.is_some();
        let tls = if s.ca.is_empty() {
            if identity.is_some() {
                return Err(ClientError::CertWithoutCa);
            }
            None
        } else {
            let ca = load_ca(&s.ca).map_err(|e| pem("ca", e))?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some(identity) = identity {
                tls = tls.identity(identity);
            }
            Some(tls)
        };
        let token = if s.token_file.is_empty() && s.token_env.is_empty() {
            BearerToken::default()
        } else {
            let tokens = read_tokens(&s.token_file, &s.token_env)?;
            BearerToken::new(tokens.first().map_or("", String::as_str))?
        };
        Ok(Self {
            tls,
            identity: has_identity,
            token,
            ca_hint,
            http2: Http2Tuning::default(),
        })
    }

    /// The same transport with other HTTP/2 settings (every client uses
    /// [`Http2Tuning::default`]; `loadtest goodput --tonic-defaults` measures the baseline).
    pub fn with_http2(mut self, http2: Http2Tuning) -> Self {
        self.http2 = http2;
        self
    }

    /// Records the problems of `settings` under `section` (`sharer_client`).
    pub fn check(settings: &ClientSettings, section: &str, p: &mut Problems) {
        if let Err(e) = Self::load(settings, "") {
            p.push(section, e);
        }
    }

    /// Whether `https://` endpoints can be reached (a CA is configured).
    pub fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether a bearer token is sent.
    pub fn has_token(&self) -> bool {
        self.token.is_set()
    }

    /// An endpoint for `url` with this client's HTTP/2 settings, and TLS when it is
    /// `https://` (an error without a CA).
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, ClientError> {
        let bad = |reason: String| ClientError::Url {
            url: url.to_string(),
            reason,
        };
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| bad(e.to_string()))?;
        let endpoint = self.http2.client(endpoint);
        let https = endpoint
            .uri()
            .scheme_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("https"));
        if !https {
            return Ok(endpoint);
        }
        let tls = self.tls.clone().ok_or_else(|| ClientError::NoCa {
            url: url.to_string(),
            hint: self.ca_hint,
        })?;
        endpoint.tls_config(tls).map_err(|e| bad(e.to_string()))
    }

    /// `channel` with this client's token on every call.
    pub fn wrap(&self, channel: Channel) -> ClientChannel {
        InterceptedService::new(channel, self.token.clone())
    }

    /// A lazily connecting channel to `url` (connect timeout `connect_timeout`).
    pub fn lazy_channel(
        &self,
        url: &str,
        connect_timeout: std::time::Duration,
    ) -> Result<ClientChannel, ClientError> {
        let channel = self
            .endpoint(url)?
            .connect_timeout(connect_timeout)
            .connect_lazy();
        Ok(self.wrap(channel))
    }
}
