//! The sharer's session store under pressure (issue 18, docs/REFINEMENT.md, "Session store"):
//! a store of one session held by client A refuses client B's kept Share with
//! RESOURCE_EXHAUSTED / `session_store_full` before any frame, A's session still refines, the
//! receiver passes the refusal on with its label, and only A can release its session. An
//! Evaluate with refinement releases its session when it is done: one-session stores serve
//! Evaluate after Evaluate, and a kept Share after them.

use std::path::Path;
use std::time::Duration;

use e2e_tests::sessions::{Client, error_type, refine_upgrade as refine, token_client as client};
use e2e_tests::{
    TINY_MODEL, example, install_metrics_exporter, start_receiver_with, start_sharer_with,
};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use loadtest::scrape;
use receiver_svc::ReceiverConfig;
use service_kit::transport::client::ClientTransport;
use service_kit::transport::settings::{AuthMode, AuthSettings, ClientSettings};
use sharer_svc::SharerConfig;
use tonic::{Code, Status};

/// A kept Share: its session id, or the status and how many chunks came before it.
async fn share(client: &mut Client) -> Result<String, (Status, usize)> {
    let req = pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Example(example("store"))),
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Int8 as i32,
            ..Default::default()
        }),
        keep_session: true,
        ..Default::default()
    };
    let mut stream = client.share(req).await.map_err(|s| (s, 0))?.into_inner();
    let (mut id, mut chunks) = (String::new(), 0);
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                chunks += 1;
                if !chunk.session_id.is_empty() {
                    id = chunk.session_id;
                }
            }
            Ok(None) => return Ok(id),
            Err(status) => return Err((status, chunks)),
        }
    }
}

async fn release(client: &mut Client, id: &str) -> Result<bool, Status> {
    let req = pb::ReleaseRequest {
        session_id: id.to_string(),
    };
    Ok(client.release(req).await?.into_inner().released)
}

/// An Evaluate of the KV method at int4 whose round 2 always runs (`threshold` above any
/// margin) or never does (0).
fn evaluate(threshold: f32) -> pb::EvaluateRequest {
    pb::EvaluateRequest {
        example: Some(example("store")),
        method: pb::Method::Kv as i32,
        scoring: pb::Scoring::Rank as i32,
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Int4 as i32,
            ..Default::default()
        }),
        refine: Some(pb::RefineSettings {
            margin_threshold: threshold,
            upgrade_payload: pb::Payload::Int8 as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn one_session_sharer() -> SharerConfig {
    let mut config = SharerConfig {
        model: TINY_MODEL.into(),
        ..SharerConfig::default()
    };
    config.sessions.capacity = 1;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_store_refuses_a_kept_share_and_disturbs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "alpha\nbeta\ngamma\n").unwrap();
    let token = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{name}\n")).unwrap();
        path
    };
    let (alpha, beta, gamma) = (token("alpha"), token("beta"), token("gamma"));
    let config = SharerConfig {
        auth: AuthSettings {
            mode: AuthMode::Token,
            tokens_file: tokens.display().to_string(),
            tokens_env: String::new(),
        },
        ..one_session_sharer()
    };
    let sharer = start_sharer_with(config, &ClientTransport::default()).await;
    let mut a = client(&sharer.endpoint(), &alpha).await;
    let mut b = client(&sharer.endpoint(), &beta).await;
    let a1 = share(&mut a).await.unwrap();
    assert!(!a1.is_empty(), "a's session kept");

    // B is refused before any frame: it has nothing it could not refine.
    let (refused, chunks) = share(&mut b).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(error_type(&refused), "session_store_full");
    assert!(
        refused.message().contains("session store is full"),
        "{refused:?}"
    );
    assert_eq!(chunks, 0);
    // Nothing else disturbed: A's session refines, and only A can release it.
    assert!(refine(&mut a, &a1).await.unwrap() > 1);
    assert!(!release(&mut b, &a1).await.unwrap());
    assert!(!release(&mut a, &"ab".repeat(16)).await.unwrap());
    let malformed = release(&mut a, "not hex").await.unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);

    // A receiver (client gamma) passes the refusal on with its label.
    let receiver_config = ReceiverConfig {
        model: TINY_MODEL.into(),
        sharer_endpoint: sharer.endpoint(),
        sharer_client: ClientSettings {
            token_file: gamma.display().to_string(),
            ..ClientSettings::default()
        },
        ..ReceiverConfig::default()
    };
    let receiver = start_receiver_with(receiver_config).await;
    let mut r = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let row = r.evaluate(evaluate(1e6)).await.unwrap_err();
    assert_eq!(row.code(), Code::ResourceExhausted, "{row:?}");
    assert_eq!(error_type(&row), "session_store_full");
    assert!(refine(&mut a, &a1).await.unwrap() > 1);

    // Released, A's session is gone and its room is B's.
    assert!(release(&mut a, &a1).await.unwrap());
    assert_eq!(
        refine(&mut a, &a1).await.unwrap_err().code(),
        Code::NotFound
    );
    assert!(!share(&mut b).await.unwrap().is_empty());
    drop(receiver);
    sharer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_evaluate_with_refinement_releases_its_session() {
    let metrics_addr = install_metrics_exporter();
    let sharer = start_sharer_with(one_session_sharer(), &ClientTransport::default()).await;
    let receiver_config = ReceiverConfig {
        model: TINY_MODEL.into(),
        sharer_endpoint: sharer.endpoint(),
        ..ReceiverConfig::default()
    };
    let receiver = start_receiver_with(receiver_config).await;
    let mut r = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    // Each needs the store's one session: a session left behind would refuse the next.
    for (threshold, rounds) in [(1e6, 2), (1e6, 2), (0.0, 1), (1e6, 2)] {
        let reply = r.evaluate(evaluate(threshold)).await.unwrap().into_inner();
        assert_eq!(reply.rounds.len(), rounds, "{reply:?}");
    }
    let mut direct = client(&sharer.endpoint(), Path::new("")).await;
    assert!(!share(&mut direct).await.unwrap().is_empty());
    // Read until the fourth release is counted, for up to 10 s: one read right after the
    // last Evaluate, on a 2-core machine loaded by a training, once saw 3.
    let mut released = None;
    for _ in 0..100 {
        let page = scrape::fetch(metrics_addr, Duration::from_secs(5))
            .await
            .unwrap();
        released = scrape::value(
            &page,
            "kvwire_sessions_evicted_total",
            &[("reason", "released")],
        );
        if released.unwrap_or(0.0) >= 4.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(released.unwrap_or(0.0) >= 4.0, "released: {released:?}");
    drop(receiver);
    sharer.stop().await.unwrap();
}
