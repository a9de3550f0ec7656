//! KV transfer and C2C: round 1 (Share), the fuse seam, scoring, and a receiver-driven round 2
//! (Refine: a residual upgrade of held positions or new positions, chosen by the receiver's
//! delta scores within the bytes the cap leaves; `refine.rs`) when the round-1 margin is low.

use std::sync::Arc;
use std::time::Instant;

use eval_harness::passage_context;
use fuser::{CacheFuser, PromptLayout};
use kvwire::HostCache;
use kvwire_proto::v1 as pb;
use service_kit::counting::ByteSnapshot;
use service_kit::metrics_catalog::{FRAMES, add_bytes, record_stage_ms};
use service_kit::timing::timed;
use service_kit::trace_context::TraceContext;
use tracing::Instrument as _;
use tracing::field::Empty;

use super::{MethodResult, ReceiverCore, SERVICE, end_round, refine};
use crate::client::{RoundTransfer, SharerLink};
use crate::domain::EvaluateParams;
use crate::engine::{Injected, ReceiverPrompt};
use crate::error::ReceiverError;
use crate::report::{BlobBreakdown, ByteCounts, RoundReport};

impl ReceiverCore {
    /// KV transfer through the pair's fuser: `method` "kv" (identity, same model) or "c2c"
    /// (the sharer's cache projected and fused into the receiver's own prompt cache; rank
    /// scoring only, the context the fuser was trained on).
    pub(super) async fn kv(
        &self,
        p: &EvaluateParams,
        trace: TraceContext,
        deadline: Instant,
        method: &'static str,
    ) -> MethodResult {
        let fuser = self.fuser_for(method)?;
        let prompt = self.prompt(p, None).await?;
        if method == "c2c" && !matches!(prompt, ReceiverPrompt::Rank(..)) {
            return Err(ReceiverError::invalid(
                "scoring",
                "c2c fuses the plain \"Question: ...\\nAnswer:\" context its fuser was trained on: \
                 use rank scoring",
            ));
        }
        let round1_start = Instant::now();
        let mut link = self.connect(p, trace, deadline).await?;
        // Shared layout: the sharer builds the same prompt (the chat prompt from the example, or
        // the plain rank context as text) and sends every position but the last. Context
        // layout: the sharer prefills the wrapped passage and sends every position of it.
        let context = p.layout == PromptLayout::Context;
        let shared_prompt = match (&prompt, p.passage.as_deref()) {
            (_, Some(passage)) if context => {
                pb::share_request::Prompt::Text(passage_context(passage))
            }
            (ReceiverPrompt::Rank(r, _), _) => pb::share_request::Prompt::Text(r.text.clone()),
            (ReceiverPrompt::Letter(_) | ReceiverPrompt::Generate(_), _) => {
                pb::share_request::Prompt::Example(p.wire_example.clone())
            }
        };
        // Query-aware selection: the sharer scores its rows by the attention of the text this
        // receiver runs after them (the question, in the context layout).
        let query_aware = p.transfer.selection == pb::Selection::QueryAttention as i32;
        let query = if query_aware {
            prompt.text().to_string()
        } else {
            String::new()
        };
        // With a cap, round 1 leaves the plan's reserve for round 2.
        let plan = p.refine.as_ref();
        let round1_transfer = pb::TransferSettings {
            byte_cap: refine::round1_cap(p.transfer.byte_cap, plan),
            ..p.transfer
        };
        let req = pb::ShareRequest {
            prompt: Some(shared_prompt),
            transfer: Some(round1_transfer),
            keep_session: p.refine.is_some(),
            all_positions: context,
            query,
        };
        let round1 = link.share(req, self.take_buffers()).await?;
        // A kept session is released once the rounds are over, whatever their outcome.
        let session_id = round1.session_id.clone();
        let result = self
            .rounds(p, &mut link, &fuser, prompt, (round1, round1_start))
            .await;
        if !session_id.is_empty() {
            link.release(&session_id).await;
        }
        result
    }

    /// Round 1's fuse and score, then round 2 (Refine) when the plan asks for it and the
    /// round-1 margin is low.
    async fn rounds(
        &self,
        p: &EvaluateParams,
        link: &mut SharerLink,
        fuser: &Arc<dyn CacheFuser>,
        prompt: ReceiverPrompt,
        (round1, round1_start): (RoundTransfer, Instant),
    ) -> MethodResult {
        let context = p.layout == PromptLayout::Context;
        let plan = p.refine.as_ref();
        let snapshot1 = link.transport();
        let mut report1 = account_round(1, &round1, snapshot1);
        let session_id = round1.session_id;
        let (fused, mut cache) = self
            .fuse(fuser, &prompt, p.layout, round1.cache, &mut report1)
            .await?;
        let held = plan.is_some().then(|| fused.clone());
        let mut outcome = self.score(p, prompt.clone(), Some(fused)).await?;
        outcome.add_to(&mut report1);
        end_round(&mut report1, round1_start);
        let round1_bytes = report1.bytes.measured_total;
        let mut rounds = vec![report1];
        let wanted = match (plan, held) {
            (Some(plan), Some(held))
                if refine::triggered(Some(plan), outcome.margin, &session_id) =>
            {
                let round2_start = Instant::now();
                let ids = prompt.ids().to_vec();
                let (scores, delta_ms) = self
                    .blocking(move |e| Ok(timed(|| e.delta_scores(&ids, &held))))
                    .await?;
                let budget = refine::round2_budget(p.transfer.byte_cap, plan, round1_bytes);
                refine::round2_request(plan, &p.transfer, &cache, &scores?, budget, &session_id)
                    .map(|req| (req, round2_start, delta_ms))
            }
            _ => None,
        };
        if let Some((req, round2_start, delta_ms)) = wanted {
            let round2 = link.refine(req, cache, context).await?;
            let mut report2 = account_round(2, &round2, link.transport().since(snapshot1));
            let (fused2, refined) = self
                .fuse(fuser, &prompt, p.layout, round2.cache, &mut report2)
                .await?;
            cache = refined;
            outcome = self.score(p, prompt, Some(fused2)).await?;
            outcome.add_to(&mut report2);
            // The delta scores (one forward of the receiver's own tokens) count as scoring.
            report2.timings.score_ms += delta_ms;
            end_round(&mut report2, round2_start);
            rounds.push(report2);
        }
        self.return_buffers(cache.into_buffers());
        Ok((outcome, rounds, p.transfer.byte_cap))
    }

    /// The fuse seam on the job pool: the receiver's prompt cache on the model's device from
    /// the sharer rows held (and where its own tokens go, by `layout`), its stage times added
    /// to the round. The host cache comes back (later rounds refine it).
    async fn fuse(
        &self,
        fuser: &Arc<dyn CacheFuser>,
        prompt: &ReceiverPrompt,
        layout: PromptLayout,
        sharer: HostCache,
        report: &mut RoundReport,
    ) -> Result<(Injected, HostCache), ReceiverError> {
        let fuser = Arc::clone(fuser);
        let (text, ids) = (prompt.text().to_string(), prompt.ids().to_vec());
        // Projection and fuse (and, for C2C, the receiver's own prefill the fuser runs).
        let span = tracing::info_span!("receiver.fuse", project_ms = Empty, fuse_ms = Empty);
        let (fused, sharer) = self
            .blocking(move |e| {
                let fused = e.fuse(fuser.as_ref(), &sharer, &text, &ids, layout)?;
                Ok((fused, sharer))
            })
            .instrument(span.clone())
            .await?;
        let t = fused.timings;
        span.record("project_ms", t.project_ms);
        span.record("fuse_ms", t.fuse_ms);
        record_stage_ms(SERVICE, "project", t.project_ms);
        record_stage_ms(SERVICE, "fuse", t.fuse_ms);
        report.timings.project_ms += t.project_ms;
        report.timings.fuse_ms += t.fuse_ms;
        report.timings.receiver_prefill_ms += t.receiver_prefill_ms;
        Ok((fused.into(), sharer))
    }
}

/// The bytes and transfer times of one KV round (round 2 and later count their request).
fn account_round(round: u32, t: &RoundTransfer, transport: ByteSnapshot) -> RoundReport {
    add_bytes(SERVICE, "blob", t.blob_bytes);
    add_bytes(SERVICE, "grpc_message", t.grpc_bytes);
    add_bytes(SERVICE, "link_read", transport.read);
    add_bytes(SERVICE, "link_written", transport.written);
    metrics::counter!(FRAMES, "service" => SERVICE).increment(u64::from(t.frames));
    record_stage_ms(SERVICE, "first_frame_wait", t.first_frame_wait_ms);
    record_stage_ms(SERVICE, "transfer", t.transfer_ms);
    record_stage_ms(SERVICE, "decode", t.decode_ms);
    let request = if round > 1 { t.request_bytes } else { 0 };
    let b = t.breakdown;
    let bytes = ByteCounts {
        measured_total: t.blob_bytes + request,
        breakdown: BlobBreakdown {
            headers: b.header,
            indices: b.indices,
            payload: b.payload,
            scales: b.scales,
            request,
        },
        estimated_total: t.estimated + request,
        grpc_message_bytes: t.grpc_bytes,
        frames: t.frames,
        ..ByteCounts::default()
    };
    let mut timings = t.sharer_timings;
    timings.first_frame_wait_ms = t.first_frame_wait_ms;
    timings.transfer_ms = t.transfer_ms;
    timings.decode_ms = t.decode_ms;
    RoundReport::new(round, bytes, transport, timings)
}
