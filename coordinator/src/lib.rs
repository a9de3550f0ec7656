//! Coordinator: expands experiment grids into cells, keeps a crash-safe registry of result rows
//! per cell, and summarises them (accuracy, bytes at every level, latency per stage).
//!
//! The pure part plus plain file I/O: grid model and expansion ([`grid`], [`method`],
//! [`cell`]), the retry policy ([`retry`]), the run folder and registry ([`registry`]), result
//! rows ([`row`]), shards of a run and their merge ([`shard`], [`merge`]), summary tables
//! ([`summary`], over `eval_harness`'s statistics), figures ([`plot`]), run manifests
//! ([`manifest`]) and UTC time stamps ([`timestamp`]). The gRPC edge is here too, so tests can
//! drive a run against real services: requests and rows ([`wire`]) and the run loop
//! ([`runner`]) and its clean early stop ([`stop`]). The CLI, datasets and the embedded services live in the
//! `coordinator` binary; only its default feature `embedded` links the services (library users
//! set `default-features = false`).
//!
//! Emulated networks: link profiles ([`link`]), set up and partitioned from tests
//! ([`link_admin`]), a delaying TCP relay ([`relay`]) and probes of a path's delay and rate
//! ([`link_probe`]). Where a cache beats text, over runs on
//! several links: the regime map ([`regime`], [`regime_report`], [`regime_plot`]).

pub mod bench;
pub mod cell;
pub mod compare;
pub mod control;
pub mod error;
pub mod grid;
pub mod link;
pub mod link_admin;
pub mod link_probe;
pub mod manifest;
pub mod merge;
pub mod method;
pub mod plot;
pub mod regime;
pub mod regime_plot;
pub mod regime_report;
pub mod registry;
pub mod relay;
pub mod retry;
pub mod row;
pub mod runner;
pub mod shard;
pub mod stop;
pub mod summary;
pub mod timestamp;
pub mod wire;

#[cfg(test)]
mod testutil;

pub use cell::{Cell, CellConfig, expand};
pub use error::{GridError, MergeError, RegistryError, RunError};
pub use grid::Grid;
pub use registry::{CellRows, RunDir};
pub use retry::RetryPolicy;
pub use row::ResultRow;
pub use summary::CellSummary;
