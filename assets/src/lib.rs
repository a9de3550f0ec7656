//! Fetches, reassembles, verifies (sha256) and caches the pinned real model and dataset assets.
