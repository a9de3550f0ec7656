//! Context-layout C2C through the real services (docs/FUSER.md, "Serving the context layout"):
//! a tiny receiver (Llama) and a tiny sharer (Qwen2) with random weights, a context-layout
//! checkpoint written here (random projectors, open noise-free gates), both services on
//! loopback. A C2C request scores what `fuser eval --layout context`'s in-process path scores
//! (the same ids, slots and gating), the random-passage control (the coordinator's draw)
//! scores the other passage and not the item's own, and the refusals are typed.

use std::path::Path;

use c2c::context::RopePair;
use c2c::projector::ProjectorDims;
use candle_core::{DType, Device};
use e2e_tests::{Running, start_receiver_with, start_sharer};
use eval_harness::{Example, passage_ids, rank_context, rank_continuation};
use fuser::context::{
    ContextSettings, Filler, SETTINGS_FILE, filler_cache, fuse_context, passage_rows, rope_spec,
    score_after_slots, slot_base,
};
use fuser::gating::{GATING_FILE, GateNoise, Gating};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use model_runtime::{KvCache, LayerKv, Tokenizer};
use receiver_svc::ReceiverConfig;
use receiver_svc::config::{C2cSettings, FuserKind};
use service_kit::model_load::{LoadedModel, load};
use service_kit::model_spec::ModelSpec;
use tonic::Code;

const RECEIVER: &str = "random:tiny-llama:7";
const SHARER: &str = "random:tiny-qwen2:5";
/// Context slots of the checkpoint (byte-level tokenizer: about one token per character).
const SLOTS: usize = 64;
/// Largest difference allowed between a served and an in-process score (natural-log units):
/// both round the sharer rows to fp16 (the wire), so only the order of float sums differs.
const TOLERANCE: f64 = 1e-3;

fn model(spec: &str) -> LoadedModel {
    load(&ModelSpec::parse(spec).unwrap()).unwrap()
}

/// A checkpoint for the pair in `dir`: random projectors with gate logits 1, the sharer's
/// tokenizer, and with `context` the context layout's `context.json` and a noise-free
/// `gating.json` (g = sigmoid(1) at T = 1: the passage reaches the slots).
fn write_checkpoint(dir: &Path, receiver: &LoadedModel, sharer: &LoadedModel, context: bool) {
    let (rc, sc) = (receiver.model.config(), sharer.model.config());
    let dims = ProjectorDims {
        sharer_heads: sc.n_kv_heads,
        sharer_head_dim: sc.head_dim,
        receiver_heads: rc.n_kv_heads,
        receiver_head_dim: rc.head_dim,
        hidden: 16,
        intermediate: 16,
        proj_blocks: 1,
    };
    let varmap = candle_nn::VarMap::new();
    let fuser =
        c2c::train::trainable_fuser(dims, rc.n_layers, sc.n_layers, &varmap, 3, &Device::Cpu)
            .unwrap();
    c2c::train::init_gate_logits(&varmap, 1.0).unwrap();
    c2c::checkpoint::save(
        &fuser,
        &dir.join("fuser.safetensors"),
        &dir.join("fuser.json"),
    )
    .unwrap();
    Tokenizer::tiny()
        .unwrap()
        .inner()
        .save(dir.join("tokenizer.json"), false)
        .unwrap();
    if context {
        let settings = ContextSettings {
            filler: Filler::Token(32),
            max_passage_tokens: SLOTS,
            sharer_rope: rope_spec(sc),
        };
        let gating = Gating {
            noise: GateNoise::None,
            initial_temperature: 1.0,
            final_temperature: 1.0,
            anneal_steps: 0,
        };
        let settings = serde_json::to_string(&settings).unwrap();
        std::fs::write(dir.join(SETTINGS_FILE), settings).unwrap();
        let gating = serde_json::to_string(&gating).unwrap();
        std::fs::write(dir.join(GATING_FILE), gating).unwrap();
    }
}

async fn c2c_receiver(dir: &Path, sharer: &Running) -> Running {
    start_receiver_with(ReceiverConfig {
        model: RECEIVER.into(),
        sharer_endpoint: sharer.endpoint(),
        fuser: FuserKind::C2c,
        c2c: C2cSettings {
            fuser_dir: dir.display().to_string(),
            sharer_tokenizer: dir.join("tokenizer.json").display().to_string(),
        },
        ..ReceiverConfig::default()
    })
    .await
}

fn item(i: usize) -> pb::Example {
    let facts = [
        "Bees make honey in hives.",
        "Ice melts at zero degrees.",
        "Moss grows on the north side.",
    ];
    pb::Example {
        id: format!("item-{i}"),
        question: "What is true?".into(),
        choices: vec!["honey".into(), "ice".into(), "moss".into(), "stone".into()],
        gold: ["A", "B", "C"][i].into(),
        passage: facts[i].into(),
    }
}

fn c2c_request(example: pb::Example, layout: pb::Layout) -> pb::EvaluateRequest {
    pb::EvaluateRequest {
        example: Some(example),
        method: pb::Method::C2c as i32,
        scoring: pb::Scoring::Rank as i32,
        rank_normalization: pb::RankNormalization::PerChar as i32,
        layout: layout as i32,
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Fp16 as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The raw (summed log-probability) score of every choice in a reply.
fn raw_scores(reply: &pb::EvaluateReply) -> Vec<f64> {
    let raw = reply
        .rank
        .iter()
        .find(|r| r.normalization == pb::RankNormalization::Raw as i32)
        .expect("raw scores");
    raw.scores.clone()
}

/// What `fuser eval --layout context` scores for `example` with `passage` in the slots: the
/// sharer's cache of the wrapped passage (rounded to fp16, as the wire does), the slots over
/// the filler with the checkpoint's gating and RoPE pair, the question at positions `S..`.
fn in_process(
    dir: &Path,
    receiver: &LoadedModel,
    sharer: &LoadedModel,
    example: &pb::Example,
    passage: &str,
) -> Vec<f64> {
    let settings = ContextSettings::read(dir).unwrap();
    let fuser = c2c::checkpoint::load(
        &dir.join("fuser.safetensors"),
        &dir.join("fuser.json"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let ids = passage_ids(&sharer.tokenizer, passage).unwrap();
    let cache = fuser::fused::sharer_cache(&sharer.model, &ids).unwrap();
    let round = |t: &candle_core::Tensor| t.to_dtype(DType::F16).unwrap().to_dtype(DType::F32);
    let cache = KvCache {
        layers: cache
            .layers
            .iter()
            .map(|l| LayerKv {
                k: round(&l.k).unwrap(),
                v: round(&l.v).unwrap(),
            })
            .collect(),
    };
    let r = &receiver.model;
    let filler = filler_cache(r, settings.filler, settings.max_passage_tokens).unwrap();
    let base = slot_base(&filler, ids.len()).unwrap();
    let ropes = RopePair {
        sharer: settings.sharer_rope,
        receiver: rope_spec(r.config()),
    };
    let mut gates = Gating::read(dir).unwrap().evaluation(&Device::Cpu);
    let slots = fuse_context(
        &fuser,
        &passage_rows(&cache).unwrap(),
        &base,
        gates.as_mut(),
        &ropes,
    )
    .unwrap();
    let ex = Example::new(
        example.id.clone(),
        example.question.clone(),
        example.choices.clone(),
        &example.gold,
    )
    .unwrap();
    let tok = &receiver.tokenizer;
    let question = tok.encode(&rank_context(&ex)).unwrap();
    let conts: Vec<Vec<u32>> = ex
        .choices
        .iter()
        .map(|c| tok.encode(&rank_continuation(c)).unwrap())
        .collect();
    score_after_slots(r, &slots, &question, &conts)
        .unwrap()
        .iter()
        .map(|s| s.sum_logprob)
        .collect()
}

fn max_gap(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn served_context_c2c_scores_what_the_in_process_path_scores_and_the_control_reads_another_passage()
 {
    let dir = tempfile::tempdir().unwrap();
    let (receiver_model, sharer_model) = (model(RECEIVER), model(SHARER));
    write_checkpoint(dir.path(), &receiver_model, &sharer_model, true);
    let sharer = start_sharer(SHARER).await;
    let receiver = c2c_receiver(dir.path(), &sharer).await;
    let mut client = ReceiverClient::connect(receiver.endpoint()).await.unwrap();

    let items: Vec<pb::Example> = (0..3).map(item).collect();
    let ids: Vec<String> = items.iter().map(|e| e.id.clone()).collect();
    let by_id = items.iter().map(|e| (e.id.clone(), e.clone())).collect();
    let control = coordinator::control::with_other_passages(&ids, &by_id, 0);
    for example in &items {
        let served = client
            .evaluate(c2c_request(example.clone(), pb::Layout::Context))
            .await
            .unwrap()
            .into_inner();
        let own = raw_scores(&served);
        let want = in_process(
            dir.path(),
            &receiver_model,
            &sharer_model,
            example,
            &example.passage,
        );
        let gap = max_gap(&own, &want);
        assert!(
            gap < TOLERANCE,
            "{}: served {own:?}, in-process {want:?}",
            example.id
        );

        // The control: the same question after another item's passage.
        let swapped = &control[&example.id];
        assert_eq!(swapped.question, example.question);
        assert_ne!(swapped.passage, example.passage, "{}", example.id);
        let reply = client
            .evaluate(c2c_request(swapped.clone(), pb::Layout::Context))
            .await
            .unwrap()
            .into_inner();
        let other = raw_scores(&reply);
        let want = in_process(
            dir.path(),
            &receiver_model,
            &sharer_model,
            example,
            &swapped.passage,
        );
        assert!(max_gap(&other, &want) < TOLERANCE, "{other:?} vs {want:?}");
        assert!(
            max_gap(&other, &own) > 10.0 * TOLERANCE,
            "{}: the control scores what the own passage scores ({own:?})",
            example.id
        );
    }
    receiver.stop().await.unwrap();
    sharer.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn context_c2c_refusals_are_typed() {
    let (context_dir, shared_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (receiver_model, sharer_model) = (model(RECEIVER), model(SHARER));
    write_checkpoint(context_dir.path(), &receiver_model, &sharer_model, true);
    write_checkpoint(shared_dir.path(), &receiver_model, &sharer_model, false);
    let sharer = start_sharer(SHARER).await;
    let context = c2c_receiver(context_dir.path(), &sharer).await;
    let shared = c2c_receiver(shared_dir.path(), &sharer).await;
    let mut to_context = ReceiverClient::connect(context.endpoint()).await.unwrap();
    let mut to_shared = ReceiverClient::connect(shared.endpoint()).await.unwrap();
    let refused = |r: Result<tonic::Response<pb::EvaluateReply>, tonic::Status>, needle: &str| {
        let status = r.expect_err("refused");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains(needle), "{needle}: {status:?}");
    };

    // A context checkpoint and the shared layout.
    let r = to_context
        .evaluate(c2c_request(item(0), pb::Layout::SharedPrompt))
        .await;
    refused(r, "trained for the context layout");
    // A shared checkpoint and the context layout.
    let r = to_shared
        .evaluate(c2c_request(item(0), pb::Layout::Context))
        .await;
    refused(r, "trained for the shared layout");
    // A passage longer than the slots.
    let long = pb::Example {
        passage: "Bees make honey. ".repeat(8),
        ..item(0)
    };
    let r = to_context
        .evaluate(c2c_request(long, pb::Layout::Context))
        .await;
    refused(r, &format!("{SLOTS} slots"));
    // Half the passage rows.
    let mut partial = c2c_request(item(1), pb::Layout::Context);
    partial.transfer = Some(pb::TransferSettings {
        payload: pb::Payload::Fp16 as i32,
        selection: pb::Selection::Front as i32,
        keep_fraction: 0.5,
        ..Default::default()
    });
    let r = to_context.evaluate(partial).await;
    refused(r, "missing");
    // The receiver still serves after the refusals.
    let ok = to_context
        .evaluate(c2c_request(item(2), pb::Layout::Context))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.rank.len(), 3);
    context.stop().await.unwrap();
    shared.stop().await.unwrap();
    sharer.stop().await.unwrap();
}
