//! Start-up shared by both services: telemetry and the listening socket for the binaries, the
//! model loaded off the async threads, and the gRPC server with health (SERVING for the
//! service once it is built, that is once its model is loaded) and reflection beside it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;

pub mod binary;
pub mod reflection;
pub mod request_log;
pub mod status_fix;

use crate::config::{ConfigError, ServiceConfig};
use crate::counting::ByteCounters;
use crate::device::{DeviceError, Placement};
use crate::model_load::{LoadError, LoadedModel, load_on};
use crate::model_spec::{ModelSpec, SpecError};
use crate::otlp::Exporter;
use crate::telemetry::{TelemetryConfig, TelemetryError, init};
use crate::transport::ServerTransport;
use crate::transport::auth::AuthLayer;
use crate::transport::bounds::bounded_incoming;

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

/// For the binaries: initialises telemetry (`service` names exported spans unless the config
/// does), then binds the listen address. The span exporter comes back with the listener, to be
/// shut down (flushed) once serving ends.
pub async fn listen(
    telemetry: &TelemetryConfig,
    service: &str,
    addr: SocketAddr,
) -> Result<(TcpListener, Exporter), ServeError> {
    let exporter = init(telemetry, service)?;
    match TcpListener::bind(addr).await {
        Ok(listener) => Ok((listener, exporter)),
        Err(source) => {
            exporter.shutdown().await;
            Err(ServeError::Bind { addr, source })
        }
    }
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

/// What a service has before it serves: its transport and its loaded model.
#[derive(Debug)]
pub struct Prepared {
    /// TLS, tokens and connection bounds, loaded from the configuration.
    pub transport: ServerTransport,
    /// The model, on its device.
    pub model: LoadedModel,
}

/// The start-up steps both services share: validates `config` (every problem reported
/// together), loads its certificates and tokens, describes the metrics, and loads the model
/// on the configured device and dtype, with its `prefill_chunk_tokens`. `role` names the service
/// in errors and logs.
pub async fn prepare<C: ServiceConfig>(
    role: &'static str,
    config: &C,
) -> Result<Prepared, ServeError> {
    let invalid = |source| ServeError::Config {
        service: role,
        source,
    };
    config.validate().map_err(invalid)?;
    let common = config.common();
    let transport = ServerTransport::load(common.transport).map_err(invalid)?;
    crate::metrics_catalog::describe_all();
    let placement = config.placement()?;
    let mut model = load_model(common.model, placement).await?;
    model.model = model
        .model
        .with_prefill_chunk_tokens(common.prefill_chunk_tokens);
    tracing::info!(model = %common.model, device = %common.device, dtype = %common.dtype, prefill_chunk_tokens = common.prefill_chunk_tokens, "{role} model loaded");
    Ok(Prepared { transport, model })
}

/// Serves `service` on `listener` under `transport` (TLS or plain TCP, the token check, the
/// connection bounds), with gRPC health (SERVING for it) and reflection (v1 and v1alpha,
/// listing exactly `service`, health and reflection, with their descriptors, so grpcurl and
/// the Python `grpcio-reflection` client work without the `.proto` files), until `shutdown`.
/// Statuses tonic makes before a handler runs are corrected by
/// [`status_fix::StatusFixLayer`] (`docs/STATUS_CODES.md`), and every call gets one log line
/// ([`request_log`]). The bytes of every connection (TLS records under TLS) go to the `{role}`
/// transport bytes metric.
pub async fn serve_grpc<S>(
    role: &'static str,
    service: S,
    listener: TcpListener,
    transport: ServerTransport,
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
{
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let (reflection_v1, reflection_v1alpha) = reflection::services(S::NAME)?;
    health_reporter.set_serving::<S>().await;
    tracing::info!(addr = ?listener.local_addr().ok(), "{role} transport: {transport}");
    let mut builder = transport.http2.server(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(transport.ping_interval()))
            .http2_keepalive_timeout(Some(transport.ping_interval())),
    );
    if let Some(tls) = transport.tls.clone() {
        builder = builder.tls_config(tls)?;
    }
    let counters = ByteCounters::new();
    let incoming = bounded_incoming(role, listener, counters.clone(), transport.bounds);
    let reporter = tokio::spawn(report_transport(role, counters));
    let served = builder
        .layer(request_log::RequestLogLayer::new(role))
        .layer(status_fix::StatusFixLayer::new(
            role,
            &reflection::served(S::NAME),
        ))
        .layer(AuthLayer::new(role, transport.tokens.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    reporter.abort();
    Ok(served?)
}

/// Adds the transport bytes of all of a server's connections to the bytes metric once a
/// second.
async fn report_transport(role: &'static str, counters: Arc<ByteCounters>) {
    let mut last = counters.snapshot();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let now = counters.snapshot();
        let delta = now.since(last);
        crate::metrics_catalog::add_bytes(role, "transport_read", delta.read);
        crate::metrics_catalog::add_bytes(role, "transport_written", delta.written);
        last = now;
    }
}
