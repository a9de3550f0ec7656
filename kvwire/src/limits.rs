//! Hard bounds checked before any allocation driven by untrusted bytes or caller shapes.
//!
//! A decoder never allocates more than these allow, whatever a header claims.

/// Largest batch, head or head-dimension extent of one tensor (v2 stores them as u16).
pub const MAX_DIM: usize = 65_535;
/// Largest token count T of one layer blob or frame.
pub const MAX_TOKENS: usize = 1 << 24;
/// Largest element count of one K or V tensor (B*H*T*D): 2^30 elements (4 GiB of f32).
pub const MAX_TENSOR_ELEMENTS: usize = 1 << 30;
/// Largest v1 JSON header, in bytes (the reference writes about 330).
pub const MAX_JSON_LEN: usize = 64 * 1024;
/// Largest v2 record (session header or frame), in bytes.
pub const MAX_RECORD_BYTES: usize = 1 << 31;
/// Largest model id in a v2 session header, in bytes of UTF-8.
pub const MAX_MODEL_ID_LEN: usize = 128;
/// Largest factor by which an entropy-coded payload may expand when decoded (plus a constant
/// slack of [`ENTROPY_EXPANSION_SLACK`] bytes); bounds the allocation a tiny frame can demand.
pub const MAX_ENTROPY_EXPANSION: usize = 256;
/// Constant slack added to the entropy expansion bound, in bytes.
pub const ENTROPY_EXPANSION_SLACK: usize = 1 << 16;

/// The most raw payload bytes (K and V together) an entropy-coded payload of `coded_len` bytes
/// may decode to: [`MAX_ENTROPY_EXPANSION`] x `coded_len` + [`ENTROPY_EXPANSION_SLACK`]. The
/// decoder refuses more, the encoder never keeps a coded payload beyond it, and
/// [`crate::v2::FrameHeader::peek`] checks it.
pub fn max_entropy_decoded_len(coded_len: usize) -> usize {
    coded_len
        .saturating_mul(MAX_ENTROPY_EXPANSION)
        .saturating_add(ENTROPY_EXPANSION_SLACK)
}
/// Largest buffer a [`crate::v2::StreamDecoder`] holds for one incomplete record.
pub const MAX_STREAM_BUFFER: usize = MAX_RECORD_BYTES;
