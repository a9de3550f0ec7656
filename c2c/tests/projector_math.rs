//! The projector against a hand-computed case and against an independent f64 reference written
//! with plain loops; gate behaviour; sparse fusion leaves untouched positions bit-exact.

use std::collections::HashMap;

use c2c::projector::tensor_shapes;
use c2c::{GateMode, KvLayer, LayerMap, Projector, ProjectorDims, SharerLayer, fuse};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

fn build(dims: ProjectorDims, values: &HashMap<String, Vec<f32>>) -> Projector {
    let dev = Device::Cpu;
    let mut ts = HashMap::new();
    for (name, shape) in tensor_shapes(&dims) {
        let data = values
            .get(&name)
            .cloned()
            .unwrap_or_else(|| vec![0.0; shape.iter().product()]);
        let t = Tensor::from_vec(data, shape.as_slice(), &dev).expect("tensor");
        ts.insert(name, t);
    }
    Projector::new(dims, VarBuilder::from_tensors(ts, DType::F32, &dev)).expect("projector")
}

fn tiny_dims() -> ProjectorDims {
    ProjectorDims {
        sharer_heads: 1,
        sharer_head_dim: 1,
        receiver_heads: 2,
        receiver_head_dim: 1,
        hidden: 2,
        intermediate: 2,
        proj_blocks: 1,
    }
}

/// FFN blocks with W2 = 0 are the identity, so the whole projector is affine and the answer can
/// be worked out by hand:
/// x = [s; r] = [1, 2, -1]; h0 = [[1,0,0],[0,1,1]] x + [0.5,-0.5] = [1.5, 0.5];
/// P = [[1,0],[0,2]] h0 + [0,1] = [1.5, 2.0]; w = sigmoid([0, ln 3]) = [0.5, 0.75];
/// out = r + w * P = [2 + 0.75, -1 + 1.5] = [2.75, 0.5].
#[test]
fn hand_computed_case() {
    let mut v = HashMap::new();
    for p in ["key", "value"] {
        v.insert(format!("{p}_in.weight"), vec![1., 0., 0., 0., 1., 1.]);
        v.insert(format!("{p}_in.bias"), vec![0.5, -0.5]);
        v.insert(format!("{p}_proj_out.weight"), vec![1., 0., 0., 2.]);
        v.insert(format!("{p}_proj_out.bias"), vec![0., 1.]);
        v.insert(format!("{p}_scalar_head.bias"), vec![0., 3f32.ln()]);
        v.insert(format!("{p}_gate_logit"), vec![1.0]);
    }
    let proj = build(tiny_dims(), &v);
    let dev = Device::Cpu;
    let s = Tensor::new(&[[1f32]], &dev).expect("s");
    let r = Tensor::new(&[[2f32, -1.]], &dev).expect("r");
    let (k, vv) = proj
        .forward_rows(&s, &r, &s, &r, &GateMode::Hard)
        .expect("forward");
    for out in [k, vv] {
        let got = out.to_vec2::<f32>().expect("vec");
        assert!((got[0][0] - 2.75).abs() < 1e-6, "{got:?}");
        assert!((got[0][1] - 0.5).abs() < 1e-6, "{got:?}");
    }
}

/// A deterministic pseudo-random stream for weights (no dependency on the crate under test).
fn lcg(seed: &mut u64) -> f32 {
    *seed = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

fn erf(x: f64) -> f64 {
    // Maclaurin series; |x| stays small in this test, 60 terms are far past f64 precision.
    let mut sum = 0.0;
    let mut term = x;
    for n in 0..60 {
        sum += term / (2 * n + 1) as f64;
        term *= -x * x / (n + 1) as f64;
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

fn matvec(w: &[f32], rows: usize, cols: usize, x: &[f64]) -> Vec<f64> {
    (0..rows)
        .map(|i| (0..cols).map(|j| w[i * cols + j] as f64 * x[j]).sum())
        .collect()
}

fn ffn(v: &HashMap<String, Vec<f32>>, name: &str, h: &[f64], inner: usize) -> Vec<f64> {
    let n = h.len();
    let norm = &v[&format!("{name}.norm.weight")];
    let rms = (h.iter().map(|x| x * x).sum::<f64>() / n as f64 + 1e-6).sqrt();
    let normed: Vec<f64> = (0..n).map(|i| h[i] / rms * norm[i] as f64).collect();
    let a = matvec(&v[&format!("{name}.w1.weight")], inner, n, &normed);
    let g: Vec<f64> = a
        .iter()
        .map(|x| 0.5 * x * (1.0 + erf(x / 2f64.sqrt())))
        .collect();
    let b = matvec(&v[&format!("{name}.w2.weight")], n, inner, &g);
    (0..n).map(|i| h[i] + b[i]).collect()
}

fn reference(
    d: &ProjectorDims,
    v: &HashMap<String, Vec<f32>>,
    p: &str,
    s: &[f64],
    r: &[f64],
) -> Vec<f64> {
    let x: Vec<f64> = s.iter().chain(r).copied().collect();
    let mut h0 = matvec(&v[&format!("{p}_in.weight")], d.hidden, x.len(), &x);
    for (i, b) in v[&format!("{p}_in.bias")].iter().enumerate() {
        h0[i] += *b as f64;
    }
    let h1 = ffn(v, &format!("{p}_mlp1.blocks.0"), &h0, d.intermediate);
    let mut hp = h1.clone();
    for j in 0..d.proj_blocks {
        hp = ffn(v, &format!("{p}_proj_mlp2.blocks.{j}"), &hp, d.intermediate);
    }
    let mut proj = matvec(&v[&format!("{p}_proj_out.weight")], r.len(), d.hidden, &hp);
    for (i, b) in v[&format!("{p}_proj_out.bias")].iter().enumerate() {
        proj[i] += *b as f64;
    }
    let hs = ffn(v, &format!("{p}_scalar_mlp2.blocks.0"), &h1, d.hidden);
    let mut logit = matvec(
        &v[&format!("{p}_scalar_head.weight")],
        d.receiver_heads,
        d.hidden,
        &hs,
    );
    for (i, b) in v[&format!("{p}_scalar_head.bias")].iter().enumerate() {
        logit[i] += *b as f64;
    }
    (0..r.len())
        .map(|i| {
            let head = i / d.receiver_head_dim;
            let w = 1.0 / (1.0 + (-logit[head]).exp());
            r[i] + w * proj[i]
        })
        .collect()
}

fn random_projector(
    d: ProjectorDims,
    seed: u64,
    gate: f32,
) -> (Projector, HashMap<String, Vec<f32>>) {
    let mut state = seed;
    let mut v = HashMap::new();
    for (name, shape) in tensor_shapes(&d) {
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if name.ends_with("gate_logit") {
            vec![gate]
        } else if name.ends_with("norm.weight") {
            (0..n).map(|_| 1.0 + lcg(&mut state)).collect()
        } else {
            (0..n).map(|_| 1.5 * lcg(&mut state)).collect()
        };
        v.insert(name, data);
    }
    (build(d, &v), v)
}

fn dims_general() -> ProjectorDims {
    ProjectorDims {
        sharer_heads: 2,
        sharer_head_dim: 2,
        receiver_heads: 2,
        receiver_head_dim: 3,
        hidden: 4,
        intermediate: 3,
        proj_blocks: 2,
    }
}

fn random_cache(b: usize, h: usize, t: usize, d: usize, seed: u64) -> Tensor {
    let mut state = seed;
    let data: Vec<f32> = (0..b * h * t * d).map(|_| 2.0 * lcg(&mut state)).collect();
    Tensor::from_vec(data, (b, h, t, d), &Device::Cpu).expect("cache")
}

#[test]
fn cache_forward_matches_f64_reference() {
    let d = dims_general();
    let (proj, v) = random_projector(d, 7, 0.5);
    let (b, t) = (2, 3);
    let sharer = KvLayer::new(random_cache(b, 2, t, 2, 1), random_cache(b, 2, t, 2, 2)).expect("s");
    let recv = KvLayer::new(random_cache(b, 2, t, 3, 3), random_cache(b, 2, t, 3, 4)).expect("r");
    let fused = proj
        .forward_cache(&sharer, &recv, &GateMode::Hard)
        .expect("fuse");
    for (p, s_t, r_t, out) in [
        ("key", &sharer.k, &recv.k, &fused.k),
        ("value", &sharer.v, &recv.v, &fused.v),
    ] {
        let s_all = s_t
            .flatten_all()
            .and_then(|x| x.to_vec1::<f32>())
            .expect("s");
        let r_all = r_t
            .flatten_all()
            .and_then(|x| x.to_vec1::<f32>())
            .expect("r");
        let o_all = out
            .flatten_all()
            .and_then(|x| x.to_vec1::<f32>())
            .expect("o");
        for bi in 0..b {
            for ti in 0..t {
                // Heads concatenated per token: index [b, h, t, d] of a [B, H, T, D] cache.
                let row = |all: &[f32], h: usize, dd: usize| -> Vec<f64> {
                    (0..h)
                        .flat_map(|hi| (0..dd).map(move |di| (hi, di)))
                        .map(|(hi, di)| all[((bi * h + hi) * t + ti) * dd + di] as f64)
                        .collect()
                };
                let expect = reference(&d, &v, p, &row(&s_all, 2, 2), &row(&r_all, 2, 3));
                let got = row(&o_all, 2, 3);
                for (e, g) in expect.iter().zip(&got) {
                    assert!((e - g).abs() < 1e-4, "{p} b{bi} t{ti}: {e} vs {g}");
                }
            }
        }
    }
}

#[test]
fn closed_gate_returns_receiver_exactly() {
    let d = dims_general();
    for gate in [0.0, -3.0] {
        let (proj, _) = random_projector(d, 11, gate);
        let sharer =
            KvLayer::new(random_cache(1, 2, 4, 2, 5), random_cache(1, 2, 4, 2, 6)).expect("s");
        let recv =
            KvLayer::new(random_cache(1, 2, 4, 3, 7), random_cache(1, 2, 4, 3, 8)).expect("r");
        let fused = proj
            .forward_cache(&sharer, &recv, &GateMode::Hard)
            .expect("fuse");
        for (a, b) in [(&fused.k, &recv.k), (&fused.v, &recv.v)] {
            let a = a.flatten_all().and_then(|x| x.to_vec1::<f32>()).expect("a");
            let b = b.flatten_all().and_then(|x| x.to_vec1::<f32>()).expect("b");
            assert_eq!(a, b);
        }
    }
    // An open gate does change the cache.
    let (proj, _) = random_projector(d, 11, 0.1);
    let sharer = KvLayer::new(random_cache(1, 2, 4, 2, 5), random_cache(1, 2, 4, 2, 6)).expect("s");
    let recv = KvLayer::new(random_cache(1, 2, 4, 3, 7), random_cache(1, 2, 4, 3, 8)).expect("r");
    let fused = proj
        .forward_cache(&sharer, &recv, &GateMode::Hard)
        .expect("fuse");
    let diff = (fused.k - &recv.k)
        .and_then(|x| x.abs())
        .and_then(|x| x.sum_all())
        .expect("diff");
    assert!(diff.to_scalar::<f32>().expect("scalar") > 1e-3);
}

#[test]
fn sparse_fusion_touches_only_sent_positions() {
    let d = dims_general();
    let (proj, _) = random_projector(d, 13, 1.0);
    let t = 6;
    let recv = KvLayer::new(random_cache(1, 2, t, 3, 21), random_cache(1, 2, t, 3, 22)).expect("r");
    let dense_sharer =
        KvLayer::new(random_cache(1, 2, t, 2, 23), random_cache(1, 2, t, 2, 24)).expect("s");
    let dense = proj
        .forward_cache(&dense_sharer, &recv, &GateMode::Hard)
        .expect("dense");
    for positions in [vec![1usize, 3, 4], vec![0, 1, 2], vec![4]] {
        let rows = SharerLayer {
            kv: dense_sharer.gather_tokens(&positions).expect("gather"),
            positions: positions.clone(),
        };
        let map = LayerMap::last_aligned(1, 1);
        let out = fuse(
            std::slice::from_ref(&proj),
            &map,
            &[Some(rows)],
            std::slice::from_ref(&recv),
            &GateMode::Hard,
        )
        .expect("fuse");
        for (got, own, full) in [
            (&out[0].k, &recv.k, &dense.k),
            (&out[0].v, &recv.v, &dense.v),
        ] {
            let got = got
                .flatten_all()
                .and_then(|x| x.to_vec1::<f32>())
                .expect("g");
            let own = own
                .flatten_all()
                .and_then(|x| x.to_vec1::<f32>())
                .expect("o");
            let full = full
                .flatten_all()
                .and_then(|x| x.to_vec1::<f32>())
                .expect("f");
            for i in 0..got.len() {
                let tok = (i / 3) % t;
                if positions.contains(&tok) {
                    assert!((got[i] - full[i]).abs() < 1e-5, "pos {tok}");
                } else {
                    assert_eq!(
                        got[i].to_bits(),
                        own[i].to_bits(),
                        "pos {tok} must be untouched"
                    );
                }
            }
        }
    }
    // Positions must be increasing and inside the receiver cache.
    let bad = SharerLayer {
        kv: dense_sharer.gather_tokens(&[3, 1]).expect("gather"),
        positions: vec![3, 1],
    };
    let map = LayerMap::last_aligned(1, 1);
    assert!(fuse(&[proj], &map, &[Some(bad)], &[recv], &GateMode::Hard).is_err());
}
