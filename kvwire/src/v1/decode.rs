//! v1 decoder: validates every length against the JSON header and the input before copying.

use super::{IndexWidth, MAGIC, V1Header, json};
use crate::breakdown::Breakdown;
use crate::error::DecodeError;
use crate::limits::MAX_JSON_LEN;
use half::f16;

use crate::quant::{
    dequantize_tensor, dequantize_tensor_le, dequantize_tensor_le_f16, scale_from_bits,
};
use crate::reader::{Reader, le_u16s, le_u32s};

/// A decoded v1 blob: header, positions, quantized payloads and scale bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Blob {
    /// The JSON header.
    pub header: V1Header,
    /// Token positions as stored (sorted ascending by the encoder).
    pub indices: Vec<u32>,
    /// Quantized K (int8 bytes or packed int4).
    pub k_quant: Vec<u8>,
    /// Quantized V.
    pub v_quant: Vec<u8>,
    /// K scale bits (fp16 or bf16).
    pub k_scales: Vec<u16>,
    /// V scale bits.
    pub v_scales: Vec<u16>,
}

impl V1Blob {
    /// Bytes by section.
    pub fn breakdown(&self) -> Breakdown {
        self.header.breakdown()
    }

    /// Scales of K and V as f32.
    pub fn scales_f32(&self) -> (Vec<f32>, Vec<f32>) {
        let d = self.header.scale_dtype;
        (
            self.k_scales
                .iter()
                .map(|&b| scale_from_bits(b, d))
                .collect(),
            self.v_scales
                .iter()
                .map(|&b| scale_from_bits(b, d))
                .collect(),
        )
    }

    /// Dequantized K and V, `[B, H, T, D]` f32 in stored (sorted) row order.
    pub fn dequantize(&self) -> (Vec<f32>, Vec<f32>) {
        let h = &self.header;
        let mut k = vec![0f32; h.k_shape.iter().product()];
        let mut v = vec![0f32; h.v_shape.iter().product()];
        // Lengths were validated by `decode`, so this cannot fail.
        let done = self.dequantize_into(&mut k, &mut v);
        debug_assert!(done.is_ok());
        (k, v)
    }

    /// Dequantizes into caller buffers of `B*H*T*D` elements each.
    pub fn dequantize_into(&self, k: &mut [f32], v: &mut [f32]) -> Result<(), DecodeError> {
        let h = &self.header;
        let (ks, vs) = self.scales_f32();
        dequantize_tensor(h.mode, h.granularity, h.k_shape, &self.k_quant, &ks, k)?;
        dequantize_tensor(h.mode, h.granularity, h.v_shape, &self.v_quant, &vs, v)
    }
}

/// A checked v1 blob that borrows its sections from the input (no copy of the payloads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1BlobRef<'a> {
    /// The JSON header.
    pub header: V1Header,
    /// Positions as stored: uint16 or uint32 little-endian bytes.
    pub indices: &'a [u8],
    /// Quantized K (int8 bytes or packed int4).
    pub k_quant: &'a [u8],
    /// Quantized V.
    pub v_quant: &'a [u8],
    /// All K scales then all V scales, 2 bytes each, little-endian.
    pub scales: &'a [u8],
}

impl V1BlobRef<'_> {
    /// Dequantizes into caller buffers of `B*H*T*D` elements each (see
    /// [`V1Blob::dequantize_into`]).
    pub fn dequantize_into(&self, k: &mut [f32], v: &mut [f32]) -> Result<(), DecodeError> {
        let h = &self.header;
        let (ks, vs) = self.kv_scales();
        let (g, d) = (h.granularity, h.scale_dtype);
        dequantize_tensor_le(h.mode, g, h.k_shape, self.k_quant, (ks, d), k)?;
        dequantize_tensor_le(h.mode, g, h.v_shape, self.v_quant, (vs, d), v)
    }

    /// [`Self::dequantize_into`] rounded to fp16 (nearest, ties to even: `f16::from_f32` of
    /// each f32 value), for a cache held as fp16: half the bytes written.
    pub fn dequantize_into_f16(&self, k: &mut [f16], v: &mut [f16]) -> Result<(), DecodeError> {
        let h = &self.header;
        let (ks, vs) = self.kv_scales();
        let (g, d) = (h.granularity, h.scale_dtype);
        dequantize_tensor_le_f16(h.mode, g, h.k_shape, self.k_quant, (ks, d), k)?;
        dequantize_tensor_le_f16(h.mode, g, h.v_shape, self.v_quant, (vs, d), v)
    }

    /// The stored K scale bytes and V scale bytes.
    fn kv_scales(&self) -> (&[u8], &[u8]) {
        let h = &self.header;
        self.scales
            .split_at(2 * h.granularity.scale_count(h.k_shape))
    }

    /// Copies everything into an owned [`V1Blob`].
    pub fn into_owned(self) -> V1Blob {
        let indices = match self.header.index_width {
            IndexWidth::U16 => le_u16s(self.indices).into_iter().map(u32::from).collect(),
            IndexWidth::U32 => le_u32s(self.indices),
        };
        let scales = le_u16s(self.scales);
        let n_k = self.header.granularity.scale_count(self.header.k_shape);
        let (k_scales, v_scales) = scales.split_at(n_k);
        V1Blob {
            k_scales: k_scales.to_vec(),
            v_scales: v_scales.to_vec(),
            header: self.header,
            indices,
            k_quant: self.k_quant.to_vec(),
            v_quant: self.v_quant.to_vec(),
        }
    }
}

/// Decodes a whole v1 blob (no trailing bytes allowed).
pub fn decode(blob: &[u8]) -> Result<V1Blob, DecodeError> {
    decode_ref(blob).map(V1BlobRef::into_owned)
}

/// Checks a whole v1 blob (no trailing bytes allowed) and borrows its sections.
pub fn decode_ref(blob: &[u8]) -> Result<V1BlobRef<'_>, DecodeError> {
    let mut r = Reader::new(blob, 0);
    let magic = r.array::<8>("magic")?;
    if &magic != MAGIC {
        return Err(DecodeError::BadMagic {
            offset: 0,
            found: magic.to_vec(),
        });
    }
    let json_len = r.u32("json_len")? as usize;
    if json_len > MAX_JSON_LEN {
        return Err(DecodeError::TooLarge {
            field: "json_len",
            offset: 8,
            value: json_len as u64,
            max: MAX_JSON_LEN as u64,
        });
    }
    let json_at = r.offset();
    let header = json::read_header(r.take(json_len, "json header")?, json_at)?;
    let s = header.sections;
    let indices = r.take(s.indices, "indices")?;
    let k_quant = r.take(s.k_quant, "k_quant")?;
    let v_quant = r.take(s.v_quant, "v_quant")?;
    let scales = r.take(s.scales, "scales")?;
    if r.remaining() > 0 {
        return Err(DecodeError::TrailingBytes {
            offset: r.offset(),
            count: r.remaining(),
        });
    }
    Ok(V1BlobRef {
        header,
        indices,
        k_quant,
        v_quant,
        scales,
    })
}
