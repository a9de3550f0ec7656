//! Bearer tokens: the set a server accepts (from a file or an environment variable), compared
//! in constant time; the tower layer that refuses a call without an accepted token
//! (UNAUTHENTICATED, label `unauthenticated`) and names every call's client; and the client
//! interceptor that sends one.
//!
//! Tokens are kept as SHA-256 digests and a presented token is hashed before the comparison,
//! so the comparison takes the same time whatever the token's length or how much of it
//! matches, and every accepted token is compared (no early exit).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::{Request, Status};

use crate::metrics_catalog::RPC_ERRORS;
use crate::rpc::ERROR_TYPE_KEY;
use crate::transport::identity::ClientId;

/// Calls exempt from the token check: gRPC health, for probes that carry no token.
const EXEMPT_PREFIX: &str = "/grpc.health.v1.Health/";

/// Why no token set could be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Neither a file nor a variable is named.
    #[error("mode = \"token\" needs tokens_file or tokens_env")]
    Unset,
    /// The file could not be read.
    #[error("tokens_file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The variable is not set or not Unicode.
    #[error("tokens_env: variable {0} is not set")]
    Var(String),
    /// The file or variable holds no token.
    #[error("{0} holds no token")]
    Empty(String),
    /// A token has characters a header value cannot carry (or spaces).
    #[error("{0}: a token must be visible ASCII without spaces")]
    Invalid(String),
}

/// The tokens a server accepts, as SHA-256 digests.
#[derive(Clone)]
pub struct TokenSet(Arc<[[u8; 32]]>);

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet({} token(s))", self.0.len())
    }
}

impl TokenSet {
    /// Whether `presented` is one of the tokens (constant time in the presented token).
    pub fn accepts(&self, presented: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = subtle::Choice::from(0);
        for token in self.0.iter() {
            found |= token.ct_eq(&digest);
        }
        found.into()
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The tokens of `text`: one a line in a file (`split_lines`), comma-separated in a variable;
/// blank entries and lines starting with `#` are skipped.
fn parse_tokens(source: &str, text: &str, split_lines: bool) -> Result<Vec<String>, TokenError> {
    let entries: Vec<&str> = if split_lines {
        text.lines().collect()
    } else {
        text.split(',').collect()
    };
    let tokens: Vec<String> = entries
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.starts_with('#'))
        .map(str::to_string)
        .collect();
    if tokens.is_empty() {
        return Err(TokenError::Empty(source.to_string()));
    }
    if tokens
        .iter()
        .any(|t| !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(TokenError::Invalid(source.to_string()));
    }
    Ok(tokens)
}

/// The tokens of `file` (one a line) and of the variable `var` (comma-separated), together.
pub fn read_tokens(file: &str, var: &str) -> Result<Vec<String>, TokenError> {
    if file.is_empty() && var.is_empty() {
        return Err(TokenError::Unset);
    }
    let mut tokens = Vec::new();
    if !file.is_empty() {
        let text = std::fs::read_to_string(file).map_err(|source| TokenError::Read {
            path: file.to_string(),
            source,
        })?;
        tokens.extend(parse_tokens(&format!("tokens file {file}"), &text, true)?);
    }
    if !var.is_empty() {
        let text = std::env::var(var).map_err(|_| TokenError::Var(var.to_string()))?;
        tokens.extend(parse_tokens(&format!("variable {var}"), &text, false)?);
    }
    Ok(tokens)
}

/// The accepted token set of `[auth]`.
pub fn load_tokens(file: &str, var: &str) -> Result<TokenSet, TokenError> {
    let digests: Vec<[u8; 32]> = read_tokens(file, var)?
        .iter()
        .map(|t| Sha256::digest(t.as_bytes()).into())
        .collect();
    Ok(TokenSet(digests.into()))
}

/// Refuses, before any handler, a call whose `authorization` header does not carry an
/// accepted bearer token (gRPC health excepted); puts every call's [`ClientId`] in its
/// extensions, for per-client limits.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    role: &'static str,
    tokens: Option<TokenSet>,
}

impl AuthLayer {
    /// Checks against `tokens` (`None` lets every call through); refusals count in the
    /// errors metric of `role` (`sharer`, `receiver`) as `unauthenticated`.
    pub fn new(role: &'static str, tokens: Option<TokenSet>) -> Self {
        Self { role, tokens }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            role: self.role,
            tokens: self.tokens.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct Auth<S> {
    inner: S,
    role: &'static str,
    tokens: Option<TokenSet>,
}

/// Why a call's token is refused, or `None` when it is accepted.
fn refusal(tokens: &TokenSet, headers: &http::HeaderMap) -> Option<&'static str> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Some("missing bearer token (metadata authorization: Bearer <token>)");
    };
    let bytes = value.as_bytes();
    let token = match bytes.split_at_checked(7) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer ") => rest,
        _ => return Some("authorization is not a bearer token (Bearer <token>)"),
    };
    if tokens.accepts(token) {
        None
    } else {
        Some("bearer token not accepted")
    }
}

impl<S, B> tower::Service<http::Request<B>> for Auth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let client = ClientId::from_http(request.extensions(), request.headers());
        request.extensions_mut().insert(client);
        if let Some(tokens) = &self.tokens
            && !request.uri().path().starts_with(EXEMPT_PREFIX)
            && let Some(why) = refusal(tokens, request.headers())
        {
            tracing::warn!(path = request.uri().path(), reason = why, "call refused");
            metrics::counter!(RPC_ERRORS, "service" => self.role, "error_type" => "unauthenticated")
                .increment(1);
            let mut status = Status::unauthenticated(why);
            status.metadata_mut().insert(
                ERROR_TYPE_KEY,
                MetadataValue::from_static("unauthenticated"),
            );
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        Box::pin(self.inner.call(request))
    }
}

/// A client interceptor that sends `authorization: Bearer <token>` on every call (nothing
/// when it has no token).
#[derive(Debug, Clone, Default)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl BearerToken {
    /// Sends `token` (checked by [`read_tokens`]: visible ASCII).
    pub fn new(token: &str) -> Result<Self, TokenError> {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| TokenError::Invalid("the token".to_string()))?;
        Ok(Self(Some(value)))
    }

    /// Whether a token is sent.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_a_file_and_a_variable_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "# ops\nalpha\n\n  beta  \n").unwrap();
        let path = file.to_str().unwrap();
        let set = load_tokens(path, "").unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.accepts(b"alpha") && set.accepts(b"beta"));
        assert!(!set.accepts(b"alph") && !set.accepts(b"") && !set.accepts(b"alphaa"));
        std::fs::write(&file, "# only a comment\n\n").unwrap();
        let err = load_tokens(path, "").unwrap_err();
        assert!(matches!(err, TokenError::Empty(_)), "{err}");
        assert!(err.to_string().contains("holds no token"), "{err}");
        std::fs::write(&file, "has space\n").unwrap();
        assert!(matches!(load_tokens(path, ""), Err(TokenError::Invalid(_))));
        assert!(matches!(load_tokens("", ""), Err(TokenError::Unset)));
        let missing = dir.path().join("nope");
        assert!(matches!(
            load_tokens(missing.to_str().unwrap(), ""),
            Err(TokenError::Read { .. })
        ));
        let err = load_tokens("", "KVWIRE_TEST_SURELY_UNSET_TOKEN_VAR").unwrap_err();
        assert!(matches!(err, TokenError::Var(_)), "{err}");
    }

    #[test]
    fn the_header_must_be_an_accepted_bearer_token() {
        let set = TokenSet(vec![Sha256::digest(b"s3cret").into()].into());
        let headers = |v: Option<&'static str>| {
            let mut h = http::HeaderMap::new();
            if let Some(v) = v {
                h.insert(
                    http::header::AUTHORIZATION,
                    http::HeaderValue::from_static(v),
                );
            }
            h
        };
        assert_eq!(refusal(&set, &headers(Some("Bearer s3cret"))), None);
        assert_eq!(refusal(&set, &headers(Some("bearer s3cret"))), None);
        for bad in [
            None,
            Some("Bearer wrong"),
            Some("Basic s3cret"),
            Some("Bear"),
        ] {
            assert!(refusal(&set, &headers(bad)).is_some(), "{bad:?}");
        }
    }
}
