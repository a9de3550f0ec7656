//! The `sharer-svc` binary: loads the layered config (`--config FILE`, then
//! `KVWIRE_SHARER__*` environment variables), starts telemetry, serves until Ctrl-C/SIGTERM;
//! `--health-check URL` instead probes a running service (gRPC health) and exits 0 or 1.
//! The command line and start-up are service-kit's (`service_kit::server::binary`).

use service_kit::server::binary::{Binary, main as run};
use sharer_svc::SharerConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = Binary {
        name: "sharer-svc",
        about: "KVWire sharer service (gRPC)",
        health_service: kvwire_proto::service_names::SHARER,
    };
    run::<SharerConfig, _, _, _>(binary, sharer_svc::serve).await
}
