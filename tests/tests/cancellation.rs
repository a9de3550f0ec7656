//! Bounded cost per request (issue 18): a request whose client gives up, or whose deadline
//! passes, stops its model work between layers (`model_runtime::cancel`), so the only job
//! slot is free again and the next request is served promptly instead of waiting for the
//! abandoned one to finish.
//!
//! The abandoned job is a long greedy generation on the tiny model (about 3800 forward passes,
//! several seconds on a CPU); the next request is a short one (one prompt's forward pass).

use std::time::{Duration, Instant};

use e2e_tests::{TINY_MODEL, example, one_slot_sharer, start_receiver_with, start_sharer_with};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use receiver_svc::ReceiverConfig;
use service_kit::transport::client::ClientTransport;
use tonic::{Code, Request};

/// New tokens of the abandoned generation (the tiny model's context is 4096 positions).
const LONG_GENERATION: u32 = 3800;
/// When the client of the long request gives up.
const GIVE_UP: Duration = Duration::from_millis(300);
/// How soon the short request must be answered after the long one was abandoned: far below
/// the long generation's own time, far above one short request's.
const PROMPTLY: Duration = Duration::from_millis(2500);

fn hint(max_new_tokens: u32) -> pb::MessageRequest {
    pb::MessageRequest {
        example: Some(example("long")),
        kind: pb::MessageKind::Hint as i32,
        max_new_tokens,
        ..Default::default()
    }
}

/// Runs `short` and checks it is answered promptly.
async fn served_promptly<T, F: std::future::Future<Output = Result<T, tonic::Status>>>(
    what: &str,
    short: F,
) {
    let start = Instant::now();
    let answer = tokio::time::timeout(PROMPTLY, short).await;
    let took = start.elapsed();
    let answer = answer.unwrap_or_else(|_| {
        panic!(
            "{what}: the short request still waited after {took:?}: the abandoned job kept its slot"
        )
    });
    answer.unwrap_or_else(|s| panic!("{what}: {s:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharer_job_whose_client_gave_up_frees_the_only_slot() {
    let config = one_slot_sharer(LONG_GENERATION);
    let sharer = start_sharer_with(config, &ClientTransport::default()).await;
    let mut client = SharerClient::connect(sharer.endpoint()).await.unwrap();
    let short = |mut c: SharerClient<_>| async move {
        c.answer(pb::AnswerRequest {
            example: Some(example("short")),
        })
        .await
    };

    // The client gives up: its call is dropped (tonic resets the HTTP/2 stream).
    let gave_up = tokio::time::timeout(GIVE_UP, client.message(hint(LONG_GENERATION))).await;
    assert!(
        gave_up.is_err(),
        "the long generation answered: {gave_up:?}"
    );
    served_promptly("client gone", short(client.clone())).await;

    // The deadline passes (grpc-timeout): the server drops the handler and its job stops.
    // tonic's own timeout answers CANCELLED "Timeout expired" (docs/STATUS_CODES.md).
    let mut request = Request::new(hint(LONG_GENERATION));
    request.set_timeout(GIVE_UP);
    let status = client.message(request).await.unwrap_err();
    assert!(
        [Code::Cancelled, Code::DeadlineExceeded].contains(&status.code()),
        "{status:?}"
    );
    served_promptly("deadline passed", short(client.clone())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_job_whose_client_gave_up_frees_the_only_slot() {
    let mut config = ReceiverConfig {
        model: TINY_MODEL.into(),
        ..ReceiverConfig::default()
    };
    config.limits.max_concurrent_jobs = 1;
    config.limits.max_queued_jobs = 4;
    config.limits.max_new_tokens = LONG_GENERATION as usize;
    let receiver = start_receiver_with(config).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let evaluate = |scoring: pb::Scoring, id: &str| pb::EvaluateRequest {
        example: Some(example(id)),
        method: pb::Method::ReceiverOnly as i32,
        scoring: scoring as i32,
        max_new_tokens: LONG_GENERATION,
        ..Default::default()
    };
    let long = evaluate(pb::Scoring::Generate, "long");
    let gave_up = tokio::time::timeout(GIVE_UP, client.evaluate(long)).await;
    assert!(
        gave_up.is_err(),
        "the long generation answered: {gave_up:?}"
    );
    let short = evaluate(pb::Scoring::Letter, "short");
    served_promptly("receiver, client gone", client.evaluate(short)).await;
}
