//! A one-shot gRPC health probe (`grpc.health.v1.Health/Check`), for the binaries'
//! `--health-check URL` flag: container health checks and scripts need no grpcurl or
//! grpc_health_probe in the image, only the service binary itself.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;

use crate::transport::client::ClientTransport;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Why a service is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The URL is not a valid endpoint.
    #[error("{url}: not a valid endpoint URL: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
    /// No answer within the timeout (not listening yet, or still loading its model).
    #[error("{url}: no health answer within {timeout:?}")]
    Timeout {
        /// The URL.
        url: String,
        /// The limit.
        timeout: Duration,
    },
    /// The connection or the call failed.
    #[error("{url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The service answered, but not SERVING.
    #[error("{url}: {service} is {status}")]
    NotServing {
        /// The URL.
        url: String,
        /// The service asked about.
        service: String,
        /// Its status name.
        status: String,
    },
}

/// Asks the server at `url` (`http://host:port`, or `https://` when `client` has a CA) whether `service` (its full gRPC name; `""`
/// for the server as a whole) is SERVING, within `timeout`.
pub async fn check(
    url: &str,
    service: &str,
    timeout: Duration,
    client: &ClientTransport,
) -> Result<(), HealthError> {
    let endpoint = client.endpoint(url).map_err(|e| HealthError::BadUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    let unreachable = |reason: String| HealthError::Unreachable {
        url: url.to_string(),
        reason,
    };
    let call = async {
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| unreachable(format!("connecting: {e}")))?;
        let request = HealthCheckRequest {
            service: service.to_string(),
        };
        HealthClient::new(channel)
            .check(request)
            .await
            .map(|r| r.into_inner().status)
            .map_err(|s| unreachable(format!("Health/Check: {}", s.message())))
    };
    let status =
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| HealthError::Timeout {
                url: url.to_string(),
                timeout,
            })??;
    if status == ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err(HealthError::NotServing {
            url: url.to_string(),
            service: if service.is_empty() {
                "the server".to_string()
            } else {
                service.to_string()
            },
            status: ServingStatus::try_from(status).map_or_else(
                |_| format!("status {status}"),
                |s| s.as_str_name().to_string(),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serving_not_serving_and_nobody_listening() {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("demo.Up", tonic_health::ServingStatus::Serving)
            .await;
        reporter
            .set_service_status("demo.Down", tonic_health::ServingStatus::NotServing)
            .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let t = Duration::from_secs(5);
        let plain = ClientTransport::default();
        check(&url, "demo.Up", t, &plain).await.unwrap();
        check(&url, "", t, &plain).await.unwrap();
        let down = check(&url, "demo.Down", t, &plain).await.unwrap_err();
        assert!(matches!(down, HealthError::NotServing { .. }), "{down}");
        assert!(down.to_string().contains("NOT_SERVING"), "{down}");
        let unknown = check(&url, "demo.Nobody", t, &plain).await.unwrap_err();
        assert!(
            matches!(unknown, HealthError::Unreachable { .. }),
            "{unknown}"
        );
        server.abort();

        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let err = check(&dead, "", t, &plain).await.unwrap_err();
        assert!(matches!(err, HealthError::Unreachable { .. }), "{err}");
        let err = check("not a url", "", t, &plain).await.unwrap_err();
        assert!(matches!(err, HealthError::BadUrl { .. }), "{err}");
    }
}
