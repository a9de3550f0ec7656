//! Which sharers this receiver may connect to: the configured default plus `allowed_sharers`
//! (a request chooses its sharer, so without a list any caller could make the receiver connect
//! to any host and port). Endpoints compare by scheme, host (case-insensitive) and port, so
//! `http://Sharer:50051/` and `http://sharer:50051` are the same sharer (`https://sharer:50051`
//! is another). `https://` needs `sharer_client.ca`: without a CA it is refused, never used as
//! plaintext.

use crate::error::ReceiverError;

/// Why an endpoint is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Not an `http://host:port` URL.
    #[error("{0}")]
    Invalid(String),
    /// An `https://` URL while no CA is configured.
    #[error(
        "https:// (TLS) needs sharer_client.ca (the CA that signs the sharer's certificate) in \
         this receiver's configuration"
    )]
    Tls,
}

/// A sharer endpoint as compared against the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharerAddress {
    https: bool,
    host: String,
    port: u16,
}

impl SharerAddress {
    /// Parses `http://host[:port][/]` (port 80 when absent) or, when `tls` (a CA is
    /// configured), `https://host[:port][/]` (port 443); `https://` without `tls` is
    /// [`AddressError::Tls`].
    pub fn parse(endpoint: &str, tls: bool) -> Result<Self, AddressError> {
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e: http::uri::InvalidUri| AddressError::Invalid(e.to_string()))?;
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") && tls => true,
            Some(s) if s.eq_ignore_ascii_case("https") => return Err(AddressError::Tls),
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            _ => {
                return Err(AddressError::Invalid(
                    "expected http://host:port or https://host:port".to_string(),
                ));
            }
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| AddressError::Invalid("no host".to_string()))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(AddressError::Invalid(
                "a sharer endpoint has no path or query".to_string(),
            ));
        }
        Ok(Self {
            https,
            host: host.to_ascii_lowercase(),
            port: uri.port_u16().unwrap_or(if https { 443 } else { 80 }),
        })
    }
}

/// The sharers a request may name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    entries: Vec<SharerAddress>,
    tls: bool,
}

impl AllowList {
    /// `default` (when not empty) and `allowed`, `https://` ones included when `tls` (a CA is
    /// configured); entries that do not parse are left out (configuration validation reports
    /// them before the service starts).
    pub fn new(default: &str, allowed: &[String], tls: bool) -> Self {
        let entries = std::iter::once(default)
            .filter(|d| !d.is_empty())
            .chain(allowed.iter().map(String::as_str))
            .filter_map(|e| SharerAddress::parse(e, tls).ok())
            .collect();
        Self { entries, tls }
    }

    /// Whether a request may name `endpoint`: INVALID_ARGUMENT when it does not parse,
    /// FAILED_PRECONDITION (`tls_unsupported`) for `https://` without a CA, PERMISSION_DENIED
    /// (`sharer_not_allowed`) when it is not on the list.
    pub fn check(&self, endpoint: &str) -> Result<(), ReceiverError> {
        let address = SharerAddress::parse(endpoint, self.tls).map_err(|e| match e {
            AddressError::Tls => ReceiverError::TlsUnsupported {
                endpoint: endpoint.to_string(),
            },
            AddressError::Invalid(reason) => ReceiverError::invalid("sharer_endpoint", reason),
        })?;
        if self.entries.contains(&address) {
            Ok(())
        } else {
            Err(ReceiverError::SharerNotAllowed {
                endpoint: endpoint.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use service_kit::rpc::ServiceError;
    use tonic::Code;

    use super::*;

    #[test]
    fn addresses_compare_by_host_and_port() {
        let parse = |e| SharerAddress::parse(e, false);
        let a = parse("http://Sharer:50051/").unwrap();
        assert_eq!(a, parse("http://sharer:50051").unwrap());
        assert_ne!(a, parse("http://sharer:50052").unwrap());
        assert_eq!(
            parse("http://sharer").unwrap(),
            parse("http://sharer:80").unwrap()
        );
        let tls = SharerAddress::parse("https://sharer:50051", true).unwrap();
        assert_ne!(tls, a);
        assert_eq!(
            SharerAddress::parse("https://sharer", true).unwrap(),
            SharerAddress::parse("HTTPS://sharer:443/", true).unwrap()
        );
        for bad in [
            "sharer:50051",
            "ftp://sharer:1",
            "http://sharer:1/x",
            "not a uri",
        ] {
            assert!(matches!(parse(bad), Err(AddressError::Invalid(_))), "{bad}");
        }
        assert_eq!(parse("https://sharer:443"), Err(AddressError::Tls));
    }

    #[test]
    fn only_listed_sharers_pass_and_https_is_refused_without_a_ca() {
        let list = AllowList::new(
            "http://127.0.0.1:50051",
            &["http://other:7".to_string()],
            false,
        );
        list.check("http://127.0.0.1:50051/").unwrap();
        list.check("http://OTHER:7").unwrap();
        let refused = |endpoint: &str| {
            let e = list.check(endpoint).unwrap_err();
            (e.code(), e.error_type())
        };
        assert_eq!(
            refused("http://127.0.0.1:50052"),
            (Code::PermissionDenied, "sharer_not_allowed")
        );
        assert_eq!(
            refused("http://169.254.169.254:80"),
            (Code::PermissionDenied, "sharer_not_allowed")
        );
        assert_eq!(
            refused("https://127.0.0.1:50051"),
            (Code::FailedPrecondition, "tls_unsupported")
        );
        assert_eq!(
            refused("127.0.0.1:50051"),
            (Code::InvalidArgument, "invalid_argument")
        );
        // No default and no list: every named sharer is refused.
        let none = AllowList::new("", &[], false);
        assert_eq!(
            none.check("http://127.0.0.1:50051").unwrap_err().code(),
            Code::PermissionDenied
        );
        // With a CA: https:// sharers on the list pass, and http:// is another sharer.
        let tls = AllowList::new("https://sharer:8443", &[], true);
        tls.check("https://SHARER:8443/").unwrap();
        assert_eq!(
            tls.check("http://sharer:8443").unwrap_err().code(),
            Code::PermissionDenied
        );
    }
}
