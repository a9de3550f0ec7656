//! The `--otlp-*` options of `run` and `demo`: OpenTelemetry export of the run's spans, one
//! trace per Evaluate call (docs/OPERATIONS.md, "Traces (OTLP)"), checked as the services check
//! their `[telemetry.otlp]` section.

use anyhow::bail;
use clap::Args;

/// OpenTelemetry export of the run's spans.
#[derive(Debug, Args)]
pub struct OtlpArgs {
    /// OTLP/gRPC collector (`http://HOST:4317`): every Evaluate call starts a trace that the
    /// receiver and the sharer continue, exported there; unset: no export.
    #[arg(
        long,
        value_name = "URL",
        env = "KVWIRE_COORDINATOR__TELEMETRY__OTLP__ENDPOINT"
    )]
    otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    #[arg(
        long,
        default_value = "coordinator",
        env = "KVWIRE_COORDINATOR__TELEMETRY__OTLP__SERVICE_NAME"
    )]
    otlp_service_name: String,
    /// Fraction of evaluations traced (0 to 1).
    #[arg(
        long,
        default_value_t = 1.0,
        env = "KVWIRE_COORDINATOR__TELEMETRY__OTLP__SAMPLING_RATIO"
    )]
    otlp_sampling_ratio: f64,
}

impl OtlpArgs {
    /// The settings, checked as the services check theirs.
    pub fn config(&self) -> anyhow::Result<service_kit::otlp::OtlpConfig> {
        let config = service_kit::otlp::OtlpConfig {
            endpoint: self.otlp_endpoint.clone(),
            service_name: Some(self.otlp_service_name.clone()),
            sampling_ratio: self.otlp_sampling_ratio,
        };
        let mut problems = service_kit::config::Problems::new();
        config.validate("telemetry.otlp.", &mut problems);
        if !problems.list().is_empty() {
            bail!("{problems}");
        }
        Ok(config)
    }
}
