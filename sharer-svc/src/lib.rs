//! Sharer service: runs its model over a prompt, selects and quantizes the KV cache, and streams
//! it as KVWire v2 frames over gRPC; keeps sessions for refinement; serves text baselines and its
//! own answer (the sharer-only method).
//!
//! [`serve`] runs the gRPC server (Sharer, health, reflection) on a bound listener until the
//! shutdown future resolves; the binary and the coordinator's embedded mode both use it.

pub mod config;
pub mod device_quant;
pub mod domain;
pub mod engine;
pub mod error;
pub mod plan;
pub mod produce;
pub mod reservation;
pub mod select;
pub mod service;
pub mod session_state;
pub mod sessions;
pub mod share_round;
pub mod text;

use std::future::Future;
use std::time::Duration;

use kvwire_proto::v1::sharer_server::{Sharer, SharerServer};
use service_kit::config::ServiceConfig;
use service_kit::server::{Prepared, ServeError, prepare, serve_grpc};
use tokio::net::TcpListener;

pub use config::SharerConfig;
pub use engine::SharerEngine;
pub use error::SharerError;
pub use service::SharerService;

/// Serves the sharer on `listener` until `shutdown` resolves.
///
/// Validates the config, loads its certificates and tokens and the model first; health reports
/// SERVING once the model is loaded. Telemetry is not initialised here: binaries call
/// `service_kit::server::listen`. The error says which step failed: configuration, model, or
/// the gRPC server.
pub async fn serve(
    config: SharerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Prepared { transport, model } = prepare("sharer", &config).await?;
    let engine = SharerEngine::new(model);
    let sessions = sessions::SessionStore::new(
        config.sessions.capacity,
        config.sessions.max_bytes,
        Duration::from_secs(config.sessions.ttl_secs),
    )
    .with_client_limits(
        config.sessions.max_per_client,
        config.sessions.max_bytes_per_client,
    );
    let service = SharerService::new(engine, config.limits.clone(), sessions);
    serve_grpc(
        "sharer",
        sharer_server(service, &config),
        listener,
        transport,
        shutdown,
    )
    .await
}

/// The gRPC server of `service` with `config`'s message limits (`loadtest goodput` serves
/// its transport-only sharer through it).
pub fn sharer_server<S: Sharer>(service: S, config: &SharerConfig) -> SharerServer<S> {
    // Requests are small (prompt text, positions); frames may be large.
    SharerServer::new(service)
        .max_decoding_message_size(config.common().max_request_bytes())
        .max_encoding_message_size(config.limits.max_message_bytes)
}
