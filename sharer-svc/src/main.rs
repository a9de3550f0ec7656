//! The `sharer-svc` binary: loads the layered config (`--config FILE`, then
//! `KVWIRE_SHARER__*` environment variables), starts telemetry, serves until Ctrl-C/SIGTERM;
//! `--health-check URL` instead probes a running service (gRPC health) and exits 0 or 1.
//! The command line and start-up are service-kit's (`service_kit::server::binary`).

use service_kit::server::binary::{Binary, main as run};
use sharer_svc::SharerConfig;

/// mimalloc rather than glibc's malloc: 1.4-1.5x the gRPC goodput, 0.66-0.80x the CPU per byte
/// (`loadtest goodput`; `service_kit::alloc`; docs/OPERATIONS.md, "Transport tuning").
#[global_allocator]
static GLOBAL: service_kit::alloc::Allocator = service_kit::alloc::Allocator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = Binary {
        name: "sharer-svc",
        about: "KVWire sharer service (gRPC)",
        health_service: kvwire_proto::service_names::SHARER,
    };
    run::<SharerConfig, _, _, _>(binary, sharer_svc::serve).await
}
