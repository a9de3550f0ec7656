//! Load and soak generator against running sharer/receiver services: N concurrent `Evaluate`
//! or `Share` calls over M connections for a fixed count or duration, to loopback addresses
//! only, with examples from a dataset file, methods, scorings, text kinds and refinement in
//! turn, reporting throughput, latency percentiles, errors by gRPC status code and the
//! services' memory and CPU read from their `/metrics` pages (the soak's RSS slope).
//!
//! `goodput` (with `goodput_frames`, `goodput_tcp`, `goodput_grpc`) measures the services' gRPC
//! transport against a raw TCP stream of the same KV frames (`docs/OPERATIONS.md`, "Transport
//! tuning").
//!
//! `main.rs` is the command line; everything it runs is here, so tests drive the same code.

pub mod goodput;
pub mod goodput_frames;
pub mod goodput_grpc;
pub mod goodput_tcp;
pub mod plan;
pub mod report;
pub mod resources;
pub mod run;
pub mod scrape;
pub mod workload;

pub use plan::{LoadPlan, PlanError, Stop};
pub use report::{Outcome, Report};
