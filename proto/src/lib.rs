//! The versioned gRPC API of the sharer and receiver services, and its generated Rust code.
