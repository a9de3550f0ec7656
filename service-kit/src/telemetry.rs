//! One `init` for telemetry: the tracing subscriber (env filter, plain or JSON lines, and the
//! OpenTelemetry layer when OTLP export is configured: `otlp`) and the Prometheus exporter on
//! its own port, with every metric described and explicit buckets. Trace context is propagated
//! (`trace_context`) and recorded as the `trace_id` span field whether or not spans are
//! exported, so logs of both services join on it.

use std::io::IsTerminal;
use std::net::SocketAddr;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde::{Deserialize, Serialize};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::config::Problems;
use crate::otlp::{self, Exporter, ExporterError, OtlpConfig};
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
    /// OpenTelemetry trace export (`[telemetry.otlp]`; off unless `endpoint` is set).
    pub otlp: OtlpConfig,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_filter: "info".into(),
            log_format: LogFormat::Plain,
            metrics_addr: None,
            otlp: OtlpConfig::default(),
        }
    }
}

impl TelemetryConfig {
    /// Adds this section's problems to `problems`.
    pub fn validate(&self, problems: &mut Problems) {
        if let Err(e) = EnvFilter::try_new(&self.log_filter) {
            problems.push("telemetry.log_filter", e);
        }
        self.otlp.validate("telemetry.otlp.", problems);
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
    /// The OTLP span exporter could not be built.
    #[error(transparent)]
    Otlp(#[from] ExporterError),
}

/// Installs the tracing subscriber (with the OpenTelemetry layer when `config.otlp` names an
/// endpoint) and, when configured, the Prometheus exporter; describes every metric and logs
/// whether spans are exported. `service` is the default `service.name` of exported spans (the
/// binary's name). Call once per process, from a binary, inside the tokio runtime, and
/// [`Exporter::shutdown`] the result before exiting. Log lines carry ANSI colours only when
/// standard output is a terminal and `NO_COLOR` is not set: redirected to a file or a pipe (a
/// container's log driver, `> service.log`) they are plain.
pub fn init(config: &TelemetryConfig, service: &str) -> Result<Exporter, TelemetryError> {
    let filter =
        EnvFilter::try_new(&config.log_filter).map_err(|source| TelemetryError::Filter {
            filter: config.log_filter.clone(),
            source,
        })?;
    let lines = tracing_subscriber::fmt::layer()
        .with_ansi(colours())
        .with_target(true);
    let lines = match config.log_format {
        LogFormat::Plain => lines.boxed(),
        LogFormat::Json => lines.json().flatten_event(true).boxed(),
    };
    let (exporter, tracer) = otlp::build(&config.otlp, service)?;
    // The log filter governs log lines only: spans at info and above are exported whatever it
    // says (`log_filter = "warn"` quietens the log, not the traces).
    let spans = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_filter(LevelFilter::INFO)
    });
    tracing_subscriber::registry()
        .with(lines.with_filter(filter))
        .with(spans)
        .try_init()
        .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    otlp::log_state(&config.otlp, service);
    if let Some(addr) = config.metrics_addr {
        install_prometheus(addr)?;
    }
    metrics_catalog::describe_all();
    Ok(exporter)
}

/// For a process that writes no log lines of its own (the coordinator): when `config` names an
/// endpoint, installs the OpenTelemetry layer (spans at info and above) and, on standard error,
/// only the exporter's own warnings and errors (a collector that cannot be reached). Inside
/// the tokio runtime; [`Exporter::shutdown`] the result before exiting.
pub fn init_export_only(config: &OtlpConfig, service: &str) -> Result<Exporter, TelemetryError> {
    let (exporter, tracer) = otlp::build(config, service)?;
    if let Some(tracer) = tracer {
        let export_problems = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                m.is_event()
                    && *m.level() <= tracing::Level::WARN
                    && m.target().starts_with("opentelemetry")
            }));
        tracing_subscriber::registry()
            .with(LevelFilter::INFO)
            .with(tracing_opentelemetry::layer().with_tracer(tracer))
            .with(export_problems)
            .try_init()
            .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
    }
    Ok(exporter)
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
