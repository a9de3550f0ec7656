//! Plumbing shared by the sharer and receiver services: start-up and the gRPC server with
//! health and reflection ([`server`]), the error-to-status mapping, rpc metrics and blocking job
//! pool ([`rpc`]), one telemetry `init`, the metrics catalogue, layered configuration with
//! start-up validation ([`config`]), a byte-counting TCP connector and listener (transport
//! bytes), W3C trace context over gRPC metadata, model spec resolution (`gguf:<asset-name>`
//! through the asset cache) and loading on the configured device and dtype ([`device`]), and a
//! one-shot health probe for the binaries' `--health-check` ([`health`]), and the global allocator
//! the binaries install ([`alloc`]; this library installs none).
//! Service plumbing only: the evaluation item, its prompts and answer letters are
//! eval-harness's (`eval_harness::{Example, letter_prompt, rank_prompt, LETTERS}`).
//!
//! No request or reply types here: the services convert wire types at their own boundary. The
//! proto crate is used for the reflection descriptor set and for the one conversion of the
//! [`stages::StageTimings`] both services record.

pub mod alloc;
pub mod config;
pub mod counting;
pub mod device;
pub mod health;
pub mod metrics_catalog;
pub mod model_load;
pub mod model_spec;
pub mod otlp;
pub mod process_metrics;
pub mod prompt_limit;
pub mod rpc;
pub mod server;
pub mod shutdown;
pub mod stages;
pub mod telemetry;
pub mod timing;
pub mod trace_context;
pub mod transport;
