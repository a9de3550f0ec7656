//! The global allocator of the binaries that move KV bytes (sharer-svc, receiver-svc,
//! coordinator, loadtest), chosen here once. Each binary's `main.rs` installs it:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: service_kit::alloc::Allocator = service_kit::alloc::Allocator;
//! ```
//!
//! Library crates (this one included) install none, so tests and embedders keep their own.
//!
//! Why mimalloc: tonic copies each KVWire frame into a short-lived encode buffer on the sharer
//! and out into a decode buffer on the receiver; glibc's malloc hands those large blocks back to
//! the kernel and faults them in again on every message; mimalloc keeps freed pages for reuse.
//! `loadtest goodput` (int8 and fp16 frames, 1024 tokens, 45 repetitions each, glibc and mimalloc
//! builds alternated on the 2-core CPU VM) measured 1.52x and 1.38x the tuned gRPC goodput and
//! 0.66x and 0.80x its CPU per byte (docs/OPERATIONS.md, "Transport tuning": figures, intervals).

/// The allocator type; a unit struct, so `Allocator` is also its value.
pub use mimalloc::MiMalloc as Allocator;
