//! The versioned gRPC API of the sharer and receiver services (`kvwire.c2c.v1`), and its
//! generated Rust code.
//!
//! The `.proto` sources live in `proto/proto/kvwire/c2c/v1/`; `build.rs` compiles them with
//! protox (no system `protoc`). [`FILE_DESCRIPTOR_SET`] feeds gRPC reflection so grpcurl works
//! without the `.proto` files. Generated types are wire types: the services convert them to
//! domain types at their boundary.

/// Generated code of package `kvwire.c2c.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("kvwire.c2c.v1");
}

/// Encoded `google.protobuf.FileDescriptorSet` of every file in the API, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/kvwire_c2c_v1_descriptor.bin"));

/// Fully qualified service names, for health reporting.
pub mod service_names {
    /// The sharer service.
    pub const SHARER: &str = "kvwire.c2c.v1.Sharer";
    /// The receiver service.
    pub const RECEIVER: &str = "kvwire.c2c.v1.Receiver";
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn descriptor_set_names_both_services() {
        let text = String::from_utf8_lossy(FILE_DESCRIPTOR_SET);
        assert!(text.contains("Sharer") && text.contains("Receiver"));
        assert!(text.contains("kvwire.c2c.v1"));
    }

    #[test]
    fn share_chunk_round_trips() {
        let chunk = v1::ShareChunk {
            frame: vec![1, 2, 3].into(),
            layer: Some(4),
            session_id: "s".into(),
            timings: None,
            prompt_tokens: 9,
        };
        let bytes = chunk.encode_to_vec();
        assert_eq!(bytes.len(), chunk.encoded_len());
        assert_eq!(v1::ShareChunk::decode(bytes.as_slice()).unwrap(), chunk);
    }
}
