//! What every rpc handler of both services does the same way: map its service's error type to
//! one `tonic::Status` (code plus the stable `kvwire-error-type` label in metadata), record the
//! outcome in the metrics, and run model work on blocking threads through a bounded job pool
//! whose wait queue is bounded too (beyond it a call is shed at once: RESOURCE_EXHAUSTED).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::{Semaphore, TryAcquireError};
use tonic::{Code, Status};

use crate::metrics_catalog::record_rpc;

/// Metadata key under which a failed rpc carries its stable error label.
pub const ERROR_TYPE_KEY: &str = "kvwire-error-type";

/// A service's error type: one gRPC code and one stable label per variant; a job shed by the
/// pool ([`Overloaded`]: RESOURCE_EXHAUSTED, label `overloaded`) converts into it.
pub trait ServiceError: std::error::Error + From<Overloaded> + Send + 'static {
    /// The gRPC code of this error.
    fn code(&self) -> Code;
    /// Stable label for metrics, logs and the `kvwire-error-type` metadata.
    fn error_type(&self) -> &'static str;
    /// The error of a blocking job that could not run or did not finish.
    fn worker(reason: String) -> Self;
}

/// `impl From<$error> for tonic::Status` through [`to_status`], for a [`ServiceError`].
#[macro_export]
macro_rules! status_from {
    ($error:ty) => {
        impl From<$error> for ::tonic::Status {
            fn from(e: $error) -> ::tonic::Status {
                $crate::rpc::to_status(&e)
            }
        }
    };
}

/// A job refused at once: every slot busy and the wait queue full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "overloaded: {running} job(s) running and {queued} waiting (limits.max_concurrent_jobs, \
     limits.max_queued_jobs); retry later"
)]
pub struct Overloaded {
    /// Jobs running (the pool's slots).
    pub running: usize,
    /// Jobs waiting for a slot (the queue's bound).
    pub queued: usize,
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

/// A resource (a model engine) shared by blocking jobs, at most `max_jobs` at a time; at most
/// `max_queued` further jobs wait for a slot (first come, first served), and a job beyond
/// them is refused at once with an [`Overloaded`] error instead of waiting without bound.
#[derive(Debug)]
pub struct JobPool<R> {
    resource: Arc<R>,
    permits: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    max_jobs: usize,
    max_queued: usize,
}

impl<R> Clone for JobPool<R> {
    fn clone(&self) -> Self {
        Self {
            resource: Arc::clone(&self.resource),
            permits: Arc::clone(&self.permits),
            waiting: Arc::clone(&self.waiting),
            max_jobs: self.max_jobs,
            max_queued: self.max_queued,
        }
    }
}

/// A place in the wait queue, given back when the job gets its slot or its caller goes away.
struct QueuePlace(Arc<AtomicUsize>);

impl Drop for QueuePlace {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<R: Send + Sync + 'static> JobPool<R> {
    /// A pool around `resource`: `max_jobs` run at once, `max_queued` more may wait.
    pub fn new(resource: R, max_jobs: usize, max_queued: usize) -> Self {
        Self {
            resource: Arc::new(resource),
            permits: Arc::new(Semaphore::new(max_jobs)),
            waiting: Arc::new(AtomicUsize::new(0)),
            max_jobs,
            max_queued,
        }
    }

    /// Jobs waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// The shared resource (for cheap reads on the async side).
    pub fn resource(&self) -> &R {
        &self.resource
    }

    /// Runs `f` on a blocking thread once a slot is free, inside the caller's tracing span; when
    /// no slot is free and the wait queue is full, fails at once with
    /// an [`Overloaded`] error.
    pub async fn run<T, E>(
        &self,
        f: impl FnOnce(&R) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: ServiceError,
    {
        let closed = || E::worker("job pool closed".into());
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => return Err(closed()),
            Err(TryAcquireError::NoPermits) => {
                let max = self.max_queued;
                self.waiting
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                        (w < max).then_some(w + 1)
                    })
                    .map_err(|_| {
                        E::from(Overloaded {
                            running: self.max_jobs,
                            queued: max,
                        })
                    })?;
                let _place = QueuePlace(Arc::clone(&self.waiting));
                Arc::clone(&self.permits)
                    .acquire_owned()
                    .await
                    .map_err(|_| closed())?
            }
        };
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
        #[error(transparent)]
        Overloaded(#[from] Overloaded),
    }

    impl ServiceError for TestError {
        fn code(&self) -> Code {
            match self {
                TestError::Gone(_) => Code::Unavailable,
                TestError::Worker(_) => Code::Internal,
                TestError::Overloaded(_) => Code::ResourceExhausted,
            }
        }
        fn error_type(&self) -> &'static str {
            match self {
                TestError::Gone(_) => "gone",
                TestError::Worker(_) => "worker",
                TestError::Overloaded(_) => "overloaded",
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
        let pool = JobPool::new(41u32, 1, 0);
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

    /// Starts a job that holds `pool`'s only slot (returning 1) until the sender is used.
    async fn hold_the_only_slot(
        pool: &JobPool<()>,
    ) -> (
        tokio::task::JoinHandle<Result<i32, TestError>>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.run(move |_| {
                    let _ = started_tx.send(());
                    release_rx.recv().unwrap();
                    Ok::<_, TestError>(1)
                })
                .await
            }
        });
        started_rx.await.unwrap();
        (running, release_tx)
    }

    #[tokio::test]
    async fn beyond_the_wait_queue_a_job_is_shed_at_once() {
        use std::time::Duration;
        let pool = JobPool::new((), 1, 1);
        // One job holds the only slot until released.
        let (running, release_tx) = hold_the_only_slot(&pool).await;
        // A second waits in the queue's one place.
        let queued = tokio::spawn({
            let pool = pool.clone();
            async move { pool.run(|_| Ok::<_, TestError>(2)).await }
        });
        while pool.queued() < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // A third is refused without waiting.
        let shed =
            tokio::time::timeout(Duration::from_secs(5), pool.run(|_| Ok::<_, TestError>(3)))
                .await
                .expect("a shed job answers at once")
                .unwrap_err();
        assert_eq!(shed.code(), Code::ResourceExhausted);
        let status = to_status(&shed);
        assert_eq!(status.metadata().get(ERROR_TYPE_KEY).unwrap(), "overloaded");
        assert!(status.message().contains("1 waiting"), "{status:?}");
        release_tx.send(()).unwrap();
        assert_eq!(running.await.unwrap().unwrap(), 1);
        assert_eq!(queued.await.unwrap().unwrap(), 2);
        assert_eq!(pool.queued(), 0);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_frees_its_queue_place() {
        let pool = JobPool::new((), 1, 1);
        let (running, release_tx) = hold_the_only_slot(&pool).await;
        // A caller whose deadline passes while queued leaves the queue.
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            pool.run(|_| Ok::<_, TestError>(())),
        )
        .await;
        assert!(gave_up.is_err());
        assert_eq!(pool.queued(), 0);
        release_tx.send(()).unwrap();
        running.await.unwrap().unwrap();
        pool.run(|_| Ok::<_, TestError>(())).await.unwrap();
    }
}
