use std::path::Path;

use c2c::checkpoint::save;
use c2c::projector::ProjectorDims;
use candle_core::{DType, Device};
use model_runtime::{Arch, ModelConfig};

use super::*;
use crate::context::{fuse_context, passage_rows, slot_base};
use crate::fused::sharer_cache;

/// A tiny receiver/sharer pair and a C2C fuser whose gates are closed (logits 0), written to
/// `dir` with the tokenizer both use.
fn setup(dir: &Path) -> (Model, Model, Tokenizer, C2cFuser) {
    let (rc, sc) = (
        ModelConfig::tiny(Arch::Llama),
        ModelConfig::tiny(Arch::Qwen2),
    );
    let receiver = Model::random(&rc, 1, &Device::Cpu, DType::F32).unwrap();
    let sharer = Model::random(&sc, 2, &Device::Cpu, DType::F32).unwrap();
    let dims = ProjectorDims {
        sharer_heads: sc.n_kv_heads,
        sharer_head_dim: sc.head_dim,
        receiver_heads: rc.n_kv_heads,
        receiver_head_dim: rc.head_dim,
        hidden: 8,
        intermediate: 8,
        proj_blocks: 1,
    };
    let varmap = candle_nn::VarMap::new();
    let fuser =
        c2c::train::trainable_fuser(dims, rc.n_layers, sc.n_layers, &varmap, 3, &Device::Cpu)
            .unwrap();
    save(
        &fuser,
        &dir.join("fuser.safetensors"),
        &dir.join("fuser.json"),
    )
    .unwrap();
    let tokenizer = Tokenizer::tiny().unwrap();
    let tok_path = dir.join("tokenizer.json");
    tokenizer.inner().save(&tok_path, false).unwrap();
    let c2c = C2cFuser::load(dir, &tok_path, &receiver).unwrap();
    (receiver, sharer, tokenizer, c2c)
}

/// The rows of `cache` at `positions`, as a transfer would deliver them.
fn host(
    model: &Model,
    id: &str,
    cache: &KvCache,
    positions: Vec<u32>,
    prompt_tokens: usize,
) -> HostCache {
    let c = model.config();
    HostCache {
        sharer_model: id.into(),
        prompt_tokens,
        heads: c.n_kv_heads,
        head_dim: c.head_dim,
        layers: cache
            .select_positions(&positions)
            .unwrap()
            .to_host()
            .unwrap(),
        positions,
    }
}

fn context<'a>(
    model: &'a Model,
    tok: &'a Tokenizer,
    text: &'a str,
    ids: &'a [u32],
) -> ReceiverContext<'a> {
    ReceiverContext {
        model,
        model_id: "tiny",
        tokenizer: tok,
        text,
        ids,
        layout: PromptLayout::Shared,
    }
}

#[test]
fn closed_gates_give_the_receivers_own_cache_and_bad_transfers_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, sharer, tok, c2c) = setup(dir.path());
    let text = "Question: why?\nAnswer:";
    let ids = tok.encode(text).unwrap();
    let s_cache = sharer_cache(&sharer, &ids).unwrap();
    let n = ids.len();
    // Sparse: only some sharer positions arrived.
    let transfer = host(&sharer, "tiny", &s_cache, vec![0, 2, (n - 2) as u32], n);
    let ctx = context(&receiver, &tok, text, &ids);
    let fused = c2c.fuse(&transfer, &ctx).unwrap();
    let own = receiver_prompt_cache(&receiver, &ids).unwrap();
    assert_eq!(
        fused.cache.to_host().unwrap(),
        own.to_host().unwrap(),
        "closed gates must leave the receiver cache bit for bit"
    );
    assert!(fused.timings.receiver_prefill_ms > 0.0 && fused.timings.project_ms > 0.0);

    let mut short = transfer.clone();
    short.layers.pop();
    assert!(matches!(
        c2c.fuse(&short, &ctx),
        Err(FuserError::Input { .. })
    ));
    let mut other_prompt = transfer.clone();
    other_prompt.prompt_tokens += 3;
    assert!(matches!(
        c2c.fuse(&other_prompt, &ctx),
        Err(FuserError::Input { .. })
    ));
    let other_text = context(&receiver, &tok, "another text", &ids);
    assert!(c2c.fuse(&transfer, &other_text).is_err());
}

#[test]
fn a_fuser_for_other_shapes_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let _ = setup(dir.path());
    let tok = dir.path().join("tokenizer.json");
    let other =
        Model::random(&ModelConfig::tiny(Arch::Qwen3), 1, &Device::Cpu, DType::F32).unwrap();
    let mut cfg = ModelConfig::tiny(Arch::Qwen3);
    cfg.n_layers = 3;
    let deeper = Model::random(&cfg, 1, &Device::Cpu, DType::F32).unwrap();
    assert!(
        C2cFuser::load(dir.path(), &tok, &other).is_ok(),
        "same layer count and KV shapes fit"
    );
    assert!(C2cFuser::load(dir.path(), &tok, &deeper).is_err());
    assert!(C2cFuser::load(Path::new("/nonexistent"), &tok, &other).is_err());
}

#[test]
fn identity_uploads_the_rows_as_sent_and_refuses_another_model_or_prompt() {
    let model =
        Model::random(&ModelConfig::tiny(Arch::Llama), 1, &Device::Cpu, DType::F32).unwrap();
    let tok = Tokenizer::tiny().unwrap();
    let ids = [3u32, 9, 4, 7, 1];
    let cache = sharer_cache(&model, &ids).unwrap();
    let sent = host(&model, "tiny", &cache, vec![0, 1, 3], ids.len());
    let ctx = context(&model, &tok, "", &ids);
    let fused = IdentityFuser.fuse(&sent, &ctx).unwrap();
    assert_eq!(fused.cache.to_host().unwrap(), sent.layers);
    assert_eq!(fused.timings.receiver_prefill_ms, 0.0);
    assert_eq!((fused.run_from, fused.next_position), (4, 4));

    let other_model = HostCache {
        sharer_model: "other".into(),
        ..sent.clone()
    };
    assert!(matches!(
        IdentityFuser.fuse(&other_model, &ctx),
        Err(FuserError::Input { what: "pair", .. })
    ));
    let other_prompt = HostCache {
        prompt_tokens: 9,
        ..sent.clone()
    };
    assert!(matches!(
        IdentityFuser.fuse(&other_prompt, &ctx),
        Err(FuserError::Input { what: "prompt", .. })
    ));
    let fewer_layers = HostCache {
        layers: sent.layers[..1].to_vec(),
        ..sent
    };
    assert!(matches!(
        IdentityFuser.fuse(&fewer_layers, &ctx),
        Err(FuserError::Input {
            what: "sharer cache",
            ..
        })
    ));
}

#[test]
fn identity_in_the_context_layout_puts_the_question_after_the_passage() {
    let model =
        Model::random(&ModelConfig::tiny(Arch::Llama), 1, &Device::Cpu, DType::F32).unwrap();
    let tok = Tokenizer::tiny().unwrap();
    let passage = [3u32, 9, 4, 7, 1, 8];
    let cache = sharer_cache(&model, &passage).unwrap();
    // Every passage position is a candidate, the last one included; gaps are allowed.
    let sent = host(&model, "tiny", &cache, vec![0, 2, 5], passage.len());
    let question = [5u32, 6];
    let ctx = ReceiverContext {
        layout: PromptLayout::Context,
        ..context(&model, &tok, "", &question)
    };
    let fused = IdentityFuser.fuse(&sent, &ctx).unwrap();
    assert_eq!(fused.cache.to_host().unwrap(), sent.layers);
    assert_eq!((fused.run_from, fused.next_position), (0, passage.len()));
    // The receiver's prompt is not the passage: no prompt-length check in this layout, but the
    // pair still must be one model.
    let other_model = HostCache {
        sharer_model: "other".into(),
        ..sent
    };
    assert!(matches!(
        IdentityFuser.fuse(&other_model, &ctx),
        Err(FuserError::Input { what: "pair", .. })
    ));
}

#[test]
fn a_shared_checkpoint_refuses_the_context_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, sharer, tok, c2c) = setup(dir.path());
    assert_eq!(c2c.layout(), PromptLayout::Shared);
    let ids = tok.encode("Question: why?\nAnswer:").unwrap();
    let s_cache = sharer_cache(&sharer, &ids).unwrap();
    let transfer = host(&sharer, "tiny", &s_cache, vec![0, 1], ids.len());
    let ctx = ReceiverContext {
        layout: PromptLayout::Context,
        ..context(&receiver, &tok, "", &ids)
    };
    assert!(matches!(
        c2c.fuse(&transfer, &ctx),
        Err(FuserError::LayoutNotTrained {
            trained: "shared",
            requested: "context",
            ..
        })
    ));
}

/// Turns the shared checkpoint of [`setup`] into a context-layout one: `context.json` (a token
/// filler, `max` slots, the sharer's RoPE) and `gating.json` (noise-free gates at T = 1, so
/// the closed logits give g = 0.5 and the passage changes the slots).
fn make_context_checkpoint(dir: &Path, sharer: &Model, max: usize) -> crate::gating::Gating {
    let settings = ContextSettings {
        filler: crate::context::Filler::Token(7),
        max_passage_tokens: max,
        sharer_rope: rope_spec(sharer.config()),
    };
    std::fs::write(
        dir.join(SETTINGS_FILE),
        serde_json::to_string(&settings).unwrap(),
    )
    .unwrap();
    let gating = crate::gating::Gating {
        noise: crate::gating::GateNoise::None,
        initial_temperature: 1.0,
        final_temperature: 1.0,
        anneal_steps: 0,
    };
    std::fs::write(
        dir.join(crate::gating::GATING_FILE),
        serde_json::to_string(&gating).unwrap(),
    )
    .unwrap();
    gating
}

#[test]
fn a_context_checkpoint_fuses_every_passage_row_as_the_in_process_path() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, sharer, tok, _) = setup(dir.path());
    let gating = make_context_checkpoint(dir.path(), &sharer, 24);
    let c2c = C2cFuser::load(dir.path(), &dir.path().join("tokenizer.json"), &receiver).unwrap();
    assert_eq!(c2c.layout(), PromptLayout::Context);
    let passage = tok.encode("Bees make honey.\n\n").unwrap();
    let s = passage.len();
    assert!(s <= 24, "{s}");
    let question = tok.encode("Question: who?\nAnswer:").unwrap();
    let s_cache = sharer_cache(&sharer, &passage).unwrap();
    let all: Vec<u32> = (0..s as u32).collect();
    let transfer = host(&sharer, "tiny", &s_cache, all, s);
    let ctx = ReceiverContext {
        layout: PromptLayout::Context,
        ..context(&receiver, &tok, "", &question)
    };
    let fused = c2c.fuse(&transfer, &ctx).unwrap();
    assert_eq!((fused.run_from, fused.next_position), (0, s));
    assert_eq!(fused.cache.seq_len(), s);

    // The in-process path of `fuser eval --layout context`.
    let loaded = c2c::checkpoint::load(
        &dir.path().join("fuser.safetensors"),
        &dir.path().join("fuser.json"),
        DType::F32,
        &Device::Cpu,
    )
    .unwrap();
    let filler = filler_cache(&receiver, crate::context::Filler::Token(7), 24).unwrap();
    let base = slot_base(&filler, s).unwrap();
    let ropes = crate::context::rope_pair(&receiver, &sharer);
    let mut gates = gating.evaluation(&Device::Cpu);
    let want = fuse_context(
        &loaded,
        &passage_rows(&s_cache).unwrap(),
        &base,
        gates.as_mut(),
        &ropes,
    )
    .unwrap();
    for (a, b) in fused.cache.layers.iter().zip(&want.layers) {
        for (x, y) in [(&a.k, &b.k), (&a.v, &b.v)] {
            let d = max_abs_diff(x, y);
            assert!(d < 1e-5, "fused slots differ by {d}");
        }
    }
    // The gates are open enough that the passage changed the slots.
    let filler_k = &base.layers.last().unwrap().k;
    let moved = max_abs_diff(&fused.cache.layers.last().unwrap().k, filler_k);
    assert!(moved > 1e-4, "the slots are the filler's ({moved})");
}

#[test]
fn a_context_checkpoint_refuses_the_shared_layout_long_passages_and_partial_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, sharer, tok, _) = setup(dir.path());
    make_context_checkpoint(dir.path(), &sharer, 6);
    let c2c = C2cFuser::load(dir.path(), &dir.path().join("tokenizer.json"), &receiver).unwrap();
    let question = tok.encode("Question: who?\nAnswer:").unwrap();
    let passage: Vec<u32> = (0..10).map(|i| 20 + i).collect();
    let s_cache = sharer_cache(&sharer, &passage).unwrap();
    let ctx = ReceiverContext {
        layout: PromptLayout::Context,
        ..context(&receiver, &tok, "", &question)
    };
    let shared = context(&receiver, &tok, "", &question);
    let rows = |n: u32| host(&sharer, "tiny", &s_cache, (0..n).collect(), n as usize);
    assert!(matches!(
        c2c.fuse(&rows(4), &shared),
        Err(FuserError::LayoutNotTrained {
            trained: "context",
            requested: "shared",
            ..
        })
    ));
    assert!(matches!(
        c2c.fuse(&rows(10), &ctx),
        Err(FuserError::PassageTooLong { tokens: 10, max: 6 })
    ));
    let partial = host(&sharer, "tiny", &s_cache, vec![0, 2, 3], 5);
    match c2c.fuse(&partial, &ctx) {
        Err(FuserError::PartialPassage {
            prompt_tokens: 5,
            missing: 2,
            first_missing,
        }) => assert_eq!(first_missing, [1, 4]),
        other => panic!("{other:?}"),
    }
    let ok = c2c.fuse(&rows(6), &ctx).unwrap();
    assert_eq!((ok.run_from, ok.next_position), (0, 6));
}

/// Largest absolute difference of two tensors of one shape.
fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
