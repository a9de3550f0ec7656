//! The accuracy-against-bytes figure of one (pair, dataset, passage length): accuracy with its
//! Wilson 95% interval against mean measured bytes per sample on a log axis, one curve per
//! method family, the bounds as labelled horizontal lines with their intervals shaded.

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::points::{FigurePoints, Point, Role};
use super::render::{Chart, fmt_bytes, series_color};

/// The accuracy-against-bytes chart of one figure.
#[derive(Debug)]
pub struct AccuracyChart<'a> {
    /// The figure's points.
    pub figure: &'a FigurePoints,
}

/// The log axis range: at least two whole decades around the positive byte counts, so the axis
/// always has labelled powers of ten and no point sits on its edge.
pub fn byte_range(bytes: impl Iterator<Item = f64>) -> (f64, f64) {
    let (min, max) = bytes
        .filter(|b| *b > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), b| {
            (lo.min(b), hi.max(b))
        });
    if !min.is_finite() {
        return (1.0, 1e3);
    }
    let lo = 10f64.powi((min.log10() - 0.15).floor() as i32);
    let hi = 10f64.powi((max.log10() + 0.15).ceil() as i32);
    // At least two decades: within one, every minor tick gets a label and they collide.
    if hi / lo < 100.0 {
        (lo / 10.0, hi)
    } else {
        (lo, hi)
    }
}

/// The label of a point on its curve: its cap, or `uncapped` for the upper bound and for the
/// cap-free end of a curve of several points (a grid's `uncapped = true`).
fn point_label(p: &Point, on_a_curve: bool) -> Option<String> {
    match (p.cap, p.role) {
        (Some(cap), _) => Some(format!("@{cap}")),
        (None, Role::UpperBound) => Some("uncapped".into()),
        (None, _) if on_a_curve => Some("uncapped".into()),
        _ => None,
    }
}

/// The labels of a curve's points (ordered by bytes), one per position: points that sit on the
/// same spot (a cap above the passage is the uncapped passage) share a label, `@1024, uncapped`.
/// A family's lone cap-free point needs none: the legend names it.
pub fn curve_labels(points: &[&Point]) -> Vec<(f64, f64, String)> {
    let mut labels: Vec<(f64, f64, String)> = Vec::new();
    for p in points {
        let Some(label) = point_label(p, points.len() > 1) else {
            continue;
        };
        match labels.last_mut() {
            Some((x, y, text)) if *x == p.mean_bytes && *y == p.accuracy => {
                text.push_str(", ");
                text.push_str(&label);
            }
            _ => labels.push((p.mean_bytes, p.accuracy, label)),
        }
    }
    labels
}

fn pct(x: f64) -> f64 {
    x * 100.0
}

/// Width of the legend panel right of the plot, pixels.
const LEGEND_WIDTH: u32 = 330;

/// One legend entry: colour, whether it is a bound (a line with no marker), and its text lines.
type LegendEntry = (RGBColor, bool, Vec<String>);

/// The colour of a bound's line.
fn bound_color(role: Role) -> RGBColor {
    match role {
        Role::LowerBound => RGBColor(120, 120, 120),
        _ => BLACK,
    }
}

/// The legend: the bounds with their accuracy and interval, then the curves.
pub fn legend(figure: &FigurePoints) -> Vec<LegendEntry> {
    let mut entries: Vec<LegendEntry> = figure
        .bounds()
        .into_iter()
        .map(|b| {
            let what = match b.role {
                Role::LowerBound => "lower bound",
                _ => "upper bound",
            };
            let detail = format!(
                "{:.1}% [{:.1}, {:.1}], n={}",
                pct(b.accuracy),
                pct(b.ci95.0),
                pct(b.ci95.1),
                b.n
            );
            (
                bound_color(b.role),
                true,
                vec![format!("{} ({what})", b.method), detail],
            )
        })
        .collect();
    for (i, (family, _)) in figure.curves().into_iter().enumerate() {
        entries.push((series_color(i), false, vec![family]));
    }
    entries
}

impl Chart for AccuracyChart<'_> {
    fn size(&self) -> (u32, u32) {
        (1000 + LEGEND_WIDTH, 660)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        let (width, _) = root.dim_in_pixel();
        let (plot, side) = root.split_horizontally(width.saturating_sub(LEGEND_WIDTH));
        let curves = self.figure.curves();
        let (lo, hi) = byte_range(
            curves
                .iter()
                .flat_map(|(_, pts)| pts.iter().map(|p| p.mean_bytes)),
        );
        let mut chart = ChartBuilder::on(&plot)
            .caption(
                format!("{}: accuracy vs bytes", self.figure.key.title()),
                ("sans-serif", 22),
            )
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(64)
            .build_cartesian_2d((lo..hi).log_scale(), 0f64..105f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("measured bytes per sample (mean; log scale)")
            .y_desc("accuracy % (Wilson 95% interval)")
            .x_label_formatter(&|x| fmt_bytes(*x))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_max_light_lines(1)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(err)?;

        draw_bounds(&mut chart, self.figure, (lo, hi)).map_err(err)?;
        for (i, (_, points)) in curves.iter().enumerate() {
            draw_curve(&mut chart, series_color(i), points).map_err(err)?;
        }
        // The legend in its own panel, so it never covers a point or a bound.
        draw_legend(&side, self.figure).map_err(err)?;
        Ok(())
    }
}

/// The chart's coordinates: log bytes against accuracy %.
type Coords = Cartesian2d<LogCoord<f64>, RangedCoordf64>;
type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// Each bound as a horizontal line across `x` with its interval shaded.
fn draw_bounds<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Coords>,
    figure: &FigurePoints,
    (lo, hi): (f64, f64),
) -> DrawResult<DB> {
    for bound in figure.bounds() {
        let color = bound_color(bound.role);
        let acc = pct(bound.accuracy);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(lo, pct(bound.ci95.0)), (hi, pct(bound.ci95.1))],
            color.mix(0.08).filled(),
        )))?;
        chart.draw_series(LineSeries::new(
            [(lo, acc), (hi, acc)],
            color.stroke_width(2),
        ))?;
    }
    Ok(())
}

/// One method family's curve: the line, each point's interval and marker, and its cap labels.
fn draw_curve<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Coords>,
    color: RGBColor,
    points: &[&Point],
) -> DrawResult<DB> {
    let xy: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.mean_bytes, pct(p.accuracy)))
        .collect();
    chart.draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))?;
    chart.draw_series(points.iter().map(|p| {
        ErrorBar::new_vertical(
            p.mean_bytes,
            pct(p.ci95.0),
            pct(p.accuracy),
            pct(p.ci95.1),
            color.stroke_width(1),
            8,
        )
    }))?;
    chart.draw_series(xy.iter().map(|&c| Circle::new(c, 4, color.filled())))?;
    chart.draw_series(
        curve_labels(points)
            .into_iter()
            .enumerate()
            .map(|(k, (x, y, label))| {
                // Below and above the curve in turn, so neighbours' labels do not run into
                // each other.
                let (dy, anchor) = if k % 2 == 0 {
                    (-1.5, VPos::Top)
                } else {
                    (1.5, VPos::Bottom)
                };
                Text::new(
                    label,
                    (x * 1.04, pct(y) + dy),
                    ("sans-serif", 12)
                        .into_font()
                        .color(&color)
                        .pos(Pos::new(HPos::Left, anchor)),
                )
            }),
    )?;
    Ok(())
}

/// The legend panel: a line (and marker, for curves) per entry, then its text lines.
fn draw_legend<DB: DrawingBackend>(
    side: &DrawingArea<DB, Shift>,
    figure: &FigurePoints,
) -> DrawResult<DB> {
    let mut y = 70;
    for (color, is_bound, lines) in legend(figure) {
        side.draw(&PathElement::new(
            vec![(8, y), (36, y)],
            color.stroke_width(if is_bound { 3 } else { 2 }),
        ))?;
        if !is_bound {
            side.draw(&Circle::new((22, y), 4, color.filled()))?;
        }
        for line in lines {
            side.draw(&Text::new(
                line,
                (46, y),
                ("sans-serif", 14)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
            y += 20;
        }
        y += 8;
    }
    Ok(())
}
