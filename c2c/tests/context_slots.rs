//! Context slots: the projected correction lands in the named slots only, rotated with the
//! receiver's RoPE at the slot position; a closed gate leaves the filler rows bit for bit.

use std::collections::HashMap;

use c2c::context::{RopePair, SlotRows, fuse_slots};
use c2c::projector::tensor_shapes;
use c2c::rope::{RopePairing, RopeSpec};
use c2c::{GateMode, KvLayer, Projector, ProjectorDims};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

const DIMS: ProjectorDims = ProjectorDims {
    sharer_heads: 1,
    sharer_head_dim: 4,
    receiver_heads: 1,
    receiver_head_dim: 2,
    hidden: 4,
    intermediate: 4,
    proj_blocks: 1,
};

/// Output r + sigmoid(0) * bias = r + 0.5 * bias whatever the input; gate logit `gate`.
fn projector(bias: f32, gate: f32) -> Projector {
    let dev = Device::Cpu;
    let mut ts = HashMap::new();
    for (name, shape) in tensor_shapes(&DIMS) {
        let n: usize = shape.iter().product();
        let fill = if name.ends_with("gate_logit") {
            gate
        } else if name.ends_with("proj_out.bias") {
            bias
        } else {
            0.0
        };
        ts.insert(
            name,
            Tensor::from_vec(vec![fill; n], shape.as_slice(), &dev).expect("t"),
        );
    }
    Projector::new(DIMS, VarBuilder::from_tensors(ts, DType::F32, &dev)).expect("projector")
}

fn ropes() -> RopePair {
    RopePair {
        sharer: RopeSpec {
            theta: 1_000_000.0,
            head_dim: 4,
            pairing: RopePairing::Half,
        },
        receiver: RopeSpec {
            theta: 10_000.0,
            head_dim: 2,
            pairing: RopePairing::Half,
        },
    }
}

fn rows(n: usize, slots: Vec<usize>) -> SlotRows {
    let k = Tensor::randn(0f32, 1.0, (1, 1, n, 4), &Device::Cpu).expect("k");
    let v = Tensor::randn(0f32, 1.0, (1, 1, n, 4), &Device::Cpu).expect("v");
    SlotRows {
        kv: KvLayer::new(k, v).expect("kv"),
        sharer_positions: (0..n).collect(),
        slots,
    }
}

fn rows_of(x: &Tensor) -> Vec<Vec<f32>> {
    x.squeeze(0)
        .and_then(|x| x.squeeze(0))
        .and_then(|x| x.to_vec2::<f32>())
        .expect("rows")
}

#[test]
fn open_gate_writes_the_rotated_correction_into_the_slots_only() {
    let s = 6;
    let base_k = Tensor::randn(0f32, 1.0, (1, 1, s, 2), &Device::Cpu).unwrap();
    let base_v = Tensor::randn(0f32, 1.0, (1, 1, s, 2), &Device::Cpu).unwrap();
    let base = KvLayer::new(base_k.clone(), base_v.clone()).unwrap();
    let slots = vec![1, 2, 4];
    let out = fuse_slots(
        &projector(2.0, 1.0),
        &rows(3, slots.clone()),
        &base,
        &GateMode::Hard,
        &ropes(),
    )
    .unwrap();
    let (k, v) = (rows_of(&out.k), rows_of(&out.v));
    let (bk, bv) = (rows_of(&base_k), rows_of(&base_v));
    for p in 0..s {
        if !slots.contains(&p) {
            assert_eq!(k[p], bk[p], "slot {p} K changed");
            assert_eq!(v[p], bv[p], "slot {p} V changed");
            continue;
        }
        // Correction (1, 1) (= 0.5 * bias); head width 2, so the angle is p * 1 rad.
        let (c, sn) = ((p as f32).cos(), (p as f32).sin());
        let want = [bk[p][0] + c - sn, bk[p][1] + sn + c];
        for d in 0..2 {
            assert!((k[p][d] - want[d]).abs() < 1e-5, "slot {p}: {:?}", k[p]);
            assert!((v[p][d] - (bv[p][d] + 1.0)).abs() < 1e-6, "slot {p} V");
        }
    }
}

#[test]
fn closed_gate_keeps_the_filler_exactly_and_bad_rows_are_errors() {
    let base = KvLayer::new(
        Tensor::randn(0f32, 1.0, (1, 1, 4, 2), &Device::Cpu).unwrap(),
        Tensor::randn(0f32, 1.0, (1, 1, 4, 2), &Device::Cpu).unwrap(),
    )
    .unwrap();
    let out = fuse_slots(
        &projector(2.0, -1.0),
        &rows(4, vec![0, 1, 2, 3]),
        &base,
        &GateMode::Hard,
        &ropes(),
    )
    .unwrap();
    assert_eq!(rows_of(&out.k), rows_of(&base.k));
    assert_eq!(rows_of(&out.v), rows_of(&base.v));
    let p = projector(2.0, 1.0);
    let g = GateMode::Hard;
    // A slot past the base, slots out of order, rows without slots.
    assert!(fuse_slots(&p, &rows(2, vec![3, 4]), &base, &g, &ropes()).is_err());
    assert!(fuse_slots(&p, &rows(2, vec![2, 1]), &base, &g, &ropes()).is_err());
    assert!(fuse_slots(&p, &rows(2, vec![1]), &base, &g, &ropes()).is_err());
}
