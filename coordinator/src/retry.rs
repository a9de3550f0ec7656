//! The retry policy of a run: how many tries a sample gets within one invocation, how long to
//! wait between them, and which failures are worth another try. Plain data and pure functions;
//! the runner applies them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Failure kinds (gRPC code names and coordinator-side kinds) that a later try can cure: the
/// sharer or receiver was down, overloaded or cut mid-stream. Every other kind (a bad request,
/// a cap below one token, a missing fuser) fails the same way again and is not retried.
pub const TRANSIENT_KINDS: &[&str] = &[
    "Unavailable",
    "DeadlineExceeded",
    "ResourceExhausted",
    "Aborted",
    "Unknown",
    "Cancelled",
    "timeout",
];

/// Tries per sample and the back-off between them (`[retry]` in a grid file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Tries of one sample per invocation, the first included (1 = no retry).
    pub attempts: u32,
    /// Wait before the second try, ms.
    pub backoff_ms: u64,
    /// Each further wait is the previous one times this factor (at least 1).
    pub backoff_factor: f64,
    /// Longest wait between two tries, ms.
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff_ms: 1_000,
            backoff_factor: 2.0,
            max_backoff_ms: 30_000,
        }
    }
}

impl RetryPolicy {
    /// Problems with the policy, for grid validation.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.attempts == 0 {
            problems.push("retry.attempts must be at least 1 (1 means no retry)".into());
        }
        if !(self.backoff_factor.is_finite() && self.backoff_factor >= 1.0) {
            problems.push(format!(
                "retry.backoff_factor {} must be a number >= 1",
                self.backoff_factor
            ));
        }
        if self.max_backoff_ms < self.backoff_ms {
            problems.push(format!(
                "retry.max_backoff_ms {} is below retry.backoff_ms {}",
                self.max_backoff_ms, self.backoff_ms
            ));
        }
        problems
    }

    /// The wait after the `tries`-th failed try of a sample (`tries` from 1), or `None` when
    /// no try is left or the failure `kind` is not transient.
    pub fn next_delay(&self, tries: u32, kind: &str) -> Option<Duration> {
        if tries >= self.attempts || !is_transient(kind) {
            return None;
        }
        let exponent = i32::try_from(tries.saturating_sub(1)).unwrap_or(i32::MAX);
        let ms = self.backoff_ms as f64 * self.backoff_factor.powi(exponent);
        Some(Duration::from_millis(
            ms.min(self.max_backoff_ms as f64) as u64
        ))
    }
}

/// Whether a failure of this kind may succeed on a later try.
pub fn is_transient(kind: &str) -> bool {
    TRANSIENT_KINDS.contains(&kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_ceiling_and_stops_after_the_last_try() {
        let p = RetryPolicy {
            attempts: 5,
            backoff_ms: 100,
            backoff_factor: 3.0,
            max_backoff_ms: 500,
        };
        let waits: Vec<Option<u64>> = (1..=5)
            .map(|t| p.next_delay(t, "Unavailable").map(|d| d.as_millis() as u64))
            .collect();
        assert_eq!(waits, [Some(100), Some(300), Some(500), Some(500), None]);
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let p = RetryPolicy::default();
        assert!(p.next_delay(1, "timeout").is_some());
        assert!(p.next_delay(1, "FailedPrecondition").is_none());
        assert!(p.next_delay(1, "InvalidArgument").is_none());
        let once = RetryPolicy { attempts: 1, ..p };
        assert!(once.next_delay(1, "Unavailable").is_none());
    }

    #[test]
    fn bad_policies_are_reported() {
        let p = RetryPolicy {
            attempts: 0,
            backoff_ms: 10,
            backoff_factor: 0.5,
            max_backoff_ms: 5,
        };
        assert_eq!(p.problems().len(), 3);
        assert!(RetryPolicy::default().problems().is_empty());
    }
}
