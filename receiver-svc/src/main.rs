//! The `receiver-svc` binary: loads the layered config (`--config FILE`, then
//! `KVWIRE_RECEIVER__*` environment variables), starts telemetry, serves until Ctrl-C/SIGTERM;
//! `--health-check URL` instead probes a running service (gRPC health) and exits 0 or 1.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use receiver_svc::ReceiverConfig;
use service_kit::config::ServiceConfig;

/// Command line of the receiver service.
#[derive(Debug, Parser)]
#[command(
    name = "receiver-svc",
    version,
    about = "KVWire receiver service (gRPC)"
)]
struct Cli {
    /// TOML config file; environment variables `KVWIRE_RECEIVER__<SECTION>__<KEY>` override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Instead of serving: ask the service at URL (`http://127.0.0.1:PORT`) whether it is
    /// SERVING (gRPC health), exit 0 if so and 1 otherwise (container health checks).
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    health_check: Option<String>,
    /// Seconds `--health-check` waits for an answer.
    #[arg(long, default_value_t = 5, requires = "health_check")]
    health_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(url) = &cli.health_check {
        let timeout = std::time::Duration::from_secs(cli.health_timeout_secs);
        return service_kit::health::check(url, kvwire_proto::service_names::RECEIVER, timeout)
            .await
            .context("health check");
    }
    let config = ReceiverConfig::load(cli.config.as_deref()).context("configuration")?;
    let listener = service_kit::server::listen(&config.telemetry, config.listen_addr).await?;
    receiver_svc::serve(config, listener, service_kit::shutdown::signal())
        .await
        .context("receiver service")
}
