//! `coordinator`: runs experiment grids against sharer/receiver services and reports bytes,
//! latency and accuracy. `status` and `summary` read a run folder without touching services.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use coordinator::registry::RunDir;
use coordinator::summary::{CellSummary, render_text};

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Show how far each cell of a run folder got.
    Status {
        /// The run folder.
        run_dir: PathBuf,
    },
    /// Reprint the summary table of a run folder.
    Summary {
        /// The run folder.
        run_dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Status { run_dir } => status(&run_dir),
        Cmd::Summary { run_dir } => {
            print!("{}", render_text(&summaries(&run_dir)?));
            Ok(())
        }
    }
}

fn summaries(run_dir: &std::path::Path) -> anyhow::Result<Vec<CellSummary>> {
    let dir = RunDir::open(run_dir)?;
    let plans = dir.read_plans().context("reading the cell plans")?;
    plans
        .iter()
        .map(|p| Ok(CellSummary::of(&p.cell, &dir.read_rows(&p.cell.id)?)))
        .collect()
}

fn status(run_dir: &std::path::Path) -> anyhow::Result<()> {
    let dir = RunDir::open(run_dir)?;
    let plans = dir.read_plans().context("reading the cell plans")?;
    let mut done_cells = 0;
    for plan in &plans {
        let rows = dir.read_rows(&plan.cell.id)?;
        let latest = rows.latest();
        let ok = latest.values().filter(|r| r.is_ok()).count();
        let state = if dir.is_done(&plan.cell.id) {
            done_cells += 1;
            "done"
        } else if rows.rows.is_empty() {
            "pending"
        } else {
            "partial"
        };
        println!(
            "{}  {:<8} {:>4}/{:<4} ok  {:>3} failed  {:>4} tries  {} | {} | {}",
            plan.cell.id,
            state,
            ok,
            plan.sample_ids.len(),
            latest.len() - ok,
            rows.rows.len(),
            plan.cell.config.pair.label,
            plan.cell.config.dataset.name,
            plan.cell.config.method_label,
        );
    }
    println!("{done_cells}/{} cells done", plans.len());
    Ok(())
}
