//! v1 at every option: round trips, index width selection, and the section accounting.

mod common;

use common::values;
use half::f16;
use kvwire::quant::{QuantParams, fake_quantize};
use kvwire::v1::{self, IndexDtype, IndexWidth, V1Options};
use kvwire::{EncodeError, Granularity, KvData, LayerKv, QuantMode, ScaleDtype};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]
    #[test]
    fn v1_round_trips_at_every_option(
        b in 1usize..3, h in 1usize..4, t in 0usize..10, d in 1usize..9,
        int4 in any::<bool>(), gran in 0usize..4, bf16 in any::<bool>(), idx in 0usize..3,
        big in any::<bool>(), seed in any::<u32>(),
    ) {
        let shape = [b, h, t, d];
        let n = b * h * t * d;
        let (k, v) = (values(n, seed), values(n, seed ^ 0xABCD));
        let offset = if big { 65_530 } else { 0 };
        let indices: Vec<u32> = (0..t as u32).rev().map(|i| offset + i * 2).collect();
        let opts = V1Options {
            mode: if int4 { QuantMode::Int4 } else { QuantMode::Int8 },
            granularity: Granularity::ALL[gran],
            scale_dtype: if bf16 { ScaleDtype::Bf16 } else { ScaleDtype::Fp16 },
            index_dtype: [IndexDtype::Auto, IndexDtype::U16, IndexDtype::U32][idx],
        };
        let layer = LayerKv { k: KvData::F32(&k), v: KvData::F32(&v), shape, indices: &indices };
        let max = indices.iter().copied().max().unwrap_or(0);
        let encoded = v1::encode(&layer, &opts);
        if opts.index_dtype == IndexDtype::U16 && max > 65_535 {
            let is_overflow = matches!(encoded, Err(EncodeError::IndexOverflow { .. }));
            prop_assert!(is_overflow);
            return Ok(());
        }
        let blob = encoded.unwrap();
        prop_assert_eq!(blob.len() as u64, v1::estimate_bytes(&opts, shape, max));
        let dec = v1::decode(&blob).unwrap();
        let want_width = if opts.index_dtype == IndexDtype::U32 || max > 65_535 { IndexWidth::U32 } else { IndexWidth::U16 };
        prop_assert_eq!(dec.header.index_width, want_width);
        let mut sorted = indices.clone();
        sorted.sort();
        prop_assert_eq!(&dec.indices, &sorted);
        prop_assert_eq!(dec.breakdown().total(), blob.len() as u64);
        let (dk, dv) = dec.dequantize();
        // The borrowing decoder sees the same blob and dequantizes to the same bits.
        let view = v1::decode_ref(&blob).unwrap();
        let (mut rk, mut rv) = (vec![0f32; n], vec![0f32; n]);
        view.dequantize_into(&mut rk, &mut rv).unwrap();
        prop_assert_eq!((&rk, &rv), (&dk, &dv));
        // To fp16: each f32 value rounded (nearest, ties to even).
        let (mut hk, mut hv) = (vec![f16::ZERO; n], vec![f16::ZERO; n]);
        view.dequantize_into_f16(&mut hk, &mut hv).unwrap();
        let rounded = |x: &[f32]| x.iter().map(|&f| f16::from_f32(f).to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(hk.iter().map(|h| h.to_bits()).collect::<Vec<_>>(), rounded(&dk));
        prop_assert_eq!(hv.iter().map(|h| h.to_bits()).collect::<Vec<_>>(), rounded(&dv));
        prop_assert_eq!(&view.into_owned(), &dec);
        // indices are strictly decreasing, so sorting reverses the T rows of each (b, h).
        let params = QuantParams { mode: opts.mode, granularity: opts.granularity, scale_dtype: opts.scale_dtype };
        for (src, got) in [(&k, &dk), (&v, &dv)] {
            let mut rev = Vec::with_capacity(n);
            for bh in 0..b * h {
                for tt in (0..t).rev() {
                    rev.extend_from_slice(&src[(bh * t + tt) * d..][..d]);
                }
            }
            prop_assert_eq!(got, &fake_quantize(&rev, shape, params).unwrap());
        }
    }
}

#[test]
fn positions_beyond_uint16_upgrade_to_uint32_never_wrap() {
    let k = values(4, 1);
    let layer = LayerKv {
        k: KvData::F32(&k),
        v: KvData::F32(&k),
        shape: [1, 1, 2, 2],
        indices: &[65_536, 5],
    };
    let dec = v1::decode(&v1::encode(&layer, &V1Options::default()).unwrap()).unwrap();
    assert_eq!(dec.header.index_width, IndexWidth::U32);
    assert_eq!(dec.indices, vec![5, 65_536]);
    let u16_opts = V1Options {
        index_dtype: IndexDtype::U16,
        ..V1Options::default()
    };
    assert_eq!(
        v1::encode(&layer, &u16_opts),
        Err(EncodeError::IndexOverflow {
            slot: 0,
            position: 65_536,
            dtype: "uint16"
        })
    );
}

#[test]
fn non_finite_input_is_refused_with_its_group() {
    let mut k = values(8, 1);
    k[5] = f32::NAN;
    let layer = LayerKv {
        k: KvData::F32(&k),
        v: KvData::F32(&k),
        shape: [1, 1, 2, 4],
        indices: &[],
    };
    assert_eq!(
        v1::encode(&layer, &V1Options::default()),
        Err(EncodeError::NonFinite {
            field: "k",
            group: 1
        })
    );
}

#[test]
fn shape_mismatch_names_the_input() {
    let k = values(8, 1);
    let layer = LayerKv {
        k: KvData::F32(&k),
        v: KvData::F32(&k[..7]),
        shape: [1, 1, 2, 4],
        indices: &[],
    };
    assert_eq!(
        v1::encode(&layer, &V1Options::default()),
        Err(EncodeError::ShapeMismatch {
            field: "v",
            expected: 8,
            found: 7
        })
    );
}
