//! `points.csv`: one row per plotted point, the numbers behind every figure.

use crate::summary::{csv_field, csv_num};

use super::points::Point;

/// Columns of `points.csv`, in order.
pub const COLUMNS: [&str; 20] = [
    "pair",
    "dataset",
    "context_length",
    "context_unit",
    "method",
    "family",
    "role",
    "cap_bytes",
    "n",
    "n_correct",
    "accuracy",
    "ci95_low",
    "ci95_high",
    "mean_bytes",
    "headers",
    "indices",
    "payload",
    "scales",
    "request",
    "cell_id",
];

/// The CSV of `points` (header line first), in the order given.
pub fn render(points: &[Point]) -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for p in points {
        let b = p.breakdown;
        let row = [
            csv_field(&p.pair),
            csv_field(&p.dataset),
            p.context.map_or(String::new(), |c| c.amount().to_string()),
            p.context.map_or("", |c| c.unit()).to_string(),
            csv_field(&p.method),
            csv_field(&p.family),
            p.role.as_str().to_string(),
            p.cap.map_or(String::new(), |c| c.to_string()),
            p.n.to_string(),
            p.n_correct.to_string(),
            csv_num(Some(p.accuracy), 6),
            csv_num(Some(p.ci95.0), 6),
            csv_num(Some(p.ci95.1), 6),
            csv_num(Some(p.mean_bytes), 3),
            csv_num(Some(b.headers), 3),
            csv_num(Some(b.indices), 3),
            csv_num(Some(b.payload), 3),
            csv_num(Some(b.scales), 3),
            csv_num(Some(b.request), 3),
            csv_field(&p.cell_id),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}
