//! Optional entropy coding of v2 payloads: static order-0 rANS (32-bit state, byte-wise
//! renormalization, 12-bit frequencies) per tensor.
//!
//! Symbols: int8 bytes (one 256-symbol model), int4 nibbles low then high (one 16-symbol
//! model), fp16 low and high bytes (two 256-symbol models, by byte parity). A coded tensor is
//! its frequency tables (one LEB128 varint per symbol) followed by the rANS bytes; an empty
//! tensor codes to nothing. The payload is `u32 k_coded_len | coded K | coded V`.

use super::Payload;
use crate::error::DecodeError;
use crate::limits::max_entropy_decoded_len;

const SCALE_BITS: u32 = 12;
const M: u32 = 1 << SCALE_BITS;
const L: u32 = 1 << 23;

/// Frequencies summing to `M` and their cumulative starts.
struct Model {
    freq: Vec<u32>,
    start: Vec<u32>,
}

impl Model {
    fn from_freq(freq: Vec<u32>) -> Self {
        let mut start = Vec::with_capacity(freq.len());
        let mut acc = 0;
        for &f in &freq {
            start.push(acc);
            acc += f;
        }
        Model { freq, start }
    }

    /// Normalizes counts to sum exactly `M`, every present symbol at least 1.
    fn from_counts(counts: &[u64]) -> Self {
        let total: u64 = counts.iter().sum();
        let mut freq: Vec<u32> = counts
            .iter()
            .map(|&c| {
                if c == 0 {
                    0
                } else {
                    ((c * u64::from(M)) / total.max(1)).max(1) as u32
                }
            })
            .collect();
        if total == 0 {
            // A model with no symbols (fp16 high bytes of a 1-byte tensor) still needs a table.
            freq[0] = M;
        }
        let mut sum: u32 = freq.iter().sum();
        while sum != M {
            // Adjust the largest entry one step at a time: at most alphabet-size steps.
            let (i, _) = freq
                .iter()
                .enumerate()
                .max_by_key(|&(_, &f)| f)
                .unwrap_or((0, &0));
            if sum > M {
                let step = (sum - M).min(freq[i] - 1);
                freq[i] -= step;
                sum -= step;
                if step == 0 {
                    break;
                }
            } else {
                freq[i] += M - sum;
                sum = M;
            }
        }
        Model::from_freq(freq)
    }

    fn write(&self, out: &mut Vec<u8>) {
        for &f in &self.freq {
            let mut v = f;
            while v >= 0x80 {
                out.push((v as u8) | 0x80);
                v >>= 7;
            }
            out.push(v as u8);
        }
    }

    fn read(src: &[u8], pos: &mut usize, symbols: usize) -> Option<(Self, Vec<u8>)> {
        let mut freq = Vec::with_capacity(symbols);
        for _ in 0..symbols {
            let mut v = 0u32;
            let mut shift = 0;
            loop {
                let b = *src.get(*pos)?;
                *pos += 1;
                v |= u32::from(b & 0x7F) << shift;
                if b & 0x80 == 0 {
                    break;
                }
                shift += 7;
                if shift > 14 {
                    return None;
                }
            }
            freq.push(v);
        }
        if freq.iter().map(|&f| u64::from(f)).sum::<u64>() != u64::from(M) {
            return None;
        }
        let mut slots = vec![0u8; M as usize];
        let mut at = 0usize;
        for (s, &f) in freq.iter().enumerate() {
            slots[at..at + f as usize].fill(s as u8);
            at += f as usize;
        }
        Some((Model::from_freq(freq), slots))
    }
}

/// The symbol sequence of a tensor: (model index, symbol) for each position.
fn for_each_symbol(data: &[u8], payload: Payload, mut f: impl FnMut(usize, u8)) {
    match payload {
        Payload::Int8 => data.iter().for_each(|&b| f(0, b)),
        Payload::Int4 => data.iter().for_each(|&b| {
            f(0, b & 0x0F);
            f(0, b >> 4);
        }),
        Payload::Fp16 => data.iter().enumerate().for_each(|(i, &b)| f(i % 2, b)),
    }
}

fn shape_of(payload: Payload) -> (usize, usize) {
    match payload {
        Payload::Int8 => (1, 256),
        Payload::Int4 => (1, 16),
        Payload::Fp16 => (2, 256),
    }
}

fn encode_tensor(data: &[u8], payload: Payload, out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    let (models, symbols) = shape_of(payload);
    let mut counts = vec![vec![0u64; symbols]; models];
    for_each_symbol(data, payload, |m, s| counts[m][usize::from(s)] += 1);
    let models: Vec<Model> = counts.iter().map(|c| Model::from_counts(c)).collect();
    for m in &models {
        m.write(out);
    }
    let mut bytes = Vec::with_capacity(data.len());
    let mut x = L;
    let mut put = |m: usize, s: u8| {
        let model = &models[m];
        let (freq, start) = (model.freq[usize::from(s)], model.start[usize::from(s)]);
        let x_max = ((L >> SCALE_BITS) << 8) * freq;
        while x >= x_max {
            bytes.push(x as u8);
            x >>= 8;
        }
        x = ((x / freq) << SCALE_BITS) + (x % freq) + start;
    };
    // rANS codes in reverse: walk the symbols of `for_each_symbol` backwards.
    match payload {
        Payload::Int8 => data.iter().rev().for_each(|&b| put(0, b)),
        Payload::Int4 => data.iter().rev().for_each(|&b| {
            put(0, b >> 4);
            put(0, b & 0x0F);
        }),
        Payload::Fp16 => data
            .iter()
            .enumerate()
            .rev()
            .for_each(|(i, &b)| put(i % 2, b)),
    }
    bytes.extend_from_slice(&x.to_le_bytes());
    bytes.reverse();
    out.extend_from_slice(&bytes);
}

fn decode_tensor(src: &[u8], out: &mut [u8], payload: Payload) -> Result<(), &'static str> {
    if out.is_empty() {
        return if src.is_empty() {
            Ok(())
        } else {
            Err("bytes after an empty tensor")
        };
    }
    let (n_models, symbols) = shape_of(payload);
    let mut pos = 0usize;
    let mut models = Vec::with_capacity(n_models);
    for _ in 0..n_models {
        models.push(Model::read(src, &mut pos, symbols).ok_or("bad frequency table")?);
    }
    let head = src.get(pos..pos + 4).ok_or("missing rANS state")?;
    let mut x = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    pos += 4;
    let mut overrun = false;
    let mut next = |x: &mut u32| {
        while *x < L {
            let b = match src.get(pos) {
                Some(&b) => b,
                None => {
                    overrun = true;
                    0
                }
            };
            pos += 1;
            *x = (*x << 8) | u32::from(b);
        }
    };
    let symbol = |m: usize, x: &mut u32| -> u8 {
        let (model, slots) = &models[m];
        let slot = *x & (M - 1);
        let s = slots[slot as usize];
        *x = model.freq[usize::from(s)] * (*x >> SCALE_BITS) + slot - model.start[usize::from(s)];
        s
    };
    match payload {
        Payload::Int8 => {
            for o in out.iter_mut() {
                *o = symbol(0, &mut x);
                next(&mut x);
            }
        }
        Payload::Int4 => {
            for o in out.iter_mut() {
                let lo = symbol(0, &mut x);
                next(&mut x);
                let hi = symbol(0, &mut x);
                next(&mut x);
                *o = lo | (hi << 4);
            }
        }
        Payload::Fp16 => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = symbol(i % 2, &mut x);
                next(&mut x);
            }
        }
    }
    if overrun {
        return Err("coded stream ended early");
    }
    if x != L || pos != src.len() {
        return Err("coded stream does not end where the data does");
    }
    Ok(())
}

/// Codes K and V payloads (`raw` is K then V, `tensor_bytes` each).
pub(crate) fn encode_payload(raw: &[u8], tensor_bytes: usize, payload: Payload) -> Vec<u8> {
    let (k, v) = raw.split_at(tensor_bytes);
    let mut out = vec![0u8; 4];
    encode_tensor(k, payload, &mut out);
    let k_len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&k_len.to_le_bytes());
    encode_tensor(v, payload, &mut out);
    out
}

/// Decodes a coded payload found at absolute offset `offset` into K then V raw bytes.
pub(crate) fn decode_payload(
    src: &[u8],
    tensor_bytes: usize,
    payload: Payload,
    offset: usize,
) -> Result<Vec<u8>, DecodeError> {
    let err = |message| DecodeError::Entropy { offset, message };
    let limit = max_entropy_decoded_len(src.len());
    if tensor_bytes.saturating_mul(2) > limit {
        return Err(DecodeError::TooLarge {
            field: "entropy-decoded payload",
            offset,
            value: 2 * tensor_bytes as u64,
            max: limit as u64,
        });
    }
    let (len_bytes, rest) = src
        .split_first_chunk::<4>()
        .ok_or(err("missing K length"))?;
    let k_len = u32::from_le_bytes(*len_bytes) as usize;
    if k_len > rest.len() {
        return Err(err("K length beyond payload"));
    }
    let (ck, cv) = rest.split_at(k_len);
    let mut out = vec![0u8; 2 * tensor_bytes];
    let (k, v) = out.split_at_mut(tensor_bytes);
    decode_tensor(ck, k, payload).map_err(err)?;
    decode_tensor(cv, v, payload).map_err(err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(data: &[u8], payload: Payload) -> usize {
        let coded = encode_payload(data, data.len() / 2, payload);
        assert_eq!(
            decode_payload(&coded, data.len() / 2, payload, 0).unwrap(),
            data
        );
        coded.len()
    }

    #[test]
    fn skewed_bytes_compress_and_round_trip() {
        // Mostly small magnitudes, like quantized activations.
        let data: Vec<u8> = (0..20_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 29) as u8)
            .collect();
        let len = round_trip(&data, Payload::Int8);
        assert!(len < data.len() / 2, "{len} of {}", data.len());
        round_trip(&data, Payload::Int4);
        round_trip(&data, Payload::Fp16);
    }

    #[test]
    fn constant_and_tiny_inputs_round_trip() {
        for data in [vec![0u8; 2], vec![7u8; 1000], vec![1, 2], Vec::new()] {
            for p in [Payload::Int8, Payload::Int4, Payload::Fp16] {
                round_trip(&data, p);
            }
        }
    }

    #[test]
    fn corrupted_streams_are_errors_not_panics() {
        let data: Vec<u8> = (0..4000u32).map(|i| (i % 37) as u8).collect();
        let coded = encode_payload(&data, 2000, Payload::Int8);
        for i in 0..coded.len() {
            let mut bad = coded.clone();
            bad[i] ^= 0x5A;
            let _ = decode_payload(&bad, 2000, Payload::Int8, 0);
            let _ = decode_payload(&coded[..i], 2000, Payload::Int8, 0);
        }
    }
}
