//! Receiver service: pulls KVWire from a sharer (decoding frames as they arrive), fuses the
//! sharer cache into its own through the pair's fuser, scores, asks for round 2 when unsure,
//! and reports bytes at three levels (blob, gRPC message, TCP) and per-stage timings.
//!
//! [`serve`] runs the gRPC server (Receiver, health, reflection) on a bound listener until the
//! shutdown future resolves; the binary and the coordinator's embedded mode both use it.

pub mod client;
pub mod config;
pub mod decode;
pub mod domain;
pub mod engine;
pub mod error;
pub mod evaluate;
pub mod fuser;
pub mod report;
pub mod service;

use std::future::Future;

use anyhow::Context as _;
use kvwire_proto::v1::receiver_server::ReceiverServer;
use service_kit::model_spec::ModelSpec;
use tokio::net::TcpListener;

pub use config::ReceiverConfig;
pub use engine::ReceiverEngine;
pub use error::ReceiverError;
pub use service::ReceiverService;

/// Serves the receiver on `listener` until `shutdown` resolves.
///
/// Validates the config and loads the model first; health reports SERVING once loaded.
/// Telemetry is not initialised here: binaries call `service_kit::telemetry::init`.
pub async fn serve(
    config: ReceiverConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate().context("receiver configuration")?;
    service_kit::metrics_catalog::describe_all();
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(kvwire_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")?;
    let spec = ModelSpec::parse(&config.model)?;
    let loaded = tokio::task::spawn_blocking(move || service_kit::model_load::load(&spec))
        .await
        .context("model loader thread")?
        .with_context(|| format!("loading model {}", config.model))?;
    tracing::info!(model = %config.model, addr = ?listener.local_addr().ok(), "receiver ready");
    let max = config.limits.max_message_bytes;
    let core = evaluate::ReceiverCore::new(ReceiverEngine::new(loaded), config);
    let receiver = ReceiverServer::new(ReceiverService::new(core))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    health_reporter
        .set_serving::<ReceiverServer<ReceiverService>>()
        .await;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(receiver)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("receiver gRPC server")
}
