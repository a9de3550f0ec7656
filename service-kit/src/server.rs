//! Start-up shared by both services: telemetry and the listening socket for the binaries, the
//! model loaded off the async threads, and the gRPC server with health (SERVING for the
//! service once it is built, that is once its model is loaded) and reflection beside it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::transport::server::Connected;

pub mod reflection;
pub mod status_fix;

use crate::config::ConfigError;
use crate::device::{DeviceError, Placement};
use crate::model_load::{LoadError, LoadedModel, load_on};
use crate::model_spec::{ModelSpec, SpecError};
use crate::telemetry::{TelemetryConfig, TelemetryError, init};

/// Why a service could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The service's configuration is invalid.
    #[error("{service} configuration: {source}")]
    Config {
        /// Which service (`sharer`, `receiver`).
        service: &'static str,
        /// Every problem found.
        source: ConfigError,
    },
    /// Telemetry could not be initialised.
    #[error("telemetry: {0}")]
    Telemetry(#[from] TelemetryError),
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The model spec does not parse.
    #[error("model spec {spec:?}: {source}")]
    Spec {
        /// The spec.
        spec: String,
        /// Why.
        source: SpecError,
    },
    /// The device or dtype setting is unusable.
    #[error("device: {0}")]
    Device(#[from] DeviceError),
    /// The model could not be loaded.
    #[error("loading model {spec}: {source}")]
    Model {
        /// The spec.
        spec: String,
        /// Why.
        source: LoadError,
    },
    /// The loader thread panicked.
    #[error("model loader thread: {0}")]
    Loader(String),
    /// The reflection service could not be built.
    #[error("building the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// For the binaries: initialises telemetry, then binds the listen address.
pub async fn listen(
    telemetry: &TelemetryConfig,
    addr: SocketAddr,
) -> Result<TcpListener, ServeError> {
    init(telemetry)?;
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Parses `spec` and loads the model on `placement`'s device and dtype on a blocking thread.
pub async fn load_model(spec: &str, placement: Placement) -> Result<LoadedModel, ServeError> {
    let parsed = ModelSpec::parse(spec).map_err(|source| ServeError::Spec {
        spec: spec.to_string(),
        source,
    })?;
    tokio::task::spawn_blocking(move || load_on(&parsed, placement))
        .await
        .map_err(|e| ServeError::Loader(e.to_string()))?
        .map_err(|source| ServeError::Model {
            spec: spec.to_string(),
            source,
        })
}

/// Serves `service` on `incoming`, with gRPC health (SERVING for it) and reflection (v1 and
/// v1alpha, listing exactly `service`, health and reflection, with their descriptors, so
/// grpcurl and the Python `grpcio-reflection` client work without the `.proto` files), until
/// `shutdown`. Statuses tonic makes before a handler runs are corrected by
/// [`status_fix::StatusFixLayer`] (`docs/STATUS_CODES.md`).
pub async fn serve_grpc<S, I, IO, IE>(
    service: S,
    incoming: I,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let (reflection_v1, reflection_v1alpha) = reflection::services(S::NAME)?;
    health_reporter.set_serving::<S>().await;
    tonic::transport::Server::builder()
        .layer(status_fix::StatusFixLayer::new(&reflection::served(
            S::NAME,
        )))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
