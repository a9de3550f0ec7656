//! Training building blocks end to end: a tiny projector learns a synthetic target with AdamW,
//! Gumbel-sigmoid gates under an annealed temperature, a warm-up/decay schedule and gradient
//! clipping; the loss at the hard (inference) gate drops by a clear factor.

use c2c::train::{LrSchedule, clip_grad_norm, gate_temperature, gumbel_noise, trainable_projector};
use c2c::{GateMode, ProjectorDims};
use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn mse(a: &Tensor, b: &Tensor) -> Tensor {
    (a - b)
        .and_then(|d| d.sqr())
        .and_then(|d| d.mean_all())
        .expect("mse")
}

#[test]
fn schedules_by_hand() {
    assert!((gate_temperature(0, 100, 1.0, 0.001) - 1.0).abs() < 1e-12);
    assert!((gate_temperature(50, 100, 1.0, 0.001) - 0.001f64.sqrt()).abs() < 1e-12);
    assert!((gate_temperature(500, 100, 1.0, 0.001) - 0.001).abs() < 1e-12);
    let s = LrSchedule::with_warmup_fraction(1e-4, 100, 0.1);
    assert_eq!(s.warmup, 10);
    assert_eq!(s.at(0), 0.0);
    assert!((s.at(5) - 5e-5).abs() < 1e-15);
    assert!((s.at(10) - 1e-4).abs() < 1e-15);
    assert!((s.at(55) - 5e-5).abs() < 1e-15);
    assert_eq!(s.at(100), 0.0);
}

#[test]
fn clipping_caps_the_global_norm() {
    let dev = Device::Cpu;
    let a = candle_core::Var::new(&[3f32, 0.0], &dev).expect("a");
    let b = candle_core::Var::new(&[0f32, 4.0], &dev).expect("b");
    // loss = 3a0 + 4b1 + 0 -> grads [3,0] and [0,4], global norm 5.
    let w = Tensor::new(&[3f32, 0.0], &dev).expect("w");
    let v = Tensor::new(&[0f32, 4.0], &dev).expect("v");
    let loss = (a.as_tensor() * &w)
        .and_then(|x| x.sum_all())
        .and_then(|x| x + (b.as_tensor() * &v)?.sum_all()?)
        .expect("loss");
    let mut grads = loss.backward().expect("grads");
    let norm = clip_grad_norm(&[a.clone(), b.clone()], &mut grads, 1.0).expect("clip");
    assert!((norm - 5.0).abs() < 1e-6);
    let ga = grads
        .get(a.as_tensor())
        .expect("ga")
        .to_vec1::<f32>()
        .expect("v");
    assert!((ga[0] - 0.6).abs() < 1e-5);
    let again = clip_grad_norm(&[a, b], &mut grads, 1.0).expect("clip");
    assert!((again - 1.0).abs() < 1e-4);
}

#[test]
fn tiny_projector_overfits_a_synthetic_target() {
    let dev = Device::Cpu;
    let dims = ProjectorDims {
        sharer_heads: 2,
        sharer_head_dim: 2,
        receiver_heads: 2,
        receiver_head_dim: 2,
        hidden: 16,
        intermediate: 16,
        proj_blocks: 1,
    };
    let vm = VarMap::new();
    let proj = trainable_projector(dims, &vm, "", 5, &dev).expect("projector");
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let n = 32;
    let mut data = |len: usize| -> Tensor {
        let v: Vec<f32> = (0..len).map(|_| rng.random_range(-1.5f32..1.5)).collect();
        Tensor::from_vec(v, (len / 4, 4), &dev).expect("data")
    };
    let s = data(n * 4);
    let r = data(n * 4);
    // Target: the receiver plus a fixed linear map of the sharer.
    let a = Tensor::new(
        &[
            [0.5f32, -1.0, 0.0, 0.3],
            [0.2, 0.4, -0.6, 0.0],
            [0.0, 0.1, 0.9, -0.2],
            [-0.7, 0.0, 0.3, 0.5],
        ],
        &dev,
    )
    .expect("a");
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let target = (&r + s.matmul(&a).expect("sa")).expect("target");
    let hard_loss = || {
        let (k, v) = proj
            .forward_rows(&s, &r, &s, &r, &GateMode::Hard)
            .expect("fwd");
        mse(&k, &target).to_scalar::<f32>().expect("k")
            + mse(&v, &target).to_scalar::<f32>().expect("v")
    };
    let initial = hard_loss();
    let steps = 80;
    let sched = LrSchedule::with_warmup_fraction(2e-2, steps, 0.1);
    let params = ParamsAdamW {
        lr: sched.at(0),
        weight_decay: 0.0,
        ..Default::default()
    };
    let vars = vm.all_vars();
    let mut opt = AdamW::new(vars.clone(), params).expect("adamw");
    for step in 0..steps {
        let gate = GateMode::Soft {
            temperature: gate_temperature(step, steps, 1.0, 0.001),
            key_noise: gumbel_noise(&mut rng, n, 2, &dev).expect("noise"),
            value_noise: gumbel_noise(&mut rng, n, 2, &dev).expect("noise"),
        };
        let (k, v) = proj.forward_rows(&s, &r, &s, &r, &gate).expect("fwd");
        let loss = (mse(&k, &target) + mse(&v, &target)).expect("loss");
        let mut grads = loss.backward().expect("backward");
        clip_grad_norm(&vars, &mut grads, 1.0).expect("clip");
        opt.set_learning_rate(sched.at(step));
        opt.step(&grads).expect("step");
    }
    let (gk, gv) = proj.gate_logits().expect("gates");
    let fin = hard_loss();
    assert!(gk > 0.0 && gv > 0.0, "gates stayed closed: {gk} {gv}");
    assert!(fin * 5.0 < initial, "loss {initial} -> {fin}");
}
