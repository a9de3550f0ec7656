//! The bytes-breakdown figure of one (pair, dataset, passage length): per cell, a stacked bar of
//! the mean measured bytes per sample by part (headers, indices, payload, scales, round-2
//! request), its total written above it. The axis is linear, so parts of small cells next to
//! whole KV caches are thin; the totals and `points.csv` carry the numbers.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::points::{FigurePoints, Point};
use super::render::{Chart, fmt_bytes};

/// The breakdown parts in stacking order (bottom first) with their colours.
pub const PARTS: [(&str, RGBColor); 5] = [
    ("payload", RGBColor(0, 114, 178)),
    ("scales", RGBColor(230, 159, 0)),
    ("indices", RGBColor(0, 158, 115)),
    ("headers", RGBColor(204, 121, 167)),
    ("request", RGBColor(213, 94, 0)),
];

/// The mean bytes of each part of `p`, in [`PARTS`] order.
pub fn parts(p: &Point) -> [f64; 5] {
    let b = p.breakdown;
    [b.payload, b.scales, b.indices, b.headers, b.request]
}

/// The bar label of a point: its method label, with the cap when the label does not show it.
pub fn bar_label(p: &Point) -> String {
    match p.cap {
        Some(cap) if p.family == p.method => format!("{}@{cap}", p.method),
        _ => p.method.clone(),
    }
}

/// The stacked-bar chart of one figure.
#[derive(Debug)]
pub struct BreakdownChart<'a> {
    /// The figure's points.
    pub figure: &'a FigurePoints,
}

impl Chart for BreakdownChart<'_> {
    fn size(&self) -> (u32, u32) {
        let n = self.figure.points.len() as u32;
        ((150 * n + 200).max(760), 600)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let points = &self.figure.points;
        let labels: Vec<String> = points.iter().map(bar_label).collect();
        let top = points
            .iter()
            .map(|p| parts(p).iter().sum::<f64>())
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.35;
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!("{}: bytes per sample by part", self.figure.key.title()),
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(80)
            // Integer ranges are inclusive here: 0..n-1 holds n segments.
            .build_cartesian_2d(
                (0..points.len().saturating_sub(1)).into_segmented(),
                0f64..top,
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(points.len())
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .y_label_formatter(&|y| fmt_bytes(*y))
            .y_desc("mean measured bytes per sample")
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(err)?;

        let stacks: Vec<[f64; 5]> = points.iter().map(parts).collect();
        for (k, (name, color)) in PARTS.iter().enumerate() {
            let color = *color;
            chart
                .draw_series(stacks.iter().enumerate().map(|(i, s)| {
                    let y0: f64 = s[..k].iter().sum();
                    let mut bar = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), y0),
                            (SegmentValue::Exact(i + 1), y0 + s[k]),
                        ],
                        color.filled(),
                    );
                    bar.set_margin(0, 0, 18, 18);
                    bar
                }))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .draw_series(stacks.iter().enumerate().map(|(i, s)| {
                let total: f64 = s.iter().sum();
                Text::new(
                    fmt_bytes(total),
                    (SegmentValue::CenterOf(i), total),
                    ("sans-serif", 13)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
            .map_err(err)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    }
}
