//! Connection bounds of a real service (issue 18; the bounds themselves are unit-tested in
//! service-kit): a raw TCP connection that sends nothing is closed at the handshake timeout
//! (once, one stayed open over 120 s), a client that sent its preface and then nothing once
//! it leaves the server's pings unanswered (or at the idle timeout), connections beyond `connections.max_connections` are closed at once, and a
//! gRPC client that stays connected but quiet past the idle timeout keeps working (the server
//! pings it and it answers).

use std::time::{Duration, Instant};

use e2e_tests::{Running, TINY_MODEL, start_sharer_with};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::sharer_client::SharerClient;
use service_kit::transport::client::ClientTransport;
use service_kit::transport::settings::ConnectionSettings;
use sharer_svc::SharerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The HTTP/2 client preface: what a gRPC client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn sharer(max_connections: usize) -> Running {
    let config = SharerConfig {
        model: TINY_MODEL.into(),
        connections: ConnectionSettings {
            max_connections,
            handshake_timeout_secs: 1,
            idle_timeout_secs: 3,
            ..ConnectionSettings::default()
        },
        ..SharerConfig::default()
    };
    start_sharer_with(config, &ClientTransport::default()).await
}

/// Seconds until the server closes `stream` (what the server sends is dropped), at most 20.
async fn closed_after(stream: &mut TcpStream) -> f64 {
    let start = Instant::now();
    match tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut Vec::new())).await {
        Ok(_) => start.elapsed().as_secs_f64(),
        Err(_) => panic!("still open after 20 s"),
    }
}

async fn info(url: &str) -> Result<pb::ModelInfo, tonic::Status> {
    let mut client = SharerClient::connect(url.to_string())
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Ok(client.info(pb::InfoRequest {}).await?.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_and_idle_connections_are_closed_and_live_clients_kept() {
    let sharer = sharer(8).await;
    let mut silent = TcpStream::connect(sharer.addr).await.unwrap();
    let t = closed_after(&mut silent).await;
    assert!(
        (0.8..3.0).contains(&t),
        "silent connection closed after {t:.2} s"
    );
    let mut quiet = TcpStream::connect(sharer.addr).await.unwrap();
    quiet.write_all(PREFACE).await.unwrap();
    // Closed when its pings (every third of the idle timeout) go unanswered for as long, or at
    // the idle timeout, whichever comes first.
    let t = closed_after(&mut quiet).await;
    assert!(
        (1.5..6.0).contains(&t),
        "quiet connection closed after {t:.2} s"
    );
    // A real client, quiet for twice the idle timeout between calls, on one channel.
    let channel = tonic::transport::Endpoint::from_shared(sharer.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = SharerClient::new(channel);
    client.info(pb::InfoRequest {}).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    client.info(pb::InfoRequest {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_beyond_the_limit_are_closed_at_once() {
    let sharer = sharer(2).await;
    // Two connections that sent their preface hold both slots (until the server's pings go
    // unanswered). The health probe's connection may still be closing: a holder refused at
    // once is replaced.
    let mut held = Vec::new();
    while held.len() < 2 {
        let mut c = TcpStream::connect(sharer.addr).await.unwrap();
        c.write_all(PREFACE).await.unwrap();
        let mut buf = [0u8; 256];
        // Still open 300 ms later (the server's SETTINGS may arrive meanwhile): it holds a slot.
        let open = loop {
            match tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await {
                Err(_) => break true,
                Ok(Ok(0) | Err(_)) => break false,
                Ok(Ok(_)) => {}
            }
        };
        if open {
            held.push(c);
        }
    }
    // The third is closed unserved: no SETTINGS frame answers its preface.
    let mut third = TcpStream::connect(sharer.addr).await.unwrap();
    let _ = third.write_all(PREFACE).await;
    let mut buf = [0u8; 256];
    let got = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf)).await;
    assert!(
        matches!(got, Ok(Ok(0) | Err(_))),
        "third connection: {got:?}"
    );
    assert!(info(&sharer.endpoint()).await.is_err());
    // Slots free again once the holders go.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    info(&sharer.endpoint()).await.unwrap();
}
