//! What every rpc handler of both services does the same way: map its service's error type to
//! one `tonic::Status` (code plus the stable `kvwire-error-type` label in metadata), record the
//! outcome in the metrics, and run model work on blocking threads through a bounded job pool.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tonic::{Code, Status};

use crate::metrics_catalog::record_rpc;

/// Metadata key under which a failed rpc carries its stable error label.
pub const ERROR_TYPE_KEY: &str = "kvwire-error-type";

/// A service's error type: one gRPC code and one stable label per variant.
pub trait ServiceError: std::error::Error + Send + 'static {
    /// The gRPC code of this error.
    fn code(&self) -> Code;
    /// Stable label for metrics, logs and the `kvwire-error-type` metadata.
    fn error_type(&self) -> &'static str;
    /// The error of a blocking job that could not run or did not finish.
    fn worker(reason: String) -> Self;
}

/// The one status of an error: its code, its message, and its label in metadata.
pub fn to_status<E: ServiceError>(e: &E) -> Status {
    let mut status = Status::new(e.code(), e.to_string());
    if let Ok(v) = e.error_type().parse() {
        status.metadata_mut().insert(ERROR_TYPE_KEY, v);
    }
    status
}

/// Records an rpc's outcome (count, latency, error type), logs a failure, and converts it.
pub fn finish<T, E: ServiceError>(
    service: &'static str,
    method: &'static str,
    start: Instant,
    result: Result<T, E>,
) -> Result<T, Status> {
    let seconds = start.elapsed().as_secs_f64();
    match result {
        Ok(v) => {
            record_rpc(service, method, Code::Ok, None, seconds);
            Ok(v)
        }
        Err(e) => {
            tracing::warn!(error_type = e.error_type(), error = %e, "{method} failed");
            record_rpc(service, method, e.code(), Some(e.error_type()), seconds);
            Err(to_status(&e))
        }
    }
}

/// A resource (a model engine) shared by blocking jobs, at most `max_jobs` at a time; further
/// jobs wait for a slot.
#[derive(Debug)]
pub struct JobPool<R> {
    resource: Arc<R>,
    permits: Arc<Semaphore>,
}

impl<R> Clone for JobPool<R> {
    fn clone(&self) -> Self {
        Self {
            resource: Arc::clone(&self.resource),
            permits: Arc::clone(&self.permits),
        }
    }
}

impl<R: Send + Sync + 'static> JobPool<R> {
    /// A pool around `resource`.
    pub fn new(resource: R, max_jobs: usize) -> Self {
        Self {
            resource: Arc::new(resource),
            permits: Arc::new(Semaphore::new(max_jobs)),
        }
    }

    /// The shared resource (for cheap reads on the async side).
    pub fn resource(&self) -> &R {
        &self.resource
    }

    /// Runs `f` on a blocking thread once a slot is free, inside the caller's tracing span.
    pub async fn run<T, E>(
        &self,
        f: impl FnOnce(&R) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: ServiceError,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| E::worker("job pool closed".into()))?;
        let resource = Arc::clone(&self.resource);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(|| f(&resource))
        })
        .await
        .map_err(|e| E::worker(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum TestError {
        #[error("gone: {0}")]
        Gone(String),
        #[error("worker: {0}")]
        Worker(String),
    }

    impl ServiceError for TestError {
        fn code(&self) -> Code {
            match self {
                TestError::Gone(_) => Code::Unavailable,
                TestError::Worker(_) => Code::Internal,
            }
        }
        fn error_type(&self) -> &'static str {
            match self {
                TestError::Gone(_) => "gone",
                TestError::Worker(_) => "worker",
            }
        }
        fn worker(reason: String) -> Self {
            TestError::Worker(reason)
        }
    }

    #[test]
    fn status_keeps_code_message_and_label() {
        let s = to_status(&TestError::Gone("sharer".into()));
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "gone: sharer");
        assert_eq!(s.metadata().get(ERROR_TYPE_KEY).unwrap(), "gone");
    }

    #[tokio::test]
    async fn jobs_run_on_the_resource_and_panics_become_worker_errors() {
        let pool = JobPool::new(41u32, 1);
        let v = pool.run(|r| Ok::<_, TestError>(r + 1)).await.unwrap();
        assert_eq!(v, 42);
        let err = pool
            .run(|_| -> Result<(), TestError> { panic!("boom") })
            .await
            .unwrap_err();
        assert_eq!(err.error_type(), "worker");
        // The slot of the panicked job was released.
        assert_eq!(pool.run(|r| Ok::<_, TestError>(*r)).await.unwrap(), 41);
    }
}
