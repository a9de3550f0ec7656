//! What the figures plot: one [`Point`] per cell with answered samples, its role (a bound or a
//! point of a method family's curve), and the grouping of points into figures.
//!
//! Grouping rule (docs/EVALUATION.md, "Figures"):
//! - a figure per (pair, dataset, context length): the length is the dataset's
//!   `context_tokens` (the long SciQ-context variant) or `passage_words` (passkey) when its cell
//!   config sets one (the rows carry no length of their own);
//! - a method's **family** is its label without a trailing `@<digits>` cap (`text-passage@256`
//!   and `text-passage` are the family `text-passage`; `kv-int8` cells of a grid's `budgets`
//!   axis share the label and differ by their cap), and a family's points are its cells at
//!   each cap, ordered by mean measured bytes;
//! - a cell whose answered samples sent no byte on average (receiver-only) is a **lower bound**,
//!   drawn as a horizontal line: it has no place on a log byte axis;
//! - an uncapped text-passage cell (the receiver with the whole passage) is the **upper bound**:
//!   a horizontal line, and also the last point of its family's curve at its measured bytes.

use std::fmt;

use crate::grid::DatasetSpec;
use crate::manifest::{BreakdownMeans, CellManifest};
use crate::method::{MethodSpec, TextMode};
use crate::registry::{CellPlan, RunDir};
use crate::summary::CellSummary;

use super::PlotError;

/// What a point is in its figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Nothing crossed the wire (receiver-only): a horizontal line.
    LowerBound,
    /// The uncapped text passage: a horizontal line and a point of its family.
    UpperBound,
    /// A point of its family's curve.
    Curve,
}

impl Role {
    /// Stable name, as written in the CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::LowerBound => "lower_bound",
            Role::UpperBound => "upper_bound",
            Role::Curve => "curve",
        }
    }
}

/// The length of the passage a dataset's items carry, when its spec sets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContextLength {
    /// Words of filler (passkey's `passage_words`).
    Words(u64),
    /// Sharer tokens (the long variant's `context_tokens`).
    Tokens(u64),
}

impl ContextLength {
    /// The length a dataset spec sets: `context_tokens`, else `passage_words`.
    pub fn of(dataset: &DatasetSpec) -> Option<ContextLength> {
        serde_json::to_value(dataset)
            .ok()
            .and_then(|v| ContextLength::from_json(&v))
    }

    /// The length in a dataset spec's JSON form. Read by field name so that every length field
    /// a grid's datasets have or gain (`context_tokens` came with the long variant) is found in
    /// the resolved cell config, whichever the crate version that wrote it.
    pub fn from_json(dataset: &serde_json::Value) -> Option<ContextLength> {
        let field = |name: &str| dataset.get(name).and_then(serde_json::Value::as_u64);
        field("context_tokens")
            .map(ContextLength::Tokens)
            .or_else(|| field("passage_words").map(ContextLength::Words))
    }

    /// The number.
    pub fn amount(self) -> u64 {
        match self {
            ContextLength::Words(n) | ContextLength::Tokens(n) => n,
        }
    }

    /// `words` or `tokens`.
    pub fn unit(self) -> &'static str {
        match self {
            ContextLength::Words(_) => "words",
            ContextLength::Tokens(_) => "tokens",
        }
    }
}

impl fmt::Display for ContextLength {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount(), self.unit())
    }
}

/// One cell as plotted: accuracy with its interval against mean measured bytes per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The cell.
    pub cell_id: String,
    /// Pair label.
    pub pair: String,
    /// Dataset name.
    pub dataset: String,
    /// The passage length, when the cell's dataset sets one.
    pub context: Option<ContextLength>,
    /// Method label as in the rows.
    pub method: String,
    /// The label without its cap: the curve the point belongs to.
    pub family: String,
    /// Byte cap of the cell.
    pub cap: Option<u64>,
    /// Bound or curve point.
    pub role: Role,
    /// Answered samples (latest try of each).
    pub n: usize,
    /// Correct answers among them.
    pub n_correct: usize,
    /// Accuracy over the answered samples.
    pub accuracy: f64,
    /// Wilson 95% interval of the accuracy (the summary's interval).
    pub ci95: (f64, f64),
    /// Mean of `bytes_measured_total` over the answered samples.
    pub mean_bytes: f64,
    /// Mean bytes per sample of each breakdown part.
    pub breakdown: BreakdownMeans,
}

/// The figure a point belongs to: (pair, dataset, context length).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FigureKey {
    /// Pair label.
    pub pair: String,
    /// Dataset name.
    pub dataset: String,
    /// The passage length, when set.
    pub context: Option<ContextLength>,
}

impl FigureKey {
    /// Title of the figure, for example `smol<-smol | passkey (200 words)`.
    pub fn title(&self) -> String {
        match self.context {
            Some(c) => format!("{} | {} ({c})", self.pair, self.dataset),
            None => format!("{} | {}", self.pair, self.dataset),
        }
    }

    /// File name stem: pair, dataset and `<N>w` (words) or `<N>t` (tokens) joined by `_`,
    /// characters other than ASCII letters, digits, `-`, `_` and `.` replaced by `-`
    /// (`smol<-smol` gives `smol--smol`).
    pub fn stem(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                        c
                    } else {
                        '-'
                    }
                })
                .collect()
        };
        let mut stem = format!("{}_{}", clean(&self.pair), clean(&self.dataset));
        match self.context {
            Some(ContextLength::Words(n)) => stem.push_str(&format!("_{n}w")),
            Some(ContextLength::Tokens(n)) => stem.push_str(&format!("_{n}t")),
            None => {}
        }
        stem
    }
}

/// The points of one figure.
#[derive(Debug, Clone, PartialEq)]
pub struct FigurePoints {
    /// Which figure.
    pub key: FigureKey,
    /// Its points in grid order.
    pub points: Vec<Point>,
}

impl FigurePoints {
    /// The bounds of the figure (lower bounds first).
    pub fn bounds(&self) -> Vec<&Point> {
        let mut bounds: Vec<&Point> = self
            .points
            .iter()
            .filter(|p| p.role != Role::Curve)
            .collect();
        bounds.sort_by_key(|p| p.role);
        bounds
    }

    /// The curves: each family with bytes on the wire and its points ordered by mean bytes
    /// (uncapped last among equal bytes), families in the order of their first cell.
    pub fn curves(&self) -> Vec<(String, Vec<&Point>)> {
        let mut curves: Vec<(String, Vec<&Point>)> = Vec::new();
        for p in self.points.iter().filter(|p| p.role != Role::LowerBound) {
            match curves.iter_mut().find(|(f, _)| *f == p.family) {
                Some((_, pts)) => pts.push(p),
                None => curves.push((p.family.clone(), vec![p])),
            }
        }
        for (_, pts) in &mut curves {
            pts.sort_by(|a, b| {
                a.mean_bytes
                    .total_cmp(&b.mean_bytes)
                    .then_with(|| a.cap.unwrap_or(u64::MAX).cmp(&b.cap.unwrap_or(u64::MAX)))
            });
        }
        curves
    }
}

/// The family of a method label: the label without a trailing `@<digits>` cap.
pub fn family(label: &str) -> &str {
    match label.rsplit_once('@') {
        Some((head, cap)) if !cap.is_empty() && cap.bytes().all(|b| b.is_ascii_digit()) => head,
        _ => label,
    }
}

/// The role of a cell, from its method and mean measured bytes.
pub fn role(method: &MethodSpec, cap: Option<u64>, mean_bytes: f64) -> Role {
    match method {
        _ if mean_bytes <= 0.0 => Role::LowerBound,
        MethodSpec::Text(t) if t.mode == TextMode::Passage && cap.is_none() => Role::UpperBound,
        _ => Role::Curve,
    }
}

/// The point of one cell, from its summary and mean breakdown; `None` when no sample of the
/// cell was answered (nothing to plot).
pub fn point(plan: &CellPlan, entry: &CellManifest) -> Option<Point> {
    let s: &CellSummary = &entry.summary;
    let (accuracy, ci95, mean_bytes) = (s.accuracy?, s.accuracy_ci95?, s.blob_bytes.mean?);
    let config = &plan.cell.config;
    Some(Point {
        cell_id: s.cell_id.clone(),
        pair: s.pair.clone(),
        dataset: config.dataset.name.clone(),
        context: ContextLength::of(&config.dataset),
        family: family(&s.method).to_string(),
        method: s.method.clone(),
        cap: s.budget_cap_bytes,
        role: role(&config.method, s.budget_cap_bytes, mean_bytes),
        n: s.n_ok,
        n_correct: s.n_correct,
        accuracy,
        ci95,
        mean_bytes,
        breakdown: entry.mean_breakdown,
    })
}

/// The points of a run folder in grid order, with the ids of the cells left out because none
/// of their samples was answered. The rows are read as `summary` reads them (latest try of each
/// sample, through [`CellSummary::of`] and [`CellManifest::of`]).
pub fn load(dir: &RunDir) -> Result<(Vec<Point>, Vec<String>), PlotError> {
    if !dir.configs().join("cells.json").is_file() {
        return Err(PlotError::NotARunFolder {
            path: dir.root().to_path_buf(),
        });
    }
    let plans = dir.read_plans()?;
    let mut points = Vec::new();
    let mut empty = Vec::new();
    for plan in &plans {
        let rows = dir.read_rows(&plan.cell.id)?;
        let entry = CellManifest::of(CellSummary::of(&plan.cell, &rows), &rows);
        match point(plan, &entry) {
            Some(p) => points.push(p),
            None => empty.push(plan.cell.id.clone()),
        }
    }
    if points.is_empty() {
        return Err(PlotError::NoAnsweredRows {
            path: dir.results(),
            cells: plans.len(),
        });
    }
    Ok((points, empty))
}

/// Points grouped by figure, figures in the order of their first point.
pub fn by_figure(points: &[Point]) -> Vec<FigurePoints> {
    let mut figures: Vec<FigurePoints> = Vec::new();
    for p in points {
        let key = FigureKey {
            pair: p.pair.clone(),
            dataset: p.dataset.clone(),
            context: p.context,
        };
        match figures.iter_mut().find(|f| f.key == key) {
            Some(f) => f.points.push(p.clone()),
            None => figures.push(FigurePoints {
                key,
                points: vec![p.clone()],
            }),
        }
    }
    figures
}
