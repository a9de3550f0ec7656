//! Secure transport (issue 18), with certificates made here by rcgen: a sharer under mutual
//! TLS and a token check refuses a client without a certificate, one that trusts another CA,
//! one without a token and one with a wrong token (a TLS handshake error for certificates,
//! UNAUTHENTICATED for tokens), and serves the right one; a receiver that reaches it over
//! `https://` with its own client certificate and token, itself under mutual TLS and tokens,
//! answers an Evaluate end to end, and its transport bytes are TLS record bytes (more than the same Evaluate over plain TCP, by at least
//! the certificates each side sent).

use std::path::PathBuf;

use e2e_tests::{Running, TINY_MODEL, example, start_receiver_secured, start_sharer_with};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use receiver_svc::ReceiverConfig;
use service_kit::rpc::ERROR_TYPE_KEY;
use service_kit::transport::client::ClientTransport;
use service_kit::transport::settings::{
    AuthMode, AuthSettings, ClientSettings, TlsMode, TlsSettings,
};
use sharer_svc::SharerConfig;
use tonic::Code;

const TOKEN: &str = "sharer-token-0123456789";

/// A CA and the certificates it signed, as PEM files in a temporary folder.
struct Pki {
    dir: tempfile::TempDir,
    /// Der lengths of the server and client certificates (what each side sends).
    server_der: usize,
    client_der: usize,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let authority = ca("kvwire test CA");
        let server_der = leaf(&dir, "server", &authority, &["localhost", "127.0.0.1"]);
        let client_der = leaf(&dir, "client", &authority, &["receiver"]);
        write(&dir, "ca.pem", &authority.pem());
        // Another CA, with a certificate of its own: trusted by nobody here.
        let other = ca("another CA");
        write(&dir, "other-ca.pem", &other.pem());
        leaf(&dir, "stranger", &other, &["stranger"]);
        write(&dir, "tokens", &format!("# accepted\n{TOKEN}\n"));
        write(&dir, "wrong-token", "not-the-token\n");
        Self {
            dir,
            server_der,
            client_der,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Client settings: trusting `ca`, presenting `cert` (none when empty), sending `token`.
    fn client(&self, ca: &str, cert: &str, token: &str) -> ClientSettings {
        let file = |name: &str| {
            if name.is_empty() {
                String::new()
            } else {
                self.path(name)
            }
        };
        ClientSettings {
            ca: file(ca),
            cert: file(&if cert.is_empty() {
                String::new()
            } else {
                format!("{cert}.pem")
            }),
            key: file(&if cert.is_empty() {
                String::new()
            } else {
                format!("{cert}.key")
            }),
            token_file: file(token),
            token_env: String::new(),
        }
    }

    /// `[tls]` of a server in `mode` with the server certificate.
    fn server_tls(&self, mode: TlsMode) -> TlsSettings {
        TlsSettings {
            mode,
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: self.path("ca.pem"),
        }
    }

    fn token_auth(&self) -> AuthSettings {
        AuthSettings {
            mode: AuthMode::Token,
            tokens_file: self.path("tokens"),
            tokens_env: String::new(),
        }
    }
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Writes `{name}.pem` and `{name}.key` signed by `ca`; returns the certificate's DER length.
fn leaf(
    dir: &tempfile::TempDir,
    name: &str,
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
) -> usize {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    write(dir, &format!("{name}.pem"), &cert.pem());
    write(dir, &format!("{name}.key"), &key.serialize_pem());
    cert.der().len()
}

fn transport(settings: &ClientSettings) -> ClientTransport {
    ClientTransport::load(settings, "test").unwrap()
}

/// A sharer under mutual TLS and the token check.
async fn secured_sharer(pki: &Pki) -> Running {
    let config = SharerConfig {
        model: TINY_MODEL.into(),
        tls: pki.server_tls(TlsMode::Mutual),
        auth: pki.token_auth(),
        ..SharerConfig::default()
    };
    start_sharer_with(config, &transport(&pki.client("ca.pem", "client", ""))).await
}

/// Info on the sharer at `url` through `settings`: `Err` with the status when refused.
async fn sharer_info(url: &str, settings: &ClientSettings) -> Result<(), tonic::Status> {
    let client = transport(settings);
    let channel = client
        .endpoint(url)
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e:?}")))?;
    SharerClient::new(client.wrap(channel))
        .info(pb::InfoRequest {})
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mutual_tls_and_tokens_refuse_wrong_clients_and_serve_the_right_one() {
    let pki = Pki::new();
    let sharer = secured_sharer(&pki).await;
    let url = sharer.https_endpoint();
    sharer_info(&url, &pki.client("ca.pem", "client", "tokens"))
        .await
        .unwrap();
    // Certificates: no client certificate, one from another CA, a client that trusts another
    // CA than the server's: each fails in the TLS handshake, so the call fails in the
    // transport (tonic's status carries the transport error; under TLS 1.3 the server's
    // refusal of a client certificate arrives after the client's side of the handshake: the
    // connection is closed: UNKNOWN "transport error" with the TLS alert as its source, or
    // CANCELLED when the close wins the race), never with a status the sharer sent.
    for (what, settings) in [
        ("no client certificate", pki.client("ca.pem", "", "tokens")),
        (
            "a client certificate of another CA",
            pki.client("ca.pem", "stranger", "tokens"),
        ),
        (
            "a client trusting another CA",
            pki.client("other-ca.pem", "client", "tokens"),
        ),
    ] {
        let status = sharer_info(&url, &settings).await.unwrap_err();
        assert!(
            matches!(
                status.code(),
                Code::Unavailable | Code::Cancelled | Code::Unknown
            ),
            "{what}: {status:?}"
        );
        assert!(
            std::error::Error::source(&status).is_some() || status.message().starts_with("connect"),
            "{what}: not a transport failure: {status:?}"
        );
        assert!(
            status.metadata().get(ERROR_TYPE_KEY).is_none(),
            "{what}: {status:?}"
        );
    }
    // Plain TCP to a TLS port gets no gRPC answer either.
    let plain = sharer_info(&sharer.endpoint(), &ClientSettings::default()).await;
    assert!(plain.is_err(), "{plain:?}");
    // Tokens: none, or a wrong one: UNAUTHENTICATED, labelled.
    for (what, token) in [("no token", ""), ("a wrong token", "wrong-token")] {
        let status = sharer_info(&url, &pki.client("ca.pem", "client", token))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert_eq!(
            status.metadata().get(ERROR_TYPE_KEY).unwrap(),
            "unauthenticated",
            "{what}"
        );
    }
}

/// A receiver (its own server under mutual TLS and the token check when `secured`) whose
/// sharer is `sharer_url`, reached through `sharer_client`.
async fn receiver(
    pki: &Pki,
    sharer_url: &str,
    sharer_client: ClientSettings,
    secured: bool,
) -> Running {
    let mut config = ReceiverConfig {
        model: TINY_MODEL.into(),
        sharer_endpoint: sharer_url.into(),
        sharer_client,
        ..ReceiverConfig::default()
    };
    let mut health = ClientSettings::default();
    if secured {
        config.tls = pki.server_tls(TlsMode::Mutual);
        config.auth = pki.token_auth();
        health = pki.client("ca.pem", "client", "");
    }
    start_receiver_secured(config, &transport(&health)).await
}

/// One KV Evaluate through `receiver` (as `client` reaches it): its total.
async fn evaluate(url: &str, client: &ClientSettings) -> Result<pb::ByteCounts, tonic::Status> {
    let client = transport(client);
    let channel = client
        .endpoint(url)
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("connect: {e:?}")))?;
    let request = pb::EvaluateRequest {
        example: Some(example("tls")),
        method: pb::Method::Kv as i32,
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Fp16 as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let reply = ReceiverClient::new(client.wrap(channel))
        .evaluate(request)
        .await?
        .into_inner();
    Ok(reply.total.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_evaluate_crosses_tls_end_to_end_and_counts_tls_bytes() {
    let pki = Pki::new();
    let sharer = secured_sharer(&pki).await;
    let tls = receiver(
        &pki,
        &sharer.https_endpoint(),
        pki.client("ca.pem", "client", "tokens"),
        true,
    )
    .await;
    let caller = pki.client("ca.pem", "client", "tokens");
    let over_tls = evaluate(&tls.https_endpoint(), &caller).await.unwrap();
    // The coordinator's channel (its CA and token) reaches the receiver the same way.
    let channel =
        coordinator::runner::receiver_channel(&tls.https_endpoint(), &transport(&caller)).unwrap();
    ReceiverClient::new(channel)
        .info(pb::InfoRequest {})
        .await
        .unwrap();
    // The receiver's own token check: a caller without the token is refused.
    let status = evaluate(&tls.https_endpoint(), &pki.client("ca.pem", "client", ""))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // Nor is a caller without a client certificate (the receiver is under mutual TLS too).
    let status = evaluate(&tls.https_endpoint(), &pki.client("ca.pem", "", "tokens"))
        .await
        .unwrap_err();
    assert!(
        status.metadata().get(ERROR_TYPE_KEY).is_none(),
        "refused in the handshake: {status:?}"
    );
    // The receiver's client without its certificate or token cannot use the sharer.
    for (what, settings) in [
        ("no client certificate", pki.client("ca.pem", "", "tokens")),
        ("no token", pki.client("ca.pem", "client", "")),
    ] {
        let r = receiver(&pki, &sharer.https_endpoint(), settings, false).await;
        let status = evaluate(&r.endpoint(), &ClientSettings::default())
            .await
            .unwrap_err();
        assert!(
            matches!(status.code(), Code::Unavailable | Code::Unauthenticated),
            "{what}: {status:?}"
        );
    }
    // The same transfer over plain TCP: the same blob, fewer transport bytes.
    let plain_sharer = e2e_tests::start_sharer(TINY_MODEL).await;
    let plain = receiver(
        &pki,
        &plain_sharer.endpoint(),
        ClientSettings::default(),
        false,
    )
    .await;
    let over_tcp = evaluate(&plain.endpoint(), &ClientSettings::default())
        .await
        .unwrap();
    assert_eq!(over_tls.measured_total, over_tcp.measured_total);
    assert_eq!(over_tls.grpc_message_bytes, over_tcp.grpc_message_bytes);
    // Under TLS the counts are TLS records: the server's certificate came in, the client's
    // went out, on top of the same gRPC messages.
    for (direction, tls, tcp, cert) in [
        (
            "read",
            over_tls.transport_read,
            over_tcp.transport_read,
            pki.server_der,
        ),
        (
            "written",
            over_tls.transport_written,
            over_tcp.transport_written,
            pki.client_der,
        ),
    ] {
        assert!(
            tls >= tcp + cert as u64,
            "{direction}: TLS {tls} B, plain TCP {tcp} B, certificate {cert} B"
        );
    }
}
