//! `coordinator regime-map RUN... --out DIR`: where a cache beats text, per regime and byte
//! budget (docs/REGIME_MAP.md).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use coordinator::registry::write_text_atomic;
use coordinator::{regime, regime_plot, regime_report};

/// `coordinator regime-map` arguments.
#[derive(Debug, Args)]
pub struct RegimeMapArgs {
    /// Run folders (their cells are pooled; a regime is (pair, task, link)).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Where the map goes (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// The accuracy (0-1) of the inverse view, bytes needed to reach it; by default halfway
    /// between the receiver alone and the best cell of each regime.
    #[arg(long)]
    target_accuracy: Option<f64>,
}

/// Writes regime_table.csv, bytes_to_target.csv, summary.md, heatmap and per-(pair, task)
/// figures.
pub fn regime_map(args: RegimeMapArgs) -> anyhow::Result<()> {
    if let Some(t) = args.target_accuracy {
        anyhow::ensure!(
            (0.0..=1.0).contains(&t),
            "--target-accuracy is a fraction in [0, 1], not {t}"
        );
    }
    let (cells, left_out): (Vec<_>, Vec<_>) = regime::load(&args.runs)
        .context("reading the run folders")?
        .into_iter()
        .partition(|c| c.is_complete());
    for c in &left_out {
        eprintln!(
            "left out: {} {} ({} of {} samples answered) in {}",
            c.cell_id,
            c.method_cap(),
            c.n(),
            c.planned,
            c.run.display()
        );
    }
    anyhow::ensure!(
        !cells.is_empty(),
        "no cell of the runs has every sample answered"
    );
    let rows = regime::map(&cells);
    for r in &rows {
        for (kind, b) in [("cache", &r.cache), ("text", &r.text)] {
            if let Some(b) = b.as_ref().filter(|b| !b.tie_break.is_empty()) {
                eprintln!(
                    "tie-break {} {} {} budget {:?}, best {kind} {}: {}",
                    r.key.0,
                    r.key.1,
                    r.key.2,
                    r.budget,
                    b.cell.method_cap(),
                    b.tie_break
                );
            }
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let targets = regime_report::targets(&cells, args.target_accuracy);
    let names: Vec<String> = args.runs.iter().map(|p| p.display().to_string()).collect();
    let mut files = Vec::new();
    for (name, text) in [
        ("regime_table.csv", regime_report::table_csv(&rows)),
        ("bytes_to_target.csv", regime_report::targets_csv(&targets)),
        (
            "summary.md",
            regime_report::summary_md(&rows, &targets, &cells, &left_out, &names),
        ),
    ] {
        let path = args.out.join(name);
        write_text_atomic(&path, &text)?;
        files.push(path);
    }
    files.extend(regime_plot::write_figures(
        &rows, &args.runs, &left_out, &args.out,
    )?);
    for f in &files {
        println!("{}", f.display());
    }
    println!("{} rows over {} cells", rows.len(), cells.len());
    Ok(())
}
