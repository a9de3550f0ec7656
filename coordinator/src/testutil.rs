//! Builders of plain test data shared by the unit tests.

use std::collections::BTreeMap;

use crate::row::{ByteBreakdown, ByteCounts, ResultRow, RowError, RowStatus};

/// A row of cell `cell` for sample `sample`: answered (with bytes and timings) or failed.
pub fn row(cell: &str, sample: &str, attempt: u32, ok: bool) -> ResultRow {
    let bytes = if ok {
        ByteCounts {
            bytes_measured_total: 1000,
            bytes_measured_breakdown: ByteBreakdown {
                headers: 100,
                indices: 0,
                payload: 850,
                scales: 50,
                request: 0,
            },
            bytes_estimated_total: 1000,
            grpc_message_bytes: 1040,
            transport_bytes_read: 1200,
            transport_bytes_written: 300,
        }
    } else {
        ByteCounts::default()
    };
    ResultRow {
        cell_id: cell.into(),
        sample_id: sample.into(),
        attempt,
        status: if ok { RowStatus::Ok } else { RowStatus::Failed },
        error: (!ok).then(|| RowError {
            kind: "Unavailable".into(),
            error_type: Some("sharer_stream_broken".into()),
            message: "sharer went away".into(),
            retry_after_ms: None,
        }),
        pair: "p".into(),
        dataset: "arc_easy".into(),
        method: "kv-int8".into(),
        link: None,
        gold: "A".into(),
        prediction: ok.then(|| "A".into()),
        correct: ok.then_some(true),
        margin: ok.then_some(0.5),
        rank: Vec::new(),
        bytes,
        budget_cap_bytes: Some(2000),
        budget_actual_bytes: bytes.bytes_measured_total,
        budget_slack_bytes: Some(2000 - bytes.bytes_measured_total as i64),
        timings_ms: if ok {
            BTreeMap::from([("end_to_end".to_string(), 12.5)])
        } else {
            BTreeMap::new()
        },
        rounds: Vec::new(),
        coordinator_wall_ms: 13.0,
        finished_at_unix_ms: 1,
    }
}

/// A small grid: one pair, one dataset, receiver-only and KV at int8 and int4.
pub const GRID: &str = r#"
    name = "g"
    [[pairs]]
    label = "s<-s"
    sharer = { model = "gguf:m" }
    receiver = { model = "gguf:m" }
    [[datasets]]
    name = "arc_easy"
    split = "test"
    [[methods]]
    kind = "receiver_only"
    [[methods]]
    kind = "kv"
    precision = "int8"
    [[methods]]
    kind = "kv"
    precision = "int4"
"#;

/// The cells of [`GRID`].
pub fn cells() -> Vec<crate::cell::Cell> {
    crate::cell::expand(&crate::grid::Grid::from_toml(GRID).expect("a valid test grid"))
}

/// A cell of [`GRID`] under another id.
pub fn cell(id: &str) -> crate::cell::Cell {
    let mut cell = cells().remove(0);
    cell.id = id.to_string();
    cell
}
