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
//! Needs root and iproute2; skips with the reason otherwise. It takes a veth down, so it brings
//! its profile up itself and down at the end; a profile already up (a run may be using it) is
//! left alone and the test skips.

use std::time::{Duration, Instant};

use coordinator::link::{LinkPath, LinkProfile};
use coordinator::link_admin::{BroughtUp, bring_up, is_up, set_veth, unusable_reason};
use coordinator::relay::RelayStats;
use e2e_tests::sessions::error_type;
use e2e_tests::{Running, TINY_MODEL, example, kv_request, start_receiver_with, start_sharer_with};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use receiver_svc::ReceiverConfig;
use service_kit::transport::client::ClientTransport;
use sharer_svc::SharerConfig;
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

async fn partitioned(up: BroughtUp, profile: LinkProfile) -> Partitioned {
    let mut config = SharerConfig {
        model: TINY_MODEL.into(),
        ..SharerConfig::default()
    };
    config.limits.max_concurrent_jobs = 1;
    config.limits.max_queued_jobs = 4;
    config.limits.max_hint_tokens = HOLD_TOKENS as usize;
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

/// Starts an evaluation through the link and takes the veth down once its Share is open (the
/// request crossed, the response headers came back) while the sharer has sent no frame yet
/// (its slot is held); then frees the slot. The call's outcome, how long it took, and the
/// relay's counters from before it started.
async fn cut_mid_transfer(
    p: &Partitioned,
) -> (
    Result<tonic::Response<pb::EvaluateReply>, tonic::Status>,
    Duration,
    RelayStats,
) {
    let held = hold_slot(&p.sharer.endpoint()).await;
    let before = p.path.relay().stats();
    let mut client = p.client.clone();
    let request = kv_request(&p.via);
    let start = Instant::now();
    let call = tokio::spawn(async move { client.evaluate(request).await });
    wait_relay(&p.path, "the Share never opened", |s| {
        s.bytes_up > before.bytes_up && s.bytes_down > before.bytes_down
    })
    .await;
    set_veth(&p.profile, false).expect("veth down");
    abandon(held).await;
    let outcome = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("the receiver must not hang on a partitioned link")
        .unwrap();
    (outcome, start.elapsed(), before)
}

/// `PROFILE`, when this test may bring it up and cut it; otherwise prints why it skips.
fn profile_to_cut() -> Option<LinkProfile> {
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
    Some(profile)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_veth_taken_down_mid_transfer_ends_the_call_and_the_path_recovers() {
    let Some(profile) = profile_to_cut() else {
        return;
    };
    let p = partitioned(bring_up(&profile).expect("profile up"), profile).await;
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

    slot_free_while_partitioned(&p.sharer).await;

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

/// With the link still down, a direct call to the sharer (its one job slot) is answered at
/// once: neither the abandoned generation nor the Share cut off from its receiver holds it.
async fn slot_free_while_partitioned(sharer: &Running) {
    let mut direct = SharerClient::connect(sharer.endpoint()).await.unwrap();
    let t = Instant::now();
    let answer = tokio::time::timeout(
        PROMPTLY,
        direct.answer(pb::AnswerRequest {
            example: Some(example("direct")),
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("the sharer's slot still held after {:?}", t.elapsed()));
    answer.expect("a direct call to the sharer");
    eprintln!(
        "direct call during the partition: answered in {:?}",
        t.elapsed()
    );
}
