//! Optional entropy coding of v2 payloads: an adaptive binary range coder (LZMA-style, 11-bit
//! probabilities) over bit trees. int8 bytes use one 8-bit tree, int4 nibbles one 4-bit tree,
//! fp16 one tree for low and one for high bytes. K and V are coded as separate streams with
//! fresh models: `u32 k_coded_len | coded K | coded V`.

use super::Payload;
use crate::error::DecodeError;
use crate::limits::{ENTROPY_EXPANSION_SLACK, MAX_ENTROPY_EXPANSION};

const PROB_BITS: u32 = 11;
const PROB_INIT: u16 = 1 << (PROB_BITS - 1);
const MOVE_BITS: u32 = 5;
const TOP: u32 = 1 << 24;

struct Encoder {
    low: u64,
    range: u32,
    cache: u8,
    cache_size: u64,
    out: Vec<u8>,
}

impl Encoder {
    fn new(capacity: usize) -> Self {
        Self {
            low: 0,
            range: u32::MAX,
            cache: 0,
            cache_size: 1,
            out: Vec::with_capacity(capacity),
        }
    }

    fn shift_low(&mut self) {
        if (self.low as u32) < 0xFF00_0000 || (self.low >> 32) != 0 {
            let carry = (self.low >> 32) as u8;
            let mut temp = self.cache;
            loop {
                self.out.push(temp.wrapping_add(carry));
                temp = 0xFF;
                self.cache_size -= 1;
                if self.cache_size == 0 {
                    break;
                }
            }
            self.cache = ((self.low >> 24) & 0xFF) as u8;
        }
        self.cache_size += 1;
        self.low = (self.low & 0x00FF_FFFF) << 8;
    }

    fn bit(&mut self, p: &mut u16, bit: u32) {
        let bound = (self.range >> PROB_BITS) * u32::from(*p);
        if bit == 0 {
            self.range = bound;
            *p += ((1 << PROB_BITS) - *p) >> MOVE_BITS;
        } else {
            self.low += u64::from(bound);
            self.range -= bound;
            *p -= *p >> MOVE_BITS;
        }
        while self.range < TOP {
            self.range <<= 8;
            self.shift_low();
        }
    }

    fn symbol(&mut self, probs: &mut [u16; 256], sym: u8, bits: u32) {
        let mut m = 1usize;
        for i in (0..bits).rev() {
            let b = u32::from(sym >> i) & 1;
            self.bit(&mut probs[m], b);
            m = (m << 1) | b as usize;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        for _ in 0..5 {
            self.shift_low();
        }
        self.out
    }
}

struct Decoder<'a> {
    src: &'a [u8],
    pos: usize,
    range: u32,
    code: u32,
    overrun: usize,
}

impl<'a> Decoder<'a> {
    fn new(src: &'a [u8]) -> Self {
        let mut d = Self {
            src,
            pos: 0,
            range: u32::MAX,
            code: 0,
            overrun: 0,
        };
        for _ in 0..5 {
            d.code = (d.code << 8) | u32::from(d.next_byte());
        }
        d
    }

    fn next_byte(&mut self) -> u8 {
        match self.src.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                b
            }
            None => {
                self.overrun += 1;
                0
            }
        }
    }

    fn bit(&mut self, p: &mut u16) -> u32 {
        let bound = (self.range >> PROB_BITS) * u32::from(*p);
        let bit = if self.code < bound {
            self.range = bound;
            *p += ((1 << PROB_BITS) - *p) >> MOVE_BITS;
            0
        } else {
            self.code -= bound;
            self.range -= bound;
            *p -= *p >> MOVE_BITS;
            1
        };
        while self.range < TOP {
            self.range <<= 8;
            self.code = (self.code << 8) | u32::from(self.next_byte());
        }
        bit
    }

    fn symbol(&mut self, probs: &mut [u16; 256], bits: u32) -> u8 {
        let mut m = 1usize;
        for _ in 0..bits {
            m = (m << 1) | self.bit(&mut probs[m]) as usize;
        }
        (m - (1 << bits)) as u8
    }
}

fn encode_tensor(data: &[u8], payload: Payload) -> Vec<u8> {
    let mut enc = Encoder::new(data.len() / 2 + 16);
    let mut a = [PROB_INIT; 256];
    let mut b = [PROB_INIT; 256];
    match payload {
        Payload::Int8 => data.iter().for_each(|&x| enc.symbol(&mut a, x, 8)),
        Payload::Int4 => data.iter().for_each(|&x| {
            enc.symbol(&mut a, x & 0x0F, 4);
            enc.symbol(&mut a, x >> 4, 4);
        }),
        Payload::Fp16 => data.chunks(2).for_each(|c| {
            enc.symbol(&mut a, c[0], 8);
            if let Some(&hi) = c.get(1) {
                enc.symbol(&mut b, hi, 8);
            }
        }),
    }
    enc.finish()
}

fn decode_tensor(src: &[u8], out: &mut [u8], payload: Payload) -> bool {
    let mut dec = Decoder::new(src);
    let mut a = [PROB_INIT; 256];
    let mut b = [PROB_INIT; 256];
    match payload {
        Payload::Int8 => out.iter_mut().for_each(|x| *x = dec.symbol(&mut a, 8)),
        Payload::Int4 => out.iter_mut().for_each(|x| {
            let lo = dec.symbol(&mut a, 4);
            *x = lo | (dec.symbol(&mut a, 4) << 4);
        }),
        Payload::Fp16 => out.chunks_mut(2).for_each(|c| {
            c[0] = dec.symbol(&mut a, 8);
            if let Some(hi) = c.get_mut(1) {
                *hi = dec.symbol(&mut b, 8);
            }
        }),
    }
    dec.overrun == 0
}

/// Codes K and V payloads (`raw` is K then V, `tensor_bytes` each).
pub(crate) fn encode_payload(raw: &[u8], tensor_bytes: usize, payload: Payload) -> Vec<u8> {
    let (k, v) = raw.split_at(tensor_bytes);
    let ck = encode_tensor(k, payload);
    let cv = encode_tensor(v, payload);
    let mut out = Vec::with_capacity(4 + ck.len() + cv.len());
    out.extend_from_slice(&(ck.len() as u32).to_le_bytes());
    out.extend_from_slice(&ck);
    out.extend_from_slice(&cv);
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
    let limit = src
        .len()
        .saturating_mul(MAX_ENTROPY_EXPANSION)
        .saturating_add(ENTROPY_EXPANSION_SLACK);
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
    if !decode_tensor(ck, k, payload) || !decode_tensor(cv, v, payload) {
        return Err(err("coded stream ended early"));
    }
    Ok(out)
}
