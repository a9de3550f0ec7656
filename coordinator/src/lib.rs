//! Coordinator: expands experiment grids, runs them against services, measures bytes and latency, writes results.
