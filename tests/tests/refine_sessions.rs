//! Refinement sessions end to end (docs/REFINEMENT.md): an expired session is NOT_FOUND and
//! the sharer goes on serving; the same Share and Refine twice give the same bytes (the random
//! session id aside).

use std::time::Duration;

use e2e_tests::{TINY_MODEL, example, start_sharer_with};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::sharer_client::SharerClient;
use service_kit::transport::client::ClientTransport;
use sharer_svc::SharerConfig;
use tonic::Code;
use tonic::transport::Channel;

fn share_request() -> pb::ShareRequest {
    pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Example(example("s1"))),
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Int4 as i32,
            selection: pb::Selection::Front as i32,
            keep_fraction: 0.5,
            ..Default::default()
        }),
        keep_session: true,
        all_positions: false,
        query: String::new(),
    }
}

/// Share's records, the session id and the prompt's length.
async fn share(client: &mut SharerClient<Channel>) -> (Vec<Vec<u8>>, String, u32) {
    let mut stream = client.share(share_request()).await.unwrap().into_inner();
    let (mut records, mut id, mut tokens) = (Vec::new(), String::new(), 0);
    while let Some(chunk) = stream.message().await.unwrap() {
        if !chunk.session_id.is_empty() {
            id = chunk.session_id;
            tokens = chunk.prompt_tokens;
        }
        records.push(chunk.frame.into());
    }
    (records, id, tokens)
}

/// Round 2: the last two shareable positions (not in the front half sent), at int4.
fn refine_request(session_id: &str, tokens: u32) -> pb::RefineRequest {
    pb::RefineRequest {
        session_id: session_id.into(),
        want: Some(pb::refine_request::Want::Extra(pb::ExtraPositions {
            positions: vec![tokens - 3, tokens - 2],
            payload: pb::Payload::Int4 as i32,
        })),
        granularity: 0,
    }
}

async fn refine(
    client: &mut SharerClient<Channel>,
    session_id: &str,
    tokens: u32,
) -> Result<Vec<Vec<u8>>, tonic::Status> {
    let mut stream = client
        .refine(refine_request(session_id, tokens))
        .await?
        .into_inner();
    let mut records = Vec::new();
    while let Some(chunk) = stream.message().await? {
        records.push(chunk.frame.into());
    }
    Ok(records)
}

/// A session header without its session id (bytes 12..28) and CRC (the last 4).
fn without_id(header: &[u8]) -> Vec<u8> {
    let mut h = header[..header.len() - 4].to_vec();
    h[12..28].fill(0);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_session_is_not_found_and_the_same_request_gives_the_same_bytes() {
    let mut config = SharerConfig {
        model: TINY_MODEL.into(),
        ..SharerConfig::default()
    };
    config.sessions.ttl_secs = 1;
    let sharer = start_sharer_with(config, &ClientTransport::default()).await;
    let mut client = SharerClient::connect(sharer.endpoint()).await.unwrap();

    let (first, id1, n) = share(&mut client).await;
    let (second, id2, _) = share(&mut client).await;
    assert!(!id1.is_empty() && id1 != id2, "{id1} / {id2}");
    assert_eq!(first.len(), second.len());
    assert_eq!(without_id(&first[0]), without_id(&second[0]));
    assert_eq!(first[1..], second[1..], "round-1 frames differ");
    let r1 = refine(&mut client, &id1, n).await.unwrap();
    let r2 = refine(&mut client, &id2, n).await.unwrap();
    assert!(r1.len() > 1);
    assert_eq!(without_id(&r1[0]), without_id(&r2[0]));
    assert_eq!(r1[1..], r2[1..], "round-2 frames differ");

    // Past its TTL the session is gone: NOT_FOUND, and nothing else breaks.
    let (_, expiring, _) = share(&mut client).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let err = refine(&mut client, &expiring, n).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let unknown = refine(&mut client, &"ab".repeat(16), n).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let (_, fresh, _) = share(&mut client).await;
    let again = refine(&mut client, &fresh, n).await.unwrap();
    assert_eq!(again[1..], r1[1..]);
    sharer.stop().await.unwrap();
}
