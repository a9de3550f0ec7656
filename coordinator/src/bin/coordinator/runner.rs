//! The run loop: every pending sample of every unfinished cell becomes one `Evaluate` call,
//! at most `concurrency` in flight (a tokio semaphore). Rows are appended (and synced) by this
//! task alone as calls finish, so the registry never sees two writers; a cell is marked done
//! as soon as its last sample is answered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use coordinator::registry::{CellPlan, DoneMarker, RowAppender, RunDir};
use coordinator::row::ResultRow;
use indicatif::{ProgressBar, ProgressStyle};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::wire::{RequestTemplate, Try, answered_row, code_name, failed_row};

/// Largest reply accepted from a receiver (replies are small: numbers and a short text).
pub const MAX_REPLY_BYTES: usize = 4 << 20;

/// A cell ready to run: its plan, request template, examples and endpoints.
#[derive(Debug, Clone)]
pub struct ReadyCell {
    /// The cell and its sample ids.
    pub plan: CellPlan,
    /// The per-cell part of each request.
    pub template: RequestTemplate,
    /// Examples by id.
    pub examples: Arc<BTreeMap<String, pb::Example>>,
    /// Receiver channel.
    pub receiver: Channel,
    /// Sharer endpoint the receiver should call.
    pub sharer_endpoint: String,
}

/// Counts of one invocation.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunCounts {
    /// Cells skipped because their done marker exists.
    pub cells_skipped: usize,
    /// Cells marked done by this invocation.
    pub cells_finished: usize,
    /// Samples skipped because an answered row exists.
    pub samples_skipped: usize,
    /// Tries answered.
    pub answered: usize,
    /// Tries failed.
    pub failed: usize,
}

/// Connects a lazy channel to a receiver, with explicit message limits applied per client.
pub fn receiver_channel(url: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(url.to_string())
        .with_context(|| format!("receiver endpoint {url:?} is not a URL"))?
        .connect_timeout(Duration::from_secs(10))
        .connect_lazy())
}

fn client(channel: Channel) -> ReceiverClient<Channel> {
    ReceiverClient::new(channel)
        .max_decoding_message_size(MAX_REPLY_BYTES)
        .max_encoding_message_size(MAX_REPLY_BYTES)
}

/// One try of one sample; never fails: errors become failed rows.
async fn evaluate(cell: Arc<ReadyCell>, sample_id: String, attempt: u32) -> ResultRow {
    let config = &cell.plan.cell.config;
    let example = cell.examples.get(&sample_id).cloned().unwrap_or_default();
    let gold = example.gold.clone();
    let deadline = Duration::from_secs(config.sample_timeout_s);
    let mut request = tonic::Request::new(cell.template.request(example, &cell.sharer_endpoint));
    request.set_timeout(deadline);
    let start = Instant::now();
    // The client-side guard fires only if the server ignores the propagated deadline.
    let outcome = tokio::time::timeout(
        deadline + Duration::from_secs(5),
        client(cell.receiver.clone()).evaluate(request),
    )
    .await;
    let t = Try {
        cell_id: &cell.plan.cell.id,
        cell: config,
        sample_id: &sample_id,
        gold: &gold,
        attempt,
        wall_ms: start.elapsed().as_secs_f64() * 1e3,
    };
    match outcome {
        Ok(Ok(reply)) => answered_row(&t, reply.get_ref()),
        Ok(Err(status)) => failed_row(&t, &code_name(status.code()), status.message()),
        Err(_) => failed_row(&t, "timeout", "no reply within the deadline plus 5 s"),
    }
}

/// Runs every pending sample of `cells` and appends the rows to `dir`.
pub async fn run(
    dir: &RunDir,
    cells: Vec<ReadyCell>,
    concurrency: usize,
    show_progress: bool,
) -> anyhow::Result<RunCounts> {
    let mut counts = RunCounts::default();
    let mut appenders: Vec<Option<RowAppender>> = Vec::new();
    let mut remaining: Vec<usize> = Vec::new();
    let mut work: Vec<(usize, String, u32)> = Vec::new();
    let cells: Vec<Arc<ReadyCell>> = cells.into_iter().map(Arc::new).collect();
    for (i, cell) in cells.iter().enumerate() {
        let id = &cell.plan.cell.id;
        if dir.is_done(id) {
            counts.cells_skipped += 1;
            appenders.push(None);
            remaining.push(0);
            continue;
        }
        let rows = dir.read_rows(id)?;
        let pending = rows.pending(&cell.plan.sample_ids);
        counts.samples_skipped += cell.plan.sample_ids.len() - pending.len();
        for sample in &pending {
            work.push((i, sample.to_string(), rows.next_attempt(sample)));
        }
        remaining.push(pending.len());
        appenders.push(Some(dir.appender(id)?));
        if pending.is_empty() {
            finish_cell(dir, &cell.plan, &mut counts)?;
        }
    }

    let progress = if show_progress {
        ProgressBar::new(work.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} samples  {elapsed_precise} elapsed, ~{eta} left  {msg}",
        )
        .context("progress bar template")?,
    );

    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (i, sample, attempt) in work {
        let cell = Arc::clone(&cells[i]);
        let permits = Arc::clone(&permits);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (i, evaluate(cell, sample, attempt).await)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, row) = joined.context("an evaluation task panicked")?;
        let appender = appenders[i]
            .as_mut()
            .context("row for a cell that was not opened")?;
        appender.append(&row)?;
        if row.is_ok() {
            counts.answered += 1;
        } else {
            counts.failed += 1;
            if let Some(e) = &row.error {
                progress.println(format!(
                    "failed: cell {} sample {} try {}: {}: {}",
                    row.cell_id, row.sample_id, row.attempt, e.kind, e.message
                ));
            }
        }
        progress.set_message(format!("{} failed", counts.failed));
        progress.inc(1);
        remaining[i] -= 1;
        if remaining[i] == 0 {
            finish_cell(dir, &cells[i].plan, &mut counts)?;
        }
    }
    progress.finish_and_clear();
    Ok(counts)
}

/// Marks a cell done when every sample's latest try is answered.
fn finish_cell(dir: &RunDir, plan: &CellPlan, counts: &mut RunCounts) -> anyhow::Result<()> {
    let rows = dir.read_rows(&plan.cell.id)?;
    if !rows.pending(&plan.sample_ids).is_empty() {
        return Ok(());
    }
    dir.mark_done(&DoneMarker {
        cell_id: plan.cell.id.clone(),
        samples: plan.sample_ids.len(),
        attempts: rows.rows.len(),
        finished_at_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    })?;
    counts.cells_finished += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use coordinator::cell::expand;
    use coordinator::grid::Grid;

    use crate::embedded::Embedded;
    use crate::log::RunLog;

    const GRID: &str = r#"
        name = "retry"
        [[pairs]]
        label = "tiny<-tiny"
        sharer = { model = "random:tiny-llama:0" }
        receiver = { model = "random:tiny-llama:0" }
        [[datasets]]
        name = "arc_easy"
        split = "test"
        [[methods]]
        kind = "kv"
        precision = "int8"
        [limits]
        sample_timeout_s = 60
    "#;

    fn examples() -> BTreeMap<String, pb::Example> {
        (0..3)
            .map(|i| {
                let ex = pb::Example {
                    id: format!("q{i}"),
                    question: format!("Which number is the largest of these, case {i}?"),
                    choices: vec!["1".into(), "20".into(), "300".into(), "4".into()],
                    gold: "C".into(),
                };
                (ex.id.clone(), ex)
            })
            .collect()
    }

    /// Real services (random tiny models) on loopback; the first pass points the receiver at
    /// a sharer port nobody listens on, so every sample fails; the second pass retries them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_samples_become_rows_and_a_retry_replaces_them() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::create(tmp.path().join("run")).unwrap();
        let log = RunLog::open(&tmp.path().join("log"), false).unwrap();
        let cell = expand(&Grid::from_toml(GRID).unwrap()).remove(0);
        let services = Embedded::start(std::slice::from_ref(&cell.config.pair), &log)
            .await
            .unwrap();
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let examples = Arc::new(examples());
        let ready = ReadyCell {
            plan: CellPlan {
                cell: cell.clone(),
                sample_ids: examples.keys().cloned().collect(),
            },
            template: RequestTemplate::of(&cell.config).unwrap(),
            examples,
            receiver: receiver_channel(
                &services
                    .receiver_url(&cell.config.pair.receiver.model, None)
                    .unwrap(),
            )
            .unwrap(),
            sharer_endpoint: dead,
        };

        let first = run(&dir, vec![ready.clone()], 2, false).await.unwrap();
        assert_eq!((first.answered, first.failed), (0, 3));
        let rows = dir.read_rows(&cell.id).unwrap();
        assert!(
            rows.rows
                .iter()
                .all(|r| !r.is_ok() && r.error.as_ref().is_some_and(|e| !e.kind.is_empty()))
        );
        assert!(!dir.is_done(&cell.id));

        let good = ReadyCell {
            sharer_endpoint: services.sharer_url(&cell.config.pair.sharer.model).unwrap(),
            ..ready
        };
        let second = run(&dir, vec![good.clone()], 2, false).await.unwrap();
        assert_eq!((second.answered, second.failed), (3, 0));
        assert!(dir.is_done(&cell.id));
        let rows = dir.read_rows(&cell.id).unwrap();
        assert_eq!(
            rows.rows.len(),
            6,
            "three failed tries on record, three retries"
        );
        let latest = rows.latest();
        assert_eq!(latest.len(), 3);
        for row in latest.values() {
            assert!(row.is_ok() && row.attempt == 2, "{row:?}");
            let b = row.bytes;
            assert!(b.bytes_measured_total > 0);
            assert!(b.grpc_message_bytes > b.bytes_measured_total, "{b:?}");
            assert!(b.transport_bytes_read > b.grpc_message_bytes, "{b:?}");
        }

        let third = run(&dir, vec![good], 2, false).await.unwrap();
        assert_eq!(
            (third.cells_skipped, third.answered, third.failed),
            (1, 0, 0)
        );
        services.shutdown().await;
    }
}
