//! The `receiver-svc` binary: loads the layered config (`--config FILE`, then
//! `KVWIRE_RECEIVER__*` environment variables), starts telemetry, serves until Ctrl-C/SIGTERM;
//! `--health-check URL` instead probes a running service (gRPC health) and exits 0 or 1.
//! The command line and start-up are service-kit's (`service_kit::server::binary`).

use receiver_svc::ReceiverConfig;
use service_kit::server::binary::{Binary, main as run};

/// mimalloc rather than glibc's malloc: 1.4-1.5x the gRPC goodput, 0.66-0.80x the CPU per byte
/// (`loadtest goodput`; `service_kit::alloc`; docs/OPERATIONS.md, "Transport tuning").
#[global_allocator]
static GLOBAL: service_kit::alloc::Allocator = service_kit::alloc::Allocator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let binary = Binary {
        name: "receiver-svc",
        about: "KVWire receiver service (gRPC)",
        health_service: kvwire_proto::service_names::RECEIVER,
    };
    run::<ReceiverConfig, _, _, _>(binary, receiver_svc::serve).await
}
