//! A small NumPy `.npy` reader and writer (format 1.0-3.0, little-endian, C order) for the
//! dtypes a KV cache needs: f32, f16, i8, u8, u16, u32, i32, i64.

use half::f16;
use thiserror::Error;

use crate::limits::MAX_TENSOR_ELEMENTS;

const MAGIC: &[u8; 6] = b"\x93NUMPY";
const MAX_HEADER_LEN: usize = 64 * 1024;

/// Why a `.npy` file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NpyError {
    /// Not a `.npy` file.
    #[error("not a .npy file (bad magic)")]
    BadMagic,
    /// A format version other than 1, 2 or 3.
    #[error("unsupported .npy format version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version.
        major: u8,
        /// Minor version.
        minor: u8,
    },
    /// The header dictionary could not be parsed.
    #[error(".npy header: {0}")]
    Header(String),
    /// The dtype is not one this reader supports.
    #[error("unsupported .npy dtype {0:?} (supported: <f4 <f2 |i1 |u1 <u2 <u4 <i4 <i8)")]
    UnsupportedDtype(String),
    /// Fortran (column-major) order.
    #[error("fortran_order arrays are not supported; save with np.ascontiguousarray")]
    FortranOrder,
    /// The data is shorter or longer than the shape needs.
    #[error(".npy data is {found} bytes, shape needs {expected}")]
    DataLength {
        /// Bytes the shape needs.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The element count exceeds the limit.
    #[error(".npy shape has more than {max} elements")]
    TooLarge {
        /// The bound.
        max: usize,
    },
}

/// Typed element storage of an array.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `<f4`
    F32(Vec<f32>),
    /// `<f2`
    F16(Vec<f16>),
    /// `|i1`
    I8(Vec<i8>),
    /// `|u1`
    U8(Vec<u8>),
    /// `<u2`
    U16(Vec<u16>),
    /// `<u4`
    U32(Vec<u32>),
    /// `<i4`
    I32(Vec<i32>),
    /// `<i8`
    I64(Vec<i64>),
}

impl NpyData {
    /// NumPy dtype descriptor.
    pub fn descr(&self) -> &'static str {
        match self {
            NpyData::F32(_) => "<f4",
            NpyData::F16(_) => "<f2",
            NpyData::I8(_) => "|i1",
            NpyData::U8(_) => "|u1",
            NpyData::U16(_) => "<u2",
            NpyData::U32(_) => "<u4",
            NpyData::I32(_) => "<i4",
            NpyData::I64(_) => "<i8",
        }
    }

    /// Element count.
    pub fn len(&self) -> usize {
        match self {
            NpyData::F32(v) => v.len(),
            NpyData::F16(v) => v.len(),
            NpyData::I8(v) => v.len(),
            NpyData::U8(v) => v.len(),
            NpyData::U16(v) => v.len(),
            NpyData::U32(v) => v.len(),
            NpyData::I32(v) => v.len(),
            NpyData::I64(v) => v.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write_le(&self, out: &mut Vec<u8>) {
        match self {
            NpyData::F32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NpyData::F16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_bits().to_le_bytes())),
            NpyData::I8(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NpyData::U8(v) => out.extend_from_slice(v),
            NpyData::U16(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NpyData::U32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NpyData::I32(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
            NpyData::I64(v) => v
                .iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        }
    }
}

/// An n-dimensional array in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Dimensions (empty for a scalar).
    pub shape: Vec<usize>,
    /// Elements.
    pub data: NpyData,
}

impl NpyArray {
    /// Serializes as a format 1.0 `.npy` file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let shape = match self.shape.as_slice() {
            [one] => format!("({one},)"),
            dims => format!(
                "({})",
                dims.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut header = format!(
            "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
            self.data.descr(),
            shape
        );
        let unpadded = MAGIC.len() + 4 + header.len() + 1;
        header.extend(std::iter::repeat_n(
            ' ',
            unpadded.next_multiple_of(64) - unpadded,
        ));
        header.push('\n');
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + self.data.len() * 8);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        self.data.write_le(&mut out);
        out
    }

    /// Parses a `.npy` file.
    pub fn from_bytes(bytes: &[u8]) -> Result<NpyArray, NpyError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(NpyError::BadMagic)?;
        let (&[major, minor], rest) = rest.split_first_chunk::<2>().ok_or(NpyError::BadMagic)?;
        let (header_len, rest) = match major {
            1 => {
                let (l, r) = rest
                    .split_first_chunk::<2>()
                    .ok_or(NpyError::Header("truncated".into()))?;
                (usize::from(u16::from_le_bytes(*l)), r)
            }
            2 | 3 => {
                let (l, r) = rest
                    .split_first_chunk::<4>()
                    .ok_or(NpyError::Header("truncated".into()))?;
                (u32::from_le_bytes(*l) as usize, r)
            }
            _ => return Err(NpyError::UnsupportedVersion { major, minor }),
        };
        if header_len > MAX_HEADER_LEN || header_len > rest.len() {
            return Err(NpyError::Header(format!(
                "header length {header_len} out of range"
            )));
        }
        let (header, data) = rest.split_at(header_len);
        let header =
            std::str::from_utf8(header).map_err(|_| NpyError::Header("not UTF-8".into()))?;
        let descr = dict_value(header, "descr")?;
        let descr = descr
            .trim()
            .trim_matches(|c| c == '\'' || c == '"')
            .to_string();
        let fortran = dict_value(header, "fortran_order")?;
        match fortran.trim() {
            "False" => {}
            "True" => return Err(NpyError::FortranOrder),
            other => return Err(NpyError::Header(format!("fortran_order {other:?}"))),
        }
        let shape = parse_shape(&dict_value(header, "shape")?)?;
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= MAX_TENSOR_ELEMENTS)
            .ok_or(NpyError::TooLarge {
                max: MAX_TENSOR_ELEMENTS,
            })?;
        let width = match descr.as_str() {
            "<f4" | "<i4" | "<u4" => 4,
            "<f2" | "<u2" => 2,
            "|i1" | "<i1" | "|u1" | "<u1" => 1,
            "<i8" => 8,
            _ => return Err(NpyError::UnsupportedDtype(descr)),
        };
        if data.len() != n * width {
            return Err(NpyError::DataLength {
                expected: n * width,
                found: data.len(),
            });
        }
        let data = match descr.as_str() {
            "<f4" => NpyData::F32(
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            "<i4" => NpyData::I32(
                data.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            "<u4" => NpyData::U32(
                data.chunks_exact(4)
                    .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            "<f2" => NpyData::F16(
                data.chunks_exact(2)
                    .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            ),
            "<u2" => NpyData::U16(
                data.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            "|i1" | "<i1" => NpyData::I8(data.iter().map(|&b| b as i8).collect()),
            "|u1" | "<u1" => NpyData::U8(data.to_vec()),
            _ => NpyData::I64(
                data.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
        };
        Ok(NpyArray { shape, data })
    }
}

/// The text of a key's value in the header dict, up to the next top-level comma or brace.
fn dict_value(header: &str, key: &str) -> Result<String, NpyError> {
    let missing = || NpyError::Header(format!("missing key {key:?}"));
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))
        .ok_or_else(missing)?;
    let after = &header[at + key.len() + 2..];
    let after = after.trim_start().strip_prefix(':').ok_or_else(missing)?;
    let mut depth = 0usize;
    let mut end = after.len();
    for (i, c) in after.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            ',' | '}' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    Ok(after[..end].to_string())
}

fn parse_shape(text: &str) -> Result<Vec<usize>, NpyError> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| NpyError::Header(format!("shape {text:?}")))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| NpyError::Header(format!("shape dim {s:?}")))
        })
        .collect()
}
