//! Tests of the rpc plumbing: status mapping, the job pool's slots, queue and cancellation.

use std::time::Duration;

use super::*;

#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error("gone: {0}")]
    Gone(String),
    #[error("worker: {0}")]
    Worker(String),
    #[error(transparent)]
    Overloaded(#[from] Overloaded),
    #[error(transparent)]
    Model(#[from] RuntimeError),
}

impl ServiceError for TestError {
    fn code(&self) -> Code {
        match self {
            TestError::Gone(_) => Code::Unavailable,
            TestError::Worker(_) => Code::Internal,
            TestError::Overloaded(_) => Code::ResourceExhausted,
            TestError::Model(RuntimeError::Cancelled) => Code::Cancelled,
            TestError::Model(_) => Code::Internal,
        }
    }
    fn error_type(&self) -> &'static str {
        match self {
            TestError::Gone(_) => "gone",
            TestError::Worker(_) => "worker",
            TestError::Overloaded(_) => "overloaded",
            TestError::Model(_) => "model",
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
    let shed = tokio::time::timeout(Duration::from_secs(5), pool.run(|_| Ok::<_, TestError>(3)))
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
async fn a_caller_that_gives_up_stops_its_running_job_and_frees_the_slot() {
    use std::time::Duration;
    let pool = JobPool::new((), 1, 1);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<bool>();
    // A job of 60 s that checks cancellation every millisecond, as the model does
    // between layers; it says whether it was cancelled.
    let caller = tokio::spawn({
        let pool = pool.clone();
        async move {
            pool.run(move |_| {
                let _ = started_tx.send(());
                let until = Instant::now() + Duration::from_secs(60);
                let outcome = loop {
                    if Instant::now() >= until {
                        break Ok(());
                    }
                    if let Err(e) = model_runtime::cancel::checkpoint() {
                        break Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(1));
                };
                let _ = stopped_tx.send(outcome.is_err());
                outcome.map_err(TestError::from)
            })
            .await
        }
    });
    started_rx.await.unwrap();
    // The caller goes away (its future dropped, as tonic drops a handler's).
    caller.abort();
    let cancelled = tokio::time::timeout(Duration::from_secs(10), stopped_rx)
        .await
        .expect("the job stops soon after its caller went away")
        .unwrap();
    assert!(cancelled);
    // The slot is free: the next job runs at once.
    let next = tokio::time::timeout(Duration::from_secs(10), pool.run(|_| Ok::<_, TestError>(2)));
    assert_eq!(next.await.expect("slot freed").unwrap(), 2);
    // A job whose token is set before it starts does not run.
    let token = CancelToken::new();
    token.cancel();
    let e = pool
        .run_cancellable(token, |_| -> Result<(), TestError> { panic!("ran") })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Cancelled, "{e}");
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

#[test]
fn a_deadline_is_read_from_grpc_timeout() {
    let with = |v: &'static str| {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert(
            "grpc-timeout",
            tonic::metadata::MetadataValue::from_static(v),
        );
        m
    };
    let before = Instant::now();
    let d = deadline_of(&with("300m")).unwrap();
    assert!(d >= before + Duration::from_millis(300));
    assert!(d <= Instant::now() + Duration::from_millis(300));
    let d = deadline_of(&with("2S")).unwrap();
    assert!(d >= before + Duration::from_secs(2));
    for bad in ["", "m", "12", "3X", "123456789S", "-1S"] {
        assert!(deadline_of(&with(bad)).is_none(), "{bad:?}");
    }
    assert!(deadline_of(&tonic::metadata::MetadataMap::new()).is_none());
}
