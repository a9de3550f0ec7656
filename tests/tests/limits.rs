//! Bounded cost per request (issue 18): prompt text over `limits.max_prompt_bytes` is refused
//! before it is tokenized (INVALID_ARGUMENT, `prompt_too_long`) on both services, and a
//! request over the server's decoding bound before it reaches a handler (INVALID_ARGUMENT,
//! `request_too_large`); the receiver connects
//! only to the sharers it allows and refuses `https://` without a CA (tests/tls.rs has it with
//! one); beyond
//! `limits.max_queued_jobs` a call is shed at once (RESOURCE_EXHAUSTED, `overloaded`).

use e2e_tests::{Running, TINY_MODEL, example, start_receiver, start_receiver_with, start_sharer};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use receiver_svc::ReceiverConfig;
use service_kit::rpc::ERROR_TYPE_KEY;
use sharer_svc::SharerConfig;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::{Code, Status};

/// A sharer with `config` (model: the tiny one) on a loopback port.
async fn sharer_with(mut config: SharerConfig) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    config.model = TINY_MODEL.into();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(sharer_svc::serve(config, listener, async move {
        let _ = rx.await;
    }));
    e2e_tests::wait_serving(addr, kvwire_proto::service_names::SHARER).await;
    (format!("http://{addr}"), tx)
}

fn label(status: &Status) -> &str {
    status
        .metadata()
        .get(ERROR_TYPE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn assert_prompt_too_long(what: &str, status: &Status) {
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    assert_eq!(label(status), "prompt_too_long", "{what}: {status:?}");
}

/// The first error of a server-streaming call, at its start or in the stream.
async fn share_status(
    client: &mut SharerClient<tonic::transport::Channel>,
    req: pb::ShareRequest,
) -> Status {
    match client.share(req).await {
        Err(status) => status,
        Ok(r) => {
            let mut stream = r.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("share succeeded"),
                    Err(status) => return status,
                }
            }
        }
    }
}

/// An example whose question is `bytes` long (a few hundred tokens at most for the tiny
/// model's tokenizer, far below any token limit here).
fn long_example(bytes: usize) -> pb::Example {
    let mut e = example("long");
    e.question = "Which factor stops the seed? ".repeat(bytes / 29 + 1);
    e
}

#[tokio::test]
async fn prompt_text_over_the_byte_limit_is_refused_on_the_sharer() {
    let mut config = SharerConfig::default();
    config.limits.max_prompt_bytes = Some(600);
    let (sharer, _stop) = sharer_with(config).await;
    let mut client = SharerClient::connect(sharer.clone()).await.unwrap();
    // Within the limit: served.
    let ok = pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Example(example("short"))),
        ..Default::default()
    };
    let mut stream = client.share(ok).await.unwrap().into_inner();
    while stream.message().await.unwrap().is_some() {}
    let long = long_example(700);
    let status = share_status(
        &mut client,
        pb::ShareRequest {
            prompt: Some(pb::share_request::Prompt::Example(long.clone())),
            ..Default::default()
        },
    )
    .await;
    assert_prompt_too_long("share example", &status);
    assert!(
        status.message().contains("bytes") && status.message().contains("limit 600"),
        "{status:?}"
    );
    let status = share_status(
        &mut client,
        pb::ShareRequest {
            prompt: Some(pb::share_request::Prompt::Text("x".repeat(601))),
            ..Default::default()
        },
    )
    .await;
    assert_prompt_too_long("share text", &status);
    // The query counts with the prompt it goes with.
    let status = share_status(
        &mut client,
        pb::ShareRequest {
            prompt: Some(pb::share_request::Prompt::Text("x".repeat(400))),
            query: "y".repeat(300),
            ..Default::default()
        },
    )
    .await;
    assert_prompt_too_long("share query", &status);
    let status = client
        .answer(pb::AnswerRequest {
            example: Some(long.clone()),
        })
        .await
        .unwrap_err();
    assert_prompt_too_long("answer", &status);
    let status = client
        .message(pb::MessageRequest {
            example: Some(long),
            kind: pb::MessageKind::Hint as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_prompt_too_long("message", &status);
}

#[tokio::test]
async fn a_request_far_over_the_byte_limit_is_refused_before_any_handler() {
    let mut config = SharerConfig::default();
    config.limits.max_prompt_bytes = Some(1000);
    let (sharer, _stop) = sharer_with(config).await;
    let mut client = SharerClient::connect(sharer).await.unwrap();
    // 4 MB: under max_message_bytes (64 MiB), over the request bound derived from the prompt
    // limits, so tonic refuses it as it arrives instead of decoding it into a handler.
    let status = client
        .answer(pb::AnswerRequest {
            example: Some(long_example(4 << 20)),
        })
        .await
        .unwrap_err();
    // tonic's OUT_OF_RANGE, relabelled by the status_fix layer: a bad argument with a label
    // and a message naming the size and the limit.
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(label(&status), "request_too_large", "{status:?}");
    assert!(
        status.message().contains("is over this server's limit of")
            && status.message().contains("limits.max_prompt_bytes"),
        "{status:?}"
    );
}

#[tokio::test]
async fn prompt_text_over_the_byte_limit_is_refused_on_the_receiver() {
    let receiver = start_receiver_with(ReceiverConfig {
        model: TINY_MODEL.into(),
        limits: receiver_svc::config::ReceiverLimits {
            max_prompt_bytes: Some(600),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let request = |e: pb::Example| pb::EvaluateRequest {
        example: Some(e),
        method: pb::Method::ReceiverOnly as i32,
        ..Default::default()
    };
    client.evaluate(request(example("short"))).await.unwrap();
    let status = client
        .evaluate(request(long_example(700)))
        .await
        .unwrap_err();
    assert_prompt_too_long("evaluate", &status);
    assert!(status.message().contains("limit 600"), "{status:?}");
}

#[tokio::test]
async fn the_receivers_own_token_limit_is_labelled_prompt_too_long() {
    let receiver = start_receiver_with(ReceiverConfig {
        model: TINY_MODEL.into(),
        limits: receiver_svc::config::ReceiverLimits {
            max_prompt_tokens: 4,
            // Bytes allowed, so that the token count is what refuses it.
            max_prompt_bytes: Some(100_000),
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let status = client
        .evaluate(pb::EvaluateRequest {
            example: Some(example("e1")),
            method: pb::Method::ReceiverOnly as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_prompt_too_long("receiver tokens", &status);
    assert!(status.message().contains("tokens"), "{status:?}");
}

async fn evaluate_naming(receiver: &Running, endpoint: &str) -> Result<pb::EvaluateReply, Status> {
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    client
        .evaluate(pb::EvaluateRequest {
            example: Some(example("e1")),
            method: pb::Method::Kv as i32,
            sharer_endpoint: endpoint.into(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn the_receiver_connects_only_to_sharers_it_allows_and_never_https() {
    let sharer = start_sharer(TINY_MODEL).await;
    let other = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    // Its own sharer, named or not, is allowed.
    evaluate_naming(&receiver, "").await.unwrap();
    evaluate_naming(&receiver, &sharer.endpoint())
        .await
        .unwrap();
    // A live sharer that is not on the list is refused before any connection.
    for endpoint in [other.endpoint(), "http://169.254.169.254:80".to_string()] {
        let status = evaluate_naming(&receiver, &endpoint).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert_eq!(label(&status), "sharer_not_allowed", "{status:?}");
    }
    // https:// without a CA (sharer_client.ca) would be plaintext: refused, saying why.
    let https = sharer.endpoint().replace("http://", "https://");
    let status = evaluate_naming(&receiver, &https).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(label(&status), "tls_unsupported", "{status:?}");
    assert!(status.message().contains("TLS"), "{status:?}");
}

#[tokio::test]
async fn an_https_sharer_in_the_configuration_is_refused_at_start_without_a_ca() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = ReceiverConfig {
        model: TINY_MODEL.into(),
        sharer_endpoint: "https://127.0.0.1:50051".into(),
        allowed_sharers: vec!["https://sharer:443".into()],
        ..Default::default()
    };
    let err = receiver_svc::serve(config, listener, async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sharer_endpoint") && err.contains("allowed_sharers") && err.contains("TLS"),
        "{err}"
    );
}

/// Fires `calls` at once, in rounds, until one is shed; every other answer must be a success.
async fn shed_under_load<F, Fut>(call: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), Status>> + Send + 'static,
{
    for _ in 0..20 {
        let handles: Vec<_> = (0..16).map(|_| tokio::spawn(call())).collect();
        let mut shed = 0;
        for h in handles {
            match h.await.unwrap() {
                Ok(()) => {}
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                    assert_eq!(label(&status), "overloaded", "{status:?}");
                    shed += 1;
                }
            }
        }
        if shed > 0 {
            return;
        }
    }
    panic!("16 concurrent calls on one slot with no queue were never shed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_wait_queue_are_shed_at_once() {
    let mut config = SharerConfig::default();
    config.limits.max_concurrent_jobs = 1;
    config.limits.max_queued_jobs = 0;
    let (sharer, _stop) = sharer_with(config).await;
    let channel = tonic::transport::Endpoint::from_shared(sharer.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    shed_under_load(|| {
        let mut client = SharerClient::new(channel.clone());
        async move {
            client
                .answer(pb::AnswerRequest {
                    example: Some(long_example(2000)),
                })
                .await
                .map(|_| ())
        }
    })
    .await;

    let mut config = ReceiverConfig {
        model: TINY_MODEL.into(),
        ..Default::default()
    };
    config.limits.max_concurrent_jobs = 1;
    config.limits.max_queued_jobs = 0;
    let receiver = start_receiver_with(config).await;
    let channel = tonic::transport::Endpoint::from_shared(receiver.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    shed_under_load(|| {
        let mut client = ReceiverClient::new(channel.clone());
        async move {
            client
                .evaluate(pb::EvaluateRequest {
                    example: Some(long_example(2000)),
                    method: pb::Method::ReceiverOnly as i32,
                    ..Default::default()
                })
                .await
                .map(|_| ())
        }
    })
    .await;
}
