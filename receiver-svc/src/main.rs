//! The `receiver-svc` binary: loads the layered config (`--config FILE`, then
//! `KVWIRE_RECEIVER__*` environment variables), starts telemetry, serves until Ctrl-C/SIGTERM.

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = ReceiverConfig::load(cli.config.as_deref()).context("configuration")?;
    let listener = service_kit::server::listen(&config.telemetry, config.listen_addr).await?;
    receiver_svc::serve(config, listener, service_kit::shutdown::signal())
        .await
        .context("receiver service")
}
