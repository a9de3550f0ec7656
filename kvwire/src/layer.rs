//! The input view of one layer's K and V cache, and its validation.
//!
//! Tensors are `[B, H, T, D]` in C order. `indices` holds the absolute token position of each
//! of the T rows; the encoders sort them ascending and permute the rows with them.

use half::f16;

use crate::error::EncodeError;
use crate::limits::{MAX_DIM, MAX_TENSOR_ELEMENTS, MAX_TOKENS};

/// K or V values of one layer, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub enum KvData<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// IEEE half floats.
    F16(&'a [f16]),
}

impl KvData<'_> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            KvData::F32(s) => s.len(),
            KvData::F16(s) => s.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Size of the values in bytes as held in memory.
    pub fn byte_len(&self) -> usize {
        match self {
            KvData::F32(s) => s.len() * 4,
            KvData::F16(s) => s.len() * 2,
        }
    }
}

/// One layer's K and V with the token positions of their T rows.
#[derive(Debug, Clone, Copy)]
pub struct LayerKv<'a> {
    /// Keys, `[B, H, T, D]`.
    pub k: KvData<'a>,
    /// Values, `[B, H, T, D]`.
    pub v: KvData<'a>,
    /// `[B, H, T, D]`.
    pub shape: [usize; 4],
    /// Absolute position of each of the T rows; empty means positions `0..T`.
    pub indices: &'a [u32],
}

impl LayerKv<'_> {
    /// Checks dimensions against the limits and slice lengths against the shape.
    pub fn validate(&self) -> Result<(), EncodeError> {
        let n = check_shape(self.shape, self.indices.len())?;
        for (field, data) in [("k", self.k), ("v", self.v)] {
            if data.len() != n {
                return Err(EncodeError::ShapeMismatch {
                    field,
                    expected: n,
                    found: data.len(),
                });
            }
        }
        Ok(())
    }

    /// The positions sorted ascending and, for each output row, the source row (stable sort).
    pub fn sorted_positions(&self) -> (Vec<u32>, Vec<usize>) {
        sort_positions(self.indices, self.shape[2])
    }
}

/// Checks a `[B, H, T, D]` shape against the limits and an index count against T (0 means
/// positions `0..T`); returns B*H*T*D.
pub fn check_shape(shape: [usize; 4], indices: usize) -> Result<usize, EncodeError> {
    let [b, h, t, d] = shape;
    for (field, value) in [("batch", b), ("heads", h), ("head_dim", d)] {
        if value > MAX_DIM {
            return Err(EncodeError::TooLarge {
                field,
                value: value as u64,
                max: MAX_DIM as u64,
            });
        }
    }
    if t > MAX_TOKENS {
        return Err(EncodeError::TooLarge {
            field: "tokens",
            value: t as u64,
            max: MAX_TOKENS as u64,
        });
    }
    let n = checked_elements(shape).ok_or(EncodeError::TooLarge {
        field: "elements",
        value: u64::MAX,
        max: MAX_TENSOR_ELEMENTS as u64,
    })?;
    if indices != 0 && indices != t {
        return Err(EncodeError::ShapeMismatch {
            field: "indices",
            expected: t,
            found: indices,
        });
    }
    Ok(n)
}

/// `indices` (T positions, or empty for `0..t`) sorted ascending and, for each output row, the
/// source row (a stable sort): the row order every encoder writes.
pub fn sort_positions(indices: &[u32], t: usize) -> (Vec<u32>, Vec<usize>) {
    if indices.is_empty() {
        return ((0..t as u32).collect(), (0..t).collect());
    }
    let mut order: Vec<usize> = (0..indices.len()).collect();
    if !indices.is_sorted() {
        order.sort_by_key(|&i| indices[i]);
    }
    let sorted = order.iter().map(|&i| indices[i]).collect();
    (sorted, order)
}

/// B*H*T*D when it is within [`MAX_TENSOR_ELEMENTS`].
pub fn checked_elements(shape: [usize; 4]) -> Option<usize> {
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    (n <= MAX_TENSOR_ELEMENTS).then_some(n)
}
