//! Stopping a run early and cleanly: a time limit or an interrupt asks the run loop to start no
//! new try; the tries in flight finish and are written, the run folder gets its summary and
//! manifest, and the same command later resumes with the samples left.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Why a run was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The run's time limit (`--time-limit`) passed.
    TimeLimit,
    /// The process was interrupted (Ctrl-C / SIGINT).
    Interrupt,
}

#[derive(Debug, Default)]
struct Shared {
    stopped: AtomicBool,
    /// The first reason given.
    reason: std::sync::Mutex<Option<StopReason>>,
    notify: Notify,
}

/// A cloneable stop flag shared by whoever may stop a run and the run loop.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<Shared>);

impl StopSignal {
    /// A signal that has not been given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the run to stop; the first reason given is kept. Returns whether this call was
    /// the first.
    pub fn stop(&self, reason: StopReason) -> bool {
        let first = !self.0.stopped.swap(true, Ordering::SeqCst);
        if first && let Ok(mut r) = self.0.reason.lock() {
            *r = Some(reason);
        }
        self.0.notify.notify_waiters();
        first
    }

    /// Whether a stop was asked for.
    pub fn is_stopped(&self) -> bool {
        self.0.stopped.load(Ordering::SeqCst)
    }

    /// Why the run was stopped, if it was.
    pub fn reason(&self) -> Option<StopReason> {
        self.0.reason.lock().ok().and_then(|r| *r)
    }

    /// Resolves once a stop is asked for (at once if it already was).
    pub async fn stopped(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Registers interest before the check, so a stop between the two is not missed.
            notified.as_mut().enable();
            if self.is_stopped() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiters_wake_on_stop_and_the_first_reason_is_kept() {
        let signal = StopSignal::new();
        assert!(!signal.is_stopped());
        let waiter = tokio::spawn({
            let s = signal.clone();
            async move { s.stopped().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        assert!(signal.stop(StopReason::TimeLimit));
        assert!(!signal.stop(StopReason::Interrupt));
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter wakes")
            .unwrap();
        assert_eq!(signal.reason(), Some(StopReason::TimeLimit));
        // A wait that starts after the stop returns at once.
        tokio::time::timeout(Duration::from_secs(1), signal.stopped())
            .await
            .expect("already stopped");
    }
}
