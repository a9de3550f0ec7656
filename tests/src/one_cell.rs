//! A coordinator run of one KV cell over the tiny same-model pair, for tests that check the
//! rows it writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use coordinator::cell::expand;
use coordinator::grid::Grid;
use coordinator::registry::CellPlan;
use coordinator::runner::{ReadyCell, RunOptions, receiver_channel};
use coordinator::wire::RequestTemplate;
use kvwire_proto::v1 as pb;

use crate::{TINY_MODEL, example};

/// A grid named `name` of one cell: the tiny pair, arc_easy's test split, KV at fp16.
/// `top` holds top-level keys (`budgets = [...]`), `tables` further tables (`[limits]`,
/// `[retry]`).
pub fn tiny_kv_grid(name: &str, top: &str, tables: &str) -> Grid {
    let text = format!(
        r#"
        name = "{name}"
        {top}
        [[pairs]]
        label = "tiny<-tiny"
        sharer = {{ model = "{TINY_MODEL}" }}
        receiver = {{ model = "{TINY_MODEL}" }}
        [[datasets]]
        name = "arc_easy"
        split = "test"
        [[methods]]
        kind = "kv"
        precision = "fp16"
        {tables}
        "#
    );
    Grid::from_toml(&text).expect("a valid test grid")
}

/// The first cell of `grid`, ready to run against `receiver` (asked to call `sharer`) over
/// [`example`]s with these ids.
pub fn ready_cell(grid: &Grid, receiver: &str, sharer: &str, ids: &[&str]) -> ReadyCell {
    let cell = expand(grid).remove(0);
    let examples: BTreeMap<String, pb::Example> =
        ids.iter().map(|id| (id.to_string(), example(id))).collect();
    ReadyCell {
        plan: CellPlan {
            cell: cell.clone(),
            sample_ids: examples.keys().cloned().collect(),
        },
        template: RequestTemplate::of(&cell.config).expect("a request template"),
        examples: Arc::new(examples),
        receiver: receiver_channel(receiver, &Default::default()).expect("a receiver channel"),
        sharer_endpoint: sharer.to_string(),
    }
}

/// One Evaluate at a time, no progress bar, the grid's retry policy.
pub fn run_options(grid: &Grid) -> RunOptions {
    RunOptions {
        concurrency: 1,
        progress: false,
        retry: grid.retry,
        stop: coordinator::stop::StopSignal::new(),
    }
}
