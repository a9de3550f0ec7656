//! A bounded load plan: a target on loopback, a concurrency, and a stop condition (a request
//! count or a duration), each under a hard maximum so a run always ends by itself.

use std::net::{IpAddr, ToSocketAddrs};
use std::time::Duration;

/// Most requests one run may send.
pub const MAX_REQUESTS: u64 = 1_000_000;
/// Longest run.
pub const MAX_DURATION: Duration = Duration::from_secs(6 * 3600);
/// Most calls in flight.
pub const MAX_CONCURRENCY: usize = 1024;

/// When a run stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// After this many requests have been sent.
    Requests(u64),
    /// After this much time (no new request starts later; in-flight ones finish).
    Duration(Duration),
}

/// A validated plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadPlan {
    /// Target URL (`http://127.0.0.1:port`).
    pub target: String,
    /// Calls in flight.
    pub concurrency: usize,
    /// Stop condition.
    pub stop: Stop,
}

/// Why a plan is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// The URL is not `http://host:port`.
    #[error("target {url:?} is not an http://host:port URL")]
    BadUrl {
        /// The URL given.
        url: String,
    },
    /// The host resolves to an address off this machine (or does not resolve).
    #[error("target {url:?} resolves to {resolved}; load is only sent to loopback addresses")]
    NotLoopback {
        /// The URL given.
        url: String,
        /// What it resolved to.
        resolved: String,
    },
    /// Concurrency out of range.
    #[error("concurrency {0} must be in 1..={MAX_CONCURRENCY}")]
    Concurrency(usize),
    /// Stop condition out of range.
    #[error(
        "stop condition {0:?} must be positive and at most {MAX_REQUESTS} requests or {MAX_DURATION:?}"
    )]
    Stop(Stop),
}

/// `host:port` of an `http://host:port[/]` URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("http://")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    (!rest.is_empty() && !rest.contains('/') && !rest.contains('@')).then_some(rest)
}

/// Checks that every address `url` resolves to is a loopback address.
pub fn check_loopback(url: &str) -> Result<(), PlanError> {
    let auth = authority(url).ok_or_else(|| PlanError::BadUrl { url: url.into() })?;
    let addrs: Vec<IpAddr> = auth
        .to_socket_addrs()
        .map_err(|_| PlanError::BadUrl { url: url.into() })?
        .map(|a| a.ip())
        .collect();
    if addrs.is_empty() || !addrs.iter().all(IpAddr::is_loopback) {
        return Err(PlanError::NotLoopback {
            url: url.into(),
            resolved: format!("{addrs:?}"),
        });
    }
    Ok(())
}

impl LoadPlan {
    /// Validates a plan.
    pub fn new(target: &str, concurrency: usize, stop: Stop) -> Result<LoadPlan, PlanError> {
        check_loopback(target)?;
        if concurrency == 0 || concurrency > MAX_CONCURRENCY {
            return Err(PlanError::Concurrency(concurrency));
        }
        let ok = match stop {
            Stop::Requests(n) => n > 0 && n <= MAX_REQUESTS,
            Stop::Duration(d) => !d.is_zero() && d <= MAX_DURATION,
        };
        if !ok {
            return Err(PlanError::Stop(stop));
        }
        Ok(LoadPlan {
            target: target.into(),
            concurrency,
            stop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(check_loopback("http://127.0.0.1:50051").is_ok());
        assert!(check_loopback("http://[::1]:50051/").is_ok());
        assert!(check_loopback("http://localhost:50051").is_ok());
        for off in [
            "http://10.0.0.1:50051",
            "http://192.168.1.2:1",
            "http://8.8.8.8:53",
        ] {
            assert!(
                matches!(check_loopback(off), Err(PlanError::NotLoopback { .. })),
                "{off}"
            );
        }
        for bad in [
            "127.0.0.1:1",
            "https://127.0.0.1:1",
            "http://127.0.0.1:1/x",
            "http://u@127.0.0.1:1",
        ] {
            assert!(
                matches!(check_loopback(bad), Err(PlanError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn plans_are_bounded() {
        let url = "http://127.0.0.1:9";
        assert!(LoadPlan::new(url, 4, Stop::Requests(100)).is_ok());
        assert!(LoadPlan::new(url, 0, Stop::Requests(100)).is_err());
        assert!(LoadPlan::new(url, 4, Stop::Requests(0)).is_err());
        assert!(LoadPlan::new(url, 4, Stop::Requests(MAX_REQUESTS + 1)).is_err());
        assert!(LoadPlan::new(url, 4, Stop::Duration(Duration::ZERO)).is_err());
        assert!(LoadPlan::new(url, 4, Stop::Duration(MAX_DURATION * 2)).is_err());
    }
}
