//! The `sharer-svc` binary: loads the layered config (`--config FILE`, then
//! `KVWIRE_SHARER__*` environment variables), starts telemetry, serves until Ctrl-C/SIGTERM.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use service_kit::config::ServiceConfig;
use sharer_svc::SharerConfig;

/// Command line of the sharer service.
#[derive(Debug, Parser)]
#[command(name = "sharer-svc", version, about = "KVWire sharer service (gRPC)")]
struct Cli {
    /// TOML config file; environment variables `KVWIRE_SHARER__<SECTION>__<KEY>` override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = SharerConfig::load(cli.config.as_deref()).context("configuration")?;
    let listener = service_kit::server::listen(&config.telemetry, config.listen_addr).await?;
    sharer_svc::serve(config, listener, service_kit::shutdown::signal())
        .await
        .context("sharer service")
}
