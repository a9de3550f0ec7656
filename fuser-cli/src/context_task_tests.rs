//! The context task through the real trainer with tiny random models: a run cut at step 3 and
//! resumed, a run cut by a time limit and resumed, and a run with kept sharer caches, end where
//! the straight run ends; the files
//! beside the checkpoint are written; the random-passage control's loss is the loss with
//! another item's passage.

use std::path::Path;

use candle_core::{DType, Device};
use clap::Parser;
use fuser::context::Filler;
use fuser::fused::HardGate;
use model_runtime::{Arch, Model, ModelConfig, Tokenizer};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::pair::{ModelRef, PairConfig, ProjectorOpts};
use crate::train_cmd::train_with;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: TrainArgs,
}

fn args(out: &Path, extra: &[&str]) -> TrainArgs {
    let mut argv = vec![
        "fuser",
        "--out",
        out.to_str().unwrap(),
        "--layout",
        "context",
    ];
    argv.extend_from_slice(&[
        "--steps",
        "6",
        "--batch",
        "2",
        "--val-every",
        "3",
        "--ckpt-every",
        "3",
        "--lr",
        "3e-3",
        "--gate-init",
        "1",
        "--gate-noise",
        "none",
        "--max-passage-tokens",
        "16",
    ]);
    argv.extend_from_slice(extra);
    Cli::parse_from(argv).args
}

fn none() -> ModelRef {
    ModelRef {
        asset: None,
        gguf: None,
        hf_dir: None,
    }
}

fn tiny_pair(dir: &Path) -> OpenPair {
    let loaded = |arch, seed| Loaded {
        model: Model::random(&ModelConfig::tiny(arch), seed, &Device::Cpu, DType::F32).unwrap(),
        tokenizer: Tokenizer::tiny().unwrap(),
        source: format!("random tiny {arch:?}"),
        weights_sha256: "random".into(),
    };
    OpenPair {
        config: PairConfig {
            name: "tiny".into(),
            receiver: none(),
            sharer: none(),
            projector: ProjectorOpts {
                hidden: 16,
                intermediate: 16,
                proj_blocks: 1,
                released_fuser: None,
            },
        },
        store: assets::Store::new(dir),
        device: Device::Cpu,
        receiver: loaded(Arch::Llama, 1),
        sharer: loaded(Arch::Qwen2, 2),
    }
}

fn items(n: usize, offset: u32) -> Vec<ContextItem> {
    (0..n as u32)
        .map(|i| {
            let passage: Vec<u32> = (0..4 + i % 3)
                .map(|t| 20 + (t + 7 * (i + offset)) % 250)
                .collect();
            ContextItem {
                id: format!("item-{}", i + offset),
                // The receiver reads the same ids (one tiny vocabulary): slot i <-> token i.
                passage_receiver: passage.clone(),
                slot_pairs: (0..passage.len()).map(|t| (t, t)).collect(),
                passage,
                question: vec![3, 9, 4],
                response: vec![200 + (i + offset) % 2],
            }
        })
        .collect()
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let t = candle_core::safetensors::load(dir.join("fuser.safetensors"), &Device::Cpu).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = t
        .into_iter()
        .map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn assert_same_weights(straight: &Path, resumed: &Path) {
    let (a, b) = (weights(straight), weights(resumed));
    assert_eq!(a.len(), b.len());
    for ((na, va), (nb, vb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let d = va
            .iter()
            .zip(vb)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-6, "{na}: {} differs by {d}", resumed.display());
    }
}

#[test]
fn a_resumed_context_run_ends_where_the_straight_run_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = tiny_pair(tmp.path());
    let run = |out: &Path, extra: &[&str]| {
        let a = args(out, extra);
        let task = ContextTask::from_items(&pair, &a, items(6, 0), items(2, 100), Filler::Token(7))
            .unwrap();
        train_with(&a, &pair, &task).unwrap()
    };
    let straight = tmp.path().join("straight");
    assert_eq!(run(&straight, &[]), 6);
    let cut = tmp.path().join("cut");
    assert_eq!(run(&cut, &["--stop-at-step", "3"]), 3);
    assert_eq!(run(&cut, &["--resume"]), 3);
    assert_same_weights(&straight, &cut);
    // A time limit already passed stops after the first step; resuming finishes the schedule.
    let timed = tmp.path().join("timed");
    assert_eq!(run(&timed, &["--time-limit", "0"]), 1);
    assert_eq!(run(&timed, &["--resume"]), 5);
    assert_same_weights(&straight, &timed);
    for f in [
        "gating.json",
        "context.json",
        "provenance.json",
        "gates.csv",
        "loss.csv",
    ] {
        assert!(cut.join(f).exists(), "{f} missing");
    }
    let loss = std::fs::read_to_string(cut.join("loss.csv")).unwrap();
    // Header, the receiver-alone row at step 0, then steps 1..=6 once each.
    assert_eq!(loss.lines().count(), 8, "{loss}");
    let gates = std::fs::read_to_string(cut.join("gates.csv")).unwrap();
    // Two validations (steps 3 and 6) of two projectors.
    assert_eq!(gates.lines().count(), 1 + 2 * 2, "{gates}");
    // Resuming a finished folder without --resume is refused.
    let a = args(&cut, &[]);
    let task =
        ContextTask::from_items(&pair, &a, items(6, 0), items(2, 100), Filler::Zero).unwrap();
    assert!(train_with(&a, &pair, &task).is_err());
}

#[test]
fn the_random_passage_control_reads_another_items_passage() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = tiny_pair(tmp.path());
    let a = args(&tmp.path().join("x"), &["--sharer-input", "random-passage"]);
    let train = items(5, 0);
    let task =
        ContextTask::from_items(&pair, &a, train.clone(), items(1, 100), Filler::Token(7)).unwrap();
    let varmap = candle_nn::VarMap::new();
    let rc = pair.receiver.model.config();
    let sc = pair.sharer.model.config();
    let dims = c2c::ProjectorDims {
        sharer_heads: sc.n_kv_heads,
        sharer_head_dim: sc.head_dim,
        receiver_heads: rc.n_kv_heads,
        receiver_head_dim: rc.head_dim,
        hidden: 16,
        intermediate: 16,
        proj_blocks: 1,
    };
    let f = c2c::train::trainable_fuser(dims, rc.n_layers, sc.n_layers, &varmap, 0, &Device::Cpu)
        .unwrap();
    c2c::train::init_gate_logits(&varmap, 1.0).unwrap();
    let model = &pair.receiver.model;
    let value = |t: candle_core::Tensor| t.to_scalar::<f32>().unwrap();
    for i in 0..train.len() {
        let mut rng = ChaCha8Rng::seed_from_u64(i as u64);
        let got = task
            .loss(model, &f, TaskPart::Train, i, true, &mut rng, &mut HardGate)
            .unwrap();
        let j = other_item(&mut ChaCha8Rng::seed_from_u64(i as u64), i, train.len());
        assert_ne!(i, j);
        let slots = task
            .slots
            .fused(&f, &train[j].passage, Qat::None, &mut HardGate)
            .unwrap();
        let want = context_loss(model, &slots, &train[i].question, &train[i].response).unwrap();
        assert_eq!(
            value(got),
            value(want),
            "item {i} did not read item {j}'s passage"
        );
    }
}

#[test]
fn slot_distillation_pulls_the_slots_towards_the_receivers_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = tiny_pair(tmp.path());
    let train = items(6, 0);
    let run = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let a = args(&out, extra);
        let task =
            ContextTask::from_items(&pair, &a, train.clone(), items(2, 100), Filler::Token(7))
                .unwrap();
        train_with(&a, &pair, &task).unwrap();
        out
    };
    let plain = run("plain", &[]);
    let distilled = run("distilled", &["--distill-weight", "10"]);
    // Each step logs its distillation term, only when distillation is on.
    let logged = |dir: &Path| {
        std::fs::read_to_string(dir.join("train_log.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"distill\""))
            .count()
    };
    assert_eq!((logged(&plain), logged(&distilled)), (0, 6));
    let a = args(&tmp.path().join("x"), &[]);
    let task =
        ContextTask::from_items(&pair, &a, train.clone(), items(1, 100), Filler::Token(7)).unwrap();
    // Mean distillation loss of a checkpoint over the training items.
    let distance = |dir: &Path| {
        let f = c2c::checkpoint::load(
            &dir.join("fuser.safetensors"),
            &dir.join("fuser.json"),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        let linked = f.config.layer_map.linked_receivers();
        let total: f32 = train
            .iter()
            .map(|item| {
                let slots = task
                    .slots
                    .fused(&f, &item.passage, Qat::None, &mut HardGate)
                    .unwrap();
                let targets = fuser::slot_distill::SlotTargets::new(
                    &pair.receiver.model,
                    &item.passage_receiver,
                    &item.slot_pairs,
                    &task.slots.ropes.receiver,
                )
                .unwrap();
                fuser::slot_distill::distill_loss(&slots, &targets, &linked)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            })
            .sum();
        total / train.len() as f32
    };
    let (d_plain, d_distilled) = (distance(&plain), distance(&distilled));
    assert!(
        d_distilled < 0.95 * d_plain,
        "distilled {d_distilled} vs cross-entropy only {d_plain}"
    );
}

#[test]
fn distill_only_steps_train_on_distillation_alone_then_add_the_cross_entropy() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = tiny_pair(tmp.path());
    let out = tmp.path().join("phased");
    let a = args(
        &out,
        &["--distill-only-steps", "3", "--distill-weight", "1"],
    );
    let task =
        ContextTask::from_items(&pair, &a, items(6, 0), items(2, 100), Filler::Token(7)).unwrap();
    train_with(&a, &pair, &task).unwrap();
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("loss").is_some())
        .collect();
    assert_eq!(steps.len(), 6);
    for (i, s) in steps.iter().enumerate() {
        let (loss, distill) = (s["loss"].as_f64().unwrap(), s["distill"].as_f64().unwrap());
        if i < 3 {
            assert!(
                (loss - distill).abs() < 1e-5,
                "step {}: {loss} vs {distill}",
                i + 1
            );
        } else {
            // The answer's cross-entropy (positive) joins the distillation term.
            assert!(loss > distill + 1e-3, "step {}: {loss} vs {distill}", i + 1);
        }
    }
}

#[test]
fn slot_distillation_is_refused_in_the_shared_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = args(&tmp.path().join("x"), &["--distill-only-steps", "2"]);
    a.layout = crate::train_cmd::Layout::Shared;
    let err = crate::train_cmd::run(a).unwrap_err().to_string();
    assert!(err.contains("needs --layout context"), "{err}");
}

#[test]
fn a_run_initialised_from_a_checkpoint_starts_from_its_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = tiny_pair(tmp.path());
    // `frozen`: learning rate 0, which leaves the starting weights as they are.
    let run = |out: &Path, extra: &[&str], frozen: bool| {
        let mut a = args(out, extra);
        if frozen {
            a.lr = 0.0;
        }
        let task = ContextTask::from_items(&pair, &a, items(6, 0), items(2, 100), Filler::Token(7))
            .unwrap();
        train_with(&a, &pair, &task).map(|_| ())
    };
    let first = tmp.path().join("first");
    run(&first, &["--distill-only-steps", "6"], false).unwrap();
    // A frozen run from the first one's checkpoint ends where the first one ended.
    let init = first.to_str().unwrap();
    let second = tmp.path().join("second");
    run(&second, &["--init-from", init], true).unwrap();
    assert_same_weights(&first, &second);
    let provenance: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(second.join("provenance.json")).unwrap())
            .unwrap();
    let start = &provenance["initialised_from"];
    assert_eq!(start["folder"].as_str(), Some(init));
    assert_eq!(start["provenance"]["steps_done"].as_u64(), Some(6));
    let fresh = tmp.path().join("fresh");
    run(&fresh, &[], true).unwrap();
    assert_ne!(weights(&first), weights(&fresh));
    // A folder without a checkpoint is refused with its path.
    let empty = tmp.path().join("empty");
    let err = run(
        &tmp.path().join("third"),
        &["--init-from", empty.to_str().unwrap()],
        false,
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("--init-from"), "{err:#}");
}
