//! Who a call comes from, for per-client limits: the client certificate under mutual TLS, else
//! the bearer token, else the peer's IP address. The server's [`crate::transport::auth`] layer
//! puts it in every request's extensions; handlers read it with [`ClientId::of`].
//!
//! Certificates and tokens are named by a SHA-256 prefix, so logs and metrics never hold a
//! token.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// A client identity: `cert:<sha256 prefix>`, `token:<sha256 prefix>`, `addr:<ip>` or
/// `unknown`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(Arc<str>);

impl Default for ClientId {
    fn default() -> Self {
        Self(Arc::from("unknown"))
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn digest_prefix(kind: &str, bytes: &[u8]) -> ClientId {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    ClientId(Arc::from(format!("{kind}:{hex}")))
}

impl ClientId {
    /// A named identity (tests, and clients known by other means).
    pub fn named(name: &str) -> Self {
        Self(Arc::from(name))
    }

    /// The identity of an incoming HTTP request, from its connection and headers.
    pub fn from_http(extensions: &http::Extensions, headers: &http::HeaderMap) -> Self {
        let tls = extensions.get::<TlsConnectInfo<TcpConnectInfo>>();
        if let Some(certs) = tls.and_then(TlsConnectInfo::peer_certs)
            && let Some(leaf) = certs.first()
        {
            return digest_prefix("cert", leaf.as_ref());
        }
        if let Some(token) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().split_at_checked(7))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case(b"bearer "))
        {
            return digest_prefix("token", token.1);
        }
        let addr = tls
            .map(TlsConnectInfo::get_ref)
            .or_else(|| extensions.get::<TcpConnectInfo>())
            .and_then(TcpConnectInfo::remote_addr);
        match addr {
            Some(a) => ClientId(Arc::from(format!("addr:{}", a.ip()))),
            None => ClientId::default(),
        }
    }

    /// The identity the server put in a gRPC request's extensions (`unknown` when none).
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        request
            .extensions()
            .get::<ClientId>()
            .cloned()
            .unwrap_or_default()
    }

    /// The identity as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_named_by_digest_and_addresses_by_ip() {
        let mut headers = http::HeaderMap::new();
        let none = http::Extensions::new();
        assert_eq!(ClientId::from_http(&none, &headers), ClientId::default());
        let mut ext = http::Extensions::new();
        let info: TcpConnectInfo = TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(([10, 1, 2, 3], 4567).into()),
        };
        ext.insert(info);
        assert_eq!(
            ClientId::from_http(&ext, &headers).as_str(),
            "addr:10.1.2.3"
        );
        headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer s3cret"),
        );
        let id = ClientId::from_http(&ext, &headers);
        assert!(id.as_str().starts_with("token:"), "{id}");
        assert!(!id.as_str().contains("s3cret"), "{id}");
        assert_eq!(id.as_str().len(), "token:".len() + 16);
    }
}
