//! The fuse step across layers: last-aligned map, a sharer layer that was not sent, the prompt's
//! last token never fused, KVComm-like restriction of the map.

use std::collections::HashMap;

use c2c::projector::tensor_shapes;
use c2c::{
    GateMode, KvLayer, LayerMap, Projector, ProjectorDims, SharerLayer, fuse, prompt_positions,
};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

const DIMS: ProjectorDims = ProjectorDims {
    sharer_heads: 1,
    sharer_head_dim: 2,
    receiver_heads: 1,
    receiver_head_dim: 2,
    hidden: 4,
    intermediate: 4,
    proj_blocks: 1,
};

/// A projector whose output is r + sigmoid(0) * (b_out) = r + 0.5 * bias: easy to recognise.
fn projector(bias: f32) -> Projector {
    let dev = Device::Cpu;
    let mut ts = HashMap::new();
    for (name, shape) in tensor_shapes(&DIMS) {
        let n: usize = shape.iter().product();
        let fill = if name.ends_with("gate_logit") {
            1.0
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

fn layer(t: usize, value: f32) -> KvLayer {
    let x = Tensor::full(value, (1, 1, t, 2), &Device::Cpu).expect("t");
    KvLayer::new(x.clone(), x).expect("layer")
}

fn values(x: &Tensor) -> Vec<f32> {
    x.flatten_all()
        .and_then(|x| x.to_vec1::<f32>())
        .expect("vec")
}

#[test]
fn layers_without_sharer_rows_stay_and_the_last_token_is_not_fused() {
    let t = 4;
    let projectors: Vec<Projector> = (0..3).map(|i| projector(2.0 * (i + 1) as f32)).collect();
    // 3 receiver layers <- 2 sharer layers: receiver 0 and 1 use sharer 0, receiver 2 sharer 1.
    let map = LayerMap::last_aligned(3, 2);
    let receiver: Vec<KvLayer> = (0..3).map(|_| layer(t, 1.0)).collect();
    let positions = prompt_positions(t);
    assert_eq!(positions, vec![0, 1, 2]);
    let sent = SharerLayer::dense_prefix(&layer(t, 5.0), positions.len()).expect("prefix");
    let sharer = vec![None, Some(sent)];
    let fused = fuse(&projectors, &map, &sharer, &receiver, &GateMode::Hard).expect("fuse");
    for (l, kv) in fused.iter().enumerate().take(2) {
        assert_eq!(
            values(&kv.k),
            vec![1.0; 2 * t],
            "layer {l} had no sharer rows"
        );
    }
    // Layer 2 uses projector 2 (bias 6): tokens 0..3 become 1 + 0.5 * 6 = 4, the last stays 1.
    assert_eq!(
        values(&fused[2].v),
        vec![4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 1.0, 1.0]
    );

    // Restricting the map to sharer layer 0 removes the only link that had rows.
    let restricted = map.restricted_to_sharer_layers(&[0]);
    let fused = fuse(
        &projectors,
        &restricted,
        &sharer,
        &receiver,
        &GateMode::Hard,
    )
    .expect("fuse");
    assert_eq!(values(&fused[2].v), vec![1.0; 2 * t]);

    // Too few sharer layers for the map is an error, not a panic.
    assert!(fuse(&projectors, &map, &sharer[..1], &receiver, &GateMode::Hard).is_err());
    assert!(SharerLayer::dense_prefix(&layer(t, 5.0), t + 1).is_err());
}

#[test]
fn receiver_scores_measure_projection_and_change() {
    use c2c::scores::receiver_scores;
    let t = 3;
    let receiver = layer(t, 1.0);
    let rows = SharerLayer {
        kv: layer(2, 5.0),
        positions: vec![0, 2],
    };
    // P = b_out = [4, 4] (norm sqrt 32); fused - own = 0.5 * P on K and V: sqrt(2 * 8) = 4.
    let s = receiver_scores(&projector(4.0), &rows, &receiver).expect("scores");
    assert_eq!(s.positions, vec![0, 2]);
    for (p, d) in s.proj_vnorm.iter().zip(&s.delta) {
        assert!((p - 32f32.sqrt()).abs() < 1e-5, "{p}");
        assert!((d - 4.0).abs() < 1e-5, "{d}");
    }
}
