//! Model specs: how a service names the model it loads.
//!
//! - `gguf:<path-or-asset-name>`: a GGUF file: a path when that file exists, otherwise an
//!   asset name of the `assets` catalog (`gguf:smollm2-135m`, or the asset's file name) looked
//!   up in the asset cache directory (`KVWIRE_CACHE_DIR`, else `$HOME/.cache/kvwire-c2c`);
//!   [`resolve_gguf`] is the one resolver, used by the services and the coordinator. Weights are
//!   dequantized at load, then run in the configured dtype on the configured device.
//! - `hf:<dir>`: a Hugging Face folder (`config.json`, `*.safetensors`, `tokenizer.json`).
//! - `random:<preset>:<seed>`: seeded random weights at a preset shape (`tiny-llama`,
//!   `tiny-qwen2`, `tiny-qwen3`, `tiny-mistral`, `qwen3-0.6b`, `qwen2.5-0.5b`, and the 7-8B pair
//!   `qwen3-8b`, `qwen2.5-7b`). Timing only:
//!   manifests say `weights = "random"` and no accuracy is reported from them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use assets::{AssetError, AssetId, Store};

/// Random-weight shape presets.
pub const RANDOM_PRESETS: &[&str] = &[
    "tiny-llama",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-mistral",
    "qwen3-0.6b",
    "qwen2.5-0.5b",
    "qwen3-8b",
    "qwen2.5-7b",
];

/// A parsed model spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A GGUF file path or asset name.
    Gguf(String),
    /// A Hugging Face model folder.
    Hf(PathBuf),
    /// Seeded random weights at a preset shape.
    Random {
        /// One of [`RANDOM_PRESETS`].
        preset: String,
        /// Weight seed.
        seed: u64,
    },
}

/// Why a spec string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// No known `kind:` prefix.
    #[error("model spec {spec:?}: expected gguf:<file>, hf:<dir> or random:<preset>:<seed>")]
    UnknownKind {
        /// The spec given.
        spec: String,
    },
    /// The part after the prefix is empty or malformed.
    #[error("model spec {spec:?}: {reason}")]
    Malformed {
        /// The spec given.
        spec: String,
        /// What is wrong.
        reason: String,
    },
}

impl ModelSpec {
    /// Parses `gguf:...`, `hf:...` or `random:<preset>:<seed>`.
    pub fn parse(spec: &str) -> Result<Self, SpecError> {
        let malformed = |reason: &str| SpecError::Malformed {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (kind, rest) = spec.split_once(':').ok_or_else(|| SpecError::UnknownKind {
            spec: spec.to_string(),
        })?;
        if rest.is_empty() {
            return Err(malformed("nothing after the kind"));
        }
        match kind {
            "gguf" => Ok(ModelSpec::Gguf(rest.to_string())),
            "hf" => Ok(ModelSpec::Hf(PathBuf::from(rest))),
            "random" => {
                let (preset, seed) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| malformed("missing :<seed>"))?;
                if !RANDOM_PRESETS.contains(&preset) {
                    return Err(malformed(&format!(
                        "unknown preset {preset:?}; known: {}",
                        RANDOM_PRESETS.join(", ")
                    )));
                }
                let seed = seed
                    .parse()
                    .map_err(|_| malformed("seed is not an unsigned integer"))?;
                Ok(ModelSpec::Random {
                    preset: preset.to_string(),
                    seed,
                })
            }
            _ => Err(SpecError::UnknownKind {
                spec: spec.to_string(),
            }),
        }
    }

    /// The asset a `gguf:` spec names: its target is not an existing file and is an asset's
    /// name or file name. `None` for paths, other kinds and names the catalog does not know.
    pub fn asset(&self) -> Option<AssetId> {
        match self {
            ModelSpec::Gguf(target) => gguf_asset(target),
            _ => None,
        }
    }

    /// True for random weights (no accuracy may be reported).
    pub fn is_random(&self) -> bool {
        matches!(self, ModelSpec::Random { .. })
    }
}

/// Why a `gguf:` target does not resolve to a file.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Neither an existing file nor an asset name.
    #[error(
        "model file {target} not found: not a file, and not an asset name (known assets: {known})"
    )]
    NotFound {
        /// The target given.
        target: String,
        /// Asset names known to the catalog.
        known: String,
    },
    /// The target names an asset that is not (or not correctly) in the cache directory.
    #[error(
        "gguf:{target} names the asset `{asset}`, which is not fetched into the cache directory \
         {} ({}; fetch it with `{}`, or point {} at a cache that has it): {cause}",
        cache_dir.display(),
        assets::CACHE_DIR_ENV,
        assets::FETCH_COMMAND,
        assets::CACHE_DIR_ENV
    )]
    AssetNotFetched {
        /// The target given.
        target: String,
        /// The asset it names.
        asset: AssetId,
        /// The cache directory looked in.
        cache_dir: PathBuf,
        /// The store's reason (missing, wrong size, never verified) with its exact fix command
        /// (in the message, not a separate source: it would be printed twice).
        cause: Box<AssetError>,
    },
    /// The target names an asset but no cache directory is known (no `KVWIRE_CACHE_DIR`, no
    /// `HOME`).
    #[error("gguf:{target} names the asset `{asset}`: {cause}")]
    NoCacheDir {
        /// The target given.
        target: String,
        /// The asset it names.
        asset: AssetId,
        /// The store's error.
        cause: Box<AssetError>,
    },
}

/// The asset a `gguf:` target names, unless it is an existing file.
fn gguf_asset(target: &str) -> Option<AssetId> {
    if Path::new(target).is_file() {
        return None;
    }
    AssetId::from_str(target).ok()
}

/// The file a `gguf:<target>` spec loads: `target` itself when it is an existing file,
/// otherwise the installed (size- and stamp-checked) file of the asset it names, in the cache
/// directory of `$KVWIRE_CACHE_DIR` (else `$HOME/.cache/kvwire-c2c`). Never downloads.
pub fn resolve_gguf(target: &str) -> Result<PathBuf, ResolveError> {
    resolve_gguf_with(target, Store::from_env)
}

/// [`resolve_gguf`] against a given asset store.
pub fn resolve_gguf_in(target: &str, store: &Store) -> Result<PathBuf, ResolveError> {
    resolve_gguf_with(target, || Ok(store.clone()))
}

fn resolve_gguf_with(
    target: &str,
    store: impl FnOnce() -> Result<Store, AssetError>,
) -> Result<PathBuf, ResolveError> {
    let path = Path::new(target);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let Some(asset) = gguf_asset(target) else {
        return Err(ResolveError::NotFound {
            target: target.to_string(),
            known: AssetId::ALL.map(AssetId::name).join(", "),
        });
    };
    let store = store().map_err(|cause| ResolveError::NoCacheDir {
        target: target.to_string(),
        asset,
        cause: Box::new(cause),
    })?;
    store
        .path(asset)
        .map_err(|cause| ResolveError::AssetNotFetched {
            target: target.to_string(),
            asset,
            cache_dir: store.dir().to_path_buf(),
            cause: Box::new(cause),
        })
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSpec::Gguf(s) => write!(f, "gguf:{s}"),
            ModelSpec::Hf(p) => write!(f, "hf:{}", p.display()),
            ModelSpec::Random { preset, seed } => write!(f, "random:{preset}:{seed}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_each_kind() {
        for s in [
            "gguf:smollm2-135m",
            "hf:/models/qwen",
            "random:tiny-qwen2:7",
        ] {
            assert_eq!(ModelSpec::parse(s).unwrap().to_string(), s);
        }
        assert!(ModelSpec::parse("random:qwen3-0.6b:1").unwrap().is_random());
    }

    #[test]
    fn gguf_targets_resolve_as_files_first_then_as_assets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("cache"));
        // An existing file is a path, even when its name is an asset's.
        let file = dir.path().join("smollm2-135m");
        std::fs::write(&file, b"not really gguf").unwrap();
        let target = file.to_str().unwrap();
        assert_eq!(resolve_gguf_in(target, &store).unwrap(), file);
        assert_eq!(ModelSpec::Gguf(target.into()).asset(), None);

        // An asset name (or the asset's file name) that is not fetched: the asset, the cache
        // directory and the fetch command are named.
        for name in ["smollm2-135m", "smollm2-135m-instruct-q4_1.gguf"] {
            let spec = ModelSpec::parse(&format!("gguf:{name}")).unwrap();
            assert_eq!(spec.asset(), Some(AssetId::Smollm2_135m));
            let err = resolve_gguf_in(name, &store).unwrap_err();
            assert!(matches!(err, ResolveError::AssetNotFetched { .. }), "{err}");
            let text = err.to_string();
            for part in [
                "`smollm2-135m`",
                store.dir().to_str().unwrap(),
                "KVWIRE_CACHE_DIR",
                "cargo run --release -p assets -- fetch",
            ] {
                assert!(text.contains(part), "{part:?} missing from {text}");
            }
        }

        // Neither a file nor an asset.
        let err = resolve_gguf_in("no/such/model.gguf", &store).unwrap_err();
        assert!(matches!(err, ResolveError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("smollm2-135m"), "{err}");
        assert_eq!(ModelSpec::parse("hf:smollm2-135m").unwrap().asset(), None);
    }

    #[test]
    fn a_fetched_asset_resolves_to_its_file_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let id = AssetId::QwenTokenizer;
        let spec = id.spec();
        // The store checks size and stamp (not the hash) on lookup: a sparse file of the
        // pinned size with the pinned stamp stands in for the real download.
        let path = store.file_path(id);
        std::fs::File::create(&path)
            .unwrap()
            .set_len(spec.bytes)
            .unwrap();
        std::fs::write(
            format!("{}.sha256", path.display()),
            format!("{}\n", spec.sha256),
        )
        .unwrap();
        assert_eq!(resolve_gguf_in(id.name(), &store).unwrap(), path);
    }

    #[test]
    fn rejects_bad_specs_with_a_reason() {
        for s in [
            "",
            "llama",
            "gguf:",
            "random:tiny-llama",
            "random:huge:1",
            "random:tiny-llama:x",
            "onnx:m",
        ] {
            assert!(ModelSpec::parse(s).is_err(), "{s}");
        }
    }
}
