//! Compiles the `.proto` files with protox (pure Rust, no system `protoc`) and generates the
//! tonic client and server code plus the file descriptor set used by gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/kvwire/c2c/v1/common.proto",
        "proto/kvwire/c2c/v1/sharer.proto",
        "proto/kvwire/c2c/v1/receiver.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("kvwire_c2c_v1_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure()
        // KVWire frames as `bytes::Bytes`: a received frame is a slice of the decode buffer
        // (no copy), and a sent one is handed over without one.
        .bytes(".kvwire.c2c.v1.ShareChunk.frame")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
