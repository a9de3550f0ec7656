//! sha256 of files and streams, and the verification stamp written beside each asset so that a
//! second run checks size + stamp instead of re-hashing hundreds of megabytes.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::AssetError;

const BUF_BYTES: usize = 1 << 20;

/// Streams `path` through sha256; `progress` gets the running byte count.
pub fn sha256_file(path: &Path, progress: &mut dyn FnMut(u64)) -> Result<String, AssetError> {
    let mut file = File::open(path).map_err(AssetError::io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_BYTES];
    let mut done = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(AssetError::io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A writer that hashes and counts everything written through it.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// Returns the inner writer, the sha256 (hex) and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Path of the stamp file recording the verified sha256 of `asset_path`.
pub fn stamp_path(asset_path: &Path) -> PathBuf {
    let mut name = asset_path.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    asset_path.with_file_name(name)
}

/// Reads the sha256 recorded in the stamp (`sha256sum` format); `None` if absent or malformed.
pub fn read_stamp(asset_path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(stamp_path(asset_path)).ok()?;
    let hex = text.split_whitespace().next()?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Writes the stamp atomically, in `sha256sum -c` compatible format.
pub fn write_stamp(asset_path: &Path, sha256: &str) -> Result<(), AssetError> {
    let name = asset_path.file_name().unwrap_or_default().to_string_lossy();
    write_atomic(
        &stamp_path(asset_path),
        format!("{sha256}  {name}\n").as_bytes(),
    )
}

/// Writes `bytes` to `path` via a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AssetError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(AssetError::io("create temp file in", dir))?;
    tmp.write_all(bytes)
        .map_err(AssetError::io("write", tmp.path().to_owned()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o644);
        tmp.as_file()
            .set_permissions(mode)
            .map_err(AssetError::io("chmod", tmp.path().to_owned()))?;
    }
    tmp.persist(path).map_err(|e| AssetError::Io {
        op: "rename onto",
        path: path.to_owned(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_SHA256: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[test]
    fn sha256_of_file_and_writer_agree_with_known_vector() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        let mut seen = 0;
        assert_eq!(sha256_file(&path, &mut |n| seen = n).unwrap(), ABC_SHA256);
        assert_eq!(seen, 3);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"a").unwrap();
        w.write_all(b"bc").unwrap();
        let (inner, sha, n) = w.finish();
        assert_eq!(
            (inner.as_slice(), sha.as_str(), n),
            (&b"abc"[..], ABC_SHA256, 3)
        );
    }

    #[test]
    fn stamp_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let asset = dir.path().join("model.gguf");
        assert_eq!(read_stamp(&asset), None);
        write_stamp(&asset, ABC_SHA256).unwrap();
        assert_eq!(read_stamp(&asset).as_deref(), Some(ABC_SHA256));
        let text = std::fs::read_to_string(stamp_path(&asset)).unwrap();
        assert_eq!(text, format!("{ABC_SHA256}  model.gguf\n"));
        std::fs::write(stamp_path(&asset), "not a hash\n").unwrap();
        assert_eq!(read_stamp(&asset), None);
    }
}
