//! The regime map's figures: the heatmap (who wins per regime and budget) drawn here, and per
//! (pair, task) the accuracy-against-bytes frontier and the bytes breakdown, drawn by the
//! `plot` module's charts over the same run folders.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::plot::PlotError;
use crate::plot::accuracy::AccuracyChart;
use crate::plot::breakdown::BreakdownChart;
use crate::plot::points::{self, FigurePoints};
use crate::plot::render::{Chart, write_png_and_svg};
use crate::regime::{CellView, RegimeKey, RegimeRow, Verdict, budget_label};
use crate::registry::RunDir;

/// Who wins, per regime (rows) and budget (columns).
#[derive(Debug)]
pub struct Heatmap<'a> {
    /// The map.
    pub rows: &'a [RegimeRow<'a>],
}

const LABEL_W: u32 = 430;
const COL_W: u32 = 150;
const ROW_H: u32 = 54;
const TOP: u32 = 70;
const LEGEND_H: u32 = 120;

fn color(v: Verdict) -> RGBColor {
    match v {
        Verdict::CacheAccuracy => RGBColor(0, 90, 160),
        Verdict::CacheLatency => RGBColor(120, 175, 225),
        Verdict::TextAccuracy => RGBColor(200, 95, 0),
        Verdict::TextLatency => RGBColor(240, 180, 110),
        Verdict::Tie => RGBColor(200, 200, 200),
        Verdict::OnlyText => RGBColor(250, 228, 200),
        Verdict::OnlyCache => RGBColor(210, 228, 245),
    }
}

impl Heatmap<'_> {
    fn keys(&self) -> Vec<&RegimeKey> {
        let mut keys: Vec<&RegimeKey> = Vec::new();
        for r in self.rows {
            if !keys.contains(&&r.key) {
                keys.push(&r.key);
            }
        }
        keys
    }

    fn budgets(&self) -> Vec<Option<u64>> {
        let mut b: Vec<Option<u64>> = self
            .rows
            .iter()
            .filter_map(|r| r.budget)
            .map(Some)
            .collect();
        b.sort();
        b.dedup();
        b.push(None);
        b
    }
}

impl Chart for Heatmap<'_> {
    fn size(&self) -> (u32, u32) {
        let w = LABEL_W + COL_W * self.budgets().len() as u32 + 20;
        let h = TOP + ROW_H * self.keys().len() as u32 + LEGEND_H;
        (w.max(900), h)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let font = |size: u32| ("sans-serif", size).into_font();
        let centred = Pos::new(HPos::Center, VPos::Center);
        root.draw_text(
            "Cache transfer against text: who wins, per regime and byte budget",
            &font(22).into_text_style(root),
            (12, 12),
        )
        .map_err(e)?;
        let budgets = self.budgets();
        for (j, b) in budgets.iter().enumerate() {
            let x = (LABEL_W + COL_W * j as u32 + COL_W / 2) as i32;
            let label = budget_label(*b);
            root.draw_text(
                &label,
                &font(16).into_text_style(root).pos(centred),
                (x, TOP as i32 - 14),
            )
            .map_err(e)?;
        }
        for (i, key) in self.keys().iter().enumerate() {
            let y = (TOP + ROW_H * i as u32) as i32;
            let label = format!("{} | {} | {}", key.0, key.1, key.2);
            let style = font(15)
                .into_text_style(root)
                .pos(Pos::new(HPos::Left, VPos::Center));
            root.draw_text(&label, &style, (10, y + ROW_H as i32 / 2))
                .map_err(e)?;
            for (j, b) in budgets.iter().enumerate() {
                let x = (LABEL_W + COL_W * j as u32) as i32;
                let cell = self.rows.iter().find(|r| &r.key == *key && r.budget == *b);
                let (fill, text) = match cell {
                    Some(r) => (
                        color(r.verdict),
                        r.accuracy_delta
                            .map_or_else(String::new, |(d, _)| format!("{:+.1} pts", 100.0 * d)),
                    ),
                    None => (WHITE, "-".into()),
                };
                let rect = [(x + 2, y + 2), (x + COL_W as i32 - 2, y + ROW_H as i32 - 2)];
                root.draw(&Rectangle::new(rect, fill.filled())).map_err(e)?;
                root.draw(&Rectangle::new(rect, BLACK.stroke_width(1)))
                    .map_err(e)?;
                let at = (x + COL_W as i32 / 2, y + ROW_H as i32 / 2);
                root.draw_text(&text, &font(15).into_text_style(root).pos(centred), at)
                    .map_err(e)?;
            }
        }
        let y0 = (TOP + ROW_H * self.keys().len() as u32 + 20) as i32;
        let legend = [
            Verdict::CacheAccuracy,
            Verdict::CacheLatency,
            Verdict::Tie,
            Verdict::TextLatency,
            Verdict::TextAccuracy,
            Verdict::OnlyText,
            Verdict::OnlyCache,
        ];
        for (k, v) in legend.iter().enumerate() {
            let (x, y) = (10 + 230 * (k as i32 % 4), y0 + 30 * (k as i32 / 4));
            root.draw(&Rectangle::new(
                [(x, y), (x + 22, y + 18)],
                color(*v).filled(),
            ))
            .map_err(e)?;
            root.draw_text(v.as_str(), &font(14).into_text_style(root), (x + 30, y + 2))
                .map_err(e)?;
        }
        root.draw_text(
            "cell text: cache minus text accuracy (percentage points), paired on the same items",
            &font(14).into_text_style(root),
            (10, y0 + 70),
        )
        .map_err(e)?;
        Ok(())
    }
}

/// Writes `heatmap.{png,svg}`, and per (pair, task) of the first run that has it the frontier
/// (`<pair>_<task>.frontier.*`, accuracy against bytes per method family, bounds as lines) and
/// the bytes breakdown (`<pair>_<task>.bytes.*`). Bytes and accuracy do not depend on the link
/// (the same computation crosses every link), so each figure draws one link's cells: the first
/// link of the run's grid. Cells in `left_out` (not every sample answered) are not drawn, as
/// they are not in the map. Returns the files written.
pub fn write_figures(
    rows: &[RegimeRow<'_>],
    runs: &[PathBuf],
    left_out: &[CellView],
    out: &Path,
) -> Result<Vec<PathBuf>, PlotError> {
    let mut files: Vec<PathBuf> = write_png_and_svg(&Heatmap { rows }, out, "heatmap")?.to_vec();
    let mut done: Vec<(String, String)> = Vec::new();
    for run in runs {
        let dir = RunDir::open(run)?;
        let (mut pts, _) = points::load(&dir)?;
        pts.retain(|p| {
            !left_out
                .iter()
                .any(|c| &c.run == run && c.cell_id == p.cell_id)
        });
        for figure in points::by_figure(&pts) {
            let (pair, link) = match figure.key.pair.split_once('@') {
                Some((p, l)) => (p.to_string(), Some(l.to_string())),
                None => (figure.key.pair.clone(), None),
            };
            let task = match figure.key.context {
                Some(c) => format!("{}_{}{}", figure.key.dataset, c.amount(), &c.unit()[..1]),
                None => figure.key.dataset.clone(),
            };
            if done.contains(&(pair.clone(), task.clone())) {
                continue;
            }
            done.push((pair.clone(), task.clone()));
            let mut fig: FigurePoints = figure.clone();
            fig.key.pair = match link {
                Some(l) => format!("{pair} (link {l})"),
                None => pair.clone(),
            };
            let stem = clean(&format!("{pair}_{task}"));
            files.extend(write_png_and_svg(
                &AccuracyChart { figure: &fig },
                out,
                &format!("{stem}.frontier"),
            )?);
            files.extend(write_png_and_svg(
                &BreakdownChart { figure: &fig },
                out,
                &format!("{stem}.bytes"),
            )?);
        }
    }
    Ok(files)
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
