//! Coordinator: expands experiment grids into cells, keeps a crash-safe registry of result rows
//! per cell, and summarises them (accuracy, bytes at every level, latency per stage).
//!
//! This library is the pure part plus plain file I/O: grid model and expansion ([`grid`],
//! [`method`], [`cell`]), the run folder and registry ([`registry`]), result rows ([`row`]),
//! statistics and summary tables ([`stats`], [`summary`]) and run manifests ([`manifest`]).
//! The network (gRPC calls, the embedded services) lives in the `coordinator` binary.

pub mod cell;
pub mod error;
pub mod grid;
pub mod manifest;
pub mod method;
pub mod registry;
pub mod row;
pub mod stats;
pub mod summary;

#[cfg(test)]
mod testutil;

pub use cell::{Cell, CellConfig, expand};
pub use error::{GridError, RegistryError};
pub use grid::Grid;
pub use registry::{CellRows, RunDir};
pub use row::ResultRow;
pub use summary::CellSummary;
