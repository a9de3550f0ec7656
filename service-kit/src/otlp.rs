//! OpenTelemetry trace export over OTLP/gRPC (`opentelemetry-otlp` on the workspace's tonic):
//! the settings both services and the coordinator share, the tracer provider (batch exporter,
//! parent-based ratio sampler, `service.name` resource) and its flush on shutdown.
//!
//! Export is off unless an endpoint is set. When it is on, `tracing` spans become OpenTelemetry
//! spans (`tracing-opentelemetry`), each server call gets a server span parented on the
//! incoming `traceparent` (`server::request_log`), and outgoing calls carry the current span's
//! context (`trace_context::TraceContext::outgoing`), so the spans of one evaluation in the
//! coordinator, the receiver and the sharer share one trace id.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use serde::{Deserialize, Serialize};

use crate::config::Problems;

/// How long one export call may take before it is given up (a collector that is down does not
/// hold the batch thread longer).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for the last spans to be exported.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether this process installed an exporter (read by the per-call server span).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans of this process are exported (an exporter was installed).
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Trace export settings: the `[telemetry.otlp]` table of both services
/// (`KVWIRE_SHARER__TELEMETRY__OTLP__ENDPOINT`, ...) and the coordinator's `--otlp-*` options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/gRPC endpoint, `http://HOST:PORT` (4317 by convention); unset (the
    /// default) or empty (an environment variable set to nothing): no export.
    pub endpoint: Option<String>,
    /// The `service.name` of exported spans; unset: the binary's name (`sharer-svc`,
    /// `receiver-svc`, `coordinator`).
    pub service_name: Option<String>,
    /// Fraction of new traces sampled, 0 to 1. A call that carries a `traceparent` follows the
    /// caller's decision (its sampled flag) whatever this says.
    pub sampling_ratio: f64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: None,
            sampling_ratio: 1.0,
        }
    }
}

impl OtlpConfig {
    /// Adds the problems of these settings to `problems` (`section` names their table).
    pub fn validate(&self, section: &str, problems: &mut Problems) {
        let key = |k: &str| format!("{section}{k}");
        if let Some(endpoint) = self.endpoint()
            && let Err(why) = check_endpoint(endpoint)
        {
            problems.push(&key("endpoint"), why);
        }
        let ratio = self.sampling_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            problems.push(
                &key("sampling_ratio"),
                format!("{ratio} is not between 0 and 1"),
            );
        }
        if self.service_name.as_deref().is_some_and(str::is_empty) {
            problems.push(&key("service_name"), "is empty");
        }
    }

    /// The endpoint spans are exported to, if any (an empty one is none).
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref().filter(|e| !e.trim().is_empty())
    }

    /// The service name spans are exported under: the configured one or `default`.
    pub fn service_name_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.service_name.as_deref().unwrap_or(default)
    }
}

/// Why an endpoint is refused: only plaintext `http://host:port` is built (OTLP over TLS is
/// not; a collector on the node or a sidecar is the usual set-up).
fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("{endpoint:?} is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") if uri.host().is_some() => Ok(()),
        Some("https") => Err(format!(
            "{endpoint:?}: OTLP over TLS is not built; use a collector reached over http://"
        )),
        _ => Err(format!("{endpoint:?}: expected http://HOST:PORT")),
    }
}

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter for {endpoint}: {source}")]
pub struct ExporterError {
    /// The endpoint.
    pub endpoint: String,
    /// The builder's error.
    #[source]
    pub source: opentelemetry_otlp::ExporterBuildError,
}

/// The installed tracer provider, if any; [`Exporter::shutdown`] exports what is still queued.
#[derive(Debug, Default)]
#[must_use = "shut the exporter down at exit, or the last spans are lost"]
pub struct Exporter {
    provider: Option<SdkTracerProvider>,
}

impl Exporter {
    /// No export.
    pub fn off() -> Self {
        Self::default()
    }

    /// Exports the spans still queued and stops the exporter (on a blocking thread: the
    /// export runs on this runtime's connections). Failures are logged, not returned: a
    /// process that is stopping has nothing better to do with them.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        EXPORTING.store(false, Ordering::Relaxed);
        let done =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT))
                .await;
        match done {
            Ok(Ok(())) => tracing::info!("OTLP trace export: flushed and stopped"),
            Ok(Err(e)) => tracing::warn!(error = %e, "OTLP trace export: shutdown failed"),
            Err(e) => tracing::warn!(error = %e, "OTLP trace export: shutdown task failed"),
        }
    }
}

/// Builds the tracer provider for `config` when it names an endpoint (inside a tokio runtime:
/// the gRPC channel lives on it); the tracer to give `tracing-opentelemetry` comes with it.
/// Spans are batched and exported every few seconds, and at [`Exporter::shutdown`].
pub fn build(
    config: &OtlpConfig,
    default_service: &str,
) -> Result<(Exporter, Option<SdkTracer>), ExporterError> {
    let Some(endpoint) = config.endpoint().map(str::to_string) else {
        return Ok((Exporter::off(), None));
    };
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|source| ExporterError { endpoint, source })?;
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio)));
    let resource = Resource::builder()
        .with_service_name(config.service_name_or(default_service).to_string())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("kvwire");
    EXPORTING.store(true, Ordering::Relaxed);
    Ok((
        Exporter {
            provider: Some(provider),
        },
        Some(tracer),
    ))
}

/// Logs whether export is on, where to and as what (once the subscriber is installed).
pub fn log_state(config: &OtlpConfig, default_service: &str) {
    match config.endpoint() {
        Some(endpoint) => tracing::info!(
            endpoint = %endpoint,
            service_name = config.service_name_or(default_service),
            sampling_ratio = config.sampling_ratio,
            "OTLP trace export on"
        ),
        None => tracing::info!("OTLP trace export off (no endpoint)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_ratios_are_checked() {
        let problems_of = |endpoint: Option<&str>, ratio: f64| {
            let config = OtlpConfig {
                endpoint: endpoint.map(str::to_string),
                sampling_ratio: ratio,
                ..OtlpConfig::default()
            };
            let mut p = Problems::new();
            config.validate("telemetry.otlp.", &mut p);
            p.list().len()
        };
        assert_eq!(problems_of(None, 1.0), 0);
        assert_eq!(problems_of(Some(""), 1.0), 0, "empty is unset");
        assert_eq!(problems_of(Some("http://127.0.0.1:4317"), 0.25), 0);
        assert_eq!(problems_of(Some("https://collector:4317"), 1.0), 1);
        assert_eq!(problems_of(Some("127.0.0.1:4317"), 1.0), 1);
        assert_eq!(problems_of(Some("http://127.0.0.1:4317"), 1.5), 1);
        assert_eq!(problems_of(Some("not a url"), -0.1), 2);
    }
}
