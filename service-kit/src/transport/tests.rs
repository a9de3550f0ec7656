//! Start-up checks of the transport sections, with certificates made by rcgen: every problem
//! is reported together, each naming its key.

use super::*;
use crate::transport::client::{ClientError, ClientTransport};
use crate::transport::pem::PemError;
use crate::transport::settings::ClientSettings;

/// A self-signed certificate for `localhost` and its key, as PEM files in `dir`.
fn self_signed(dir: &std::path::Path, name: &str) -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn key_pairs_are_checked_to_belong_together() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, key_a) = self_signed(dir.path(), "a");
    let (_, key_b) = self_signed(dir.path(), "b");
    pem::load_key_pair(&cert_a, &key_a).unwrap();
    let mismatch = pem::load_key_pair(&cert_a, &key_b).unwrap_err();
    assert!(matches!(mismatch, PemError::Mismatch { .. }), "{mismatch}");
    assert!(
        mismatch.to_string().contains("is not the private key"),
        "{mismatch}"
    );
    assert_eq!(mismatch.field("tls"), "tls.key");
    let swapped = pem::load_key_pair(&key_a, &cert_a).unwrap_err();
    assert!(matches!(swapped, PemError::Certificate { .. }), "{swapped}");
    assert!(
        swapped.to_string().contains("no PEM certificate"),
        "{swapped}"
    );
    let missing = pem::load_key_pair("/nonexistent/cert.pem", &key_a).unwrap_err();
    assert!(matches!(missing, PemError::Read { .. }), "{missing}");
    assert_eq!(missing.field("tls"), "tls.cert");
    assert!(pem::load_ca(&key_a).is_err());
    pem::load_ca(&cert_a).unwrap();
}

#[test]
fn every_problem_of_the_server_sections_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key_a) = self_signed(dir.path(), "a");
    let (_, key_b) = self_signed(dir.path(), "b");
    let empty = dir.path().join("tokens");
    std::fs::write(&empty, "# nothing yet\n").unwrap();
    let tls = TlsSettings {
        mode: TlsMode::Mutual,
        cert: cert.clone(),
        key: key_b,
        client_ca: String::new(),
    };
    let auth = AuthSettings {
        mode: AuthMode::Token,
        tokens_file: empty.display().to_string(),
        tokens_env: String::new(),
    };
    let connections = ConnectionSettings {
        max_connections: 0,
        handshake_timeout_secs: u64::MAX,
        idle_timeout_secs: 2,
        max_frame_bytes: 1,
        ..ConnectionSettings::default()
    };
    let sections = ServerSections {
        tls: &tls,
        auth: &auth,
        connections: &connections,
    };
    let err = ServerTransport::load(sections).unwrap_err().to_string();
    for part in [
        "tls.key: ",
        "is not the private key",
        "tls.client_ca: not set",
        "auth: tokens file",
        "holds no token",
        "connections.max_connections",
        "connections.handshake_timeout_secs",
        "connections.idle_timeout_secs: must be 3",
        "connections.max_frame_bytes: must be 16384",
    ] {
        assert!(err.contains(part), "{part:?} missing from {err}");
    }
    // The same sections, fixed, load and say what is in force.
    let tls = TlsSettings {
        mode: TlsMode::Tls,
        key: key_a,
        ..tls
    };
    std::fs::write(&empty, "t0k3n\n").unwrap();
    let fixed = ServerSections {
        tls: &tls,
        auth: &auth,
        connections: &ConnectionSettings::default(),
    };
    let loaded = ServerTransport::load(fixed).unwrap();
    let said = loaded.to_string();
    assert!(
        said.starts_with("TLS, bearer token required (1 accepted)")
            && said.ends_with("frames up to 1024 KiB"),
        "{said}"
    );
    assert!(
        ServerTransport::plaintext()
            .to_string()
            .starts_with("plain TCP")
    );
}

#[test]
fn clients_refuse_half_identities_and_https_without_a_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path(), "a");
    let half = ClientSettings {
        ca: cert.clone(),
        cert: cert.clone(),
        ..ClientSettings::default()
    };
    let no_ca = ClientSettings {
        cert: cert.clone(),
        key: key.clone(),
        ..ClientSettings::default()
    };
    for (settings, want) in [(half, "set both or neither"), (no_ca, "needs ca")] {
        let err = ClientTransport::load(&settings, "x").unwrap_err();
        assert!(err.to_string().contains(want), "{want}: {err}");
    }
    let plain = ClientTransport::load(&ClientSettings::default(), "--tls-ca").unwrap();
    assert!(!plain.has_tls() && !plain.has_token());
    plain.endpoint("http://127.0.0.1:1").unwrap();
    let err = plain.endpoint("https://127.0.0.1:1").unwrap_err();
    assert!(matches!(err, ClientError::NoCa { .. }), "{err}");
    assert!(err.to_string().contains("--tls-ca"), "{err}");
    let full = ClientSettings {
        ca: cert.clone(),
        cert,
        key,
        ..ClientSettings::default()
    };
    let tls = ClientTransport::load(&full, "x").unwrap();
    assert!(tls.has_tls());
    assert_eq!(
        tls.to_string(),
        "https:// with a CA and a client certificate, no token"
    );
    assert_eq!(
        plain.to_string(),
        "http:// only (no CA for https://), no token"
    );
    tls.endpoint("https://localhost:1").unwrap();
}
