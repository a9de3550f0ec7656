//! End-of-run reporting: per-cell summaries printed as a table and written as
//! `results/summary.csv` and `summary.md`, and the run manifest in `manifests/`.

use coordinator::manifest::{CellManifest, RunManifest};
use coordinator::registry::{CellPlan, RunDir, write_json_atomic, write_text_atomic};
use coordinator::summary::{CellSummary, render_csv, render_markdown, render_text};

/// Summaries of every planned cell, in grid order.
pub fn summaries(dir: &RunDir, plans: &[CellPlan]) -> anyhow::Result<Vec<CellSummary>> {
    plans
        .iter()
        .map(|p| Ok(CellSummary::of(&p.cell, &dir.read_rows(&p.cell.id)?)))
        .collect()
}

/// Writes the summary files and returns the terminal table.
pub fn write_summaries(dir: &RunDir, summaries: &[CellSummary]) -> anyhow::Result<String> {
    write_text_atomic(&dir.results().join("summary.csv"), &render_csv(summaries))?;
    write_text_atomic(&dir.root().join("summary.md"), &render_markdown(summaries))?;
    Ok(render_text(summaries))
}

/// Fills the manifest's cells from the summaries and rows, and writes it as
/// `manifests/run-<started ms>.json`.
pub fn write_manifest(
    dir: &RunDir,
    mut manifest: RunManifest,
    plans: &[CellPlan],
    summaries: Vec<CellSummary>,
) -> anyhow::Result<std::path::PathBuf> {
    manifest.cells = summaries
        .into_iter()
        .zip(plans)
        .map(|(s, p)| Ok(CellManifest::of(s, &dir.read_rows(&p.cell.id)?)))
        .collect::<anyhow::Result<_>>()?;
    let path = dir
        .manifests()
        .join(format!("run-{}.json", manifest.started_at_unix_ms));
    write_json_atomic(&path, &manifest)?;
    Ok(path)
}
