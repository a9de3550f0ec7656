//! Per-client limits on the sharer's refinement sessions (issue 18): clients are told apart by
//! their bearer token here (by the certificate under mutual TLS, else the address); a client
//! over `sessions.max_per_client` loses its own oldest session, not another client's, and only
//! the client that made a session can refine it.

use e2e_tests::sessions::{Client, refine_upgrade as refine, token_client as client};
use e2e_tests::{TINY_MODEL, example, start_sharer_with};
use kvwire_proto::v1 as pb;
use service_kit::transport::client::ClientTransport;
use service_kit::transport::settings::{AuthMode, AuthSettings};
use sharer_svc::SharerConfig;
use tonic::Code;

/// A kept Share at int8: its session id.
async fn share(client: &mut Client) -> String {
    let req = pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Example(example("p"))),
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Int8 as i32,
            ..Default::default()
        }),
        keep_session: true,
        ..Default::default()
    };
    let mut stream = client.share(req).await.unwrap().into_inner();
    let mut id = String::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        if !chunk.session_id.is_empty() {
            id = chunk.session_id;
        }
    }
    assert!(!id.is_empty(), "no session kept");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_client_has_its_own_sessions_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "alpha\nbeta\n").unwrap();
    let (alpha, beta) = (dir.path().join("alpha"), dir.path().join("beta"));
    std::fs::write(&alpha, "alpha\n").unwrap();
    std::fs::write(&beta, "beta\n").unwrap();
    let mut config = SharerConfig {
        model: TINY_MODEL.into(),
        auth: AuthSettings {
            mode: AuthMode::Token,
            tokens_file: tokens.display().to_string(),
            tokens_env: String::new(),
        },
        ..SharerConfig::default()
    };
    config.sessions.max_per_client = 1;
    let sharer = start_sharer_with(config, &ClientTransport::default()).await;
    let mut a = client(&sharer.endpoint(), &alpha).await;
    let mut b = client(&sharer.endpoint(), &beta).await;
    let a1 = share(&mut a).await;
    let b1 = share(&mut b).await;
    // Only the owner finds its session.
    assert_eq!(
        refine(&mut b, &a1).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(refine(&mut a, &a1).await.unwrap() > 1);
    // a's second session pushes out a's first, and b's stays.
    let a2 = share(&mut a).await;
    assert_eq!(
        refine(&mut a, &a1).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(refine(&mut a, &a2).await.unwrap() > 1);
    assert!(refine(&mut b, &b1).await.unwrap() > 1);
}
