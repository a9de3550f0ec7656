//! End-to-end: a sharer and a receiver on loopback with tiny random models, checked for the
//! byte accounting contract, kvwire's estimate, failure behaviour and the non-KV methods.

use std::time::Duration;

use e2e_tests::{
    TINY_MODEL, cutting_relay, example, start_receiver, start_receiver_allowing, start_sharer,
};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use tonic::Code;

fn kv_request(payload: pb::Payload, sharer_endpoint: &str) -> pb::EvaluateRequest {
    pb::EvaluateRequest {
        example: Some(example("e1")),
        method: pb::Method::Kv as i32,
        transfer: Some(pb::TransferSettings {
            payload: payload as i32,
            ..Default::default()
        }),
        sharer_endpoint: sharer_endpoint.into(),
        ..Default::default()
    }
}

/// Frame lengths the sharer sends for this transfer, pulled straight from its Share stream.
async fn frame_lengths(sharer: &str, payload: pb::Payload) -> Vec<usize> {
    let mut client = SharerClient::connect(sharer.to_string()).await.unwrap();
    let req = pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Example(example("e1"))),
        transfer: Some(pb::TransferSettings {
            payload: payload as i32,
            ..Default::default()
        }),
        keep_session: false,
        all_positions: false,
        query: String::new(),
    };
    let mut stream = client.share(req).await.unwrap().into_inner();
    let mut lengths = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        lengths.push(chunk.frame.len());
    }
    lengths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kv_transfer_bytes_agree_at_every_level() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let info = client.info(pb::InfoRequest {}).await.unwrap().into_inner();
    assert!(info.random_weights && info.layers == 2, "{info:?}");
    let mut blobs = Vec::new();
    for payload in [pb::Payload::Fp16, pb::Payload::Int8, pb::Payload::Int4] {
        let reply = client
            .evaluate(kv_request(payload, ""))
            .await
            .unwrap()
            .into_inner();
        assert!(
            ["A", "B", "C", "D"].contains(&reply.prediction.as_str()),
            "{reply:?}"
        );
        assert_eq!(reply.probabilities.len(), 4);
        let total = reply.total.unwrap();
        let sent = frame_lengths(&sharer.endpoint(), payload).await;
        // Session header plus one frame per layer, and the receiver counted exactly those bytes.
        assert_eq!(sent.len(), 1 + info.layers as usize);
        assert_eq!(total.frames as usize, sent.len());
        assert_eq!(
            total.measured_total,
            sent.iter().sum::<usize>() as u64,
            "{payload:?}"
        );
        let b = total.breakdown.unwrap();
        assert_eq!(
            b.headers + b.indices + b.payload + b.scales + b.request,
            total.measured_total
        );
        // No entropy coding: kvwire's formula is exact.
        assert_eq!(total.estimated_total, total.measured_total, "{payload:?}");
        assert!(
            total.transport_read + total.transport_written > total.grpc_message_bytes,
            "{total:?}"
        );
        assert!(total.grpc_message_bytes > total.measured_total, "{total:?}");
        let t = reply.timings.unwrap();
        assert!(
            t.sharer_prefill_ms > 0.0 && t.decode_ms > 0.0 && t.receiver_prefill_ms > 0.0,
            "{t:?}"
        );
        assert!(t.end_to_end_ms >= t.receiver_prefill_ms);
        eprintln!(
            "{payload:?}: blob {} B (payload {} scales {} headers {}), grpc {} B, tcp read {} written {}",
            total.measured_total,
            b.payload,
            b.scales,
            b.headers,
            total.grpc_message_bytes,
            total.transport_read,
            total.transport_written
        );
        blobs.push(total.measured_total);
    }
    // fp16 > int8 > int4 on the wire.
    assert!(blobs[0] > blobs[1] && blobs[1] > blobs[2], "{blobs:?}");
    drop(receiver);
    sharer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sharer_dying_mid_stream_is_a_typed_error() {
    let sharer = start_sharer(TINY_MODEL).await;
    let full: usize = frame_lengths(&sharer.endpoint(), pb::Payload::Fp16)
        .await
        .iter()
        .sum();
    // Let the connection preface, headers and part of the frames through, then cut.
    let relay = cutting_relay(sharer.addr, full / 2).await;
    let receiver =
        start_receiver_allowing(TINY_MODEL, &sharer.endpoint(), &[format!("http://{relay}")]).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let call = client.evaluate(kv_request(pb::Payload::Fp16, &format!("http://{relay}")));
    let status = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("the receiver must not hang")
        .expect_err("a cut stream cannot produce a prediction");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(
        status.metadata().get("kvwire-error-type").unwrap(),
        "sharer_stream_broken",
        "{status:?}"
    );
    // The receiver is still healthy: the same request through the sharer directly succeeds.
    let ok = client
        .evaluate(kv_request(pb::Payload::Fp16, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(!ok.prediction.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn text_sharer_only_and_receiver_only_methods() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let base = pb::EvaluateRequest {
        example: Some(example("e2")),
        ..Default::default()
    };

    let alone = client
        .evaluate(pb::EvaluateRequest {
            method: pb::Method::ReceiverOnly as i32,
            ..base.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(alone.rounds.is_empty() && alone.total.unwrap().measured_total == 0);

    // Same model, same prompt: the identity KV transfer at fp16 reproduces the receiver-only
    // prediction.
    let kv = client
        .evaluate(kv_request(pb::Payload::Fp16, ""))
        .await
        .unwrap()
        .into_inner();
    let alone_e1 = client
        .evaluate(pb::EvaluateRequest {
            method: pb::Method::ReceiverOnly as i32,
            example: Some(example("e1")),
            ..base.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kv.prediction, alone_e1.prediction);

    let sharer_only = client
        .evaluate(pb::EvaluateRequest {
            method: pb::Method::SharerOnly as i32,
            ..base.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        sharer_only.prediction, alone.prediction,
        "same model, same prompt, same answer"
    );

    for (kind, cap) in [
        (pb::MessageKind::Raw, 40u64),
        (pb::MessageKind::Summary, 0),
        (pb::MessageKind::Hint, 0),
    ] {
        let req = pb::EvaluateRequest {
            method: pb::Method::Text as i32,
            text: Some(pb::TextSettings {
                kind: kind as i32,
                byte_cap: cap,
            }),
            ..base.clone()
        };
        let reply = client.evaluate(req).await.unwrap().into_inner();
        let total = reply.total.unwrap();
        if cap > 0 {
            assert!(
                total.measured_total <= cap && total.measured_total > 30,
                "{kind:?} {total:?}"
            );
        }
        assert!(
            total.transport_read + total.transport_written > total.grpc_message_bytes
                && total.grpc_message_bytes > total.measured_total
        );
    }

    // Generation scoring, on the receiver's own prompt and with the sharer's cache injected.
    for method in [pb::Method::ReceiverOnly, pb::Method::Kv] {
        let req = pb::EvaluateRequest {
            method: method as i32,
            scoring: pb::Scoring::Generate as i32,
            max_new_tokens: 4,
            ..base.clone()
        };
        let reply = client.evaluate(req).await.unwrap().into_inner();
        assert!(
            reply.probabilities.is_empty() && reply.timings.unwrap().score_ms > 0.0,
            "{method:?}"
        );
    }

    let c2c = client
        .evaluate(pb::EvaluateRequest {
            method: pb::Method::C2c as i32,
            ..base.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(c2c.code(), Code::FailedPrecondition);
    let bad = client
        .evaluate(pb::EvaluateRequest { method: 0, ..base })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refinement_round_two_upgrades_precision_and_counts_the_request() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let mut req = kv_request(pb::Payload::Int4, "");
    // Any margin below 1 asks for round 2: an int8 residual over the int4 values held.
    req.refine = Some(pb::RefineSettings {
        margin_threshold: 1.0,
        upgrade_payload: pb::Payload::Int8 as i32,
        ..Default::default()
    });
    let reply = client.evaluate(req).await.unwrap().into_inner();
    assert_eq!(reply.rounds.len(), 2, "{reply:?}");
    // Each round's end-to-end time covers its own stages; the call covers both rounds.
    for r in &reply.rounds {
        let t = r.timings.unwrap();
        assert!(
            t.end_to_end_ms > 0.0 && t.end_to_end_ms >= t.transfer_ms + t.receiver_prefill_ms,
            "round {}: {t:?}",
            r.round
        );
    }
    let whole = reply.timings.unwrap().end_to_end_ms;
    let rounds_sum: f64 = reply
        .rounds
        .iter()
        .map(|r| r.timings.unwrap().end_to_end_ms)
        .sum();
    assert!(whole >= rounds_sum, "{whole} < {rounds_sum}");
    let (r1, r2) = (
        reply.rounds[0].bytes.unwrap(),
        reply.rounds[1].bytes.unwrap(),
    );
    let b2 = r2.breakdown.unwrap();
    assert!(b2.request > 0 && r1.breakdown.unwrap().request == 0);
    assert_eq!(
        r2.measured_total,
        b2.headers + b2.indices + b2.payload + b2.scales + b2.request
    );
    assert_eq!(r2.estimated_total, r2.measured_total);
    // int8 residual payload is twice the int4 payload of round 1.
    assert!(r2.measured_total > r1.measured_total);
    let total = reply.total.unwrap();
    assert_eq!(total.measured_total, r1.measured_total + r2.measured_total);
    assert!(
        r2.transport_read + r2.transport_written > r2.grpc_message_bytes
            && r2.grpc_message_bytes > r2.measured_total - b2.request
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn byte_cap_is_honoured_and_sharer_errors_keep_their_codes() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let capped = |cap: u64| {
        let mut req = kv_request(pb::Payload::Int8, "");
        req.transfer = Some(pb::TransferSettings {
            payload: pb::Payload::Int8 as i32,
            selection: pb::Selection::Back as i32,
            byte_cap: cap,
            ..Default::default()
        });
        req
    };
    let reply = client.evaluate(capped(20_000)).await.unwrap().into_inner();
    let total = reply.total.unwrap();
    assert_eq!(reply.budget_cap_bytes, 20_000);
    // The cap binds (the full int8 transfer is about 67 kB) and the largest fitting suffix is
    // sent: one more token per layer would not fit.
    assert!(
        total.measured_total <= 20_000 && total.measured_total > 20_000 - 200,
        "{total:?}"
    );
    // Not even one token fits: the sharer's FAILED_PRECONDITION reaches the caller as is.
    let err = client.evaluate(capped(100)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let mut sharer_client = SharerClient::connect(sharer.endpoint()).await.unwrap();
    let refine = pb::RefineRequest {
        session_id: "0".repeat(32),
        want: Some(pb::refine_request::Want::Extra(pb::ExtraPositions {
            positions: vec![1],
            payload: pb::Payload::Int8 as i32,
        })),
        granularity: 0,
    };
    let err = sharer_client.refine(refine).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rank_scoring_from_own_prefill_and_from_the_sharer_cache() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let rank = |method: pb::Method, norm: pb::RankNormalization| pb::EvaluateRequest {
        example: Some(example("e1")),
        method: method as i32,
        scoring: pb::Scoring::Rank as i32,
        rank_normalization: norm as i32,
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Fp16 as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let alone = client
        .evaluate(rank(
            pb::Method::ReceiverOnly,
            pb::RankNormalization::Unspecified,
        ))
        .await
        .unwrap()
        .into_inner();
    // Three normalisations, per character chosen by default, one score per choice.
    let norms: Vec<i32> = alone.rank.iter().map(|r| r.normalization).collect();
    assert_eq!(
        norms,
        [
            pb::RankNormalization::Raw as i32,
            pb::RankNormalization::PerToken as i32,
            pb::RankNormalization::PerChar as i32
        ]
    );
    assert!(
        alone
            .rank
            .iter()
            .all(|r| r.scores.len() == 4 && r.scores.iter().all(|s| s.is_finite() && *s < 0.0))
    );
    let per_char = &alone.rank[2];
    assert_eq!(
        alone.prediction,
        ["A", "B", "C", "D"][per_char.prediction as usize]
    );
    assert!((f64::from(alone.margin) - per_char.margin).abs() < 1e-5);
    assert!(alone.probabilities.is_empty());
    // The score stage (continuation forward) is timed apart from the prompt's prefill.
    let t = alone.timings.unwrap();
    assert!(t.receiver_prefill_ms > 0.0 && t.score_ms > 0.0, "{t:?}");

    // Raw normalisation picks the raw ranking.
    let raw = client
        .evaluate(rank(pb::Method::ReceiverOnly, pb::RankNormalization::Raw))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        raw.prediction,
        ["A", "B", "C", "D"][alone.rank[0].prediction as usize]
    );

    // Same model, fp16 cache of the same plain context from the sharer: the same scores (up to
    // fp16 rounding of the cache) as the receiver's own prefill.
    let kv = client
        .evaluate(rank(pb::Method::Kv, pb::RankNormalization::Unspecified))
        .await
        .unwrap()
        .into_inner();
    assert!(kv.total.unwrap().measured_total > 0);
    for (a, b) in alone.rank.iter().zip(&kv.rank) {
        for (x, y) in a.scores.iter().zip(&b.scores) {
            assert!((x - y).abs() < 0.05, "{a:?} vs {b:?}");
        }
    }
    let round = kv.rounds[0].timings.unwrap();
    assert!(round.score_ms > 0.0 && round.receiver_prefill_ms > 0.0 && round.end_to_end_ms > 0.0);

    // A text message goes before the context.
    let text = client
        .evaluate(pb::EvaluateRequest {
            method: pb::Method::Text as i32,
            text: Some(pb::TextSettings {
                kind: pb::MessageKind::Raw as i32,
                byte_cap: 64,
            }),
            ..rank(pb::Method::Text, pb::RankNormalization::PerToken)
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(text.rank.len(), 3);
    assert_eq!(
        text.prediction,
        ["A", "B", "C", "D"][text.rank[1].prediction as usize]
    );

    // The sharer's own answer is by letter only: refused clearly.
    let err = client
        .evaluate(rank(
            pb::Method::SharerOnly,
            pb::RankNormalization::Unspecified,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
}
