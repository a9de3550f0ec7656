//! Deterministic test inputs shared by the integration tests.
#![allow(dead_code)]

use kvwire::v2::{FrameKind, FrameOptions, Payload, SessionHeader};
use kvwire::{Granularity, KvData, LayerKv, ScaleDtype};

/// Seeded xorshift values in [-3, 3).
pub fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5) * 6.0
        })
        .collect()
}

/// A small fixed layer: shape [1, 2, 5, 6], shuffled positions.
pub struct Fixture {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub indices: Vec<u32>,
    pub shape: [usize; 4],
}

impl Fixture {
    pub fn new() -> Self {
        let shape = [1, 2, 5, 6];
        let n = shape.iter().product();
        Self {
            k: values(n, 11),
            v: values(n, 12),
            indices: vec![40, 3, 17, 9, 250],
            shape,
        }
    }

    pub fn layer(&self) -> LayerKv<'_> {
        LayerKv {
            k: KvData::F32(&self.k),
            v: KvData::F32(&self.v),
            shape: self.shape,
            indices: &self.indices,
        }
    }
}

/// The session header of the golden stream.
pub fn golden_session() -> SessionHeader {
    SessionHeader {
        session_id: *b"kvwire-golden-01",
        sharer_model: "qwen2.5-coder-0.5b".into(),
        receiver_model: "smollm2-135m".into(),
        layers: 4,
        kv_heads: 2,
        head_dim: 6,
        tokens: 5,
        round: 1,
        frames: 4,
    }
}

/// The frame options of the golden stream: every payload and kind, both scale dtypes.
pub fn golden_frame_options() -> Vec<FrameOptions> {
    let base = FrameOptions::default();
    vec![
        FrameOptions {
            payload: Payload::Fp16,
            layer: 0,
            ..base
        },
        FrameOptions {
            payload: Payload::Int8,
            layer: 1,
            ..base
        },
        FrameOptions {
            payload: Payload::Int4,
            layer: 2,
            granularity: Granularity::PerHead,
            scale_dtype: ScaleDtype::Bf16,
            ..base
        },
        FrameOptions {
            payload: Payload::Int8,
            layer: 2,
            round: 2,
            kind: FrameKind::Residual,
            granularity: Granularity::PerTensor,
            ..base
        },
    ]
}

/// A v2 stream whose session header announces `frames_announced` frames, followed by `frames`
/// frames (one per layer); also the byte offset where each record ends.
pub fn announced_stream(frames_announced: u32, frames: usize) -> (Vec<u8>, Vec<usize>) {
    let fx = Fixture::new();
    let session = SessionHeader {
        layers: frames as u16,
        kv_heads: fx.shape[1] as u16,
        head_dim: fx.shape[3] as u16,
        tokens: 300,
        round: 1,
        frames: frames_announced,
        ..SessionHeader::default()
    };
    let mut bytes = session.encode().unwrap();
    let mut boundaries = vec![bytes.len()];
    for layer in 0..frames {
        let opts = FrameOptions {
            layer: layer as u16,
            ..FrameOptions::default()
        };
        kvwire::v2::encode_frame_into(&fx.layer(), &opts, &mut bytes).unwrap();
        boundaries.push(bytes.len());
    }
    (bytes, boundaries)
}
