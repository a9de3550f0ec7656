//! The coordinator's delaying relay between a receiver and its sharer (docs/REGIME_MAP.md):
//! a KV evaluation crosses it with its delay, a paused relay stalls the stream until the
//! receiver's own deadline ends the call (`limits.default_timeout_secs`; the receiver answers
//! with a status, it does not hang), and after resuming the same request is answered again.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use coordinator::relay::{Delays, Relay};
use e2e_tests::{TINY_MODEL, example, start_receiver_with, start_sharer};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use receiver_svc::ReceiverConfig;
use tonic::Code;

fn kv_request(sharer_endpoint: &str) -> pb::EvaluateRequest {
    pb::EvaluateRequest {
        example: Some(example("e1")),
        method: pb::Method::Kv as i32,
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Int8 as i32,
            ..Default::default()
        }),
        sharer_endpoint: sharer_endpoint.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_relay_stalls_the_stream_until_the_deadline_and_resuming_recovers() {
    let sharer = start_sharer(TINY_MODEL).await;
    let target = sharer.addr;
    let relay = Relay::start(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        Box::new(move || TcpStream::connect(target)),
        Delays::both(Duration::from_millis(25)),
        None,
    )
    .unwrap();
    let via = format!("http://{}", relay.addr());
    let mut config = ReceiverConfig {
        model: TINY_MODEL.into(),
        sharer_endpoint: sharer.endpoint(),
        allowed_sharers: vec![via.clone()],
        ..ReceiverConfig::default()
    };
    config.limits.default_timeout_secs = 2;
    let receiver = start_receiver_with(config).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();

    // Through the relay: answered, and the relay carried the frames both ways.
    let t = Instant::now();
    let ok = client
        .evaluate(kv_request(&via))
        .await
        .unwrap()
        .into_inner();
    assert!(!ok.prediction.is_empty());
    // At least the request and the reply each waited 25 ms in the relay.
    assert!(
        t.elapsed() >= Duration::from_millis(50),
        "{:?}",
        t.elapsed()
    );
    let carried = relay.stats();
    assert!(
        carried.connections >= 1 && carried.bytes_down > 0,
        "{carried:?}"
    );

    // Paused: the stream stalls; the receiver's 2 s deadline ends the call.
    relay.pause();
    let t = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(30), client.evaluate(kv_request(&via)))
        .await
        .expect("the receiver must not hang on a stalled sharer")
        .expect_err("a stalled stream cannot produce a prediction");
    // docs/STATUS_CODES.md lists a receiver deadline as DEADLINE_EXCEEDED (`deadline`); today
    // the receiver's own timeout on its sharer call comes back as CANCELLED, labelled
    // `sharer_status` ("sharer returned Cancelled: Timeout expired"): a known gap, reported.
    // Either way the call ends at the deadline with a status, which is what is tested here.
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let stalled = relay.stats();
    assert_eq!(
        stalled.bytes_down, carried.bytes_down,
        "nothing went through while paused"
    );

    // Resumed: the same request is answered again.
    relay.resume();
    let again = client
        .evaluate(kv_request(&via))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.prediction, ok.prediction);
}
