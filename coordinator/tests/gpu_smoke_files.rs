//! The GPU smoke test (scripts/gpu-smoke.sh) writes its grid and items from copies inside the
//! script, so that only the script and the binaries travel to the GPU machine. These tests keep
//! those copies equal to grids/gpu-smoke.toml and grids/gpu-smoke-items.jsonl, and check that
//! the grid is valid, needs no download and covers the methods the smoke test promises.

use std::path::Path;

use coordinator::cell::expand;
use coordinator::grid::Grid;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// The text of the script's here-document delimited by `marker`.
fn heredoc(script: &str, marker: &str) -> String {
    let open = format!("<<'{marker}'\n");
    let start = script
        .find(&open)
        .unwrap_or_else(|| panic!("no here-document {marker} in the script"))
        + open.len();
    let close = format!("\n{marker}\n");
    let len = script[start..]
        .find(&close)
        .unwrap_or_else(|| panic!("here-document {marker} is not closed"));
    format!("{}\n", &script[start..start + len])
}

#[test]
fn the_script_carries_the_committed_grid_and_items() {
    let script = repo_file("scripts/gpu-smoke.sh");
    assert_eq!(
        heredoc(&script, "GRID_TOML"),
        repo_file("grids/gpu-smoke.toml"),
        "scripts/gpu-smoke.sh and grids/gpu-smoke.toml differ: change both"
    );
    assert_eq!(
        heredoc(&script, "ITEMS_JSONL"),
        repo_file("grids/gpu-smoke-items.jsonl"),
        "scripts/gpu-smoke.sh and grids/gpu-smoke-items.jsonl differ: change both"
    );
}

#[test]
fn the_smoke_grid_is_valid_local_and_covers_every_method_path() {
    let grid = Grid::from_toml(&repo_file("grids/gpu-smoke.toml")).unwrap();
    // The script renames the grid and swaps the model by these exact strings.
    assert_eq!(grid.name, "gpu-smoke");
    assert_eq!(grid.pairs.len(), 1);
    assert_eq!(grid.pairs[0].sharer.model, "random:tiny-llama:7");
    assert_eq!(grid.pairs[0].receiver.model, "random:tiny-llama:7");
    // Items from the committed file: nothing to download on the GPU machine.
    assert_eq!(
        grid.datasets[0].file.as_deref(),
        Some("grids/gpu-smoke-items.jsonl")
    );
    let items = repo_file("grids/gpu-smoke-items.jsonl");
    assert_eq!(items.lines().count(), 4);
    let mut labels: Vec<String> = expand(&grid)
        .into_iter()
        .map(|c| c.config.method_label)
        .collect();
    labels.dedup();
    for want in [
        "receiver-only",
        "text-raw@256",
        "kv-fp16",
        "kv-int8",
        "kv-int4",
    ] {
        assert!(
            labels.iter().any(|l| l == want),
            "{want} missing: {labels:?}"
        );
    }
}
