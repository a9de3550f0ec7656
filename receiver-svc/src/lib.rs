//! Receiver service: pulls KVWire from a sharer (decoding frames as they arrive), fuses the
//! sharer cache into its own through the pair's fuser, scores, asks for round 2 when unsure,
//! and reports bytes at three levels (blob, gRPC message, TCP) and per-stage timings.
//!
//! [`serve`] runs the gRPC server (Receiver, health, reflection) on a bound listener until the
//! shutdown future resolves; the binary and the coordinator's embedded mode both use it.

pub mod allow;
pub mod client;
pub mod config;
pub mod decode;
pub mod domain;
pub mod engine;
pub mod error;
pub mod evaluate;
pub mod report;
mod serve_error;
pub mod service;

use std::future::Future;

use kvwire_proto::v1::receiver_server::ReceiverServer;
use service_kit::config::ServiceConfig;
use service_kit::server::{ServeError, load_model, serve_grpc};
use tokio::net::TcpListener;

pub use config::ReceiverConfig;
pub use engine::ReceiverEngine;
pub use error::ReceiverError;
pub use serve_error::ReceiverServeError;
pub use service::ReceiverService;

/// Serves the receiver on `listener` until `shutdown` resolves.
///
/// Validates the config and loads the model first; health reports SERVING once loaded.
/// Telemetry is not initialised here: binaries call `service_kit::server::listen`.
/// The error says which step failed: configuration, model, fuser, or the gRPC server.
pub async fn serve(
    config: ReceiverConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverServeError> {
    config.validate().map_err(|source| ServeError::Config {
        service: "receiver",
        source,
    })?;
    service_kit::metrics_catalog::describe_all();
    let placement = config.placement().map_err(ServeError::Device)?;
    let loaded = load_model(&config.model, placement).await?;
    tracing::info!(model = %config.model, device = %config.device, dtype = %config.dtype, addr = ?listener.local_addr().ok(), "receiver ready");
    // Requests are small (an example); the sharer client's frames may be large.
    let max_request = config.common().max_request_bytes();
    let max = config.limits.max_message_bytes;
    let core = evaluate::ReceiverCore::new(ReceiverEngine::new(loaded), config)
        .map_err(|source| ReceiverServeError::Fuser { source })?;
    let receiver = ReceiverServer::new(ReceiverService::new(core))
        .max_decoding_message_size(max_request)
        .max_encoding_message_size(max);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    Ok(serve_grpc(receiver, incoming, shutdown).await?)
}
