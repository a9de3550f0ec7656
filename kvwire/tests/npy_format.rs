//! The `.npy` reader/writer: every supported dtype round-trips, the header is NumPy's layout,
//! and unsupported files get a clear error.

use half::f16;
use kvwire::npy::{NpyArray, NpyData, NpyError};

fn all_dtypes() -> Vec<NpyArray> {
    vec![
        NpyArray {
            shape: vec![2, 3],
            data: NpyData::F32(vec![1.5, -2.0, 0.0, 3.25, -0.5, 8.0]),
        },
        NpyArray {
            shape: vec![3],
            data: NpyData::F16(vec![f16::from_f32(0.5), f16::from_f32(-1.0), f16::MAX]),
        },
        NpyArray {
            shape: vec![1, 2, 2],
            data: NpyData::I8(vec![-128, -1, 0, 127]),
        },
        NpyArray {
            shape: vec![2],
            data: NpyData::U8(vec![0, 255]),
        },
        NpyArray {
            shape: vec![2],
            data: NpyData::U16(vec![7, 65_535]),
        },
        NpyArray {
            shape: vec![2],
            data: NpyData::U32(vec![3, u32::MAX]),
        },
        NpyArray {
            shape: vec![2],
            data: NpyData::I32(vec![-5, i32::MAX]),
        },
        NpyArray {
            shape: vec![2],
            data: NpyData::I64(vec![i64::MIN, 42]),
        },
        NpyArray {
            shape: vec![],
            data: NpyData::F32(vec![9.0]),
        },
        NpyArray {
            shape: vec![0, 4],
            data: NpyData::F32(vec![]),
        },
    ]
}

#[test]
fn every_dtype_round_trips_with_a_64_byte_aligned_header() {
    for a in all_dtypes() {
        let bytes = a.to_bytes();
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0, "{:?}", a.data.descr());
        assert_eq!(bytes[10 + header_len - 1], b'\n');
        assert_eq!(NpyArray::from_bytes(&bytes).unwrap(), a);
    }
}

#[test]
fn reads_a_file_as_numpy_writes_it() {
    // np.save(f, np.array([[1, 2], [3, 4]], dtype='<i4')) with NumPy 1.x/2.x, format 1.0.
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    let mut header = "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for x in [1i32, 2, 3, 4] {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    assert_eq!(
        NpyArray::from_bytes(&bytes).unwrap(),
        NpyArray {
            shape: vec![2, 2],
            data: NpyData::I32(vec![1, 2, 3, 4])
        }
    );
}

fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn unsupported_files_are_refused_clearly() {
    let fortran = with_header(
        "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }\n",
        &[0; 4],
    );
    assert_eq!(NpyArray::from_bytes(&fortran), Err(NpyError::FortranOrder));
    let big_endian = with_header(
        "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }\n",
        &[0; 4],
    );
    assert_eq!(
        NpyArray::from_bytes(&big_endian),
        Err(NpyError::UnsupportedDtype(">f4".into()))
    );
    let short = with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n",
        &[0; 8],
    );
    assert_eq!(
        NpyArray::from_bytes(&short),
        Err(NpyError::DataLength {
            expected: 12,
            found: 8
        })
    );
    assert_eq!(NpyArray::from_bytes(b"PK\x03\x04"), Err(NpyError::BadMagic));
    let huge = with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }\n",
        &[],
    );
    assert!(matches!(
        NpyArray::from_bytes(&huge),
        Err(NpyError::TooLarge { .. })
    ));
}
