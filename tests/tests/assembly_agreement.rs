//! The sharer's record of what it sent and the receiver's assembled cache agree value for value,
//! after round 1 and after a residual upgrade: both run kvwire's one `CacheAssembler` over the
//! same records, so refinement's `full - held` is exactly what the receiver lacks. Round 1 is a
//! uniform int4 transfer, or a per-token rate plan whose layers each get an int8 and an int4
//! frame.

use kvwire::Granularity;
use kvwire::v2::Payload;
use receiver_svc::decode::TransferDecoder;
use service_kit::model_load::load;
use service_kit::model_spec::ModelSpec;
use sharer_svc::domain::{
    Chunk, PromptSource, RefineParams, RefineWant, ShareParams, TransferPlan,
};
use sharer_svc::plan::PrecisionPlan;
use sharer_svc::produce::{produce_refine, produce_share};
use sharer_svc::select::{PolicySpec, Selection};
use sharer_svc::{SharerEngine, SharerError};
use tokio::sync::mpsc;

/// Runs `produce` with a channel big enough for the whole round and returns its chunks.
fn chunks_of<T>(produce: impl FnOnce(&mpsc::Sender<Chunk>) -> T) -> (T, Vec<Chunk>) {
    let (tx, mut rx) = mpsc::channel(1024);
    let out = produce(&tx);
    drop(tx);
    let mut chunks = Vec::new();
    while let Ok(c) = rx.try_recv() {
        chunks.push(c);
    }
    (out, chunks)
}

const PROMPT: &str = "Question: which is the passkey?\nAnswer:";

fn share_params(plan: TransferPlan, keep_session: bool) -> ShareParams {
    ShareParams {
        prompt: PromptSource::Text(PROMPT.into()),
        plan,
        keep_session,
        all_positions: false,
        query: None,
    }
}

/// A kept session's "reservation": its id (these tests run the producers without a store).
fn keep_id(id: [u8; 16], _bytes: u64) -> Result<[u8; 16], SharerError> {
    Ok(id)
}

/// Bytes of a round-1 Share of the prompt's back half at `plan`, uniform or not.
fn share_bytes(engine: &SharerEngine, plan: TransferPlan) -> u64 {
    let params = share_params(plan, false);
    let (done, chunks) = chunks_of(|tx| produce_share(engine, &params, 512, tx, keep_id));
    done.unwrap();
    chunks.iter().map(|c| c.frame.len() as u64).sum()
}

fn back_half(payload: Payload, precision: PrecisionPlan, byte_cap: u64) -> TransferPlan {
    TransferPlan {
        payload,
        granularity: Granularity::PerBlock,
        selection: Selection {
            policy: PolicySpec::Back,
            keep_fraction: 0.5,
        },
        byte_cap,
        precision,
    }
}

#[test]
fn sharer_view_and_receiver_cache_agree_after_a_residual_upgrade() {
    let spec = ModelSpec::parse(e2e_tests::TINY_MODEL).unwrap();
    let engine = SharerEngine::new(load(&spec).unwrap());
    agree_after_upgrade(&engine, back_half(Payload::Int4, PrecisionPlan::Uniform, 0));
    // Halfway between the int4 and int8 transfers: the rate plan sends both precision groups.
    let int4 = share_bytes(&engine, back_half(Payload::Int4, PrecisionPlan::Uniform, 0));
    let int8 = share_bytes(&engine, back_half(Payload::Int8, PrecisionPlan::Uniform, 0));
    let rate = PrecisionPlan::TokenRate { int4: true };
    agree_after_upgrade(&engine, back_half(Payload::Int8, rate, (int4 + int8) / 2));
}

fn agree_after_upgrade(engine: &SharerEngine, plan: TransferPlan) {
    let params = share_params(plan, true);
    let (held, round1) = chunks_of(|tx| produce_share(engine, &params, 512, tx, keep_id));
    let (session_id, held) = held.unwrap().expect("a kept session");

    let mut decoder = TransferDecoder::new(Vec::new());
    for c in &round1 {
        decoder.push(&c.frame).unwrap();
    }
    let receiver = decoder.finish().unwrap();
    let sharer = held.state.lock().unwrap();
    assert_eq!(sharer.view, receiver, "round 1: the two views differ");
    let positions = sharer.view.positions.clone();
    drop(sharer);

    let refine = RefineParams {
        session_id,
        want: RefineWant::Upgrade {
            positions: positions[1..].to_vec(),
            payload: Payload::Int8,
        },
        granularity: Granularity::PerBlock,
    };
    let (done, round2) = chunks_of(|tx| produce_refine(engine, &held, &refine, tx));
    done.unwrap();
    let mut decoder = TransferDecoder::refining(receiver.clone());
    for c in &round2 {
        decoder.push(&c.frame).unwrap();
    }
    let upgraded = decoder.finish().unwrap();
    let sharer = held.state.lock().unwrap();
    assert_eq!(sharer.view, upgraded, "round 2: the two views differ");
    assert_ne!(upgraded, receiver, "the upgrade changed nothing");
    // The upgraded rows moved towards the full-precision cache; the first position kept its
    // round-1 values.
    let full = held
        .cache
        .select_positions(&positions)
        .unwrap()
        .to_host()
        .unwrap();
    let err = |a: &[f32], b: &[f32], row: std::ops::Range<usize>| -> f32 {
        a[row.clone()]
            .iter()
            .zip(&b[row])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    };
    let d = upgraded.head_dim;
    let rest = d..positions.len() * d;
    assert!(
        err(&upgraded.layers[0].k, &full[0].k, rest.clone())
            < err(&receiver.layers[0].k, &full[0].k, rest)
    );
    assert_eq!(upgraded.layers[0].k[..d], receiver.layers[0].k[..d]);
}
