//! The one `main` of both service binaries: parse the command line, then either probe a running
//! service (`--health-check URL`, over TLS with `--tls-ca` and friends) or load the layered
//! configuration (`--config FILE`, then `{ENV_PREFIX}__*` variables), start telemetry, bind the
//! listen address and serve until Ctrl-C/SIGTERM, then flush the span exporter.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches, Parser};
use tokio::net::TcpListener;

use crate::config::ServiceConfig;
use crate::transport::client::ClientTransport;
use crate::transport::settings::ClientSettings;

/// The command line of a service binary.
#[derive(Debug, Parser)]
struct ServiceCli {
    /// TOML config file; environment variables `<PREFIX>__<SECTION>__<KEY>` override it
    /// (`KVWIRE_SHARER__TLS__MODE=tls`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Instead of serving: ask the service at URL (`http://127.0.0.1:PORT`, or `https://` with
    /// `--tls-ca`) whether it is SERVING (gRPC health), exit 0 if so and 1 otherwise
    /// (container health checks).
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    health_check: Option<String>,
    /// Seconds `--health-check` waits for an answer.
    #[arg(long, default_value_t = 5, requires = "health_check")]
    health_timeout_secs: u64,
    /// TLS of `--health-check` (health needs no token).
    #[command(flatten)]
    client: ClientSettings,
}

/// What names a service binary.
#[derive(Debug, Clone, Copy)]
pub struct Binary {
    /// The binary's name (`sharer-svc`).
    pub name: &'static str,
    /// One line about it.
    pub about: &'static str,
    /// The full gRPC name of its service, for `--health-check`.
    pub health_service: &'static str,
}

/// Runs a service binary: `serve` gets the loaded configuration, the bound listener and the
/// shutdown signal.
pub async fn main<C, F, Fut, E>(binary: Binary, serve: F) -> anyhow::Result<()>
where
    C: ServiceConfig,
    F: FnOnce(C, TcpListener, crate::shutdown::Signal) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let command = ServiceCli::command()
        .name(binary.name)
        .about(binary.about)
        .version(env!("CARGO_PKG_VERSION"));
    let cli = ServiceCli::from_arg_matches(&command.get_matches())?;
    if let Some(url) = &cli.health_check {
        let timeout = Duration::from_secs(cli.health_timeout_secs);
        let client = ClientTransport::load(&cli.client, "--tls-ca")?;
        return crate::health::check(url, binary.health_service, timeout, &client)
            .await
            .context("health check");
    }
    let config = C::load(cli.config.as_deref()).context("configuration")?;
    let common = config.common();
    let (listener, exporter) =
        super::listen(common.telemetry, binary.name, common.listen_addr).await?;
    let served = serve(config, listener, Box::pin(crate::shutdown::signal())).await;
    // The spans of the last calls (and of a failed start) are exported before the exit.
    exporter.shutdown().await;
    served.with_context(|| binary.name)
}
