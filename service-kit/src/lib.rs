//! Plumbing shared by the sharer and receiver services: one telemetry `init`, the metrics
//! catalogue, layered configuration with start-up validation, a byte-counting TCP connector and
//! listener (transport bytes), W3C trace context over gRPC metadata, and model spec resolution.
//!
//! Nothing here knows the API types; the services convert wire types at their own boundary.

pub mod config;
pub mod counting;
pub mod letters;
pub mod metrics_catalog;
pub mod model_load;
pub mod model_spec;
pub mod prompt;
pub mod shutdown;
pub mod telemetry;
pub mod timing;
pub mod trace_context;
