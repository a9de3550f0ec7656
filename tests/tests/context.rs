//! The context regime end to end (docs/EVALUATION.md, "The context regime"): the sharer has
//! read a passage, the receiver has only the question. With tiny random-weight models on
//! loopback: full fp16 KV transfer of the passage agrees with the passage in the receiver's own
//! prompt, every passage position crosses the wire, and malformed requests get the right codes.

use e2e_tests::{TINY_MODEL, start_receiver, start_sharer};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use tonic::Code;

/// Largest difference allowed between a rank score (any normalisation, natural-log units)
/// after an fp16 transfer of the passage's cache and the same score with the passage in the
/// receiver's own prompt. The two runs differ by the fp16 rounding of the passage's K/V (and by
/// the order of floating-point sums between one prefill and two forwards) only.
const SCORE_TOLERANCE: f64 = 1e-2;

/// A passkey-style item with a short passage (the tiny model's context is 512 tokens and its
/// tokenizer is byte-level; the seeded generator itself is eval-harness's `passkey_example`).
fn item(index: usize) -> pb::Example {
    let keys = ["4821", "7390", "1536", "9062"];
    let filler = ["The grass is green.", "The sky is blue.", "Here we go."];
    let mut passage: Vec<String> = (0..4).map(|i| filler[(i + index) % 3].into()).collect();
    passage.insert(index % 5, format!("The passkey is {}.", keys[index % 4]));
    let gold = index % 4;
    let mut choices: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    choices.swap(gold, index % 4);
    pb::Example {
        id: format!("passkey-{index}"),
        question: "What is the passkey?".into(),
        choices,
        gold: ["A", "B", "C", "D"][gold].into(),
        passage: passage.join(" "),
    }
}

fn context_request(example: pb::Example, method: pb::Method) -> pb::EvaluateRequest {
    pb::EvaluateRequest {
        example: Some(example),
        method: method as i32,
        scoring: pb::Scoring::Rank as i32,
        layout: pb::Layout::Context as i32,
        ..Default::default()
    }
}

fn kv_fp16(example: pb::Example) -> pb::EvaluateRequest {
    pb::EvaluateRequest {
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Fp16 as i32,
            ..Default::default()
        }),
        ..context_request(example, pb::Method::Kv)
    }
}

fn text_passage(example: pb::Example, cap: u64) -> pb::EvaluateRequest {
    pb::EvaluateRequest {
        text: Some(pb::TextSettings {
            kind: pb::MessageKind::Passage as i32,
            byte_cap: cap,
        }),
        ..context_request(example, pb::Method::Text)
    }
}

/// Bytes of the KVWire records a sharer sends for `text` at fp16, every position or all but
/// the last.
async fn share_bytes(sharer: &str, text: &str, all_positions: bool) -> usize {
    let mut client = SharerClient::connect(sharer.to_string()).await.unwrap();
    let req = pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Text(text.into())),
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Fp16 as i32,
            ..Default::default()
        }),
        keep_session: false,
        all_positions,
        query: String::new(),
    };
    let mut stream = client.share(req).await.unwrap().into_inner();
    let mut total = 0;
    while let Some(chunk) = stream.message().await.unwrap() {
        total += chunk.frame.len();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_fp16_transfer_agrees_with_the_passage_in_the_receivers_own_prompt() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let mut largest = 0f64;
    for i in 0..4 {
        let example = item(i);
        let kv = client
            .evaluate(kv_fp16(example.clone()))
            .await
            .unwrap()
            .into_inner();
        let upper = client
            .evaluate(text_passage(example.clone(), 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(kv.prediction, upper.prediction, "item {i}");
        assert_eq!(kv.rank.len(), 3);
        for (a, b) in kv.rank.iter().zip(&upper.rank) {
            assert_eq!(a.normalization, b.normalization);
            assert_eq!(a.prediction, b.prediction, "item {i}");
            for (x, y) in a.scores.iter().zip(&b.scores) {
                largest = largest.max((x - y).abs());
            }
        }
        // The upper bound's bytes are the passage's; the KV transfer's are its records.
        let text_bytes = upper.total.unwrap().measured_total;
        assert_eq!(text_bytes, example.passage.len() as u64);
        let kv_total = kv.total.unwrap();
        assert_eq!(kv_total.estimated_total, kv_total.measured_total);
        let wrapped = format!("{}\n\n", example.passage);
        assert_eq!(
            kv_total.measured_total,
            share_bytes(&sharer.endpoint(), &wrapped, true).await as u64,
            "every passage position, the last included"
        );
        assert!(
            share_bytes(&sharer.endpoint(), &wrapped, false).await
                < kv_total.measured_total as usize
        );
    }
    eprintln!("largest rank-score difference, fp16 transfer vs own prompt: {largest:.2e}");
    assert!(largest <= SCORE_TOLERANCE, "{largest}");

    // A capped passage is cut on a character boundary, and the receiver alone has only the
    // question.
    let capped = client
        .evaluate(text_passage(item(0), 24))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(capped.total.unwrap().measured_total, 24);
    assert_eq!(capped.budget_cap_bytes, 24);
    let alone = client
        .evaluate(context_request(item(0), pb::Method::ReceiverOnly))
        .await
        .unwrap()
        .into_inner();
    assert!(alone.rounds.is_empty() && alone.total.unwrap().measured_total == 0);
    // Not vacuous: without the passage the scores move by far more than the tolerance.
    let upper = client
        .evaluate(text_passage(item(0), 0))
        .await
        .unwrap()
        .into_inner();
    let moved = alone.rank[0]
        .scores
        .iter()
        .zip(&upper.rank[0].scores)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(moved > 10.0 * SCORE_TOLERANCE, "{moved}");
    // Refinement in the context layout upgrades every passage position held, the last one
    // included (sharer and receiver apply the same every-position rule in round 2).
    let refined = client
        .evaluate(pb::EvaluateRequest {
            transfer: Some(pb::TransferSettings {
                payload: pb::Payload::Int4 as i32,
                ..Default::default()
            }),
            refine: Some(pb::RefineSettings {
                margin_threshold: 1e6,
                upgrade_payload: pb::Payload::Int8 as i32,
                ..Default::default()
            }),
            ..kv_fp16(item(0))
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refined.rounds.len(), 2, "{refined:?}");
    drop(receiver);
    sharer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn context_requests_without_a_passage_or_with_letter_scoring_are_refused() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let code = |r: Result<tonic::Response<pb::EvaluateReply>, tonic::Status>| {
        r.expect_err("refused").code()
    };
    let mut no_passage = item(0);
    no_passage.passage.clear();
    assert_eq!(
        code(client.evaluate(kv_fp16(no_passage)).await),
        Code::InvalidArgument
    );
    let letter = pb::EvaluateRequest {
        scoring: pb::Scoring::Letter as i32,
        ..kv_fp16(item(0))
    };
    assert_eq!(code(client.evaluate(letter).await), Code::InvalidArgument);
    // C2C is the pair's fuser's to serve: this same-model receiver has none (a C2C receiver's
    // context-layout checkpoint serves it: tests/context_c2c.rs).
    let c2c = context_request(item(0), pb::Method::C2c);
    let status = client.evaluate(c2c).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("fuser"), "{status:?}");
    let raw_text = pb::EvaluateRequest {
        text: Some(pb::TextSettings {
            kind: pb::MessageKind::Raw as i32,
            byte_cap: 0,
        }),
        ..context_request(item(0), pb::Method::Text)
    };
    assert_eq!(code(client.evaluate(raw_text).await), Code::InvalidArgument);
    // The passage kind belongs to the context layout.
    let shared_passage = pb::EvaluateRequest {
        layout: pb::Layout::SharedPrompt as i32,
        ..text_passage(item(0), 0)
    };
    assert_eq!(
        code(client.evaluate(shared_passage).await),
        Code::InvalidArgument
    );
    // The sharer refuses a passage message for an item without one.
    let mut sharer_client = SharerClient::connect(sharer.endpoint()).await.unwrap();
    let mut no_passage = item(1);
    no_passage.passage.clear();
    let status = sharer_client
        .message(pb::MessageRequest {
            example: Some(no_passage),
            kind: pb::MessageKind::Passage as i32,
            byte_cap: 0,
            max_new_tokens: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    drop(receiver);
    sharer.stop().await.unwrap();
}

/// Query-aware selection end to end: the receiver sends its question with the Share request,
/// the sharer keeps the passage tokens that question attends to most; a Share without a query
/// is refused with INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_attention_selection_runs_through_both_services() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    let transfer = |selection: pb::Selection, keep_fraction: f32| pb::TransferSettings {
        payload: pb::Payload::Fp16 as i32,
        selection: selection as i32,
        keep_fraction,
        ..Default::default()
    };
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let mut bytes = Vec::new();
    for (selection, keep) in [
        (pb::Selection::All, 1.0),
        (pb::Selection::QueryAttention, 0.5),
    ] {
        let request = pb::EvaluateRequest {
            transfer: Some(transfer(selection, keep)),
            ..context_request(item(1), pb::Method::Kv)
        };
        let reply = client.evaluate(request).await.unwrap().into_inner();
        let round = &reply.rounds[0];
        bytes.push(round.bytes.as_ref().unwrap().measured_total);
    }
    // Half the passage's rows (plus their index section) against all of them.
    assert!(
        bytes[1] * 10 < bytes[0] * 6,
        "query-attention at keep 0.5 sent {} bytes, all rows {}",
        bytes[1],
        bytes[0]
    );

    let mut sharer_client = SharerClient::connect(sharer.endpoint()).await.unwrap();
    let no_query = pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Text(item(1).passage)),
        transfer: Some(transfer(pb::Selection::QueryAttention, 0.5)),
        all_positions: true,
        ..Default::default()
    };
    let status = match sharer_client.share(no_query).await {
        Err(status) => status,
        Ok(r) => r.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}

/// The passage extract (whole sentences the question asks about, under the cap) is a context
/// layout text baseline: answered, within its cap, and smaller than the passage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passage_extract_is_answered_within_its_cap() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let example = item(2);
    let cap = 40;
    let request = pb::EvaluateRequest {
        text: Some(pb::TextSettings {
            kind: pb::MessageKind::PassageExtract as i32,
            byte_cap: cap,
        }),
        ..context_request(example.clone(), pb::Method::Text)
    };
    let reply = client.evaluate(request).await.unwrap().into_inner();
    let bytes = reply.rounds[0].bytes.as_ref().unwrap().measured_total;
    assert!(
        bytes > 0 && bytes <= cap,
        "{bytes} bytes for a cap of {cap}"
    );
    assert!((bytes as usize) < example.passage.len());
}

/// The sharer-generated passage summary is a context layout text baseline: answered within its
/// cap (a tiny random model generates tokens of any kind; only the path is checked), and
/// refused in the shared layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passage_summary_is_answered_within_its_cap_and_only_in_the_context_layout() {
    let sharer = start_sharer(TINY_MODEL).await;
    let receiver = start_receiver(TINY_MODEL, &sharer.endpoint()).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();
    let cap = 24;
    let request = pb::EvaluateRequest {
        text: Some(pb::TextSettings {
            kind: pb::MessageKind::PassageSummary as i32,
            byte_cap: cap,
        }),
        ..context_request(item(3), pb::Method::Text)
    };
    let reply = client.evaluate(request.clone()).await.unwrap().into_inner();
    let bytes = reply.rounds[0].bytes.as_ref().unwrap().measured_total;
    assert!(bytes <= cap, "{bytes} bytes for a cap of {cap}");
    let shared = pb::EvaluateRequest {
        layout: pb::Layout::SharedPrompt as i32,
        ..request
    };
    let status = client.evaluate(shared).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}
