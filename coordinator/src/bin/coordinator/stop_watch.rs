//! The run's early stop: its time limit and Ctrl-C ask the run loop to start no new sample
//! (coordinator::stop); the samples in flight finish and the run folder is completed.

use std::sync::Arc;
use std::time::Duration;

use coordinator::stop::{StopReason, StopSignal};

use crate::log::RunLog;

/// Stops the run at its time limit or on the first Ctrl-C (a second one exits at once, with
/// 130): no new sample starts, those in flight finish, the summary and manifest are written.
pub fn stop_watchers(
    stop: &StopSignal,
    time_limit: Option<Duration>,
    log: &Arc<RunLog>,
) -> tokio::task::JoinSet<()> {
    let mut watchers = tokio::task::JoinSet::new();
    if let Some(limit) = time_limit {
        let (stop, log) = (stop.clone(), Arc::clone(log));
        watchers.spawn(async move {
            tokio::time::sleep(limit).await;
            if stop.stop(StopReason::TimeLimit) {
                log.line(format!(
                    "time limit of {} s reached: finishing the samples in flight",
                    limit.as_secs()
                ));
            }
        });
    }
    let (stop, log) = (stop.clone(), Arc::clone(log));
    watchers.spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if !stop.stop(StopReason::Interrupt) {
                log.line("interrupted again: exiting without a manifest");
                std::process::exit(130);
            }
            log.line("interrupted: finishing the samples in flight (Ctrl-C again to quit now)");
        }
    });
    watchers
}
