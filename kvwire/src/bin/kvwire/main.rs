//! `kvwire`: inspect, encode and decode KVWire blobs and streams, with NumPy `.npy` I/O, and a
//! demo that measures size, error and speed of every format on a realistic seeded cache.

mod convert;
mod demo;
mod inspect;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// KVWire command-line tool.
#[derive(Debug, Parser)]
#[command(name = "kvwire", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the sections, sizes, shapes, dtypes and checksums of a v1 blob or v2 stream.
    Inspect {
        /// The blob, frame or stream.
        file: PathBuf,
        /// Machine-readable JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Encode K and V (`.npy`, [B,H,T,D] or [H,T,D], f32 or f16) as one v1 blob or v2 frame.
    Encode(convert::EncodeArgs),
    /// Decode a v1 blob or v2 stream into `.npy` files (quantized, scales, indices, dequantized).
    Decode {
        /// The blob, frame or stream.
        file: PathBuf,
        /// Output folder (created).
        #[arg(long)]
        out_dir: PathBuf,
        /// dtype of the dequantized `k.npy` / `v.npy`: f32, or f16 (each f32 value rounded to
        /// nearest even: a cache held as fp16, half the bytes).
        #[arg(long, value_enum, default_value_t = convert::ValueDtype::F32)]
        dtype: convert::ValueDtype,
    },
    /// Encode a seeded, realistic multi-layer cache in every format and print measured bytes,
    /// error and time.
    Demo(demo::DemoArgs),
}

/// Wire format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WireVersion {
    /// Reference-exact JSON-header blob.
    V1,
    /// Binary frame.
    V2,
}

fn main() -> anyhow::Result<()> {
    let result = match Cli::parse().command {
        Command::Inspect { file, json } => inspect::run(&file, json),
        Command::Encode(args) => convert::encode(&args),
        Command::Decode {
            file,
            out_dir,
            dtype,
        } => convert::decode(&file, &out_dir, dtype),
        Command::Demo(args) => demo::run(&args),
    };
    match result {
        // The reader went away (`kvwire inspect F | head`): what it wanted was printed; stop
        // quietly with status 0, as when the whole output was read.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// Whether writing standard output failed because its reader closed the pipe. Every
/// subcommand prints with `writeln!` (not `println!`, which panics on that error).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
