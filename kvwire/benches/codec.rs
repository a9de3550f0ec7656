//! Encode and decode of one layer (int8 / int4 per_block, v2 and v1, f32 and f16 input) beside a
//! plain copy of the same input bytes, single thread. Decode writes f32; f16 inputs are also
//! decoded back to f16 (`*_decode_f16`). A v2 decode is `decode_frame_into`: every check, the
//! CRC32C and the dequantization into caller buffers; a v1 decode is `decode_ref` and
//! `dequantize_into`.
//!
//! Default: a representative subset. `KVWIRE_BENCH_FULL=1` runs the whole matrix
//! (H in {2, 8}, D in {64, 128}, T in {128, 512, 2048, 8192}).
//! `python3 kvwire/benches/report.py` turns the criterion estimates into the BENCHMARKS.md table.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::f16;
use kvwire::v1::{self, IndexDtype, V1Options};
use kvwire::v2::{self, FrameOptions, Payload};
use kvwire::{Granularity, KvData, LayerKv, QuantMode, ScaleDtype};

fn values(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 - 0.5) * 4.0
        })
        .collect()
}

fn shapes() -> Vec<[usize; 4]> {
    // Opt-in switch for the full matrix; read once here in the bench harness, not in the library.
    if std::env::var_os("KVWIRE_BENCH_FULL").is_some() {
        let mut v = Vec::new();
        for h in [2, 8] {
            for d in [64, 128] {
                for t in [128, 512, 2048, 8192] {
                    v.push([1, h, t, d]);
                }
            }
        }
        v
    } else {
        vec![
            [1, 2, 128, 64],
            [1, 2, 2048, 64],
            [1, 8, 2048, 128],
            [1, 8, 8192, 128],
        ]
    }
}

fn bench(c: &mut Criterion) {
    for shape in shapes() {
        let n: usize = shape.iter().product();
        let (k32, v32) = (values(n, 1), values(n, 2));
        let k16: Vec<f16> = k32.iter().map(|&x| f16::from_f32(x)).collect();
        let v16: Vec<f16> = v32.iter().map(|&x| f16::from_f32(x)).collect();
        let [_, h, t, d] = shape;
        for dtype in ["f32", "f16"] {
            let (k, v) = if dtype == "f32" {
                (KvData::F32(&k32), KvData::F32(&v32))
            } else {
                (KvData::F16(&k16), KvData::F16(&v16))
            };
            let layer = LayerKv {
                k,
                v,
                shape,
                indices: &[],
            };
            let input_bytes = (k.byte_len() + v.byte_len()) as u64;
            let mut group = c.benchmark_group(format!("h{h}_d{d}_t{t}_{dtype}"));
            group.throughput(Throughput::Bytes(input_bytes));
            group
                .sample_size(20)
                .warm_up_time(Duration::from_millis(300))
                .measurement_time(Duration::from_millis(1200));
            let src: Vec<u8> = vec![1u8; input_bytes as usize];
            let mut dst = vec![0u8; input_bytes as usize];
            group.bench_function("memcpy", |b| {
                b.iter(|| {
                    dst.copy_from_slice(black_box(&src));
                    black_box(&mut dst);
                })
            });
            let mut kout = vec![0f32; n];
            let mut vout = vec![0f32; n];
            let (mut kout16, mut vout16) = (vec![f16::ZERO; n], vec![f16::ZERO; n]);
            for mode in [QuantMode::Int8, QuantMode::Int4] {
                let payload = if mode == QuantMode::Int8 {
                    Payload::Int8
                } else {
                    Payload::Int4
                };
                let v2o = FrameOptions {
                    payload,
                    ..FrameOptions::default()
                };
                let v1o = V1Options {
                    mode,
                    granularity: Granularity::PerBlock,
                    scale_dtype: ScaleDtype::Fp16,
                    index_dtype: IndexDtype::Auto,
                };
                let mut out = Vec::new();
                group.bench_function(BenchmarkId::new("v2_encode", mode.name()), |b| {
                    b.iter(|| {
                        out.clear();
                        v2::encode_frame_into(black_box(&layer), &v2o, &mut out).unwrap();
                    })
                });
                let frame = v2::encode_frame(&layer, &v2o).unwrap();
                group.bench_function(BenchmarkId::new("v2_decode", mode.name()), |b| {
                    b.iter(|| {
                        v2::decode_frame_into(black_box(&frame), &mut kout, &mut vout).unwrap();
                    })
                });
                group.bench_function(BenchmarkId::new("v1_encode", mode.name()), |b| {
                    b.iter(|| {
                        out.clear();
                        v1::encode_into(black_box(&layer), &v1o, &mut out).unwrap();
                    })
                });
                let blob = v1::encode(&layer, &v1o).unwrap();
                group.bench_function(BenchmarkId::new("v1_decode", mode.name()), |b| {
                    b.iter(|| {
                        let d = v1::decode_ref(black_box(&blob)).unwrap();
                        d.dequantize_into(&mut kout, &mut vout).unwrap();
                    })
                });
                if dtype == "f16" {
                    // Back to the input's dtype: half the bytes written.
                    group.bench_function(BenchmarkId::new("v2_decode_f16", mode.name()), |b| {
                        b.iter(|| {
                            v2::decode_frame_into_f16(black_box(&frame), &mut kout16, &mut vout16)
                                .unwrap();
                        })
                    });
                    group.bench_function(BenchmarkId::new("v1_decode_f16", mode.name()), |b| {
                        b.iter(|| {
                            let d = v1::decode_ref(black_box(&blob)).unwrap();
                            d.dequantize_into_f16(&mut kout16, &mut vout16).unwrap();
                        })
                    });
                }
            }
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
