//! What OTLP span export costs an evaluation: a measurement, not a check (ignored; run with
//! `cargo test -p coordinator --test otlp_overhead -- --ignored --nocapture`). The figures are
//! in docs/OPERATIONS.md, "Traces (OTLP)".

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::collector::{Collector, start_collector};
use common::write_grid;

/// Every row's coordinator wall time, by (cell, sample).
fn wall_ms(run: &Path) -> HashMap<(String, String), f64> {
    let dir = coordinator::registry::RunDir::open(run).unwrap();
    let mut walls = HashMap::new();
    for plan in dir.read_plans().unwrap() {
        for row in dir.read_rows(&plan.cell.id).unwrap().rows {
            assert!(
                matches!(row.status, coordinator::row::RowStatus::Ok),
                "{row:?}"
            );
            walls.insert((row.cell_id, row.sample_id), row.coordinator_wall_ms);
        }
    }
    walls
}

/// One `coordinator run` of `grid` into `out` on embedded services, exporting to `endpoint`
/// when given: every row's wall time by (cell, sample), and the process's CPU seconds (user and
/// system, from the shell's `times`).
fn measured_run(
    grid: &Path,
    out: &Path,
    endpoint: Option<&str>,
) -> (HashMap<(String, String), f64>, f64) {
    let mut args = vec![
        "run",
        grid.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ];
    if let Some(endpoint) = endpoint {
        args.extend(["--otlp-endpoint", endpoint]);
    }
    let exe = env!("CARGO_BIN_EXE_coordinator");
    let done = std::process::Command::new("bash")
        .args([
            "-c",
            r#""$@" > /dev/null 2>&1 || exit 1; times"#,
            "bash",
            exe,
        ])
        .args(&args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .unwrap();
    assert!(done.status.success(), "coordinator {args:?} failed");
    // `times`: the shell's user and system times, then its children's (`0m1.234s 0m0.056s`).
    let text = String::from_utf8_lossy(&done.stdout);
    let children = text.lines().nth(1).expect("times prints two lines");
    let cpu = children
        .split_whitespace()
        .map(|t| {
            let (m, s) = t.trim_end_matches('s').split_once('m').unwrap();
            m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
        })
        .sum();
    (wall_ms(&out.join("overhead")), cpu)
}

/// The ratio of mean wall times and the mean added time (ms) of paired (off, on) times, with
/// 95% bootstrap intervals that resample repetitions (the machine's load changes from run to
/// run, and every evaluation of a run shares it), then the pairs within each.
fn paired_effect(repetitions: &[Vec<(f64, f64)>]) -> [(f64, f64, f64); 2] {
    use rand::{Rng as _, SeedableRng as _};
    let effect = |sample: &[(f64, f64)]| {
        let (off, on) = sample
            .iter()
            .fold((0.0, 0.0), |(a, b), (off, on)| (a + off, b + on));
        (on / off, (on - off) / sample.len() as f64)
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
    let (mut ratios, mut added): (Vec<f64>, Vec<f64>) = (0..2000)
        .map(|_| {
            let mut sample: Vec<(f64, f64)> = Vec::new();
            for _ in 0..repetitions.len() {
                let run = &repetitions[rng.random_range(0..repetitions.len())];
                sample.extend((0..run.len()).map(|_| run[rng.random_range(0..run.len())]));
            }
            effect(&sample)
        })
        .unzip();
    ratios.sort_by(f64::total_cmp);
    added.sort_by(f64::total_cmp);
    let (ratio, added_ms) = effect(&repetitions.concat());
    [
        (ratio, ratios[50], ratios[1949]),
        (added_ms, added[50], added[1949]),
    ]
}

/// What exporting every span costs, on embedded services with tiny models (so an upper bound
/// on the relative cost: real models spend far longer per span). Runs of the same grid
/// alternate export off and on; each evaluation is paired with itself in the other run of its
/// repetition (wall time), and each run's CPU time with the other's. Not in CI (a measurement,
/// under a minute): `cargo test -p coordinator --test otlp_overhead -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check; run with --ignored --nocapture"]
async fn export_overhead() {
    const ITEMS: usize = 50;
    const REPETITIONS: usize = 10;
    let collector = Collector::default();
    let endpoint = start_collector(collector.clone()).await;
    let tmp = tempfile::tempdir().unwrap();
    let grid = write_grid(tmp.path(), "overhead", ITEMS);
    // Per repetition: the (off, on) wall times of its evaluations, and its (off, on) CPU s.
    let mut walls: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut cpu: Vec<Vec<(f64, f64)>> = Vec::new();
    for rep in 0..REPETITIONS {
        let run = |exported: bool| {
            let out = tmp.path().join(format!("rep{rep}-{exported}"));
            measured_run(&grid, &out, exported.then_some(endpoint.as_str()))
        };
        // Alternate which goes first, so drift in the machine's load hits both.
        let ((off, off_cpu), (on, on_cpu)) = if rep % 2 == 0 {
            let off = run(false);
            (off, run(true))
        } else {
            let on = run(true);
            (run(false), on)
        };
        walls.push(off.iter().map(|(key, ms)| (*ms, on[key])).collect());
        cpu.push(vec![(off_cpu, on_cpu)]);
    }
    let exported = collector.0.lock().unwrap().len();
    let evaluations = walls[0].len();
    let off_ms =
        walls.concat().iter().map(|p| p.0).sum::<f64>() / (evaluations * REPETITIONS) as f64;
    let [(ratio, r_lo, r_hi), (added, a_lo, a_hi)] = paired_effect(&walls);
    println!(
        "wall: n = {} paired evaluations ({REPETITIONS} repetitions x {evaluations}); mean \
         {off_ms:.2} ms with export off; on/off {ratio:.3} (95% CI {r_lo:.3} to {r_hi:.3}), \
         {added:+.3} ms per evaluation (95% CI {a_lo:+.3} to {a_hi:+.3})",
        evaluations * REPETITIONS,
    );
    let [(ratio, r_lo, r_hi), (added, a_lo, a_hi)] = paired_effect(&cpu);
    let per_eval = |s: f64| s * 1e3 / evaluations as f64;
    println!(
        "CPU: n = {REPETITIONS} paired runs of {evaluations} evaluations; on/off {ratio:.3} (95% \
         CI {r_lo:.3} to {r_hi:.3}), {:+.3} ms of CPU per evaluation (95% CI {:+.3} to {:+.3}); \
         {exported} spans exported",
        per_eval(added),
        per_eval(a_lo),
        per_eval(a_hi),
    );
    assert!(exported > 0);
}
