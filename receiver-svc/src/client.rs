//! The receiver's link to a sharer for one evaluation: a connection lent by the pool of
//! [`crate::channels`] (reused across evaluations, one evaluation at a time, so its transport
//! bytes while lent are exactly this evaluation's; under TLS, the TLS record bytes, and the
//! handshake only on the evaluation that opened it), trace context and the remaining deadline
//! on every call, and frame streams decoded as they arrive. Each call runs in a client span
//! (`receiver.call`, named after the method when exported over OTLP) whose context the call
//! carries, so the sharer's spans are its children; each frame's decoding is a
//! `receiver.decode` span.

use std::time::Instant;

use kvwire::{HostCache, HostLayer};
use kvwire_proto::v1 as pb;
use prost::Message as _;
use service_kit::counting::ByteSnapshot;
use service_kit::metrics_catalog::SESSION_RELEASES_FAILED;
use service_kit::rpc::ERROR_TYPE_KEY;
use service_kit::stages::StageTimings;
use service_kit::timing::ms;
use service_kit::trace_context::TraceContext;
use tonic::{Request, Status};
use tracing::instrument;

use crate::channels::Checkout;
use crate::decode::TransferDecoder;
use crate::error::ReceiverError;

/// One round of KV transfer as the receiver saw it.
#[derive(Debug)]
pub struct RoundTransfer {
    /// The host cache after this round.
    pub cache: HostCache,
    /// Sum of frame lengths (session header included).
    pub blob_bytes: u64,
    /// Breakdown of those bytes.
    pub breakdown: kvwire::Breakdown,
    /// kvwire's formula for the same frames.
    pub estimated: u64,
    /// Records received (session header included).
    pub frames: u32,
    /// Encoded lengths of the request and every response message.
    pub grpc_bytes: u64,
    /// Encoded length of the request alone.
    pub request_bytes: u64,
    /// The sharer's stage timings (from the last chunk).
    pub sharer_timings: StageTimings,
    /// The call issued to its first chunk, ms.
    pub first_frame_wait_ms: f64,
    /// First to last chunk, ms.
    pub transfer_ms: f64,
    /// Decoding and dequantization, ms.
    pub decode_ms: f64,
    /// Session id, when the sharer kept the session.
    pub session_id: String,
}

/// A connection to one sharer for one evaluation.
#[derive(Debug)]
pub struct SharerLink {
    conn: Checkout,
    trace: TraceContext,
    deadline: Instant,
}

impl SharerLink {
    /// A link over `conn` whose calls carry `trace` and end at `deadline`.
    pub fn new(conn: Checkout, trace: TraceContext, deadline: Instant) -> Self {
        Self {
            conn,
            trace,
            deadline,
        }
    }

    /// Transport bytes on this link so far (since the connection was lent to it).
    pub fn transport(&self) -> ByteSnapshot {
        self.conn.transport()
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        self.trace.outgoing().inject(request.metadata_mut());
        request.set_timeout(self.deadline.saturating_duration_since(Instant::now()));
        request
    }

    /// The sharer's forced-choice answer, and the gRPC message bytes of the exchange.
    #[instrument(skip_all, name = "receiver.call", fields(otel.name = "kvwire.c2c.v1.Sharer/Answer", otel.kind = "client"))]
    pub async fn answer(
        &mut self,
        req: pb::AnswerRequest,
    ) -> Result<(pb::AnswerReply, u64), ReceiverError> {
        let sent = req.encoded_len() as u64;
        let request = self.request(req);
        let reply = self
            .conn
            .begin()
            .answer(request)
            .await
            .map_err(ReceiverError::from_sharer)?
            .into_inner();
        self.conn.finish();
        Ok((reply.clone(), sent + reply.encoded_len() as u64))
    }

    /// A text message, and the gRPC message bytes of the exchange.
    #[instrument(skip_all, name = "receiver.call", fields(otel.name = "kvwire.c2c.v1.Sharer/Message", otel.kind = "client"))]
    pub async fn message(
        &mut self,
        req: pb::MessageRequest,
    ) -> Result<(pb::MessageReply, u64), ReceiverError> {
        let sent = req.encoded_len() as u64;
        let request = self.request(req);
        let reply = self
            .conn
            .begin()
            .message(request)
            .await
            .map_err(ReceiverError::from_sharer)?
            .into_inner();
        self.conn.finish();
        let grpc = sent + reply.encoded_len() as u64;
        Ok((reply, grpc))
    }

    /// Round 1: Share, decoding frames as they arrive into `buffers` (reused allocations from
    /// an earlier transfer, or none).
    #[instrument(skip_all, name = "receiver.call", fields(otel.name = "kvwire.c2c.v1.Sharer/Share", otel.kind = "client"))]
    pub async fn share(
        &mut self,
        req: pb::ShareRequest,
        buffers: Vec<HostLayer>,
    ) -> Result<RoundTransfer, ReceiverError> {
        let request_bytes = req.encoded_len() as u64;
        let every_position = req.all_positions;
        let request = self.request(req);
        let asked = Instant::now();
        let stream = self
            .conn
            .begin()
            .share(request)
            .await
            .map_err(ReceiverError::from_sharer)?;
        let round = pull(
            stream.into_inner(),
            TransferDecoder::new(buffers).every_position(every_position),
            request_bytes,
            asked,
        )
        .await?;
        self.conn.finish();
        Ok(round)
    }

    /// Round 2 and later: Refine, applied on top of `cache` (`every_position` as the Share of
    /// round 1 asked: `all_positions`).
    #[instrument(skip_all, name = "receiver.call", fields(otel.name = "kvwire.c2c.v1.Sharer/Refine", otel.kind = "client"))]
    pub async fn refine(
        &mut self,
        req: pb::RefineRequest,
        cache: HostCache,
        every_position: bool,
    ) -> Result<RoundTransfer, ReceiverError> {
        let request_bytes = req.encoded_len() as u64;
        let request = self.request(req);
        let asked = Instant::now();
        let stream = self
            .conn
            .begin()
            .refine(request)
            .await
            .map_err(ReceiverError::from_sharer)?;
        let round = pull(
            stream.into_inner(),
            TransferDecoder::refining(cache).every_position(every_position),
            request_bytes,
            asked,
        )
        .await?;
        self.conn.finish();
        Ok(round)
    }
}

impl SharerLink {
    /// Frees the sharer's session `session_id`, best effort: a call that fails, or frees
    /// nothing (the session was gone already), is logged and counted, never returned.
    #[instrument(skip_all, name = "receiver.call", fields(otel.name = "kvwire.c2c.v1.Sharer/Release", otel.kind = "client"))]
    pub async fn release(&mut self, session_id: &str) {
        let req = pb::ReleaseRequest {
            session_id: session_id.to_string(),
        };
        let request = self.request(req);
        let reason = match self.conn.begin().release(request).await {
            Ok(reply) => {
                self.conn.finish();
                if reply.into_inner().released {
                    return;
                }
                "not_held".to_string()
            }
            Err(status) => format!("{:?}", status.code()),
        };
        tracing::warn!(session_id, reason, "sharer session not released");
        metrics::counter!(SESSION_RELEASES_FAILED, "reason" => reason).increment(1);
    }
}

/// Receives and decodes a frame stream; `asked` is when the call was issued (the wait for the
/// first frame runs from it).
async fn pull(
    mut stream: tonic::Streaming<pb::ShareChunk>,
    mut decoder: TransferDecoder,
    request_bytes: u64,
    asked: Instant,
) -> Result<RoundTransfer, ReceiverError> {
    let mut grpc_bytes = request_bytes;
    let (mut blob_bytes, mut decode_ms) = (0u64, 0f64);
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut sharer_timings = StageTimings::default();
    let mut session_id = String::new();
    loop {
        let chunk = match stream.message().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(status) => return Err(stream_error(status, decoder.records)),
        };
        last = Instant::now();
        first.get_or_insert(last);
        grpc_bytes += chunk.encoded_len() as u64;
        blob_bytes += chunk.frame.len() as u64;
        if !chunk.session_id.is_empty() {
            session_id = chunk.session_id;
        }
        if let Some(t) = chunk.timings {
            sharer_timings = t.into();
        }
        let start = Instant::now();
        tracing::info_span!("receiver.decode", layer = chunk.layer.map(i64::from))
            .in_scope(|| decoder.push(&chunk.frame))?;
        decode_ms += ms(start.elapsed());
    }
    let transfer_ms = first.map_or(0.0, |f| ms(last.duration_since(f)));
    let first_frame_wait_ms = first.map_or(0.0, |f| ms(f.duration_since(asked)));
    let frames = decoder.records as u32;
    let (breakdown, estimated) = (decoder.breakdown, decoder.estimated);
    let cache = decoder.finish()?;
    Ok(RoundTransfer {
        cache,
        blob_bytes,
        breakdown,
        estimated,
        frames,
        grpc_bytes,
        request_bytes,
        sharer_timings,
        first_frame_wait_ms,
        transfer_ms,
        decode_ms,
        session_id,
    })
}

/// A status on the stream is the sharer's own error when it says so (our sharer labels every
/// error) or arrives before any frame; otherwise the connection broke mid-stream.
fn stream_error(status: Status, frames: usize) -> ReceiverError {
    if status.metadata().contains_key(ERROR_TYPE_KEY)
        || frames == 0 && status.code() != tonic::Code::Unknown
    {
        ReceiverError::from_sharer(status)
    } else {
        ReceiverError::StreamBroken {
            frames,
            reason: format!("{:?}: {}", status.code(), status.message()),
        }
    }
}
