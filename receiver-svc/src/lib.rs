//! Receiver service: pulls KVWire from a sharer (decoding frames as they arrive), fuses the
//! sharer cache into its own through the pair's fuser, scores, asks for round 2 when unsure,
//! and reports bytes at three levels (blob, gRPC message, TCP) and per-stage timings.
//!
//! [`serve`] runs the gRPC server (Receiver, health, reflection) on a bound listener until the
//! shutdown future resolves; the binary and the coordinator's embedded mode both use it.

pub mod allow;
pub mod channels;
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
use service_kit::server::{Prepared, prepare, serve_grpc};
use service_kit::transport::client::ClientTransport;
use tokio::net::TcpListener;

pub use config::ReceiverConfig;
pub use engine::ReceiverEngine;
pub use error::ReceiverError;
pub use serve_error::ReceiverServeError;
pub use service::ReceiverService;

/// Serves the receiver on `listener` until `shutdown` resolves.
///
/// Validates the config, loads its certificates and tokens, the model and the sharer client
/// first; health reports SERVING once loaded. Telemetry is not initialised here: binaries call
/// `service_kit::server::listen`. The error says which step failed: configuration, model,
/// fuser, or the gRPC server.
pub async fn serve(
    config: ReceiverConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ReceiverServeError> {
    let Prepared { transport, model } = prepare("receiver", &config).await?;
    let sharer_client = ClientTransport::load(&config.sharer_client, "sharer_client.ca")
        .map_err(|source| ReceiverServeError::SharerClient { source })?;
    tracing::info!("receiver's sharer client: {sharer_client}");
    // Requests are small (an example); the sharer client's frames may be large.
    let max_request = config.common().max_request_bytes();
    let max = config.limits.max_message_bytes;
    let core = evaluate::ReceiverCore::new(ReceiverEngine::new(model), config, sharer_client)
        .map_err(|source| ReceiverServeError::Fuser { source })?;
    let receiver = ReceiverServer::new(ReceiverService::new(core))
        .max_decoding_message_size(max_request)
        .max_encoding_message_size(max);
    Ok(serve_grpc("receiver", receiver, listener, transport, shutdown).await?)
}
