//! Load and soak generator against running sharer/receiver services: N concurrent `Evaluate`
//! or `Share` calls for a fixed count or duration, to loopback addresses only, reporting
//! throughput, latency percentiles and errors by gRPC status code.
//!
//! The library holds the pure parts (the bounded plan with its loopback check, and the report
//! over recorded outcomes); `main.rs` does the calls.

pub mod plan;
pub mod report;

pub use plan::{LoadPlan, PlanError, Stop};
pub use report::{Outcome, Report};
