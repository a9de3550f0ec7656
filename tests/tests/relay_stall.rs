//! The coordinator's delaying relay between a receiver and its sharer (docs/REGIME_MAP.md):
//! a KV evaluation crosses it with its delay, a paused relay stalls the stream until the
//! receiver's own deadline ends the call (`limits.default_timeout_secs`; the receiver answers
//! with DEADLINE_EXCEEDED, `deadline`, it does not hang), and after resuming the same request
//! is answered again. Evaluations in a row share one connection to the sharer, and the
//! transport bytes each reports add up to what the relay carried; the wait for the first frame
//! holds the link's latency both ways. (Without a relay: a sharer restarted between two
//! evaluations is reached at the first try, the pooled connection to the old one being closed.)

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use coordinator::relay::{Delays, Relay};
use e2e_tests::{
    Running, TINY_MODEL, kv_request, rebind, start_receiver, start_receiver_with, start_sharer,
    start_sharer_on,
};
use kvwire_proto::v1::receiver_client::ReceiverClient;
use receiver_svc::ReceiverConfig;
use service_kit::rpc::ERROR_TYPE_KEY;
use tonic::Code;

/// A sharer behind a relay that delays each direction by `delay`, a receiver (deadline
/// `timeout_secs`, sharer connections reused while idle up to `reuse_idle_secs`) allowed to use
/// the relay, and a client of that receiver.
struct Relayed {
    _sharer: Running,
    relay: Relay,
    via: String,
    _receiver: Running,
    client: ReceiverClient<tonic::transport::Channel>,
}

async fn relayed(delay: Duration, timeout_secs: u64, reuse_idle_secs: u64) -> Relayed {
    let sharer = start_sharer(TINY_MODEL).await;
    let target = sharer.addr;
    let relay = Relay::start(
        TcpListener::bind("127.0.0.1:0").unwrap(),
        Box::new(move || TcpStream::connect(target)),
        Delays::both(delay),
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
    config.limits.default_timeout_secs = timeout_secs;
    config.limits.sharer_reuse_idle_secs = reuse_idle_secs;
    let receiver = start_receiver_with(config).await;
    let client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    Relayed {
        _sharer: sharer,
        relay,
        via,
        _receiver: receiver,
        client,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_relay_stalls_the_stream_until_the_deadline_and_resuming_recovers() {
    // Bound whole: the sharer and the receiver live as long as the test.
    let running = relayed(Duration::from_millis(25), 2, 60).await;
    let (relay, via, mut client) = (&running.relay, &running.via, running.client.clone());

    // Through the relay: answered, and the relay carried the frames both ways.
    let t = Instant::now();
    let ok = client.evaluate(kv_request(via)).await.unwrap().into_inner();
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
    let status = tokio::time::timeout(Duration::from_secs(30), client.evaluate(kv_request(via)))
        .await
        .expect("the receiver must not hang on a stalled sharer")
        .expect_err("a stalled stream cannot produce a prediction");
    // docs/STATUS_CODES.md: the receiver's deadline passing while it waits for the sharer is
    // DEADLINE_EXCEEDED, labelled `deadline` (the coordinator's row keeps both: kind
    // `DeadlineExceeded`, error_type `deadline`).
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status
            .metadata()
            .get(ERROR_TYPE_KEY)
            .map(|v| v.to_str().unwrap()),
        Some("deadline"),
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
    let again = client.evaluate(kv_request(via)).await.unwrap().into_inner();
    assert_eq!(again.prediction, ok.prediction);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evaluations_share_connections_one_at_a_time_and_their_bytes_add_up() {
    const N: usize = 5;
    // Bound whole: the sharer and the receiver live as long as the test.
    let running = relayed(Duration::from_millis(10), 60, 60).await;
    let (relay, via, mut client) = (&running.relay, &running.via, running.client.clone());
    let (mut read, mut written) = (0u64, 0u64);
    for i in 0..N {
        let reply = client.evaluate(kv_request(via)).await.unwrap().into_inner();
        let total = reply.total.unwrap();
        // Each evaluation's transport bytes cover its own gRPC messages, the first one's
        // (which opened the connection) and the later ones' alike.
        assert!(
            total.transport_read + total.transport_written > total.grpc_message_bytes,
            "evaluation {i}: {total:?}"
        );
        read += total.transport_read;
        written += total.transport_written;
        // The request's trip and the first record's trip each wait 10 ms in the relay: the
        // wait for the first frame holds both (and the sharer's prefill), `transfer` neither.
        let t = reply.timings.unwrap();
        assert!(
            t.first_frame_wait_ms >= 20.0 && t.first_frame_wait_ms >= t.sharer_prefill_ms,
            "evaluation {i}: {t:?}"
        );
        assert!(
            t.end_to_end_ms >= t.first_frame_wait_ms + t.transfer_ms,
            "{t:?}"
        );
        eprintln!(
            "evaluation {i}: first_frame_wait {:.1} ms (sharer prefill {:.1}), transfer {:.1} ms, \
             end_to_end {:.1} ms",
            t.first_frame_wait_ms, t.sharer_prefill_ms, t.transfer_ms, t.end_to_end_ms
        );
    }
    let carried = relay.stats();
    assert_eq!(carried.connections, 1, "{N} evaluations: {carried:?}");
    // Then 3 at once: each borrows a connection of its own (the idle one or a new one), so
    // their bytes do not mix either.
    let calls = (0..3).map(|_| {
        let mut client = client.clone();
        let request = kv_request(via);
        tokio::spawn(async move { client.evaluate(request).await })
    });
    for call in calls.collect::<Vec<_>>() {
        let total = call.await.unwrap().unwrap().into_inner().total.unwrap();
        read += total.transport_read;
        written += total.transport_written;
    }
    let carried = relay.stats();
    assert!((1..=4).contains(&carried.connections), "{carried:?}");
    // What the evaluations reported is what crossed the relay: a connection lent to one
    // evaluation at a time counts each one's bytes, and nothing is counted twice.
    eprintln!(
        "{N} evaluations in a row, 3 at once, over {} connection(s): reported read {read} \
         written {written}; relay down {} up {}",
        carried.connections, carried.bytes_down, carried.bytes_up
    );
    assert!(
        read <= carried.bytes_down && written <= carried.bytes_up,
        "{carried:?}"
    );
    assert!(
        read * 100 >= carried.bytes_down * 95 && written * 100 >= carried.bytes_up * 95,
        "read {read} written {written} {carried:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sharer_restarted_between_evaluations_is_reached_on_a_fresh_connection() {
    let first = start_sharer(TINY_MODEL).await;
    let (addr, endpoint) = (first.addr, first.endpoint());
    let receiver = start_receiver(TINY_MODEL, &endpoint).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let before = client.evaluate(kv_request(&endpoint)).await.unwrap();
    // Between two evaluations, with no pause after: the sharer stops (closing the idle pooled
    // connection) and a new one comes up on its address.
    first.stop().await.unwrap();
    let second = start_sharer_on(TINY_MODEL, rebind(addr).await).await;
    let after = client
        .evaluate(kv_request(&endpoint))
        .await
        .expect("answered at the first try after the restart");
    assert_eq!(
        after.into_inner().prediction,
        before.into_inner().prediction
    );
    drop(receiver);
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_reuse_every_evaluation_opens_its_own_connection() {
    let running = relayed(Duration::ZERO, 60, 0).await;
    let (relay, via, mut client) = (&running.relay, &running.via, running.client.clone());
    for _ in 0..3 {
        client.evaluate(kv_request(via)).await.unwrap();
    }
    assert_eq!(relay.stats().connections, 3, "{:?}", relay.stats());
}
