//! Plumbing shared by the sharer and receiver services: start-up and the gRPC server with
//! health and reflection ([`server`]), the error-to-status mapping, rpc metrics and blocking job
//! pool ([`rpc`]), one telemetry `init`, the metrics catalogue, layered configuration with
//! start-up validation ([`config`]), a byte-counting TCP connector and listener (transport
//! bytes), W3C trace context over gRPC metadata, model spec resolution, and the prompts both
//! services run (letter and rank).
//!
//! No request or reply types here: the services convert wire types at their own boundary (the
//! proto crate is used only for the reflection descriptor set).

pub mod config;
pub mod counting;
pub mod letters;
pub mod metrics_catalog;
pub mod model_load;
pub mod model_spec;
pub mod prompt;
pub mod rank;
pub mod rpc;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod timing;
pub mod trace_context;
