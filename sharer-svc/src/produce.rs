//! The Share and Refine producers: prefill, select, then encode and send one KVWire v2 frame
//! per layer through a bounded channel as each is ready. They run on a blocking thread; a
//! closed channel (client gone, deadline passed) stops them before the next layer.
//!
//! The forward pass computes every layer before the first frame exists (the runtime has no
//! per-layer callback), so what overlaps is the sharer encoding layer l+1 while layer l is on
//! the wire and being decoded.

use kvwire::KvData;
use kvwire::v2::{FrameKind, FrameOptions, SessionHeader, encode_frame};
use kvwire_proto::v1 as pb;
use service_kit::metrics_catalog::{FRAMES, add_bytes, record_stage_ms};
use service_kit::timing::timed;
use tokio::sync::mpsc;
use tonic::Status;

use crate::domain::{RefineParams, RefineWant, ShareParams, session_id_to_hex};
use crate::engine::{EngineInfo, SharerEngine};
use crate::error::SharerError;
use crate::select::{estimate_transfer_bytes, fit_to_cap, gather_rows, select_positions};
use crate::session_state::{HeldSession, SentState};

/// Items of a Share or Refine response stream.
pub type ChunkSender = mpsc::Sender<Result<pb::ShareChunk, Status>>;

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

fn send(tx: &ChunkSender, chunk: pb::ShareChunk) -> Result<(), SharerError> {
    tx.blocking_send(Ok(chunk))
        .map_err(|_| SharerError::Cancelled("receiver closed the stream"))
}

fn header_chunk(
    header: &SessionHeader,
    session_id: String,
    prompt_tokens: usize,
) -> Result<(pb::ShareChunk, f64), SharerError> {
    let (bytes, ms) = timed(|| header.encode());
    let frame = bytes?;
    add_bytes("sharer", "blob", frame.len() as u64);
    Ok((
        pb::ShareChunk {
            frame,
            layer: None,
            session_id,
            timings: None,
            prompt_tokens: prompt_tokens as u32,
        },
        ms,
    ))
}

/// What one round sends: one frame per layer over the same positions.
struct LayerJob<'a> {
    n_layers: usize,
    shape: CacheShape,
    positions: &'a [u32],
    base: FrameOptions,
}

/// Encodes and sends one frame per layer. `rows(layer)` gives that layer's K and V rows at the
/// frame's positions; `record` sees each encoded frame before it is sent (session bookkeeping).
/// The last chunk carries `timings` with this function's select and quantize times added.
fn send_layers(
    job: &LayerJob<'_>,
    tx: &ChunkSender,
    mut timings: pb::StageTimings,
    mut rows: impl FnMut(usize) -> (Vec<f32>, Vec<f32>),
    mut record: impl FnMut(&[u8]) -> Result<(), SharerError>,
) -> Result<(), SharerError> {
    let LayerJob {
        n_layers,
        shape,
        positions,
        base,
    } = *job;
    for layer in 0..n_layers {
        let ((k, v), gather_ms) = timed(|| rows(layer));
        let kv = kvwire::LayerKv {
            k: KvData::F32(&k),
            v: KvData::F32(&v),
            shape: [1, shape.heads, positions.len(), shape.head_dim],
            indices: positions,
        };
        let opts = FrameOptions {
            layer: layer as u16,
            ..base
        };
        let (frame, quantize_ms) = timed(|| encode_frame(&kv, &opts));
        let frame = frame?;
        record(&frame)?;
        timings.sharer_select_ms += gather_ms;
        timings.sharer_quantize_ms += quantize_ms;
        add_bytes("sharer", "blob", frame.len() as u64);
        metrics::counter!(FRAMES, "service" => "sharer").increment(1);
        let last = layer + 1 == n_layers;
        if last {
            record_stage_ms("sharer", "select", timings.sharer_select_ms);
            record_stage_ms("sharer", "quantize", timings.sharer_quantize_ms);
        }
        let chunk = pb::ShareChunk {
            frame,
            layer: Some(layer as u32),
            timings: last.then_some(timings),
            ..Default::default()
        };
        send(tx, chunk)?;
    }
    Ok(())
}

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

/// Runs a whole Share: prefill, selection, session header, frames. Returns the session to
/// keep (with its byte size) when the request asked for one.
pub fn produce_share(
    engine: &SharerEngine,
    params: &ShareParams,
    max_prompt_tokens: usize,
    tx: &ChunkSender,
) -> Result<Option<([u8; 16], HeldSession)>, SharerError> {
    let ids = engine.prompt_ids(&params.prompt)?;
    if ids.len() > max_prompt_tokens {
        return Err(SharerError::PromptTooLong {
            tokens: ids.len(),
            max: max_prompt_tokens,
        });
    }
    if ids.len() < 2 {
        return Err(SharerError::invalid("prompt", "needs at least 2 tokens"));
    }
    let prefilled = engine.prefill(&ids)?;
    record_stage_ms("sharer", "prefill", prefilled.prefill_ms);
    let info = engine.info();
    let shape = CacheShape {
        heads: info.kv_heads,
        tokens: ids.len(),
        head_dim: info.head_dim,
    };
    let plan = params.plan;
    let session_id: [u8; 16] = rand::random();
    let base = FrameOptions {
        payload: plan.payload,
        granularity: plan.granularity,
        round: 1,
        kind: FrameKind::Base,
        ..FrameOptions::default()
    };
    let header = session_header(info, session_id, ids.len(), 1);
    // Every prompt token except the last: the receiver runs the last token itself.
    let (positions, select_ms) = timed(|| {
        let candidates = select_positions(plan.selection, ids.len() - 1);
        let estimate = |p: &[u32]| {
            estimate_transfer_bytes(&header, &base, info.layers, info.kv_heads, info.head_dim, p)
        };
        let minimum = estimate(&candidates[..1]);
        fit_to_cap(candidates, plan.selection, plan.byte_cap, estimate).ok_or(
            SharerError::CapTooSmall {
                cap: plan.byte_cap,
                minimum,
            },
        )
    });
    let positions = positions?;
    let id_hex = if params.keep_session {
        session_id_to_hex(&session_id)
    } else {
        String::new()
    };
    let (first, encode_ms) = header_chunk(&header, id_hex, ids.len())?;
    send(tx, first)?;
    let timings = pb::StageTimings {
        sharer_prefill_ms: prefilled.prefill_ms,
        sharer_select_ms: select_ms + prefilled.export_ms,
        sharer_encode_ms: encode_ms,
        ..Default::default()
    };
    let held = params
        .keep_session
        .then(|| HeldSession::new(prefilled.layers.clone(), shape));
    let mut state = held
        .as_ref()
        .map(|h| h.state.lock().unwrap_or_else(|p| p.into_inner()));
    let layers = &prefilled.layers;
    let g = |data: &[f32]| gather_rows(data, shape.heads, shape.tokens, shape.head_dim, &positions);
    let job = LayerJob {
        n_layers: layers.len(),
        shape,
        positions: &positions,
        base,
    };
    send_layers(
        &job,
        tx,
        timings,
        |l| (g(&layers[l].k), g(&layers[l].v)),
        |frame| match state.as_mut() {
            Some(s) => s.record_frame(shape, frame),
            None => Ok(()),
        },
    )?;
    if let Some(s) = state.as_mut() {
        s.round = 1;
    }
    drop(state);
    Ok(held.map(|h| (session_id, h)))
}

/// Runs a Refine round on a held session.
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
    for &p in positions {
        let p = p as usize;
        if p + 1 >= shape.tokens {
            return Err(SharerError::Refine(format!(
                "position {p} is not a shareable prompt position (prompt has {} tokens)",
                shape.tokens
            )));
        }
        match (kind, state.sent[p]) {
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
    let round = state.round.saturating_add(1);
    let header = session_header(engine.info(), params.session_id, shape.tokens, round);
    let (first, encode_ms) =
        header_chunk(&header, session_id_to_hex(&params.session_id), shape.tokens)?;
    send(tx, first)?;
    let base = FrameOptions {
        payload,
        granularity: params.granularity,
        round,
        kind,
        ..FrameOptions::default()
    };
    let timings = pb::StageTimings {
        sharer_encode_ms: encode_ms,
        ..Default::default()
    };
    let layers = &session.layers;
    let mut frames = Vec::with_capacity(layers.len());
    let job = LayerJob {
        n_layers: layers.len(),
        shape,
        positions,
        base,
    };
    send_layers(
        &job,
        tx,
        timings,
        |l| match kind {
            FrameKind::Base => {
                let g = |d: &[f32]| {
                    gather_rows(d, shape.heads, shape.tokens, shape.head_dim, positions)
                };
                (g(&layers[l].k), g(&layers[l].v))
            }
            FrameKind::Residual => state.residual_rows(&layers[l], l, shape, positions),
        },
        |frame| {
            frames.push(frame.to_vec());
            Ok(())
        },
    )?;
    for frame in &frames {
        state.record_frame(shape, frame)?;
    }
    state.round = round;
    Ok(())
}
