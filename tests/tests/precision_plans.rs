//! Precision plans end to end (docs/EVALUATION.md, "Precision plans"): mixed precision by
//! layer, int4/int8 per layer by measured sensitivity, and rate-distortion per token, through
//! both services in the context layout with tiny random-weight models. Every plan stays within
//! its cap and is answered; the per-token plan sends an int8 and an int4 frame per layer that
//! both sides assemble, and refinement upgrades what it sent; bad plans are INVALID_ARGUMENT.

use e2e_tests::{TINY_MODEL, start_receiver, start_sharer};
use kvwire::v2::SessionHeader;
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use tonic::Code;

const PASSAGE: &str = "The passkey is 4821. The grass is green. The sky is blue. Here we go.";

fn example() -> pb::Example {
    pb::Example {
        id: "passkey-0".into(),
        question: "What is the passkey?".into(),
        choices: ["4821", "7390", "1536", "9062"].map(String::from).to_vec(),
        gold: "A".into(),
        passage: PASSAGE.into(),
    }
}

fn transfer(plan: pb::PrecisionPlan, payload: pb::Payload, cap: u64) -> pb::TransferSettings {
    pb::TransferSettings {
        payload: payload as i32,
        precision_plan: plan as i32,
        fp16_layers: if plan == pb::PrecisionPlan::MixedLayers {
            1
        } else {
            0
        },
        byte_cap: cap,
        ..Default::default()
    }
}

fn evaluate(t: pb::TransferSettings) -> pb::EvaluateRequest {
    pb::EvaluateRequest {
        example: Some(example()),
        method: pb::Method::Kv as i32,
        scoring: pb::Scoring::Rank as i32,
        layout: pb::Layout::Context as i32,
        transfer: Some(t),
        ..Default::default()
    }
}

/// The records of a Share of the wrapped passage: (session header, frame lengths by layer).
async fn share(sharer: &str, t: pb::TransferSettings) -> (SessionHeader, Vec<(u32, usize)>) {
    let mut client = SharerClient::connect(sharer.to_string()).await.unwrap();
    let req = pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Text(format!("{PASSAGE}\n\n"))),
        transfer: Some(t),
        all_positions: true,
        ..Default::default()
    };
    let mut stream = client.share(req).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("session header");
    let header = SessionHeader::decode(&first.frame).unwrap();
    let mut frames = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        frames.push((chunk.layer.unwrap(), chunk.frame.len()));
    }
    (header, frames)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_plan_is_answered_within_its_cap() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let bytes = |r: &pb::EvaluateReply| r.total.unwrap().measured_total;
    let uniform = |payload| transfer(pb::PrecisionPlan::Unspecified, payload, 0);
    let mut uncapped = Vec::new();
    for payload in [pb::Payload::Int4, pb::Payload::Int8, pb::Payload::Fp16] {
        let reply = client.evaluate(evaluate(uniform(payload))).await.unwrap();
        uncapped.push(bytes(&reply.into_inner()));
    }
    let [int4, int8, fp16] = uncapped[..] else {
        unreachable!()
    };
    // Uncapped: the mixed plan lies between int8 and fp16, the measured plans send int8.
    let mixed = transfer(pb::PrecisionPlan::MixedLayers, pb::Payload::Int8, 0);
    let mixed = bytes(&client.evaluate(evaluate(mixed)).await.unwrap().into_inner());
    assert!(int8 < mixed && mixed < fp16, "{int8} < {mixed} < {fp16}");
    for plan in [
        pb::PrecisionPlan::LayerSensitivity,
        pb::PrecisionPlan::TokenRate,
        pb::PrecisionPlan::TokenTopK,
    ] {
        let t = transfer(plan, pb::Payload::Unspecified, 0);
        let reply = client.evaluate(evaluate(t)).await.unwrap().into_inner();
        assert_eq!(bytes(&reply), int8, "{plan:?} uncapped");
    }
    // Capped halfway between every row at int4 and at int8.
    let cap = (int4 + int8) / 2;
    for (plan, payload) in [
        (pb::PrecisionPlan::MixedLayers, pb::Payload::Int8),
        (pb::PrecisionPlan::LayerSensitivity, pb::Payload::Int8),
        (pb::PrecisionPlan::TokenRate, pb::Payload::Unspecified),
        (pb::PrecisionPlan::TokenTopK, pb::Payload::Unspecified),
    ] {
        let reply = client
            .evaluate(evaluate(transfer(plan, payload, cap)))
            .await
            .unwrap()
            .into_inner();
        let total = reply.total.unwrap();
        assert!(
            total.measured_total <= cap,
            "{plan:?}: {total:?} over {cap}"
        );
        assert_eq!(total.estimated_total, total.measured_total, "{plan:?}");
        assert_eq!(reply.budget_cap_bytes, cap);
        assert_eq!(reply.rank.len(), 3, "{plan:?} answered");
    }
    // The per-token plan at that cap: every token, int8 and int4 frames in every layer.
    let (header, frames) = share(
        &sharer.endpoint(),
        transfer(pb::PrecisionPlan::TokenRate, pb::Payload::Unspecified, cap),
    )
    .await;
    let layers = u32::from(header.layers);
    assert_eq!(header.frames as usize, frames.len());
    assert_eq!(frames.len() as u32, 2 * layers, "{frames:?}");
    for layer in 0..layers {
        assert_eq!(frames.iter().filter(|(l, _)| *l == layer).count(), 2);
    }
    drop(receiver);
    sharer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_per_token_round_is_refined_and_bad_plans_are_refused() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let int4 = transfer(pb::PrecisionPlan::Unspecified, pb::Payload::Int4, 0);
    let int8 = transfer(pb::PrecisionPlan::Unspecified, pb::Payload::Int8, 0);
    let bytes = |r: pb::EvaluateReply| r.total.unwrap().measured_total;
    let cap = (bytes(client.evaluate(evaluate(int4)).await.unwrap().into_inner())
        + bytes(client.evaluate(evaluate(int8)).await.unwrap().into_inner()))
        / 2;
    // Round 2 upgrades every position held, those of both precision groups (the sharer's
    // record of round 1 went through the same assembler as the receiver's).
    let refined = client
        .evaluate(pb::EvaluateRequest {
            refine: Some(pb::RefineSettings {
                margin_threshold: 1e6,
                upgrade_payload: pb::Payload::Int8 as i32,
                ..Default::default()
            }),
            ..evaluate(transfer(
                pb::PrecisionPlan::TokenRate,
                pb::Payload::Unspecified,
                cap,
            ))
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refined.rounds.len(), 2, "{refined:?}");

    let refused = |t: pb::TransferSettings| {
        let mut client = client.clone();
        async move { client.evaluate(evaluate(t)).await.unwrap_err().code() }
    };
    let mut too_many = transfer(pb::PrecisionPlan::MixedLayers, pb::Payload::Int8, 0);
    too_many.fp16_layers = 1000;
    assert_eq!(refused(too_many).await, Code::InvalidArgument);
    let fp16_rate = transfer(pb::PrecisionPlan::TokenRate, pb::Payload::Fp16, 0);
    assert_eq!(refused(fp16_rate).await, Code::InvalidArgument);
    let unknown = pb::TransferSettings {
        precision_plan: 42,
        ..Default::default()
    };
    assert_eq!(refused(unknown).await, Code::InvalidArgument);
    // A cap below one token of the cheapest precision is refused, not exceeded.
    let tiny = transfer(pb::PrecisionPlan::TokenRate, pb::Payload::Unspecified, 64);
    assert_eq!(refused(tiny).await, Code::FailedPrecondition);
    drop(receiver);
    sharer.stop().await.unwrap();
}
