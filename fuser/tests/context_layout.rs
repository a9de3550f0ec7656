//! The context layout with tiny random models: the RoPE spec undoes each architecture's own
//! RoPE, closed gates give exactly "filler slots then the question", and training the fuser on
//! a two-passage overfit set lowers the loss and makes the answer depend on the passage.

use c2c::checkpoint::Fuser;
use c2c::projector::ProjectorDims;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use fuser::context::{
    Filler, context_loss, filler_cache, fuse_context, passage_rows, rope_pair, rope_spec,
    score_after_slots, slot_base,
};
use fuser::fused::{HardGate, sharer_cache};
use fuser::train::{AdamW, AdamWConfig, SoftGates};
use model_runtime::{Arch, KvCache, Model, ModelConfig, RopeStyle};

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn fuser_for(rc: &ModelConfig, sc: &ModelConfig, varmap: &VarMap, gate: f64) -> Fuser {
    let dims = ProjectorDims {
        sharer_heads: sc.n_kv_heads,
        sharer_head_dim: sc.head_dim,
        receiver_heads: rc.n_kv_heads,
        receiver_head_dim: rc.head_dim,
        hidden: 32,
        intermediate: 32,
        proj_blocks: 1,
    };
    let f = c2c::train::trainable_fuser(dims, rc.n_layers, sc.n_layers, varmap, 3, &Device::Cpu)
        .unwrap();
    c2c::train::init_gate_logits(varmap, gate).unwrap();
    f
}

/// Layer 0's K of a token depends on the token alone and its RoPE angle, so the K of token
/// `c` at position 2 un-rotated must equal its K at position 0, for every architecture and
/// both dimension pairings.
#[test]
fn rope_spec_undoes_each_models_own_rope() {
    for arch in Arch::ALL {
        for style in [RopeStyle::Half, RopeStyle::Interleaved] {
            let mut cfg = ModelConfig::tiny(arch);
            cfg.rope_style = style;
            let model = Model::random(&cfg, 4, &Device::Cpu, DType::F32).unwrap();
            let spec = rope_spec(&cfg);
            let mut at2 = KvCache::new();
            model
                .forward_hidden(&model.ids_tensor(&[5, 9, 17]).unwrap(), 0, &mut at2)
                .unwrap();
            let mut at0 = KvCache::new();
            model
                .forward_hidden(&model.ids_tensor(&[17]).unwrap(), 0, &mut at0)
                .unwrap();
            let k2 = at2.layers[0].k.narrow(2, 2, 1).unwrap();
            let k0 = &at0.layers[0].k;
            let d = max_diff(&spec.unrotate(&k2, &[2]).unwrap(), k0);
            assert!(d < 1e-5, "{arch:?} {style:?}: un-rotated differs by {d}");
            let d = max_diff(&spec.rotate(k0, &[2]).unwrap(), &k2);
            assert!(d < 1e-5, "{arch:?} {style:?}: rotated differs by {d}");
        }
    }
}

#[test]
fn closed_gates_are_filler_slots_then_the_question() {
    let rc = ModelConfig::tiny(Arch::Llama);
    let sc = ModelConfig::tiny(Arch::Qwen2);
    let receiver = Model::random(&rc, 1, &Device::Cpu, DType::F32).unwrap();
    let sharer = Model::random(&sc, 2, &Device::Cpu, DType::F32).unwrap();
    let varmap = VarMap::new();
    let closed = fuser_for(&rc, &sc, &varmap, -1.0);
    let passage = [40u32, 41, 42, 43];
    let question = [3u32, 9, 4];
    let conts = vec![vec![5u32, 6], vec![8]];
    let filler = filler_cache(&receiver, Filler::Token(7), 10).unwrap();
    let base = slot_base(&filler, passage.len()).unwrap();
    let rows = passage_rows(&sharer_cache(&sharer, &passage).unwrap()).unwrap();
    let ropes = rope_pair(&receiver, &sharer);
    let fused = fuse_context(&closed, &rows, &base, &mut HardGate, &ropes).unwrap();
    assert_eq!(fused.seq_len(), passage.len());
    assert_eq!(fused.layers.len(), rc.n_layers);
    let got = score_after_slots(&receiver, &fused, &question, &conts).unwrap();
    let mut ids = vec![7u32; passage.len()];
    ids.extend_from_slice(&question);
    let want = receiver.continuation_logprobs(&ids, &conts).unwrap();
    for (a, b) in got.iter().zip(&want) {
        assert!(
            (a.sum_logprob - b.sum_logprob).abs() < 1e-4,
            "{a:?} vs {b:?}"
        );
    }
    // An empty slot cache is the receiver alone.
    let alone = score_after_slots(&receiver, &KvCache::new(), &question, &conts).unwrap();
    let plain = receiver.continuation_logprobs(&question, &conts).unwrap();
    assert!((alone[0].sum_logprob - plain[0].sum_logprob).abs() < 1e-4);
    // Open gates write into every linked layer's slots; the zero filler has the same shape.
    let open = fuser_for(&rc, &sc, &VarMap::new(), 1.0);
    let fused = fuse_context(&open, &rows, &base, &mut HardGate, &ropes).unwrap();
    for (f, b) in fused.layers.iter().zip(&base.layers) {
        assert_eq!(f.k.dims(), b.k.dims());
        assert!(max_diff(&f.v, &b.v) > 0.0);
    }
    let zero = filler_cache(&receiver, Filler::Zero, 4).unwrap();
    assert_eq!(zero.layers[0].k.dims(), base.layers[0].k.dims());
    assert!(slot_base(&filler, 11).is_err());
    assert!(filler_cache(&receiver, Filler::Zero, 0).is_err());
}

/// Two passages, one question, two answers: only the fused slots tell the receiver which
/// answer is wanted. Training lowers the loss, and afterwards each item's answer is likelier
/// with its own passage than with the other item's (the random-passage control).
#[test]
fn training_lowers_the_loss_and_the_passage_matters() {
    let dev = Device::Cpu;
    let rc = ModelConfig::tiny(Arch::Llama);
    let sc = ModelConfig::tiny(Arch::Qwen2);
    let receiver = Model::random(&rc, 1, &dev, DType::F32)
        .unwrap()
        .with_autograd(true);
    let sharer = Model::random(&sc, 2, &dev, DType::F32).unwrap();
    let varmap = VarMap::new();
    let fuser = fuser_for(&rc, &sc, &varmap, 1.0);
    let ropes = rope_pair(&receiver, &sharer);
    let filler = filler_cache(&receiver, Filler::Token(7), 8).unwrap();
    let question = [3u32, 9, 4];
    let items = [
        (vec![10u32, 11, 12, 13, 14], vec![200u32]),
        (vec![20u32, 21, 22, 23, 24, 25], vec![201u32]),
    ];
    let rows: Vec<_> = items
        .iter()
        .map(|(p, _)| passage_rows(&sharer_cache(&sharer, p).unwrap()).unwrap())
        .collect();
    let loss_of = |passage: usize, answer: usize, gates: &mut SoftGates| {
        let base = slot_base(&filler, items[passage].0.len()).unwrap();
        let fused = fuse_context(&fuser, &rows[passage], &base, gates, &ropes).unwrap();
        context_loss(&receiver, &fused, &question, &items[answer].1).unwrap()
    };
    let vars = varmap.data().lock().unwrap().clone();
    let mut opt = AdamW::new(vars, AdamWConfig::default()).unwrap();
    assert_eq!(opt.scale_lr("gate_logit", 3.0), 2 * rc.n_layers);
    let mut gates = SoftGates::without_noise(1.0, &dev);
    let mut losses = Vec::new();
    for _ in 0..60 {
        let loss =
            ((loss_of(0, 0, &mut gates) + loss_of(1, 1, &mut gates)).unwrap() / 2.0).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        let mut grads = loss.backward().unwrap();
        let norm = c2c::train::clip_grad_norm(&opt.vars(), &mut grads, 1.0).unwrap();
        assert!(norm > 0.0, "no gradient reached the projectors");
        opt.step(&grads, 3e-3).unwrap();
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    let mut l = [[0f64; 2]; 2];
    for (p, row) in l.iter_mut().enumerate() {
        for (a, v) in row.iter_mut().enumerate() {
            *v = f64::from(loss_of(p, a, &mut gates).to_scalar::<f32>().unwrap());
        }
    }
    // l[passage][answer]: each answer is likelier after its own passage.
    assert!(l[0][0] + 1.0 < l[1][0], "{l:?}");
    assert!(l[1][1] + 1.0 < l[0][1], "{l:?}");
}
