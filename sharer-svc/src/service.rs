//! The gRPC boundary of the sharer: converts wire requests to domain types, runs the engine on
//! blocking threads, streams frames through a bounded channel, and maps errors to status codes
//! in one place ([`SharerError`] -> `Status`).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use eval_harness::LETTERS;
use futures::{Stream, StreamExt};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::sharer_server::Sharer;
use model_runtime::CancelToken;
use service_kit::metrics_catalog::{SESSIONS_ACTIVE, add_bytes, record_stage_ms};
use service_kit::rpc::{CancelOnDrop, JobPool, deadline_of};
use service_kit::trace_context::TraceContext;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::field::Empty;
use tracing::{Instrument, instrument};

use crate::config::SharerLimits;
use crate::domain::{
    MessageKind, RefineParams, ShareParams, check_prompt_bytes, example_from_wire,
    example_text_bytes, message_kind_from_wire, session_id_from_hex,
};
use crate::engine::SharerEngine;
use crate::error::SharerError;
use crate::produce::{ChunkSender, produce_refine, produce_share};
use crate::session_state::HeldSession;
use service_kit::transport::identity::ClientId;

use crate::reservation::{Reservation, SharedStore, count_evictions, lock};
use crate::sessions::{EvictionReason, SessionStore};
use crate::text::{cap_utf8, passage_extract, passage_text, raw_text, summary_text};

const SERVICE: &str = "sharer";

/// The Sharer gRPC service.
#[derive(Debug, Clone)]
pub struct SharerService {
    pool: JobPool<SharerEngine>,
    sessions: SharedStore,
    limits: SharerLimits,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ShareChunk, Status>> + Send>>;

/// A generated text and its timings: the generation time is the `generate` stage of the
/// sharer's metrics and travels as `score_ms` (the proto's stage for sharer model work).
fn generated(text: String, ms: f64) -> (String, pb::StageTimings) {
    record_stage_ms(SERVICE, "generate", ms);
    (
        text,
        pb::StageTimings {
            score_ms: ms,
            ..Default::default()
        },
    )
}

/// Records the rpc outcome (count, latency, error type) and converts the error.
fn finish<T>(
    method: &'static str,
    start: Instant,
    result: Result<T, SharerError>,
) -> Result<T, Status> {
    service_kit::rpc::finish(SERVICE, method, start, result)
}

impl SharerService {
    /// A service around a loaded engine.
    pub fn new(
        engine: SharerEngine,
        limits: SharerLimits,
        sessions: SessionStore<HeldSession>,
    ) -> Self {
        Self {
            pool: JobPool::new(engine, limits.max_concurrent_jobs, limits.max_queued_jobs),
            sessions: Arc::new(Mutex::new(sessions)),
            limits,
        }
    }

    /// Runs `f` on a blocking thread once a job slot is free.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SharerEngine) -> Result<T, SharerError> + Send + 'static,
    ) -> Result<T, SharerError> {
        self.pool.run(f).await
    }

    /// Spawns a producer feeding a bounded channel of domain chunks; the returned stream
    /// converts them to wire chunks and ends with the producer's error, if any. Dropping the
    /// stream (the client went away), or `deadline` passing (the call's `grpc-timeout`, which
    /// tonic does not enforce on a stream once it has started), cancels the job: the model
    /// stops between layers, and a producer past the model stops at its next frame, or while
    /// it waits for room in the channel (a stream stalled by flow control, e.g. a dead link).
    fn stream_from(
        &self,
        method: &'static str,
        deadline: Option<Instant>,
        produce: impl FnOnce(&SharerEngine, &ChunkSender) -> Result<(), SharerError> + Send + 'static,
    ) -> ChunkStream {
        let (tx, rx) = mpsc::channel(self.limits.stream_buffer_frames);
        let (failed_tx, failed_rx) = oneshot::channel::<Status>();
        let cancel = CancelToken::new().until(deadline);
        let on_drop = CancelOnDrop::new(cancel.clone());
        let pool = self.pool.clone();
        let start = Instant::now();
        let span = tracing::Span::current();
        tokio::spawn(
            async move {
                // The worker owns the only sender: the chunk stream ends when it returns.
                let job = move |engine: &SharerEngine| produce(engine, &tx);
                let result = pool.run_cancellable(cancel, job).await;
                if let Err(status) = finish(method, start, result) {
                    // The receiver may be gone already; then there is nobody to tell.
                    let _ = failed_tx.send(status);
                }
            }
            .instrument(span),
        );
        let chunks = ReceiverStream::new(rx).map(|c| Ok(pb::ShareChunk::from(c)));
        let failure =
            futures::stream::once(failed_rx).filter_map(|r| async move { r.ok().map(Err) });
        // The stream holds the guard: dropped with it, it cancels the job.
        Box::pin(chunks.chain(failure).map(move |item| {
            let _held = &on_drop;
            item
        }))
    }
}

#[tonic::async_trait]
impl Sharer for SharerService {
    type ShareStream = ChunkStream;
    type RefineStream = ChunkStream;

    #[instrument(skip_all, name = "sharer.share", fields(trace_id = Empty, payload = Empty, selection = Empty, keep_session = Empty))]
    async fn share(
        &self,
        request: Request<pb::ShareRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let trace = TraceContext::from_metadata_or_root(request.metadata());
        let span = tracing::Span::current();
        span.record("trace_id", trace.trace_id_hex());
        let max_bytes = self.limits.prompt_bytes();
        let owner = ClientId::of(&request);
        let deadline = deadline_of(request.metadata());
        let params = match ShareParams::try_from(request.into_inner())
            .and_then(|p| p.check_prompt_bytes(max_bytes).map(|()| p))
        {
            Ok(p) => p,
            Err(e) => return finish("Share", Instant::now(), Err(e)),
        };
        span.record("payload", params.plan.payload.name());
        span.record("selection", format!("{:?}", params.plan.selection).as_str());
        span.record("keep_session", params.keep_session);
        let max_tokens = self.limits.max_prompt_tokens;
        let sessions = self.sessions.clone();
        let stream = self.stream_from("Share", deadline, move |engine, tx| {
            let reserve = |id, bytes| Reservation::make(sessions, id, &owner, bytes);
            if let Some((reservation, held)) =
                produce_share(engine, &params, max_tokens, tx, reserve)?
            {
                reservation.fill(held);
            }
            Ok(())
        });
        Ok(Response::new(stream))
    }

    #[instrument(skip_all, name = "sharer.refine", fields(trace_id = Empty, positions = Empty))]
    async fn refine(
        &self,
        request: Request<pb::RefineRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let trace = TraceContext::from_metadata_or_root(request.metadata());
        tracing::Span::current().record("trace_id", trace.trace_id_hex());
        let start = Instant::now();
        let owner = ClientId::of(&request);
        let deadline = deadline_of(request.metadata());
        let params = match RefineParams::try_from(request.into_inner()) {
            Ok(p) => p,
            Err(e) => return finish("Refine", start, Err(e)),
        };
        let positions = match &params.want {
            crate::domain::RefineWant::Extra { positions, .. }
            | crate::domain::RefineWant::Upgrade { positions, .. } => positions.len(),
        };
        tracing::Span::current().record("positions", positions);
        let (held, evicted) = {
            let mut store = lock(&self.sessions);
            let got = store.get(&params.session_id, &owner, Instant::now());
            metrics::gauge!(SESSIONS_ACTIVE).set(store.len() as f64);
            got
        };
        count_evictions(&evicted);
        let Some(held) = held else {
            let id = crate::domain::session_id_to_hex(&params.session_id);
            return finish("Refine", start, Err(SharerError::SessionNotFound(id)));
        };
        Ok(Response::new(self.stream_from(
            "Refine",
            deadline,
            move |engine, tx| produce_refine(engine, &held, &params, tx),
        )))
    }

    #[instrument(skip_all, name = "sharer.release", fields(trace_id = Empty, released = Empty))]
    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseReply>, Status> {
        let trace = TraceContext::from_metadata_or_root(request.metadata());
        tracing::Span::current().record("trace_id", trace.trace_id_hex());
        let start = Instant::now();
        let owner = ClientId::of(&request);
        let result = session_id_from_hex(&request.into_inner().session_id).map(|id| {
            let mut store = lock(&self.sessions);
            let released = store.release(&id, &owner);
            metrics::gauge!(SESSIONS_ACTIVE).set(store.len() as f64);
            released
        });
        if let Ok(released) = result {
            tracing::Span::current().record("released", released);
            if released {
                count_evictions(&[EvictionReason::Released]);
            }
        }
        finish("Release", start, result)
            .map(|released| Response::new(pb::ReleaseReply { released }))
    }

    #[instrument(skip_all, name = "sharer.message", fields(trace_id = Empty, kind = Empty, byte_cap = Empty))]
    async fn message(
        &self,
        request: Request<pb::MessageRequest>,
    ) -> Result<Response<pb::MessageReply>, Status> {
        let trace = TraceContext::from_metadata_or_root(request.metadata());
        let span = tracing::Span::current();
        span.record("trace_id", trace.trace_id_hex());
        let start = Instant::now();
        let pb::MessageRequest {
            example,
            kind,
            byte_cap,
            max_new_tokens,
        } = request.into_inner();
        let max_hint = self.limits.max_hint_tokens;
        let max_bytes = self.limits.prompt_bytes();
        let result = async {
            let example = example_from_wire(example)?;
            check_prompt_bytes(
                example_text_bytes(&example),
                max_bytes,
                "question, choices and passage",
            )?;
            let kind = message_kind_from_wire(kind)?;
            span.record("kind", kind.label());
            span.record("byte_cap", byte_cap);
            let max_new = match max_new_tokens as usize {
                0 => max_hint,
                n => n.min(max_hint),
            };
            let (text, timings) = match kind {
                MessageKind::Raw => (raw_text(&example), pb::StageTimings::default()),
                MessageKind::Summary => (summary_text(&example), pb::StageTimings::default()),
                MessageKind::Passage => {
                    let text = passage_text(&example).ok_or_else(|| {
                        SharerError::invalid("example.passage", "kind passage needs a passage")
                    })?;
                    (text, pb::StageTimings::default())
                }
                MessageKind::PassageExtract => {
                    let cap = usize::try_from(byte_cap).unwrap_or(usize::MAX);
                    let text = passage_extract(&example, cap).ok_or_else(|| {
                        SharerError::invalid(
                            "example.passage",
                            "kind passage_extract needs a passage",
                        )
                    })?;
                    (text, pb::StageTimings::default())
                }
                MessageKind::Hint => {
                    let (text, ms) = self.blocking(move |e| e.hint(&example, max_new)).await?;
                    generated(text, ms)
                }
                MessageKind::PassageSummary => {
                    let summary = self
                        .blocking(move |e| e.passage_summary(&example, max_new))
                        .await?;
                    let (text, ms) = summary.ok_or_else(|| {
                        SharerError::invalid(
                            "example.passage",
                            "kind passage_summary needs a passage",
                        )
                    })?;
                    generated(text, ms)
                }
            };
            let cap = usize::try_from(byte_cap).unwrap_or(usize::MAX);
            let (text, truncated) = cap_utf8(&text, cap);
            add_bytes(SERVICE, "text", text.len() as u64);
            Ok(pb::MessageReply {
                text: text.to_string(),
                truncated,
                timings: Some(timings),
            })
        }
        .await;
        finish("Message", start, result).map(Response::new)
    }

    #[instrument(skip_all, name = "sharer.answer", fields(trace_id = Empty))]
    async fn answer(
        &self,
        request: Request<pb::AnswerRequest>,
    ) -> Result<Response<pb::AnswerReply>, Status> {
        let trace = TraceContext::from_metadata_or_root(request.metadata());
        tracing::Span::current().record("trace_id", trace.trace_id_hex());
        let start = Instant::now();
        let max_bytes = self.limits.prompt_bytes();
        let result = async {
            let example = example_from_wire(request.into_inner().example)?;
            check_prompt_bytes(
                example_text_bytes(&example),
                max_bytes,
                "question, choices and passage",
            )?;
            let a = self.blocking(move |e| e.answer(&example)).await?;
            record_stage_ms(SERVICE, "prefill", a.prefill_ms);
            Ok(pb::AnswerReply {
                prediction: LETTERS[a.prediction].to_string(),
                probabilities: a.probabilities,
                margin: a.margin,
                timings: Some(pb::StageTimings {
                    sharer_prefill_ms: a.prefill_ms,
                    ..Default::default()
                }),
            })
        }
        .await;
        finish("Answer", start, result).map(Response::new)
    }

    #[instrument(skip_all, name = "sharer.info")]
    async fn info(
        &self,
        _request: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::ModelInfo>, Status> {
        let i = self.pool.resource().info();
        finish("Info", Instant::now(), Ok(()))?;
        Ok(Response::new(pb::ModelInfo {
            spec: i.spec.clone(),
            architecture: i.architecture.clone(),
            layers: i.layers as u32,
            kv_heads: i.kv_heads as u32,
            head_dim: i.head_dim as u32,
            vocab_size: i.vocab_size as u32,
            tokenizer: i.tokenizer.clone(),
            random_weights: i.random_weights,
            device: i.device.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use service_kit::model_spec::ModelSpec;

    use super::*;
    use model_runtime::RuntimeError;

    use crate::domain::Chunk;
    use crate::produce::send;

    fn test_service() -> SharerService {
        let spec = ModelSpec::parse("random:tiny-llama:0").unwrap();
        let engine = SharerEngine::new(service_kit::model_load::load(&spec).unwrap());
        let sessions = SessionStore::new(1, 1, Duration::from_secs(1));
        SharerService::new(engine, SharerLimits::default(), sessions)
    }

    /// A job that sends frames until one is refused, and reports why.
    fn flooding_job(
        stopped: oneshot::Sender<SharerError>,
    ) -> impl FnOnce(&SharerEngine, &ChunkSender) -> Result<(), SharerError> + Send + 'static {
        move |_, tx| {
            let refused = loop {
                if let Err(e) = send(tx, Chunk::default()) {
                    break e;
                }
            };
            let _ = stopped.send(refused);
            Ok(())
        }
    }

    /// A stream held but never read (the connection alive, its flow-control window spent)
    /// leaves the producer waiting for room in a full channel; the deadline must still stop
    /// it (a blocking send that never looked at the token held the job slot until the
    /// connection closed).
    #[tokio::test]
    async fn a_producer_waiting_on_a_stalled_stream_stops_at_the_deadline() {
        let service = test_service();
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let start = Instant::now();
        let deadline = Some(start + Duration::from_millis(300));
        let _stream = service.stream_from("Share", deadline, flooding_job(stopped_tx));
        let refused = tokio::time::timeout(Duration::from_secs(10), stopped_rx)
            .await
            .expect("the producer stops soon after the deadline")
            .unwrap();
        assert!(
            matches!(refused, SharerError::Model(RuntimeError::Cancelled)),
            "{refused:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    /// A job that sends nothing for up to 60 s, checking cancellation every millisecond as
    /// the model does between layers; it says when it started and whether it was cancelled.
    fn waiting_job(
        started: oneshot::Sender<()>,
        stopped: oneshot::Sender<bool>,
    ) -> impl FnOnce(&SharerEngine, &ChunkSender) -> Result<(), SharerError> + Send + 'static {
        move |_, _| {
            let _ = started.send(());
            let until = Instant::now() + Duration::from_secs(60);
            let mut cancelled = false;
            while !cancelled && Instant::now() < until {
                cancelled = model_runtime::cancel::checkpoint().is_err();
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = stopped.send(cancelled);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_dropped_response_stream_or_a_passed_deadline_cancels_its_job() {
        let service = test_service();
        let stops_soon = |stopped: oneshot::Receiver<bool>| async move {
            tokio::time::timeout(Duration::from_secs(10), stopped)
                .await
                .expect("the job stops soon")
                .unwrap()
        };
        // The client goes away: its stream is dropped.
        let (started_tx, started_rx) = oneshot::channel();
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let stream = service.stream_from("Share", None, waiting_job(started_tx, stopped_tx));
        started_rx.await.unwrap();
        drop(stream);
        assert!(stops_soon(stopped_rx).await);
        // The deadline passes while the stream is still held.
        let (started_tx, _started_rx) = oneshot::channel();
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let deadline = Some(Instant::now() + Duration::from_millis(100));
        let job = waiting_job(started_tx, stopped_tx);
        let _stream = service.stream_from("Share", deadline, job);
        assert!(stops_soon(stopped_rx).await);
    }
}
