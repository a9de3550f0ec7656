#![cfg(feature = "cli")]
//! The `kvwire` CLI: encode from `.npy`, decode to `.npy`, inspect; with Rust-written files
//! always, and with NumPy when `python3 -c "import numpy"` works (skipped with a message if not).

use std::path::Path;
use std::process::Command;

use kvwire::npy::{NpyArray, NpyData};
use kvwire::v2;

fn kvwire(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kvwire"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kvwire {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn write(path: &Path, a: &NpyArray) {
    std::fs::write(path, a.to_bytes()).unwrap();
}

fn read(path: &Path) -> NpyArray {
    NpyArray::from_bytes(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn encode_decode_inspect_round_trip_through_npy_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let n = 2 * 3 * 4;
    let k: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let v: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
    write(
        &d.join("k.npy"),
        &NpyArray {
            shape: vec![2, 3, 4],
            data: NpyData::F32(k.clone()),
        },
    );
    write(
        &d.join("v.npy"),
        &NpyArray {
            shape: vec![2, 3, 4],
            data: NpyData::F32(v),
        },
    );
    write(
        &d.join("i.npy"),
        &NpyArray {
            shape: vec![3],
            data: NpyData::I64(vec![70_000, 4, 9]),
        },
    );
    for (version, quant) in [
        ("v1", "int8"),
        ("v1", "int4"),
        ("v2", "int8"),
        ("v2", "int4"),
        ("v2", "fp16"),
    ] {
        let out = d.join(format!("{version}_{quant}.kvw"));
        let o = out.to_str().unwrap();
        let (kp, vp, ip) = (d.join("k.npy"), d.join("v.npy"), d.join("i.npy"));
        let args = [
            "encode",
            "--k",
            kp.to_str().unwrap(),
            "--v",
            vp.to_str().unwrap(),
            "--indices",
            ip.to_str().unwrap(),
            "--version",
            version,
            "--quant",
            quant,
            "--granularity",
            "per_head",
            "--scale-dtype",
            "bf16",
            "-o",
            o,
        ];
        kvwire(&args);
        let dec_dir = d.join(format!("dec_{version}_{quant}"));
        kvwire(&["decode", o, "--out-dir", dec_dir.to_str().unwrap()]);
        assert_eq!(
            read(&dec_dir.join("indices.npy")).data,
            NpyData::U32(vec![4, 9, 70_000])
        );
        let got = read(&dec_dir.join("k.npy"));
        assert_eq!(got.shape, vec![1, 2, 3, 4]);
        let NpyData::F32(got) = got.data else {
            panic!("k.npy is not f32")
        };
        // Rows are sorted by position: input rows (70000, 4, 9) become (4, 9, 70000).
        let tol = if quant == "int4" {
            3.0 / 7.0
        } else {
            3.0 / 127.0
        };
        for h in 0..2 {
            for (to, from) in [(0, 1), (1, 2), (2, 0)] {
                for x in 0..4 {
                    let (a, b) = (got[(h * 3 + to) * 4 + x], k[(h * 3 + from) * 4 + x]);
                    assert!((a - b).abs() <= tol, "{version} {quant}: {a} vs {b}");
                }
            }
        }
        // `--dtype f16`: the same values rounded to fp16 (nearest even), stored as `<f2`.
        let half_dir = d.join(format!("dec16_{version}_{quant}"));
        let half_args = ["decode", o, "--out-dir", half_dir.to_str().unwrap()];
        kvwire(&[&half_args[..], &["--dtype", "f16"]].concat());
        let halves = read(&half_dir.join("k.npy"));
        assert_eq!(halves.shape, vec![1, 2, 3, 4]);
        let rounded: Vec<half::f16> = got.iter().map(|&x| half::f16::from_f32(x)).collect();
        assert_eq!(halves.data, NpyData::F16(rounded), "{version} {quant}");
        let json: serde_json::Value =
            serde_json::from_str(&kvwire(&["inspect", o, "--json"])).unwrap();
        assert_eq!(json["version"], version);
        if quant != "fp16" {
            let g = if version == "v1" {
                &json["granularity"]
            } else {
                &json["records"][0]["granularity"]
            };
            assert_eq!(g, "per_head");
        }
        assert_eq!(json["bytes"], std::fs::metadata(&out).unwrap().len());
        assert!(kvwire(&["inspect", o]).contains("breakdown"));
    }
    let frame = v2::decode_frame(&std::fs::read(d.join("v2_int8.kvw")).unwrap()).unwrap();
    assert_eq!(frame.header().shape, [1, 2, 3, 4]);
}

const NUMPY_CHECK: &str = r#"
import sys, subprocess, numpy as np
exe, d = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
for dt in ("float32", "float16"):
    k = rng.standard_normal((1, 2, 5, 8)).astype(dt)
    v = rng.standard_normal((1, 2, 5, 8)).astype(dt)
    idx = np.array([9, 2, 7, 100000, 5], dtype=np.int64)
    np.save(f"{d}/k.npy", k); np.save(f"{d}/v.npy", v); np.save(f"{d}/i.npy", idx)
    for ver, q in (("v1", "int8"), ("v1", "int4"), ("v2", "int8"), ("v2", "fp16")):
        out = f"{d}/{dt}_{ver}_{q}.kvw"; od = f"{d}/{dt}_{ver}_{q}"
        subprocess.run([exe, "encode", "--k", f"{d}/k.npy", "--v", f"{d}/v.npy", "--indices", f"{d}/i.npy",
                        "--version", ver, "--quant", q, "-o", out], check=True, capture_output=True)
        subprocess.run([exe, "decode", out, "--out-dir", od], check=True, capture_output=True)
        order = np.argsort(idx, kind="stable")
        assert (np.load(f"{od}/indices.npy") == idx[order]).all()
        kd = np.load(f"{od}/k.npy")
        assert kd.dtype == np.float32 and kd.shape == k.shape, (kd.dtype, kd.shape)
        ref = k[:, :, order, :].astype(np.float32)
        if q == "fp16":
            assert (kd == ref.astype(np.float16).astype(np.float32)).all()
        else:
            kq = np.load(f"{od}/k_quant.npy"); ks = np.load(f"{od}/k_scales.npy")
            assert kq.dtype == np.int8 and ks.shape == (1, 2, 5, 1)
            assert (kq.astype(np.float32) * ks == kd).all()
            qmax = 127 if q == "int8" else 7
            scale = np.maximum(np.abs(ref).max(-1, keepdims=True) / np.float32(qmax), np.float32(1e-6)).astype(np.float32)
            want = np.clip(np.round(ref / scale), -qmax, qmax).astype(np.int8)
            assert (kq == want).all(), (kq, want)
        subprocess.run([exe, "decode", out, "--out-dir", od + "_f16", "--dtype", "f16"],
                       check=True, capture_output=True)
        kh = np.load(f"{od}_f16/k.npy")
        assert kh.dtype == np.float16 and (kh == kd.astype(np.float16)).all()
print("numpy round trip ok")
"#;

#[test]
fn numpy_files_round_trip_through_the_cli() {
    let has_numpy = Command::new("python3")
        .args(["-c", "import numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_numpy {
        println!("SKIPPED numpy_files_round_trip_through_the_cli: python3 with numpy not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("python3")
        .args([
            "-c",
            NUMPY_CHECK,
            env!("CARGO_BIN_EXE_kvwire"),
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
