//! Regressions for defects found when kvwire was tried as a new user would (issue 18): the
//! entropy encoder writing frames its decoder refuses, a stream cut at a record boundary being
//! accepted, `FrameHeader::peek` returning sizes no decode would accept, and the CLI panicking
//! on a closed pipe.

mod common;

use common::{Fixture, announced_stream, values};
use kvwire::v2::{self, FrameOptions, Payload, SessionHeader, StreamDecoder};
use kvwire::{DecodeError, Granularity, KvData, LayerKv};

/// `[B, H, T, D]` large enough that a constant tensor codes to far less than 1/256 of its size.
const BIG: [usize; 4] = [1, 8, 1024, 64];

/// Seeded standard normal values (Box-Muller over the fixture's uniform generator).
fn gaussian(n: usize, seed: u32) -> Vec<f32> {
    let u = values(n + 1, seed);
    (0..n)
        .map(|i| {
            let a = (u[i] / 6.0 + 0.5).clamp(1e-6, 1.0);
            let b = u[i + 1] / 6.0 + 0.5;
            (-2.0 * a.ln()).sqrt() * (std::f32::consts::TAU * b).cos()
        })
        .collect()
}

#[test]
fn entropy_coded_frames_always_decode() {
    let n: usize = BIG.iter().product();
    let mut outlier = gaussian(n, 5);
    outlier[n / 3] = 1.0e4;
    let inputs = [
        ("gaussian with one outlier", outlier),
        ("all zero", vec![0.0; n]),
        ("constant", vec![0.75; n]),
    ];
    let indices: Vec<u32> = (0..BIG[2] as u32).collect();
    let mut fell_back = 0;
    for (what, data) in &inputs {
        let layer = LayerKv {
            k: KvData::F32(data),
            v: KvData::F32(data),
            shape: BIG,
            indices: &indices,
        };
        for payload in [Payload::Int4, Payload::Int8, Payload::Fp16] {
            for granularity in [Granularity::PerTensor, Granularity::PerBlock] {
                let opts = FrameOptions {
                    payload,
                    granularity,
                    entropy: true,
                    ..FrameOptions::default()
                };
                let case = format!("{what}, {payload:?} {granularity:?}");
                let frame = v2::encode_frame(&layer, &opts).unwrap();
                let decoded = v2::decode_frame(&frame).unwrap_or_else(|e| {
                    panic!("{case}: the encoder wrote a frame it refuses: {e}")
                });
                let raw = v2::encode_frame(
                    &layer,
                    &FrameOptions {
                        entropy: false,
                        ..opts
                    },
                )
                .unwrap();
                assert_eq!(
                    decoded.dequantize(),
                    v2::decode_frame(&raw).unwrap().dequantize(),
                    "{case}"
                );
                assert!(frame.len() <= raw.len(), "{case}");
                assert!(v2::FrameHeader::peek(&frame).is_ok(), "{case}");
                fell_back += usize::from(!decoded.header().entropy);
            }
        }
    }
    // The expansion bound is what decided for the constant inputs: they went out raw.
    assert!(fell_back > 0);
}

#[test]
fn a_stream_cut_at_a_record_boundary_is_truncated() {
    let (bytes, boundaries) = announced_stream(3, 3);
    assert_eq!(v2::decode_stream(&bytes).unwrap().len(), 4);
    for (received, &cut) in boundaries[..3].iter().enumerate() {
        let err = v2::decode_stream(&bytes[..cut]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::MissingFrames {
                offset: cut,
                announced: 3,
                received: received as u32,
            }
        );
        // The same through the incremental decoder: the records arrive, `finish` says what
        // is missing.
        let mut dec = StreamDecoder::new();
        dec.push(&bytes[..cut]);
        while dec.next_item().unwrap().is_some() {}
        assert_eq!(dec.finish(), Err(err));
    }
    // Unknown count (0): any number of frames is a whole stream.
    let (unknown, boundaries) = announced_stream(0, 3);
    for &cut in &boundaries {
        assert!(v2::decode_stream(&unknown[..cut]).is_ok(), "cut {cut}");
    }
    // A round that opens before the last one delivered what it announced.
    let (mut two_rounds, boundaries) = announced_stream(3, 3);
    two_rounds.truncate(boundaries[2]);
    let next_at = two_rounds.len();
    let next = SessionHeader {
        layers: 3,
        frames: 3,
        round: 2,
        ..SessionHeader::default()
    };
    two_rounds.extend(next.encode().unwrap());
    assert_eq!(
        v2::decode_stream(&two_rounds).unwrap_err(),
        DecodeError::MissingFrames {
            offset: next_at,
            announced: 3,
            received: 2,
        }
    );
}

/// A frame header with its shape and record length replaced (CRC not fixed: `peek` does not
/// read it).
fn patched(frame: &[u8], shape: [u32; 4], record_len: u32) -> Vec<u8> {
    let mut bytes = frame.to_vec();
    let [b, h, t, d] = shape;
    bytes[8..12].copy_from_slice(&record_len.to_le_bytes());
    bytes[20..22].copy_from_slice(&(b as u16).to_le_bytes());
    bytes[22..24].copy_from_slice(&(h as u16).to_le_bytes());
    bytes[24..26].copy_from_slice(&(d as u16).to_le_bytes());
    bytes[28..32].copy_from_slice(&t.to_le_bytes());
    bytes
}

#[test]
fn peek_bounds_the_sizes_it_returns_by_the_record_length() {
    let fx = Fixture::new();
    for entropy in [false, true] {
        for payload in [Payload::Fp16, Payload::Int8, Payload::Int4] {
            let opts = FrameOptions {
                payload,
                entropy,
                ..FrameOptions::default()
            };
            let frame = v2::encode_frame(&fx.layer(), &opts).unwrap();
            let h = v2::FrameHeader::peek(&frame).unwrap();
            assert_eq!(h.shape, fx.shape);
            assert_eq!(h.record_len, frame.len());
        }
    }
    // A 40-byte fp16 frame claiming 2^30 elements (contiguous positions: no index bytes).
    let opts = FrameOptions {
        payload: Payload::Fp16,
        ..FrameOptions::default()
    };
    let contiguous = v2::encode_frame(
        &LayerKv {
            indices: &[0, 1, 2, 3, 4],
            ..fx.layer()
        },
        &opts,
    )
    .unwrap();
    let huge = patched(&contiguous[..36], [1, 1024, 1024, 1024], 40);
    assert!(matches!(
        v2::FrameHeader::peek(&huge),
        Err(DecodeError::LengthMismatch {
            field: "record_len",
            found: 40,
            ..
        })
    ));
    // The same shape with the entropy bit: a 44-byte record cannot decode to 4 GiB.
    let mut coded = patched(&contiguous[..36], [1, 1024, 1024, 1024], 44);
    coded[17] = 1;
    assert!(matches!(
        v2::FrameHeader::peek(&coded),
        Err(DecodeError::TooLarge {
            field: "entropy-decoded payload",
            ..
        })
    ));
    // Every dimension at its largest: B*H*T*D overflows u64, reported saturated (found by
    // the `assemble` fuzz target: the error's value was an overflowing product).
    let widest = patched(&contiguous[..36], [65_535, 65_535, 1 << 24, 65_535], 40);
    for err in [
        v2::FrameHeader::peek(&widest).unwrap_err(),
        v2::decode_frame(&widest).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                DecodeError::TooLarge {
                    field: "elements (B*H*T*D)",
                    value: u64::MAX,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    // Whatever peek accepts, the decode accepts the same sizes: a record of the length it
    // states holds 2 * elements * 2 payload bytes.
    let small = patched(&contiguous[..36], [1, 2, 5, 6], contiguous.len() as u32);
    assert_eq!(v2::FrameHeader::peek(&small).unwrap().elements(), 60);
}

/// The CLI (needs feature `cli`, on by default).
#[cfg(feature = "cli")]
mod cli {
    use std::io::Read as _;
    use std::process::{Command, Stdio};

    use super::{announced_stream, values};

    /// Runs the CLI with its standard output closed as soon as it starts: what `| head` does once
    /// it has its lines. Returns the exit status and standard error.
    fn with_closed_stdout(args: &[&str]) -> (std::process::ExitStatus, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvwire"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one byte at most (some output may already be buffered), then close the pipe.
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 1];
        let _ = stdout.read(&mut first);
        drop(stdout);
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        (child.wait().unwrap(), stderr)
    }

    #[test]
    fn the_cli_stops_quietly_on_a_closed_pipe() {
        let dir = tempfile::tempdir().unwrap();
        // 300 frames: text and JSON output far beyond a pipe's buffer.
        let (bytes, _) = announced_stream(300, 300);
        let file = dir.path().join("s.kvw");
        std::fs::write(&file, &bytes).unwrap();
        let file = file.to_str().unwrap();
        let out = dir.path().join("out");
        let out = out.to_str().unwrap();
        let k = dir.path().join("k.npy");
        let npy = kvwire::npy::NpyArray {
            shape: vec![2, 3, 4],
            data: kvwire::npy::NpyData::F32(values(24, 3)),
        };
        std::fs::write(&k, npy.to_bytes()).unwrap();
        let k = k.to_str().unwrap();
        let encoded = dir.path().join("e.kvw");
        let encoded = encoded.to_str().unwrap();
        let runs: [&[&str]; 5] = [
            &["inspect", file],
            &["inspect", "--json", file],
            &["decode", file, "--out-dir", out],
            &["encode", "--k", k, "--v", k, "--out", encoded],
            &["demo", "--layers", "2", "--tokens", "8", "--reps", "1"],
        ];
        for args in runs {
            let (status, stderr) = with_closed_stdout(args);
            assert!(
                status.success() && !stderr.contains("panicked"),
                "kvwire {args:?}: {status}: {stderr}"
            );
        }
        // The output still comes out whole when it is read.
        let full = Command::new(env!("CARGO_BIN_EXE_kvwire"))
            .args(["inspect", file])
            .output()
            .unwrap();
        assert!(full.status.success());
        assert!(full.stdout.len() > 1 << 17, "{} bytes", full.stdout.len());
    }
}
