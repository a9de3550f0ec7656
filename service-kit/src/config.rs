//! Layered configuration (defaults, then an optional TOML file, then environment variables with
//! a service prefix and `__` as the nesting separator) and start-up validation that reports every
//! problem together.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::device::{DeviceError, DeviceSpec, DtypeSpec, Placement};
use crate::model_spec::ModelSpec;
use crate::telemetry::TelemetryConfig;
use crate::transport::ServerSections;

/// Why a configuration could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be read or deserialized (an unknown key included:
    /// every configuration struct refuses fields it does not declare).
    #[error("loading configuration (file {file:?}, env prefix {prefix}; {layer}): {source}")]
    Load {
        /// The file given, if any.
        file: Option<String>,
        /// The environment prefix (`KVWIRE_SHARER`, ...).
        prefix: String,
        /// The layer at fault: `in the file`, or `in the environment` with the variables that
        /// hold the unknown key when it is one.
        layer: String,
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
/// `T` must implement `Default` and use `#[serde(default)]` so that every layer is optional,
/// and `#[serde(deny_unknown_fields)]` (each nested struct too) so that a misspelt key, in the
/// file or in a variable name, is refused at start-up with the key named instead of leaving
/// its default in force. Variables that only share the start of the prefix
/// (`KVWIRE_SHARER_X`, one underscore) are not read.
pub fn load_layered<T>(file: Option<&Path>, prefix: &str) -> Result<T, ConfigError>
where
    T: DeserializeOwned + serde::Serialize + Default,
{
    load_with_env(file, prefix, &[], None)
}

/// [`load_layered`] where the variables of `list_keys` (dotted paths, lower case:
/// `allowed_sharers`) hold comma-separated lists.
pub fn load_layered_with_lists<T>(
    file: Option<&Path>,
    prefix: &str,
    list_keys: &[&str],
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + serde::Serialize + Default,
{
    load_with_env(file, prefix, list_keys, None)
}

/// [`load_layered_with_lists`] with the environment given as a map instead of the process
/// environment.
fn load_with_env<T>(
    file: Option<&Path>,
    prefix: &str,
    list_keys: &[&str],
    env: Option<config::Map<String, String>>,
) -> Result<T, ConfigError>
where
    T: DeserializeOwned + serde::Serialize + Default,
{
    let build = |with_env: bool| -> Result<T, config::ConfigError> {
        let defaults = config::Config::try_from(&T::default())?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        if with_env {
            let mut environment = config::Environment::with_prefix(prefix)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(env.clone());
            if !list_keys.is_empty() {
                environment = environment.list_separator(",");
                for key in list_keys {
                    environment = environment.with_list_parse_key(key);
                }
            }
            builder = builder.add_source(environment);
        }
        builder.build()?.try_deserialize()
    };
    build(true).map_err(|source| {
        // Which layer: if the defaults and the file alone load, the environment is at fault.
        let layer = if build(false).is_ok() {
            let vars = culprit_vars(prefix, env.as_ref(), &source.to_string());
            if vars.is_empty() {
                format!("in the environment ({prefix}__*)")
            } else {
                format!("in the environment: {}", vars.join(", "))
            }
        } else {
            "in the file".to_string()
        };
        ConfigError::Load {
            file: file.map(|p| p.display().to_string()),
            prefix: prefix.to_string(),
            layer,
            source: Box::new(source),
        }
    })
}

/// The `{prefix}__*` variables (of `env`, else the process environment) whose path names the
/// unknown field serde reports in `message` (``unknown field `x` ``); empty when it names none.
fn culprit_vars(
    prefix: &str,
    env: Option<&config::Map<String, String>>,
    message: &str,
) -> Vec<String> {
    let Some(field) = message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(field, _)| field.to_ascii_lowercase())
    else {
        return Vec::new();
    };
    let names: Vec<String> = match env {
        Some(map) => map.keys().cloned().collect(),
        None => std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .collect(),
    };
    let start = format!("{}__", prefix.to_ascii_lowercase());
    let mut vars: Vec<String> = names
        .into_iter()
        .filter(|name| {
            let lower = name.to_ascii_lowercase();
            lower
                .strip_prefix(&start)
                .is_some_and(|path| path.split("__").any(|part| part == field))
        })
        .collect();
    vars.sort();
    vars
}

/// Bytes of prompt text allowed per token of `limits.max_prompt_tokens` when
/// `limits.max_prompt_bytes` is unset (a generous bound: English runs about 4 bytes a token).
pub const DEFAULT_PROMPT_BYTES_PER_TOKEN: usize = 16;

/// Room a request message has beside its prompt text (ids, enums, an endpoint, protobuf
/// framing), bytes.
pub const REQUEST_OVERHEAD_BYTES: usize = 64 << 10;

/// `limits.max_prompt_bytes` when set, else [`DEFAULT_PROMPT_BYTES_PER_TOKEN`] per prompt token.
pub fn prompt_bytes_limit(max_prompt_bytes: Option<usize>, max_prompt_tokens: usize) -> usize {
    max_prompt_bytes
        .unwrap_or_else(|| max_prompt_tokens.saturating_mul(DEFAULT_PROMPT_BYTES_PER_TOKEN))
}

/// The settings every service has, checked the same way.
#[derive(Debug, Clone, Copy)]
pub struct CommonSettings<'a> {
    /// gRPC listen address (used by the binaries; `serve` takes a bound listener).
    pub listen_addr: std::net::SocketAddr,
    /// Model spec.
    pub model: &'a str,
    /// Compute device (`cpu`, `cuda`, `cuda:N`).
    pub device: &'a str,
    /// Activation and KV dtype (`f32`, `bf16`, `f16`).
    pub dtype: &'a str,
    /// Query-chunk length of the model's multi-token passes (`0`: one pass).
    pub prefill_chunk_tokens: usize,
    /// Largest gRPC message, bytes.
    pub max_message_bytes: usize,
    /// Longest prompt, tokens.
    pub max_prompt_tokens: usize,
    /// Most UTF-8 bytes of prompt text in one request, checked before tokenizing; `None`:
    /// [`DEFAULT_PROMPT_BYTES_PER_TOKEN`] per prompt token.
    pub max_prompt_bytes: Option<usize>,
    /// Concurrent model jobs.
    pub max_concurrent_jobs: usize,
    /// Logs and metrics.
    pub telemetry: &'a TelemetryConfig,
    /// `[tls]`, `[auth]` and `[connections]`.
    pub transport: ServerSections<'a>,
}

impl CommonSettings<'_> {
    /// Most UTF-8 bytes of prompt text one request may carry (question, choices, passage,
    /// query or raw text together), checked before any tokenizing.
    pub fn prompt_bytes(&self) -> usize {
        prompt_bytes_limit(self.max_prompt_bytes, self.max_prompt_tokens)
    }

    /// Largest request message a server decodes: the prompt text, eight bytes per prompt
    /// token (a Refine's positions), and [`REQUEST_OVERHEAD_BYTES`]; never above
    /// `max_message_bytes`. Larger requests are refused by tonic before any handler runs.
    pub fn max_request_bytes(&self) -> usize {
        self.prompt_bytes()
            .saturating_add(self.max_prompt_tokens.saturating_mul(8))
            .saturating_add(REQUEST_OVERHEAD_BYTES)
            .min(self.max_message_bytes)
    }

    /// Records every problem of the common settings.
    pub fn check(&self, p: &mut Problems) {
        if let Err(e) = ModelSpec::parse(self.model) {
            p.push("model", e);
        }
        match self.device.parse::<DeviceSpec>() {
            Ok(device) => {
                if let Err(e) = device.check_built() {
                    p.push("device", e);
                }
            }
            Err(e) => p.push("device", e),
        }
        if let Err(e) = self.dtype.parse::<DtypeSpec>() {
            p.push("dtype", e);
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
            self.max_prompt_bytes != Some(0),
            "limits.max_prompt_bytes",
            "must be positive (leave it unset for 16 bytes per prompt token)",
        );
        p.check(
            self.max_concurrent_jobs > 0,
            "limits.max_concurrent_jobs",
            "must be positive",
        );
        self.telemetry.validate(p);
        self.transport.check(p);
    }
}

/// The [`CommonSettings`] of a service configuration that holds them under the common names
/// (`listen_addr`, `model`, `device`, `dtype`, `prefill_chunk_tokens`, `telemetry`, `tls`, `auth`,
/// `connections`, and
/// `limits.max_message_bytes`, `max_prompt_tokens`, `max_prompt_bytes`,
/// `max_concurrent_jobs`): both services' `ServiceConfig::common`.
#[macro_export]
macro_rules! common_settings {
    ($config:expr) => {
        $crate::config::CommonSettings {
            listen_addr: $config.listen_addr,
            model: &$config.model,
            device: &$config.device,
            dtype: &$config.dtype,
            prefill_chunk_tokens: $config.prefill_chunk_tokens,
            max_message_bytes: $config.limits.max_message_bytes,
            max_prompt_tokens: $config.limits.max_prompt_tokens,
            max_prompt_bytes: $config.limits.max_prompt_bytes,
            max_concurrent_jobs: $config.limits.max_concurrent_jobs,
            telemetry: &$config.telemetry,
            transport: $crate::transport::ServerSections {
                tls: &$config.tls,
                auth: &$config.auth,
                connections: &$config.connections,
            },
        }
    };
}

/// A service's one typed configuration: layered loading and validation of the common settings
/// are said here once; each service adds its own checks.
pub trait ServiceConfig: DeserializeOwned + serde::Serialize + Default {
    /// Environment prefix (`KVWIRE_SHARER`, ...).
    const ENV_PREFIX: &'static str;

    /// Keys whose environment variables hold comma-separated lists (dotted, lower case).
    const ENV_LIST_KEYS: &'static [&'static str] = &[];

    /// The settings every service has.
    fn common(&self) -> CommonSettings<'_>;

    /// Records the problems of this service's own settings.
    fn check_own(&self, p: &mut Problems);

    /// The device and dtype the model runs on (checked by [`ServiceConfig::validate`]).
    fn placement(&self) -> Result<Placement, DeviceError> {
        let c = self.common();
        Placement::parse(c.device, c.dtype)
    }

    /// Checks every field; all problems are reported in one error.
    fn validate(&self) -> Result<(), ConfigError> {
        let mut p = Problems::new();
        self.common().check(&mut p);
        self.check_own(&mut p);
        p.into_result()
    }

    /// Loads defaults, `file` and the environment, then validates.
    fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let config: Self = load_layered_with_lists(file, Self::ENV_PREFIX, Self::ENV_LIST_KEYS)?;
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
mod tests;
