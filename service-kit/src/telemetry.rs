//! One `init` for telemetry: the tracing subscriber (env filter, plain or JSON lines) and the
//! Prometheus exporter on its own port, with every metric described and explicit buckets.
//!
//! OTLP export is not compiled in: the `opentelemetry`/`tracing-opentelemetry` stack roughly
//! doubles the dependency build of the services on the 2-core build machine. Trace context is
//! still propagated (`trace_context`) and recorded as the `trace_id` span field, so logs of both
//! services join on it.

use std::io::IsTerminal;
use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;

use crate::config::Problems;
use crate::{metrics_catalog, process_metrics};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line.
    Json,
}

/// Telemetry settings shared by both services (section `[telemetry]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `tracing` env-filter directives, e.g. `info,sharer_svc=debug`.
    pub log_filter: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Address of the Prometheus `/metrics` listener; none disables the exporter.
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_filter: "info".into(),
            log_format: LogFormat::Plain,
            metrics_addr: None,
        }
    }
}

impl TelemetryConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        if let Err(e) = EnvFilter::try_new(&self.log_filter) {
            problems.push("telemetry.log_filter", e);
        }
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter directives do not parse.
    #[error("log filter {filter:?}: {source}")]
    Filter {
        /// The directives.
        filter: String,
        /// Parser error.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global subscriber was already installed.
    #[error("tracing subscriber already installed: {0}")]
    Subscriber(String),
    /// The process-metrics sampler thread could not be started.
    #[error("process metrics sampler: {0}")]
    Sampler(#[source] std::io::Error),
    /// The Prometheus exporter could not be built or bound.
    #[error("prometheus exporter on {addr}: {source}")]
    Metrics {
        /// The listener address.
        addr: SocketAddr,
        /// Exporter error.
        #[source]
        source: metrics_exporter_prometheus::BuildError,
    },
}

/// Installs the tracing subscriber and, when configured, the Prometheus exporter; describes
/// every metric. Call once per process, from a binary, inside the tokio runtime. Log lines
/// carry ANSI colours only when standard output is a terminal and `NO_COLOR` is not set:
/// redirected to a file or a pipe (a container's log driver, `> service.log`) they are plain.
pub fn init(config: &TelemetryConfig) -> Result<(), TelemetryError> {
    let filter =
        EnvFilter::try_new(&config.log_filter).map_err(|source| TelemetryError::Filter {
            filter: config.log_filter.clone(),
            source,
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours())
        .with_target(true);
    let installed = match config.log_format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    if let Some(addr) = config.metrics_addr {
        install_prometheus(addr)?;
    }
    metrics_catalog::describe_all();
    Ok(())
}

/// Whether log lines carry ANSI colours: only on a terminal, and not when `NO_COLOR` is set
/// (<https://no-color.org>).
fn colours() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Installs the global Prometheus recorder with its HTTP listener on `addr` (inside a tokio
/// runtime), and the sampler of the process metrics (`process_metrics`).
pub fn install_prometheus(addr: SocketAddr) -> Result<(), TelemetryError> {
    let err = |source| TelemetryError::Metrics { addr, source };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            metrics_catalog::LATENCY_BUCKETS_SECONDS,
        )
        .map_err(err)?
        .install()
        .map_err(err)?;
    process_metrics::spawn_sampler().map_err(TelemetryError::Sampler)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_filter_is_a_validation_problem() {
        let cfg = TelemetryConfig {
            log_filter: "info,[=".into(),
            ..Default::default()
        };
        let mut problems = Problems::new();
        cfg.validate(&mut problems);
        assert_eq!(problems.list().len(), 1, "{problems}");
        let mut ok = Problems::new();
        TelemetryConfig::default().validate(&mut ok);
        assert!(ok.list().is_empty());
    }
}
