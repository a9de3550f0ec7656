//! An int4 residual on an int4 base reaches about int8 accuracy at about int8's bytes
//! (docs/REFINEMENT.md, "Residual upgrades"). Per-block scales, both rounds through the
//! assembler as the receiver runs them.
//!
//! The bound, per row of D values with absolute maximum `a`, scales rounded to fp16 (relative
//! error at most 2^-11, so a value `q * scale` moves by at most `qmax * 2^-11 * scale`): the
//! int4 base has step `s4 = a / 7`, so the residual is at most `s4 * (1/2 + 7 * 2^-11)`; the
//! int4 residual's own per-block scale is its absolute maximum over 7, so base + residual is
//! within `a * (1/2 + 7 * 2^-11)^2 / 49 <= a / 196 * 1.014` of the value. Direct int8 is within
//! `a * (1/254 + 2^-11) <= a / 254 * 1.125`. Base + residual and direct int8 therefore differ by
//! at most the sum, and base + residual's worst case is 1.17 times int8's.

mod common;

use common::values;
use kvwire::v2::{FrameKind, FrameOptions, Payload, SessionHeader, encode_frame};
use kvwire::{CacheAssembler, HostCache, KvData, LayerKv};

const SHAPE: [usize; 4] = [1, 3, 40, 64];
const SLACK4: f32 = 1.014;
const SLACK8: f32 = 1.125;

fn session(round: u8) -> SessionHeader {
    SessionHeader {
        session_id: *b"residual-upgrade",
        sharer_model: "m".into(),
        receiver_model: String::new(),
        layers: 1,
        kv_heads: SHAPE[1] as u16,
        head_dim: SHAPE[3] as u16,
        tokens: SHAPE[2] as u32,
        round,
        frames: 1,
    }
}

fn frame(k: &[f32], v: &[f32], payload: Payload, round: u8, kind: FrameKind) -> Vec<u8> {
    let layer = LayerKv {
        k: KvData::F32(k),
        v: KvData::F32(v),
        shape: SHAPE,
        indices: &[],
    };
    let opts = FrameOptions {
        payload,
        round,
        kind,
        ..FrameOptions::default()
    };
    encode_frame(&layer, &opts).unwrap()
}

/// One round through an assembler (a fresh one, or one refining `held`).
fn assemble(held: Option<HostCache>, round: u8, frame: &[u8]) -> HostCache {
    let mut a = match held {
        None => CacheAssembler::new(),
        Some(h) => CacheAssembler::refining(h),
    }
    .every_position(true);
    a.push_record(&session(round).encode().unwrap()).unwrap();
    a.push_record(frame).unwrap();
    a.finish().unwrap()
}

/// Values with rows of very different ranges (and a few outliers), as KV rows have.
fn rows(seed: u32) -> Vec<f32> {
    let n: usize = SHAPE.iter().product();
    let d = SHAPE[3];
    let mut x = values(n, seed);
    for (i, v) in x.iter_mut().enumerate() {
        let row = i / d;
        *v *= 0.01 * (1 + row % 17) as f32;
        if i % 97 == 0 {
            *v *= 12.0;
        }
    }
    x
}

#[test]
fn an_int4_residual_on_int4_reaches_int8_accuracy_at_int8_bytes() {
    let (k, v) = (rows(1), rows(2));
    let base = frame(&k, &v, Payload::Int4, 1, FrameKind::Base);
    let held = assemble(None, 1, &base);
    let residual = |x: &[f32], h: &[f32]| x.iter().zip(h).map(|(a, b)| a - b).collect::<Vec<_>>();
    let (rk, rv) = (
        residual(&k, &held.layers[0].k),
        residual(&v, &held.layers[0].v),
    );
    let upgrade = frame(&rk, &rv, Payload::Int4, 2, FrameKind::Residual);
    let upgraded = assemble(Some(held), 2, &upgrade);
    let int8 = frame(&k, &v, Payload::Int8, 1, FrameKind::Base);
    let direct = assemble(None, 1, &int8);

    let d = SHAPE[3];
    let (mut err_up, mut err_8) = (0.0_f64, 0.0_f64);
    for (x, up, q8) in [
        (&k, &upgraded.layers[0].k, &direct.layers[0].k),
        (&v, &upgraded.layers[0].v, &direct.layers[0].v),
    ] {
        for row in 0..x.len() / d {
            let r = row * d..(row + 1) * d;
            let a = x[r.clone()].iter().fold(0.0_f32, |m, v| m.max(v.abs()));
            for i in r {
                let (e_up, e_8) = ((up[i] - x[i]).abs(), (q8[i] - x[i]).abs());
                assert!(
                    e_up <= a / 196.0 * SLACK4 + 1e-9,
                    "row {row}: {e_up} > {a}/196"
                );
                assert!(
                    e_8 <= a / 254.0 * SLACK8 + 1e-9,
                    "row {row}: {e_8} > {a}/254"
                );
                let gap = (up[i] - q8[i]).abs();
                assert!(gap <= a * (SLACK4 / 196.0 + SLACK8 / 254.0) + 1e-9);
                err_up += f64::from(e_up).powi(2);
                err_8 += f64::from(e_8).powi(2);
            }
        }
    }
    // Root-mean-square error: about int8's.
    let ratio = (err_up / err_8).sqrt();
    assert!(ratio < 1.3, "rms error ratio {ratio}");
    // Bytes: int4 + int4 residual cost int8's payload plus one more set of scales and one
    // more frame header: 3% over int8 at D = 64.
    let bytes = (base.len() + upgrade.len()) as f64 / int8.len() as f64;
    println!(
        "rms error int4 + int4 residual / int8: {ratio:.3}; bytes {} + {} = {} vs int8 {} ({bytes:.3})",
        base.len(),
        upgrade.len(),
        base.len() + upgrade.len(),
        int8.len()
    );
    assert!(
        bytes > 1.0 && bytes < 1.04,
        "int4 + int4 residual / int8 = {bytes}"
    );
}
