//! Sharer service: runs its model over a prompt, selects and quantizes the KV cache, and streams
//! it as KVWire v2 frames over gRPC; keeps sessions for refinement; serves text baselines and its
//! own answer (the sharer-only method).
//!
//! [`serve`] runs the gRPC server (Sharer, health, reflection) on a bound listener until the
//! shutdown future resolves; the binary and the coordinator's embedded mode both use it.

pub mod config;
pub mod domain;
pub mod engine;
pub mod error;
pub mod plan;
pub mod produce;
pub mod select;
pub mod service;
pub mod session_state;
pub mod sessions;
pub mod share_round;
pub mod text;

use std::future::Future;
use std::time::Duration;

use kvwire_proto::v1::sharer_server::SharerServer;
use service_kit::config::ServiceConfig;
use service_kit::counting::{ByteCounters, counted_incoming};
use service_kit::server::{ServeError, load_model, serve_grpc};
use tokio::net::TcpListener;

pub use config::SharerConfig;
pub use engine::SharerEngine;
pub use error::SharerError;
pub use service::SharerService;

/// Serves the sharer on `listener` until `shutdown` resolves.
///
/// Validates the config and loads the model first; health reports SERVING once the model is
/// loaded. Telemetry is not initialised here: binaries call `service_kit::server::listen`.
/// The error says which step failed: configuration, model, or the gRPC server.
pub async fn serve(
    config: SharerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    config.validate().map_err(|source| ServeError::Config {
        service: "sharer",
        source,
    })?;
    service_kit::metrics_catalog::describe_all();
    let placement = config.placement().map_err(ServeError::Device)?;
    let engine = SharerEngine::new(load_model(&config.model, placement).await?);
    tracing::info!(model = %config.model, device = %config.device, dtype = %config.dtype, addr = ?listener.local_addr().ok(), "sharer ready");
    let sessions = sessions::SessionStore::new(
        config.sessions.capacity,
        config.sessions.max_bytes,
        Duration::from_secs(config.sessions.ttl_secs),
    );
    // Requests are small (prompt text, positions); frames may be large.
    let max_request = config.common().max_request_bytes();
    let max = config.limits.max_message_bytes;
    let sharer = SharerServer::new(SharerService::new(engine, config.limits.clone(), sessions))
        .max_decoding_message_size(max_request)
        .max_encoding_message_size(max);
    let counters = ByteCounters::new();
    let reporter = tokio::spawn(report_transport(counters.clone()));
    let served = serve_grpc(sharer, counted_incoming(listener, counters), shutdown).await;
    reporter.abort();
    served
}

/// Adds the TCP bytes of all sharer connections to the bytes metric once a second.
async fn report_transport(counters: std::sync::Arc<ByteCounters>) {
    let mut last = counters.snapshot();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = counters.snapshot();
        let delta = now.since(last);
        service_kit::metrics_catalog::add_bytes("sharer", "transport_read", delta.read);
        service_kit::metrics_catalog::add_bytes("sharer", "transport_written", delta.written);
        last = now;
    }
}
