//! Certificates and keys read from PEM files at start-up, each failure named: a file not given,
//! not readable, holding no certificate or no key, or a key that is not the certificate's.

use std::path::Path;

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Why a certificate, key or CA file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The setting is empty.
    #[error("not set (a PEM file is needed)")]
    Unset {
        /// `cert`, `key`, `ca` or `client_ca`.
        which: &'static str,
    },
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// `cert`, `key`, `ca` or `client_ca`.
        which: &'static str,
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM certificate, or one that does not parse.
    #[error("{path}: {reason}")]
    Certificate {
        /// `cert`, `ca` or `client_ca`.
        which: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file holds no PEM private key, or one the crypto provider cannot use.
    #[error("{path}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {reason}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key is not the private key of the certificate.
    #[error("{key} is not the private key of the certificate in {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
        /// rustls's words.
        reason: String,
    },
}

impl PemError {
    /// The configuration field at fault, under `section` (`tls.key`, `sharer_client.cert`).
    pub fn field(&self, section: &str) -> String {
        let which = match self {
            PemError::Unset { which }
            | PemError::Read { which, .. }
            | PemError::Certificate { which, .. } => which,
            PemError::Key { .. } | PemError::Mismatch { .. } => "key",
        };
        if section.is_empty() {
            which.to_string()
        } else {
            format!("{section}.{which}")
        }
    }
}

/// A certificate chain and its private key, both PEM, checked to belong together.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM.
    pub key_pem: Vec<u8>,
}

fn read(which: &'static str, path: &str) -> Result<Vec<u8>, PemError> {
    if path.is_empty() {
        return Err(PemError::Unset { which });
    }
    std::fs::read(Path::new(path)).map_err(|source| PemError::Read {
        which,
        path: path.to_string(),
        source,
    })
}

fn certificates(
    which: &'static str,
    path: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bad = |reason: String| PemError::Certificate {
        which,
        path: path.to_string(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("PEM certificate does not parse: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "no PEM certificate (-----BEGIN CERTIFICATE-----)".into()
        ));
    }
    Ok(certs)
}

/// Reads a CA file: at least one PEM certificate.
pub fn load_ca(path: &str) -> Result<Vec<u8>, PemError> {
    let pem = read("ca", path)?;
    certificates("ca", path, &pem)?;
    Ok(pem)
}

/// Reads `cert` and `key` and checks that the key is the certificate's (the public key of the
/// leaf certificate equals the key's).
pub fn load_key_pair(cert: &str, key: &str) -> Result<KeyPair, PemError> {
    let cert_pem = read("cert", cert);
    let key_pem = read("key", key);
    let (cert_pem, key_pem) = (cert_pem?, key_pem?);
    let chain = certificates("cert", cert, &cert_pem)?;
    let bad_key = |reason: String| PemError::Key {
        path: key.to_string(),
        reason,
    };
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| bad_key(e.to_string()))?;
    CertifiedKey::from_der(chain, der, &default_provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => PemError::Mismatch {
            cert: cert.to_string(),
            key: key.to_string(),
            reason: e.to_string(),
        },
        other => bad_key(other.to_string()),
    })?;
    Ok(KeyPair { cert_pem, key_pem })
}
