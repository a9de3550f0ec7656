//! Layered configuration (defaults, then an optional TOML file, then environment variables with
//! a service prefix and `__` as the nesting separator) and start-up validation that reports every
//! problem together.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::model_spec::ModelSpec;
use crate::telemetry::TelemetryConfig;

/// Why a configuration could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read or deserialized.
    #[error("loading configuration (file {file:?}, env prefix {prefix}): {source}")]
    Load {
        /// The file given, if any.
        file: Option<String>,
        /// The environment prefix (`KVWIRE_SHARER`, ...).
        prefix: String,
        /// The `config` crate's error (boxed: it is large).
        #[source]
        source: Box<config::ConfigError>,
    },
    /// Validation found one or more problems.
    #[error("invalid configuration: {0}")]
    Invalid(Problems),
}

/// Loads `T` from its serde defaults, then `file` (TOML) if given, then environment variables
/// `{prefix}__SECTION__KEY` (for example `KVWIRE_SHARER__LISTEN_ADDR`).
///
/// `T` must implement `Default` and use `#[serde(default)]` so that every layer is optional.
pub fn load_layered<T>(file: Option<&Path>, prefix: &str) -> Result<T, ConfigError>
where
    T: DeserializeOwned + serde::Serialize + Default,
{
    load_with_env(file, prefix, None)
}

/// [`load_layered`] with the environment given as a map instead of the process environment.
fn load_with_env<T>(
    file: Option<&Path>,
    prefix: &str,
    env: Option<config::Map<String, String>>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + serde::Serialize + Default,
{
    let err = |source| ConfigError::Load {
        file: file.map(|p| p.display().to_string()),
        prefix: prefix.to_string(),
        source: Box::new(source),
    };
    let defaults = config::Config::try_from(&T::default()).map_err(err)?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(path) = file {
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix(prefix)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(env),
    );
    builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(err)
}

/// The settings every service has, checked the same way.
#[derive(Debug, Clone, Copy)]
pub struct CommonSettings<'a> {
    /// Model spec.
    pub model: &'a str,
    /// Largest gRPC message, bytes.
    pub max_message_bytes: usize,
    /// Longest prompt, tokens.
    pub max_prompt_tokens: usize,
    /// Concurrent model jobs.
    pub max_concurrent_jobs: usize,
    /// Logs and metrics.
    pub telemetry: &'a TelemetryConfig,
}

impl CommonSettings<'_> {
    /// Records every problem of the common settings.
    pub fn check(&self, p: &mut Problems) {
        if let Err(e) = ModelSpec::parse(self.model) {
            p.push("model", e);
        }
        p.check(
            self.max_message_bytes >= 1 << 16,
            "limits.max_message_bytes",
            "must be at least 65536",
        );
        p.check(
            self.max_prompt_tokens > 0,
            "limits.max_prompt_tokens",
            "must be positive",
        );
        p.check(
            self.max_concurrent_jobs > 0,
            "limits.max_concurrent_jobs",
            "must be positive",
        );
        self.telemetry.validate(p);
    }
}

/// A service's one typed configuration: layered loading and validation of the common settings
/// are said here once; each service adds its own checks.
pub trait ServiceConfig: DeserializeOwned + serde::Serialize + Default {
    /// Environment prefix (`KVWIRE_SHARER`, ...).
    const ENV_PREFIX: &'static str;

    /// The settings every service has.
    fn common(&self) -> CommonSettings<'_>;

    /// Records the problems of this service's own settings.
    fn check_own(&self, p: &mut Problems);

    /// Checks every field; all problems are reported in one error.
    fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::new();
        self.common().check(&mut p);
        self.check_own(&mut p);
        p.into_result()
    }

    /// Loads defaults, `file` and the environment, then validates.
    fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = load_layered(file, Self::ENV_PREFIX)?;
        config.validate()?;
        Ok(config)
    }
}

/// Every problem found while validating one configuration.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Problems(Vec<String>);

impl Problems {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem with `field` unless `ok`.
    pub fn check(&mut self, ok: bool, field: &str, what: impl fmt::Display) {
        if !ok {
            self.0.push(format!("{field}: {what}"));
        }
    }

    /// Records a problem unconditionally.
    pub fn push(&mut self, field: &str, what: impl fmt::Display) {
        self.0.push(format!("{field}: {what}"));
    }

    /// The problems recorded.
    pub fn list(&self) -> &[String] {
        &self.0
    }

    /// `Ok(())` when there are none, otherwise all of them as one error.
    pub fn into_result(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self))
        }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} problem(s): {}", self.0.len(), self.0.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Demo {
        name: String,
        nested: Nested,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq, Default)]
    #[serde(default)]
    struct Nested {
        limit: u64,
    }
    impl Default for Demo {
        fn default() -> Self {
            Self {
                name: "default".into(),
                nested: Nested { limit: 3 },
            }
        }
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "name = \"file\"\n[nested]\nlimit = 7\n").unwrap();
        let from_file: Demo = load_layered(Some(&path), "SVCKIT_TEST_A").unwrap();
        assert_eq!(
            from_file,
            Demo {
                name: "file".into(),
                nested: Nested { limit: 7 }
            }
        );
        let env =
            config::Map::from([("SVCKIT_TEST_B__NESTED__LIMIT".to_string(), "11".to_string())]);
        let from_env: Demo = load_with_env(Some(&path), "SVCKIT_TEST_B", Some(env)).unwrap();
        assert_eq!(from_env.nested.limit, 11);
        assert_eq!(from_env.name, "file");
    }

    #[test]
    fn problems_are_reported_together() {
        let mut p = Problems::new();
        p.check(true, "a", "fine");
        p.check(false, "b", "must be positive");
        p.push("c", "missing");
        let err = p.into_result().unwrap_err().to_string();
        assert!(
            err.contains("2 problem(s)")
                && err.contains("b: must be positive")
                && err.contains("c: missing"),
            "{err}"
        );
    }
}
