//! The bytes `loadtest goodput` moves: one Share's KVWire v2 stream for a model's shapes (a
//! session header, then one frame per layer with K and V of every shared position), encoded
//! by kvwire from seeded values uniform in [-4, 4), so sizes, headers, scales and checksums are
//! exactly what the sharer sends for a prompt of that length.

use kvwire::v2::{FrameKind, FrameOptions, Payload, SessionHeader, encode_frame};
use kvwire::{EncodeError, KvData, LayerKv};
use prost::bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The model shapes and prompt length of the frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FrameShape {
    /// Sharer layers (one frame each).
    pub layers: usize,
    /// KV heads.
    pub heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Shared positions (prompt tokens less the last).
    pub tokens: usize,
}

impl FrameShape {
    /// SmolLM2-135M's KV shapes (30 layers, 3 KV heads of 64) at `tokens` positions.
    pub fn smollm2_135m(tokens: usize) -> Self {
        Self {
            layers: 30,
            heads: 3,
            head_dim: 64,
            tokens,
        }
    }
}

/// One Share's frames, in stream order.
#[derive(Debug, Clone)]
pub struct FrameSet {
    /// Session header first, then one frame per layer.
    pub frames: Vec<Bytes>,
}

impl FrameSet {
    /// Encodes the frames of `shape` at `payload` (int8 and int4 with kvwire's default
    /// per-block fp16 scales).
    pub fn encode(shape: FrameShape, payload: Payload) -> Result<Self, EncodeError> {
        let header = SessionHeader {
            session_id: [7; 16],
            sharer_model: "gguf:smollm2-135m".into(),
            receiver_model: String::new(),
            layers: shape.layers as u16,
            kv_heads: shape.heads as u16,
            head_dim: shape.head_dim as u16,
            tokens: shape.tokens as u32 + 1,
            round: 1,
            frames: shape.layers as u32,
        };
        let mut frames = vec![Bytes::from(header.encode()?)];
        let n = shape.heads * shape.tokens * shape.head_dim;
        let mut rng = StdRng::seed_from_u64(0x6b76_7769_7265);
        let mut values = |n| -> Vec<f32> { (0..n).map(|_| rng.random_range(-4.0..4.0)).collect() };
        for layer in 0..shape.layers {
            let k = values(n);
            let v = values(n);
            let kv = LayerKv {
                k: KvData::F32(&k),
                v: KvData::F32(&v),
                shape: [1, shape.heads, shape.tokens, shape.head_dim],
                indices: &[],
            };
            let opts = FrameOptions {
                payload,
                layer: layer as u16,
                round: 1,
                kind: FrameKind::Base,
                ..FrameOptions::default()
            };
            frames.push(Bytes::from(encode_frame(&kv, &opts)?));
        }
        Ok(Self { frames })
    }

    /// Bytes of all frames.
    pub fn bytes(&self) -> u64 {
        self.frames.iter().map(|f| f.len() as u64).sum()
    }

    /// Length of each frame, header first.
    pub fn sizes(&self) -> Vec<usize> {
        self.frames.iter().map(Bytes::len).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_sizes_of_their_payload() {
        let shape = FrameShape::smollm2_135m(16);
        let fp16 = FrameSet::encode(shape, Payload::Fp16).unwrap();
        let int8 = FrameSet::encode(shape, Payload::Int8).unwrap();
        assert_eq!(fp16.frames.len(), 31);
        // K and V, 3 x 16 x 64 values each, two bytes a value, plus the frame's own header.
        let values = 2 * 3 * 16 * 64;
        assert!(fp16.sizes()[1] >= 2 * values && fp16.sizes()[1] < 2 * values + 512);
        assert!(int8.sizes()[1] >= values && int8.sizes()[1] < fp16.sizes()[1]);
        assert_eq!(fp16.bytes(), fp16.sizes().iter().sum::<usize>() as u64);
    }
}
