//! What every rpc handler of both services does the same way: map its service's error type to
//! one `tonic::Status` (code plus the stable `kvwire-error-type` label in metadata), record the
//! outcome in the metrics, and run model work on blocking threads through a bounded job pool
//! whose wait queue is bounded too (beyond it a call is shed at once: RESOURCE_EXHAUSTED).
//! A job runs inside the scope of a [`CancelToken`] that is set when its caller goes away (the
//! rpc future dropped: client gone, deadline passed), so the model stops between layers and
//! the slot is free again (`model_runtime::cancel`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use model_runtime::{CancelToken, RuntimeError};
use tokio::sync::{Semaphore, TryAcquireError};
use tonic::{Code, Status};

use crate::metrics_catalog::record_rpc;

/// Metadata key under which a failed rpc carries its stable error label.
pub const ERROR_TYPE_KEY: &str = "kvwire-error-type";

/// A service's error type: one gRPC code and one stable label per variant; a job shed by the
/// pool ([`Overloaded`]: RESOURCE_EXHAUSTED, label `overloaded`) converts into it, and so does
/// the model's error (a job cancelled before it started is [`RuntimeError::Cancelled`], which
/// the service maps to CANCELLED, label `cancelled`).
pub trait ServiceError:
    std::error::Error + From<Overloaded> + From<RuntimeError> + Send + 'static
{
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

/// When a call's `grpc-timeout` (its client's deadline, as sent) runs out, counted from now;
/// `None` without one or with a value that is not `<1-8 digits><H|M|S|m|u|n>`. tonic drops a
/// unary handler at this deadline itself, but not a response stream once it has started, so
/// the streaming handlers give it to their job's [`CancelToken`].
pub fn deadline_of(metadata: &tonic::metadata::MetadataMap) -> Option<Instant> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    };
    Instant::now().checked_add(timeout)
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

/// Cancels its token when dropped: held by whatever stands for the caller (the rpc future,
/// a response stream), so the job stops between layers once the caller is gone. Dropped after
/// the job finished, it cancels nothing that still runs.
#[derive(Debug)]
pub struct CancelOnDrop(CancelToken);

impl CancelOnDrop {
    /// A guard for `token`.
    pub fn new(token: CancelToken) -> Self {
        Self(token)
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
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
    /// an [`Overloaded`] error. Dropping the returned future (the caller went away) cancels
    /// the job: model work in `f` stops at its next layer.
    pub async fn run<T, E>(
        &self,
        f: impl FnOnce(&R) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: ServiceError,
    {
        self.run_cancellable(CancelToken::new(), f).await
    }

    /// As [`JobPool::run`], with `cancel` as the job's token too: whoever else holds it (a
    /// response stream's [`CancelOnDrop`]) can stop the job. A job whose token is set before
    /// it gets a slot does not start ([`RuntimeError::Cancelled`]).
    pub async fn run_cancellable<T, E>(
        &self,
        cancel: CancelToken,
        f: impl FnOnce(&R) -> Result<T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: ServiceError,
    {
        let _cancel_on_drop = CancelOnDrop::new(cancel.clone());
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
            if cancel.is_cancelled() {
                return Err(E::from(RuntimeError::Cancelled));
            }
            span.in_scope(|| cancel.scope(|| f(&resource)))
        })
        .await
        .map_err(|e| E::worker(e.to_string()))?
    }
}

#[cfg(test)]
mod tests;
