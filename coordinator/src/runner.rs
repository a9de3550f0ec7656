//! The run loop: every pending sample of every unfinished cell becomes `Evaluate` calls, at
//! most `concurrency` in flight (a tokio semaphore), retried under the grid's [`RetryPolicy`].
//! Every try, failed or answered, becomes a row; rows are appended (and synced) by the run task
//! alone as tries finish, so the registry never sees two writers; a cell is marked done as soon
//! as its last sample is answered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use service_kit::trace_context::TraceContext;
use service_kit::transport::client::{ClientChannel, ClientTransport};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::error::{RegistryError, RunError};
use crate::registry::{CellPlan, DoneMarker, RowAppender, RunDir};
use crate::retry::RetryPolicy;
use crate::row::ResultRow;
use crate::stop::StopSignal;
use crate::timestamp::now_unix_ms;
use crate::wire::{RequestTemplate, Try, answered_row, failed_row, status_row};

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
    /// Receiver channel (TLS and the bearer token as the client transport says).
    pub receiver: ClientChannel,
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
    /// Samples answered.
    pub answered: usize,
    /// Samples whose last try of this invocation failed.
    pub failed: usize,
    /// Failed tries followed by another try (each one a row on record).
    pub retried: usize,
    /// Samples left pending because the run was stopped early.
    pub not_run: usize,
}

/// Connects a lazy channel to a service at `url` through `transport` (`https://` with its CA,
/// its client certificate and token); message limits are applied per client.
pub fn receiver_channel(url: &str, transport: &ClientTransport) -> Result<ClientChannel, RunError> {
    transport
        .lazy_channel(url, Duration::from_secs(10))
        .map_err(|reason| RunError::Endpoint {
            url: url.to_string(),
            reason,
        })
}

fn client(channel: ClientChannel) -> ReceiverClient<ClientChannel> {
    ReceiverClient::new(channel)
        .max_decoding_message_size(MAX_REPLY_BYTES)
        .max_encoding_message_size(MAX_REPLY_BYTES)
}

/// One try of one sample; never fails: errors become failed rows.
async fn evaluate(cell: &ReadyCell, sample_id: &str, attempt: u32) -> ResultRow {
    let config = &cell.plan.cell.config;
    let example = cell.examples.get(sample_id).cloned().unwrap_or_default();
    let gold = example.gold.clone();
    let deadline = Duration::from_secs(config.sample_timeout_s);
    let mut request = tonic::Request::new(cell.template.request(example, &cell.sharer_endpoint));
    request.set_timeout(deadline);
    // Each try starts a trace when spans are exported (`run --otlp-endpoint`): the receiver's
    // and the sharer's spans of this evaluation are its children.
    let span = tracing::info_span!(
        "coordinator.evaluate",
        otel.kind = "client",
        cell = %cell.plan.cell.id,
        sample = sample_id,
        attempt,
    );
    if let Some(trace) = TraceContext::of_span(&span) {
        trace.inject(request.metadata_mut());
    }
    let start = Instant::now();
    // The client-side guard fires only if the server ignores the propagated deadline.
    let outcome = tokio::time::timeout(
        deadline + Duration::from_secs(5),
        client(cell.receiver.clone()).evaluate(request),
    )
    .instrument(span)
    .await;
    let t = Try {
        cell_id: &cell.plan.cell.id,
        cell: config,
        sample_id,
        gold: &gold,
        attempt,
        wall_ms: start.elapsed().as_secs_f64() * 1e3,
    };
    match outcome {
        Ok(Ok(reply)) => answered_row(&t, reply.get_ref()),
        Ok(Err(status)) => status_row(&t, &status),
        Err(_) => failed_row(&t, "timeout", None, "no reply within the deadline plus 5 s"),
    }
}

/// A finished try on its way to the writer: the cell index, the row, and whether it is the
/// sample's last try of this invocation.
type TryDone = (usize, ResultRow, bool);

/// What a sample task needs besides its own sample.
#[derive(Clone)]
struct SampleContext {
    retry: RetryPolicy,
    permits: Arc<Semaphore>,
    stop: StopSignal,
    rows: mpsc::UnboundedSender<TryDone>,
}

/// Tries one sample until it is answered, fails for good, or runs out of tries. Every try is
/// sent to the writer as it ends; the job pool permit is held only while a call is in flight,
/// never during a back-off wait. Once a stop is asked for, no new try starts (a try in flight
/// finishes and is written); the sample stays pending for the next run.
async fn run_sample(
    i: usize,
    cell: Arc<ReadyCell>,
    sample_id: String,
    first_attempt: u32,
    ctx: SampleContext,
) {
    let mut tries = 0;
    loop {
        let mut row = {
            let _permit = tokio::select! {
                biased;
                _ = ctx.stop.stopped() => return,
                permit = ctx.permits.acquire() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            evaluate(&cell, &sample_id, first_attempt + tries).await
        };
        tries += 1;
        let delay = row.error.as_mut().and_then(|e| {
            let delay = ctx.retry.next_delay(tries, &e.kind)?;
            e.retry_after_ms = Some(delay.as_millis() as u64);
            Some(delay)
        });
        if ctx.rows.send((i, row, delay.is_none())).is_err() {
            return;
        }
        let Some(delay) = delay else {
            return;
        };
        tokio::select! {
            _ = ctx.stop.stopped() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// How a run proceeds.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Evaluate calls in flight.
    pub concurrency: usize,
    /// Show a progress bar.
    pub progress: bool,
    /// Tries per sample and back-off.
    pub retry: RetryPolicy,
    /// Given to stop the run early: no new try starts, the ones in flight finish.
    pub stop: StopSignal,
}

/// Each cell's appender (none for a cell already done), its samples still to answer, and the
/// tries to make: (cell index, sample id, attempt number).
struct OpenCells {
    appenders: Vec<Option<RowAppender>>,
    remaining: Vec<usize>,
    work: Vec<(usize, String, u32)>,
}

/// Opens every cell not done yet and lists its pending samples; a cell with none left is
/// marked done here.
fn open_cells(
    dir: &RunDir,
    cells: &[Arc<ReadyCell>],
    counts: &mut RunCounts,
) -> Result<OpenCells, RunError> {
    let mut open = OpenCells {
        appenders: Vec::new(),
        remaining: Vec::new(),
        work: Vec::new(),
    };
    for (i, cell) in cells.iter().enumerate() {
        let id = &cell.plan.cell.id;
        if dir.is_done(id) {
            counts.cells_skipped += 1;
            open.appenders.push(None);
            open.remaining.push(0);
            continue;
        }
        let rows = dir.read_rows(id)?;
        let pending = rows.pending(&cell.plan.sample_ids);
        counts.samples_skipped += cell.plan.sample_ids.len() - pending.len();
        for sample in &pending {
            open.work
                .push((i, sample.to_string(), rows.next_attempt(sample)));
        }
        open.remaining.push(pending.len());
        open.appenders.push(Some(dir.appender(id)?));
        if pending.is_empty() {
            finish_cell(dir, &cell.plan, counts)?;
        }
    }
    Ok(open)
}

fn progress_bar(samples: usize, show: bool) -> Result<ProgressBar, RunError> {
    let progress = if show {
        ProgressBar::new(samples as u64)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} samples  {elapsed_precise} elapsed, ~{eta} left  {msg}",
        )
        .map_err(RunError::ProgressTemplate)?,
    );
    Ok(progress)
}

/// One line above the progress bar for a failed try.
fn print_failure(progress: &ProgressBar, row: &ResultRow) {
    let Some(e) = &row.error else {
        return;
    };
    let next = match e.retry_after_ms {
        Some(ms) => format!("; trying again in {ms} ms"),
        None => String::new(),
    };
    progress.println(format!(
        "failed: cell {} sample {} try {}: {} ({}): {}{next}",
        row.cell_id,
        row.sample_id,
        row.attempt,
        e.kind,
        e.error_type.as_deref().unwrap_or("-"),
        e.message
    ));
}

/// Runs every pending sample of `cells` and appends every try's row to `dir`.
pub async fn run(
    dir: &RunDir,
    cells: Vec<ReadyCell>,
    options: RunOptions,
) -> Result<RunCounts, RunError> {
    let mut counts = RunCounts::default();
    let cells: Vec<Arc<ReadyCell>> = cells.into_iter().map(Arc::new).collect();
    let OpenCells {
        mut appenders,
        mut remaining,
        work,
    } = open_cells(dir, &cells, &mut counts)?;
    let progress = progress_bar(work.len(), options.progress)?;
    let pending = work.len();
    let (tx, mut rx) = mpsc::unbounded_channel::<TryDone>();
    let ctx = SampleContext {
        retry: options.retry,
        permits: Arc::new(Semaphore::new(options.concurrency.max(1))),
        stop: options.stop.clone(),
        rows: tx,
    };
    let mut tasks = JoinSet::new();
    for (i, sample, attempt) in work {
        tasks.spawn(run_sample(
            i,
            Arc::clone(&cells[i]),
            sample,
            attempt,
            ctx.clone(),
        ));
    }
    drop(ctx);
    // Ends when every sample task has sent its last try (or died, which is reported below).
    while let Some((i, row, last)) = rx.recv().await {
        let appender = appenders[i]
            .as_mut()
            .ok_or(RunError::CellNotOpened { index: i })?;
        appender.append(&row)?;
        print_failure(&progress, &row);
        if !last {
            counts.retried += 1;
            continue;
        }
        if row.is_ok() {
            counts.answered += 1;
        } else {
            counts.failed += 1;
        }
        progress.set_message(format!(
            "{} failed, {} retried",
            counts.failed, counts.retried
        ));
        progress.inc(1);
        remaining[i] -= 1;
        if remaining[i] == 0 {
            finish_cell(dir, &cells[i].plan, &mut counts)?;
        }
    }
    while let Some(joined) = tasks.join_next().await {
        joined.map_err(RunError::TaskPanicked)?;
    }
    progress.finish_and_clear();
    counts.not_run = pending - counts.answered - counts.failed;
    Ok(counts)
}

/// Marks a cell done when every sample's latest try is answered.
fn finish_cell(dir: &RunDir, plan: &CellPlan, counts: &mut RunCounts) -> Result<(), RegistryError> {
    let rows = dir.read_rows(&plan.cell.id)?;
    if !rows.pending(&plan.sample_ids).is_empty() {
        return Ok(());
    }
    dir.mark_done(&DoneMarker {
        cell_id: plan.cell.id.clone(),
        samples: plan.sample_ids.len(),
        attempts: rows.rows.len(),
        finished_at_unix_ms: now_unix_ms(),
    })?;
    counts.cells_finished += 1;
    Ok(())
}
