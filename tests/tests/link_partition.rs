//! A partitioned link (issue 18, faults): a sharer reached through a real link profile
//! (coordinator/src/link.rs: two network namespaces joined by a shaped veth, the delaying
//! relay), the veth taken down while a Share stream is open. The receiver's call ends with
//! DEADLINE_EXCEEDED `deadline` by its own deadline (nothing hangs), the cut landed mid-transfer
//! (the Share's response headers had come back, its frames never do), the sharer's only job
//! slot is free again while the link is still down (a direct call is answered at once), and
//! once the veth is up again the same evaluation through the same path gets the same answer.
//!
//! The cut lands mid-transfer by construction, not by timing: the sharer's only job slot is
//! held by a long generation (called directly, on loopback) when the evaluation starts, so its
//! Share waits in the sharer's queue. The veth goes down once the request has crossed and the
//! response headers are back; only then is the long generation abandoned (its client goes
//! away, the job stops, the slot frees) and the Share's frames produced, into a dead link.
//!
//! That Share (67 KB) fits in the windows and buffers on the sharer's side of the cut and
//! finishes. The two `a_producer_blocked_*` cases cut one many times a client's windows, from a
//! model of 24 layers: its producer fills the frame channel and waits for room in a dead link.
//! The slot must be free by the call's deadline, or once the sharer's keepalive declares the
//! connection dead, whichever comes first (`docs/OPERATIONS.md`, "A partitioned link").
//!
//! Needs root and iproute2; skips with the reason otherwise. Each case takes a veth down, so it
//! brings its profile up itself (one case at a time) and down at the end; a profile already up
//! (a run may be using it) is left alone and the case skips.

use std::time::{Duration, Instant};

use coordinator::link::{LinkPath, LinkProfile};
use coordinator::link_admin::{BroughtUp, bring_up, is_up, set_veth, unusable_reason};
use coordinator::relay::RelayStats;
use e2e_tests::sessions::error_type;
use e2e_tests::{
    Running, TINY_MODEL, example, kv_request, one_slot_sharer, start_receiver_with,
    start_sharer_with,
};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use receiver_svc::ReceiverConfig;
use service_kit::transport::client::ClientTransport;
use service_kit::transport::http2::{Http2Settings, Http2Tuning};
use sharer_svc::SharerConfig;
use tokio::sync::MutexGuard;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Request};

/// The profile whose veth is cut (the slowest: a WAN-like link).
const PROFILE: &str = "100mbit-20ms";
/// The receiver's deadline of one evaluation, seconds.
const DEADLINE_SECS: u64 = 3;
/// New tokens of the generation that holds the sharer's slot: far longer than the test needs
/// it held (it is abandoned before it ends).
const HOLD_TOKENS: u32 = 3800;
/// How soon a direct call to the sharer must be answered once the slot is free.
const PROMPTLY: Duration = Duration::from_secs(5);

/// Both services, the sharer behind `PROFILE`'s link path.
struct Partitioned {
    profile: LinkProfile,
    sharer: Running,
    path: LinkPath,
    via: String,
    _receiver: Running,
    client: ReceiverClient<Channel>,
    // Last: the namespaces go after the relays that live in them.
    _up: BroughtUp,
}

/// The sharer of every case: one job slot, hints long enough to hold it.
fn sharer_config() -> SharerConfig {
    one_slot_sharer(HOLD_TOKENS)
}

async fn partitioned(up: BroughtUp, profile: LinkProfile, config: SharerConfig) -> Partitioned {
    let sharer = start_sharer_with(config, &ClientTransport::default()).await;
    let path = LinkPath::open(profile, sharer.addr).expect("a path through the profile");
    let via = format!("http://{}", path.addr());
    let mut config = ReceiverConfig {
        model: TINY_MODEL.into(),
        sharer_endpoint: sharer.endpoint(),
        allowed_sharers: vec![via.clone()],
        ..ReceiverConfig::default()
    };
    config.limits.default_timeout_secs = DEADLINE_SECS;
    let receiver = start_receiver_with(config).await;
    let client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    Partitioned {
        profile,
        sharer,
        path,
        via,
        _receiver: receiver,
        client,
        _up: up,
    }
}

/// The outcome of the generation holding the sharer's slot (if it ended on its own).
type Held = JoinHandle<Result<tonic::Response<pb::MessageReply>, tonic::Status>>;

/// Holds the sharer's only job slot with a long generation called directly (not through the
/// link); [`abandon`] drops the call, which stops the job and frees the slot.
async fn hold_slot(sharer: &str) -> Held {
    let mut client = SharerClient::connect(sharer.to_string()).await.unwrap();
    let held = tokio::spawn(async move {
        let hint = pb::MessageRequest {
            example: Some(example("hold")),
            kind: pb::MessageKind::Hint as i32,
            max_new_tokens: HOLD_TOKENS,
            ..Default::default()
        };
        client.message(hint).await
    });
    // The call reaches the sharer on loopback and takes the free slot at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    held
}

/// Drops the held call; it must still have been running (holding the slot) until then.
async fn abandon(held: Held) {
    held.abort();
    match held.await {
        Err(e) if e.is_cancelled() => {}
        ended => panic!("the generation holding the slot ended before it was abandoned: {ended:?}"),
    }
}

/// Polls the path's relay until `done` holds of its counters (or panics after 10 s).
async fn wait_relay(path: &LinkPath, what: &str, done: impl Fn(RelayStats) -> bool) {
    let start = Instant::now();
    while !done(path.relay().stats()) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what}: {:?}",
            path.relay().stats()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Holds the sharer's slot, starts `call` (a Share through the link) and takes the veth down
/// once its Share is open (the request crossed, the response headers came back) while the
/// sharer has sent no frame yet; then frees the slot, so that the Share's frames are produced
/// into a dead link. The call's task, and the relay's counters from before it started.
async fn start_and_cut<T: Send + 'static>(
    p: &Partitioned,
    call: impl Future<Output = T> + Send + 'static,
) -> (JoinHandle<T>, RelayStats) {
    let held = hold_slot(&p.sharer.endpoint()).await;
    let before = p.path.relay().stats();
    let call = tokio::spawn(call);
    wait_relay(&p.path, "the Share never opened", |s| {
        s.bytes_up > before.bytes_up && s.bytes_down > before.bytes_down
    })
    .await;
    set_veth(&p.profile, false).expect("veth down");
    abandon(held).await;
    (call, before)
}

/// An evaluation through the link cut mid-transfer ([`start_and_cut`]): its outcome, how long
/// it took, and the relay's counters from before it started.
async fn cut_mid_transfer(
    p: &Partitioned,
) -> (
    Result<tonic::Response<pb::EvaluateReply>, tonic::Status>,
    Duration,
    RelayStats,
) {
    let mut client = p.client.clone();
    let request = kv_request(&p.via);
    let evaluate = async move {
        let start = Instant::now();
        (client.evaluate(request).await, start.elapsed())
    };
    let (call, before) = start_and_cut(p, evaluate).await;
    let (outcome, took) = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the receiver must not hang on a partitioned link")
        .unwrap();
    (outcome, took, before)
}

/// Serializes this file's tests: each probes namespaces, brings `PROFILE` up, cuts it and
/// brings it down.
static CUTTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `PROFILE`, when this test may bring it up and cut it (held until the guard is dropped);
/// otherwise prints why it skips.
async fn profile_to_cut() -> Option<(LinkProfile, MutexGuard<'static, ()>)> {
    let cutting = CUTTING.lock().await;
    if let Some(reason) = unusable_reason() {
        eprintln!("skipped: {reason}");
        return None;
    }
    let profile = LinkProfile::by_name(PROFILE).unwrap();
    if is_up(&profile) {
        eprintln!(
            "skipped: {PROFILE} is up already and a run may be using it (this test takes its veth \
             down); `scripts/link-profile.sh down {PROFILE}` if nothing does"
        );
        return None;
    }
    Some((profile, cutting))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_veth_taken_down_mid_transfer_ends_the_call_and_the_path_recovers() {
    let Some((profile, _cutting)) = profile_to_cut().await else {
        return;
    };
    let up = bring_up(&profile).expect("profile up");
    let p = partitioned(up, profile, sharer_config()).await;
    let mut client = p.client.clone();

    // Through the link: answered; what one evaluation carries back.
    let start = p.path.relay().stats();
    let ok = client
        .evaluate(kv_request(&p.via))
        .await
        .unwrap()
        .into_inner();
    let whole = p.path.relay().stats().bytes_down - start.bytes_down;

    let (outcome, took, before) = cut_mid_transfer(&p).await;
    let status = outcome.expect_err("no prediction can cross a partitioned link");
    let got = p.path.relay().stats().bytes_down - before.bytes_down;
    eprintln!(
        "cut: {:?} {:?} ({}) after {took:?}; {got} of {whole} bytes came back",
        status.code(),
        status.message(),
        error_type(&status)
    );
    // docs/STATUS_CODES.md: the receiver's deadline passing while it waits for the sharer.
    assert_eq!(
        (status.code(), error_type(&status)),
        (Code::DeadlineExceeded, "deadline"),
        "{status:?}"
    );
    assert!(
        took < Duration::from_secs(DEADLINE_SECS + 3),
        "the call ended {took:?} after it began (deadline {DEADLINE_SECS} s)"
    );
    assert!(got > 0 && got < whole, "{got} of {whole} bytes");

    slot_free_while_partitioned(&p.sharer, PROMPTLY).await;

    set_veth(&profile, true).expect("veth up");
    let mut again = Request::new(kv_request(&p.via));
    again.set_timeout(Duration::from_secs(60));
    let t = Instant::now();
    let again = client
        .evaluate(again)
        .await
        .expect("answered once the link is back");
    eprintln!(
        "after the veth came back up: answered in {:?}; connections through the link: {}",
        t.elapsed(),
        p.path.relay().stats().connections
    );
    assert_eq!(again.into_inner().prediction, ok.prediction);
}

/// With the link still down, a direct call to the sharer (a Share of one raw token on
/// loopback, which needs its one job slot) is answered within `within`: neither the abandoned
/// generation nor the Share cut off from its receiver holds the slot longer. How long it took.
async fn slot_free_while_partitioned(sharer: &Running, within: Duration) -> Duration {
    let direct = SharerClient::connect(sharer.endpoint()).await.unwrap();
    let one_token = pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Text("a".into())),
        all_positions: true,
        ..Default::default()
    };
    let t = Instant::now();
    tokio::time::timeout(within, drain_share(direct, Request::new(one_token)))
        .await
        .unwrap_or_else(|_| panic!("the sharer's slot still held after {:?}", t.elapsed()))
        .expect("a direct call to the sharer");
    eprintln!(
        "direct call during the partition: answered in {:?}",
        t.elapsed()
    );
    t.elapsed()
}

/// Flow-control windows of the large cases' client (stream and connection): HTTP/2's least,
/// so that a Share of a small model is many windows (as a 7-8B model's, tens of MB, is many
/// of the receiver's 8 MiB).
const NARROW_WINDOW: u32 = 65_535;
/// The large cases' sharer model: 24 layers, 25 messages a Share (the tiny model's 3 fit in
/// the sharer's channel and HTTP/2's send buffer, whatever their size, and never block it).
const MANY_LAYERS: &str = "random:qwen2.5-0.5b:7";
/// A deadline far beyond a test.
const NO_DEADLINE: Duration = Duration::from_secs(120);

/// A client of the sharer at `url` with [`NARROW_WINDOW`] windows.
async fn narrow_client(url: &str) -> SharerClient<Channel> {
    let http2 = Http2Tuning::Tuned(Http2Settings {
        stream_window_bytes: NARROW_WINDOW,
        connection_window_bytes: NARROW_WINDOW,
        ..Http2Settings::default()
    });
    let transport = ClientTransport::default().with_http2(http2);
    SharerClient::new(transport.endpoint(url).unwrap().connect().await.unwrap())
}

/// A Share of a ~55-token raw prompt at fp16: a frame of ~28 KB per layer, ~680 KB in all,
/// ten times the client's windows; `deadline` is its `grpc-timeout`.
fn large_share(deadline: Duration) -> Request<pb::ShareRequest> {
    let text = "The seed was kept in a dark closet, away from the light it needs. ".to_string();
    let mut request = Request::new(pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Text(text)),
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Fp16 as i32,
            ..Default::default()
        }),
        all_positions: true,
        ..Default::default()
    });
    request.set_timeout(deadline);
    request
}

/// Reads a Share stream to its end: the messages it carried.
async fn drain_share(
    mut client: SharerClient<Channel>,
    request: Request<pb::ShareRequest>,
) -> Result<usize, tonic::Status> {
    let mut stream = client.share(request).await?.into_inner();
    let mut messages = 0;
    while stream.message().await?.is_some() {
        messages += 1;
    }
    Ok(messages)
}

/// A large Share through the uncut link: many messages, many windows, and done well within
/// half of `trigger` (so that a cut one is blocked, all of its frames made but a few, well
/// before `trigger`). Its bytes.
async fn whole_large_share(
    p: &Partitioned,
    client: SharerClient<Channel>,
    trigger: Duration,
) -> u64 {
    let start = p.path.relay().stats();
    let t = Instant::now();
    let messages = drain_share(client, large_share(NO_DEADLINE)).await.unwrap();
    let took = t.elapsed();
    let whole = p.path.relay().stats().bytes_down - start.bytes_down;
    eprintln!("uncut: {messages} messages, {whole} bytes in {took:?}");
    assert!(messages > 20, "{messages} messages");
    assert!(whole > 8 * u64::from(NARROW_WINDOW), "{whole} bytes");
    assert!(
        took < trigger / 2,
        "an uncut Share took {took:?}: too slow for {trigger:?}"
    );
    whole
}

/// The cut lands before the first frame of a large Share (deadline `deadline`) from a sharer
/// whose `connections.idle_timeout_secs` is `idle_secs`: its producer is left blocked writing
/// frames into the dead link until `trigger` (after the cut) stops it. How long after the cut
/// the sharer's slot was free (a panic beyond `trigger` and 2 s); `None` when the test skips.
async fn blocked_share_freed(
    idle_secs: u64,
    deadline: Duration,
    trigger: Duration,
) -> Option<Duration> {
    let (profile, _cutting) = profile_to_cut().await?;
    let mut config = sharer_config();
    config.model = MANY_LAYERS.into();
    config.connections.idle_timeout_secs = idle_secs;
    let p = partitioned(bring_up(&profile).expect("profile up"), profile, config).await;
    let client = narrow_client(&p.via).await;
    let whole = whole_large_share(&p, client.clone(), trigger).await;

    let (call, before) = start_and_cut(&p, drain_share(client, large_share(deadline))).await;
    let cut = Instant::now();
    slot_free_while_partitioned(&p.sharer, trigger + Duration::from_secs(2)).await;
    let freed = cut.elapsed();
    let got = p.path.relay().stats().bytes_down - before.bytes_down;
    eprintln!("cut: slot free {freed:?} after the cut; {got} of {whole} bytes came back");
    assert!(got < u64::from(NARROW_WINDOW), "{got} of {whole} bytes");
    set_veth(&profile, true).expect("veth up");
    let outcome = tokio::time::timeout(Duration::from_secs(30), call).await;
    eprintln!("the cut Share's client saw: {outcome:?}");
    Some(freed)
}

/// Keepalive: the sharer pings a connection silent for a third of its idle timeout and closes
/// it when the ping goes unanswered for another third; the stream goes with it, and the
/// blocked producer with the stream. (With the default 120 s, 80 s after the cut.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_blocked_on_a_dead_link_stops_when_keepalive_declares_it_dead() {
    let idle_secs = 9;
    let dead = Duration::from_secs(idle_secs) * 2 / 3;
    blocked_share_freed(idle_secs, NO_DEADLINE, dead).await;
}

/// The call's deadline: it stops the blocked producer while the connection is not yet declared
/// dead (40 s after the cut with a 60 s idle timeout). A producer that waited in a blocking
/// send, blind to its token, held the slot those 40 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_blocked_on_a_dead_link_stops_at_its_calls_deadline() {
    let deadline = Duration::from_secs(6);
    blocked_share_freed(60, deadline, deadline).await;
}
