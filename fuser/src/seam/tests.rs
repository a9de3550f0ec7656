use std::path::Path;

use c2c::checkpoint::save;
use c2c::projector::ProjectorDims;
use candle_core::{DType, Device};
use model_runtime::{Arch, ModelConfig};

use super::*;
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
fn c2c_refuses_the_context_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, sharer, tok, c2c) = setup(dir.path());
    let ids = tok.encode("Question: why?\nAnswer:").unwrap();
    let s_cache = sharer_cache(&sharer, &ids).unwrap();
    let transfer = host(&sharer, "tiny", &s_cache, vec![0, 1], ids.len());
    let ctx = ReceiverContext {
        layout: PromptLayout::Context,
        ..context(&receiver, &tok, "", &ids)
    };
    assert!(matches!(
        c2c.fuse(&transfer, &ctx),
        Err(FuserError::Input { what: "layout", .. })
    ));
}
