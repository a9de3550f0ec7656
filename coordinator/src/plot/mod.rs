//! Figures of a finished run (`coordinator plot`): for each (pair, dataset, passage length)
//! accuracy against measured bytes per sample and the bytes broken down by part, as PNG and
//! SVG, and `points.csv` with the number behind every point. docs/EVALUATION.md, "Figures",
//! says what is drawn and how methods are grouped into curves ([`points`]).
//!
//! The rows are read as the `summary` command reads them (latest try of each sample) and the
//! numbers are the summary's: accuracy with its Wilson interval, mean `bytes_measured_total`,
//! and the manifest's mean breakdown.

pub mod accuracy;
pub mod breakdown;
pub mod csv;
pub mod points;
pub mod render;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::RegistryError;
use crate::registry::{RunDir, write_text_atomic};

pub use points::{FigureKey, FigurePoints, Point, Role};

/// Why a run could not be plotted.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The folder is missing or is not one `coordinator run` wrote.
    #[error(
        "{path} is not a run folder (it needs results/ and configs/cells.json, as \
         `coordinator run` writes them)"
    )]
    NotARunFolder {
        /// The folder given.
        path: PathBuf,
    },
    /// No cell has an answered sample.
    #[error("{path}: none of the {cells} cells has an answered sample; nothing to plot")]
    NoAnsweredRows {
        /// The results folder.
        path: PathBuf,
        /// Cells planned in the run.
        cells: usize,
    },
    /// The run folder could not be read, or `points.csv` written.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A file system operation on the output folder failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// plotters could not draw a figure.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The figure's file.
        path: PathBuf,
        /// The backend's message.
        message: String,
    },
    /// A PNG could not be encoded or written.
    #[error("encoding {path}: {message}")]
    Png {
        /// The figure's file.
        path: PathBuf,
        /// The encoder's message.
        message: String,
    },
    /// The embedded font did not load (a broken build).
    #[error("the embedded DejaVu Sans font does not load")]
    Font,
}

impl PlotError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        PlotError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What `plot_run` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotOutput {
    /// Every file written, figures first (PNG then SVG), `points.csv` last.
    pub files: Vec<PathBuf>,
    /// Figures (each drawn twice: accuracy and breakdown).
    pub figures: usize,
    /// Points plotted (rows of `points.csv`).
    pub points: usize,
    /// Cells left out because none of their samples was answered.
    pub empty_cells: Vec<String>,
}

/// Draws every figure of the run in `run_dir` into `out_dir` (created if missing):
/// `<figure>.accuracy.{png,svg}`, `<figure>.bytes.{png,svg}` and `points.csv`.
pub fn plot_run(run_dir: &Path, out_dir: &Path) -> Result<PlotOutput, PlotError> {
    if !run_dir.join("results").is_dir() {
        return Err(PlotError::NotARunFolder {
            path: run_dir.to_path_buf(),
        });
    }
    let dir = RunDir::open(run_dir)?;
    let (points, empty_cells) = points::load(&dir)?;
    std::fs::create_dir_all(out_dir).map_err(|e| PlotError::io("create folder", out_dir, e))?;
    let figures = points::by_figure(&points);
    let mut files = Vec::new();
    let mut stems = BTreeSet::new();
    for figure in &figures {
        let stem = unique_stem(&mut stems, figure.key.stem());
        files.extend(render::write_png_and_svg(
            &accuracy::AccuracyChart { figure },
            out_dir,
            &format!("{stem}.accuracy"),
        )?);
        files.extend(render::write_png_and_svg(
            &breakdown::BreakdownChart { figure },
            out_dir,
            &format!("{stem}.bytes"),
        )?);
    }
    let ordered: Vec<Point> = figures.into_iter().flat_map(|f| f.points).collect();
    let csv_path = out_dir.join("points.csv");
    write_text_atomic(&csv_path, &csv::render(&ordered))?;
    files.push(csv_path);
    Ok(PlotOutput {
        files,
        figures: stems.len(),
        points: ordered.len(),
        empty_cells,
    })
}

/// `stem`, or `stem-2`, `stem-3`, ... when two figure keys clean to the same file name.
fn unique_stem(used: &mut BTreeSet<String>, stem: String) -> String {
    let mut candidate = stem.clone();
    let mut i = 2;
    while used.contains(&candidate) {
        candidate = format!("{stem}-{i}");
        i += 1;
    }
    used.insert(candidate.clone());
    candidate
}

#[cfg(test)]
mod tests;
