//! The Share and Refine producers: prefill, select, then encode and send one KVWire v2 frame
//! per layer through a bounded channel as each is ready. They run on a blocking thread; a
//! client that goes away stops them: the model before its next layer (the job's cancellation
//! token, set when the response stream is dropped or the call's deadline passes), the encoder
//! at its next frame (the channel is closed) or, while it waits for room in a stream stalled
//! by flow control, at the token's next check ([`send`]).
//!
//! The forward pass computes every layer before the first frame exists (the runtime has no
//! per-layer callback), so what overlaps is the sharer encoding layer l+1 while layer l is on
//! the wire and being decoded. Rows are selected on the model's device; on a GPU each layer's
//! rows are quantized there too (`device_quant`) and only its payload and scales are
//! downloaded; on the CPU the selected rows of one layer at a time are exported to host f32
//! for kvwire's quantizer. The producers know no
//! gRPC types: they send domain [`Chunk`]s, which the service converts at its edge.
//!
//! Each stage runs in its own span (exported over OTLP when configured, children of the
//! call's span): `sharer.prefill` (the engine's), `sharer.select` (scores and plan),
//! `sharer.encode` (the session header), and `sharer.stream` over the frames, with
//! `sharer.gather` (the layer's rows exported) and `sharer.quantize` (quantized and
//! serialized) per frame.

use std::time::Duration;

use kvwire::v2::{FrameKind, FrameOptions, SessionHeader};
use model_runtime::{KvCache, LayerKv};
use service_kit::metrics_catalog::{FRAMES, add_bytes, record_stage_ms};
use service_kit::prompt_limit::PromptLimit;
use service_kit::stages::StageTimings;
use service_kit::timing::timed;
use tokio::sync::mpsc;

use crate::device_quant::FrameRows;
use crate::domain::{Chunk, RefineParams, RefineWant, ShareParams, session_id_to_hex};
use crate::engine::{EngineInfo, SharerEngine};
use crate::error::SharerError;
use crate::plan::{FrameSpec, RoundCost};
use crate::session_state::{HeldSession, SentState};
use crate::share_round::plan_share;

/// Items of a Share or Refine response stream.
pub type ChunkSender = mpsc::Sender<Chunk>;

/// Shape of a host cache, `[1, heads, tokens, head_dim]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheShape {
    /// KV heads.
    pub heads: usize,
    /// Tokens of the prompt.
    pub tokens: usize,
    /// Head dimension.
    pub head_dim: usize,
}

/// How often a producer waiting for room in its channel checks its job's cancellation token.
const CANCEL_CHECK: Duration = Duration::from_millis(20);

/// Sends `chunk` once the channel has room; called on the job's blocking thread. A stream
/// stalled by flow control (a receiver that stopped reading, a dead link) leaves the channel
/// full: the wait checks the job's token every [`CANCEL_CHECK`], so the call's deadline stops
/// the job even while its connection still looks alive, and a dropped stream (the client or
/// the connection gone) stops it at once.
pub(crate) fn send(tx: &ChunkSender, chunk: Chunk) -> Result<(), SharerError> {
    let closed = || SharerError::Cancelled("receiver closed the stream");
    // Outside a runtime (a producer driven by a plain thread, as library callers and tests
    // do) there is no timer to wait with: a plain blocking send.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return tx.blocking_send(chunk).map_err(|_| closed());
    };
    loop {
        match runtime.block_on(tokio::time::timeout(CANCEL_CHECK, tx.reserve())) {
            Ok(Ok(room)) => {
                room.send(chunk);
                return Ok(());
            }
            Ok(Err(_)) => return Err(closed()),
            Err(_) => model_runtime::cancel::checkpoint()?,
        }
    }
}

fn header_chunk(
    header: &SessionHeader,
    session_id: String,
    prompt_tokens: usize,
) -> Result<(Chunk, f64), SharerError> {
    let (bytes, ms) = tracing::info_span!("sharer.encode").in_scope(|| timed(|| header.encode()));
    let frame = bytes?;
    add_bytes("sharer", "blob", frame.len() as u64);
    Ok((
        Chunk {
            frame,
            layer: None,
            session_id,
            timings: None,
            prompt_tokens: prompt_tokens as u32,
        },
        ms,
    ))
}

/// Encodes and sends `frames` (each at `base` with its own layer, group and payload).
/// `rows(frame)` gives the frame's K and V rows at its positions; with `records`, every encoded
/// frame is appended to it (the round's record of what was sent, for a held session). The
/// last chunk carries `timings` with this function's select and quantize times added.
fn send_frames(
    frames: &[FrameSpec],
    base: FrameOptions,
    shape: CacheShape,
    tx: &ChunkSender,
    (mut timings, mut records): (StageTimings, Option<&mut Vec<Vec<u8>>>),
    mut rows: impl FnMut(&FrameSpec) -> Result<FrameRows, SharerError>,
) -> Result<(), SharerError> {
    let _stream = tracing::info_span!("sharer.stream", frames = frames.len() as i64).entered();
    for (i, spec) in frames.iter().enumerate() {
        let gather = tracing::info_span!("sharer.gather", layer = spec.layer as i64);
        let (rows, gather_ms) = gather.in_scope(|| timed(|| rows(spec)));
        let rows = rows?;
        let opts = FrameOptions {
            layer: spec.layer as u16,
            group: spec.group,
            payload: spec.payload,
            ..base
        };
        // On a GPU the rows are quantized there: the download is part of this step.
        let quantize = tracing::info_span!("sharer.quantize", layer = spec.layer as i64);
        let (frame, quantize_ms) = quantize.in_scope(|| {
            timed(|| rows.encode(shape.heads, shape.head_dim, &spec.positions, &opts))
        });
        let frame = frame?;
        if let Some(r) = records.as_mut() {
            r.push(frame.clone());
        }
        timings.sharer_select_ms += gather_ms;
        timings.sharer_quantize_ms += quantize_ms;
        add_bytes("sharer", "blob", frame.len() as u64);
        metrics::counter!(FRAMES, "service" => "sharer").increment(1);
        let last = i + 1 == frames.len();
        if last {
            record_stage_ms("sharer", "select", timings.sharer_select_ms);
            record_stage_ms("sharer", "quantize", timings.sharer_quantize_ms);
        }
        let chunk = Chunk {
            frame,
            layer: Some(spec.layer as u32),
            timings: last.then_some(timings),
            ..Chunk::default()
        };
        send(tx, chunk)?;
    }
    Ok(())
}

/// One layer of a (selected) device cache.
fn layer_of(cache: &KvCache, layer: usize) -> Result<&LayerKv, SharerError> {
    cache.layers.get(layer).ok_or_else(|| {
        SharerError::Worker(format!(
            "layer {layer} outside a cache of {}",
            cache.layers.len()
        ))
    })
}

/// A session header announcing one frame per layer (a round with more frames sets `frames`).
fn session_header(
    info: &EngineInfo,
    session_id: [u8; 16],
    tokens: usize,
    round: u8,
) -> SessionHeader {
    SessionHeader {
        session_id,
        sharer_model: crate::text::cap_utf8(&info.spec, kvwire::limits::MAX_MODEL_ID_LEN)
            .0
            .to_string(),
        receiver_model: String::new(),
        layers: info.layers as u16,
        kv_heads: info.kv_heads as u16,
        head_dim: info.head_dim as u16,
        tokens: tokens as u32,
        round,
        frames: info.layers as u32,
    }
}

/// The prompt's token ids and how many of its positions may be shared: every one with
/// `all_positions`, else all but the last (the receiver runs the last token itself).
fn share_prompt(
    engine: &SharerEngine,
    params: &ShareParams,
    max_prompt_tokens: usize,
) -> Result<(Vec<u32>, usize), SharerError> {
    let ids = engine.prompt_ids(&params.prompt)?;
    PromptLimit::check_tokens(ids.len(), max_prompt_tokens)?;
    let shareable = if params.all_positions {
        ids.len()
    } else {
        ids.len().saturating_sub(1)
    };
    if shareable == 0 {
        return Err(SharerError::invalid(
            "prompt",
            if params.all_positions {
                "needs at least 1 token"
            } else {
                "needs at least 2 tokens"
            },
        ));
    }
    Ok((ids, shareable))
}

/// Runs a whole Share: prefill, selection and precision plan, session header, frames. When the
/// request keeps its session, `reserve(id, bytes)` is called after prefill, before anything is
/// sent (a refusal fails the Share with nothing sent); the session to keep is returned with
/// the reservation.
pub fn produce_share<R>(
    engine: &SharerEngine,
    params: &ShareParams,
    max_prompt_tokens: usize,
    tx: &ChunkSender,
    reserve: impl FnOnce([u8; 16], u64) -> Result<R, SharerError>,
) -> Result<Option<(R, HeldSession)>, SharerError> {
    let (ids, shareable) = share_prompt(engine, params, max_prompt_tokens)?;
    let prefilled = engine.prefill(&ids)?;
    record_stage_ms("sharer", "prefill", prefilled.prefill_ms);
    let info = engine.info();
    let shape = CacheShape {
        heads: info.kv_heads,
        tokens: ids.len(),
        head_dim: info.head_dim,
    };
    let session_id: [u8; 16] = rand::random();
    let reservation = if params.keep_session {
        Some(reserve(
            session_id,
            HeldSession::size_of(&prefilled.cache, shape),
        )?)
    } else {
        None
    };
    let base = FrameOptions {
        payload: params.plan.payload,
        granularity: params.plan.granularity,
        round: 1,
        kind: FrameKind::Base,
        ..FrameOptions::default()
    };
    let mut header = session_header(info, session_id, ids.len(), 1);
    let cost = RoundCost {
        layers: info.layers,
        heads: info.kv_heads,
        head_dim: info.head_dim,
        header: header.encoded_len() as u64,
        base,
    };
    // Rows are gathered on the device; only the planned rows are exported.
    let (planned, select_ms) = tracing::info_span!("sharer.select")
        .in_scope(|| timed(|| plan_share(engine, &prefilled, params, shareable, &cost)));
    let planned = planned?;
    header.frames = planned.frames.len() as u32;
    let id_hex = if params.keep_session {
        session_id_to_hex(&session_id)
    } else {
        String::new()
    };
    let (first, encode_ms) = header_chunk(&header, id_hex, ids.len())?;
    let mut records = params.keep_session.then(|| vec![first.frame.clone()]);
    send(tx, first)?;
    let timings = StageTimings {
        sharer_prefill_ms: prefilled.prefill_ms,
        sharer_select_ms: select_ms,
        sharer_encode_ms: encode_ms,
        ..StageTimings::default()
    };
    let rows = |f: &FrameSpec| planned.rows.rows(f, shape.heads, shape.head_dim);
    send_frames(
        &planned.frames,
        base,
        shape,
        tx,
        (timings, records.as_mut()),
        rows,
    )?;
    let (Some(records), Some(reservation)) = (records, reservation) else {
        return Ok(None);
    };
    let held = HeldSession::new(prefilled.cache, shape, params.all_positions);
    {
        let mut state = held.state.lock().unwrap_or_else(|p| p.into_inner());
        state.record_round(&records)?;
        state.round = 1;
    }
    Ok(Some((reservation, held)))
}

/// Runs a Refine round on a held session: extra positions (base frames) or a residual upgrade
/// of positions held (`full - held`, the held values being the receiver's own view).
pub fn produce_refine(
    engine: &SharerEngine,
    session: &HeldSession,
    params: &RefineParams,
    tx: &ChunkSender,
) -> Result<(), SharerError> {
    let shape = session.shape;
    let mut state: std::sync::MutexGuard<'_, SentState> =
        session.state.lock().unwrap_or_else(|p| p.into_inner());
    let (positions, payload, kind) = match &params.want {
        RefineWant::Extra { positions, payload } => (positions, *payload, FrameKind::Base),
        RefineWant::Upgrade { positions, payload } => (positions, *payload, FrameKind::Residual),
    };
    check_refine_positions(&state, shape, positions, kind)?;
    let round = state.round.saturating_add(1);
    let header = session_header(engine.info(), params.session_id, shape.tokens, round);
    let (first, encode_ms) =
        header_chunk(&header, session_id_to_hex(&params.session_id), shape.tokens)?;
    let mut records = vec![first.frame.clone()];
    send(tx, first)?;
    let base = FrameOptions {
        payload,
        granularity: params.granularity,
        round,
        kind,
        ..FrameOptions::default()
    };
    let timings = StageTimings {
        sharer_encode_ms: encode_ms,
        ..StageTimings::default()
    };
    let full = session.cache.select_positions(positions)?;
    let frames: Vec<FrameSpec> = (0..full.layers.len())
        .map(|layer| FrameSpec {
            layer,
            group: 0,
            payload,
            positions: positions.clone(),
        })
        .collect();
    let rows = |f: &FrameSpec| match kind {
        FrameKind::Base => FrameRows::of(layer_of(&full, f.layer)?),
        FrameKind::Residual => {
            let held = layer_of(&full, f.layer)?.to_host()?;
            let residual = state.residual_rows(held, f.layer, positions)?;
            Ok(FrameRows::Host(residual))
        }
    };
    let sent = (timings, Some(&mut records));
    send_frames(&frames, base, shape, tx, sent, rows)?;
    state.record_round(&records)?;
    state.round = round;
    Ok(())
}

/// Extra positions must be new, upgraded ones held; none may be the prompt's last token
/// unless the session shares every position.
fn check_refine_positions(
    state: &SentState,
    shape: CacheShape,
    positions: &[u32],
    kind: FrameKind,
) -> Result<(), SharerError> {
    let shareable = if state.every_position {
        shape.tokens
    } else {
        shape.tokens.saturating_sub(1)
    };
    for &p in positions {
        if p as usize >= shareable {
            return Err(SharerError::Refine(format!(
                "position {p} is not a shareable prompt position (prompt has {} tokens)",
                shape.tokens
            )));
        }
        match (kind, state.holds(p)) {
            (FrameKind::Base, true) => {
                return Err(SharerError::Refine(format!(
                    "position {p} was already sent; ask for an upgrade"
                )));
            }
            (FrameKind::Residual, false) => {
                return Err(SharerError::Refine(format!(
                    "position {p} was never sent; ask for extra positions"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}
