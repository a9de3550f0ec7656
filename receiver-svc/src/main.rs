//! The `receiver-svc` binary: loads the layered config (`--config FILE`, then
//! `KVWIRE_RECEIVER__*` environment variables), starts telemetry, serves until Ctrl-C/SIGTERM.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use receiver_svc::ReceiverConfig;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = ReceiverConfig::load(cli.config.as_deref()).context("configuration")?;
    service_kit::telemetry::init(&config.telemetry).context("telemetry")?;
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .with_context(|| format!("binding {}", config.listen_addr))?;
    receiver_svc::serve(config, listener, service_kit::shutdown::signal()).await
}
