//! The text methods: the sharer's own forced-choice answer (sharer-only) and a sharer text
//! message put before the receiver's prompt.

use std::time::Instant;

use eval_harness::LETTERS;
use kvwire_proto::v1 as pb;
use service_kit::metrics_catalog::add_bytes;
use service_kit::stages::StageTimings;
use service_kit::timing::ms;
use service_kit::trace_context::TraceContext;

use super::{MethodResult, ReceiverCore, SERVICE, end_round};
use crate::domain::{EvaluateParams, Scoring};
use crate::error::ReceiverError;
use crate::report::{ByteCounts, Outcome, RoundReport};

impl ReceiverCore {
    /// The sharer's own answer (Answer rpc): letter scoring only.
    pub(super) async fn sharer_only(
        &self,
        p: &EvaluateParams,
        trace: TraceContext,
        deadline: Instant,
    ) -> MethodResult {
        if p.scoring != Scoring::Letter {
            return Err(ReceiverError::invalid(
                "scoring",
                "sharer_only takes the sharer's own forced-choice answer (Answer rpc): letter \
                 scoring only",
            ));
        }
        let mut link = self.connect(p, trace, deadline).await?;
        let t0 = Instant::now();
        let (reply, grpc) = link
            .answer(pb::AnswerRequest {
                example: Some(p.wire_example.clone()),
            })
            .await?;
        let elapsed = ms(t0.elapsed());
        let mut letters = reply.prediction.chars();
        let prediction = match (letters.next(), letters.next()) {
            (Some(c), None) => LETTERS[..p.example.choices.len()]
                .iter()
                .position(|l| *l == c),
            _ => None,
        };
        let bytes = ByteCounts::payload_only(reply.prediction.len() as u64, grpc);
        let mut timings = StageTimings::from(reply.timings.unwrap_or_default());
        timings.end_to_end_ms = elapsed;
        let round = RoundReport::new(1, bytes, link.transport(), timings);
        let outcome = Outcome {
            prediction,
            margin: reply.margin,
            probabilities: reply.probabilities,
            ..Outcome::default()
        };
        Ok((outcome, vec![round], 0))
    }

    /// A sharer text message (of `kind`, capped at `cap` UTF-8 bytes) before the receiver's
    /// own prompt.
    pub(super) async fn text(
        &self,
        p: &EvaluateParams,
        kind: pb::MessageKind,
        cap: u64,
        trace: TraceContext,
        deadline: Instant,
    ) -> MethodResult {
        let round_start = Instant::now();
        let mut link = self.connect(p, trace, deadline).await?;
        let t0 = Instant::now();
        let req = pb::MessageRequest {
            example: Some(p.wire_example.clone()),
            kind: kind as i32,
            byte_cap: cap,
            max_new_tokens: 0,
        };
        let (reply, grpc) = link.message(req).await?;
        let elapsed = ms(t0.elapsed());
        let n = reply.text.len() as u64;
        add_bytes(SERVICE, "text", n);
        let mut timings = StageTimings::from(reply.timings.unwrap_or_default());
        timings.transfer_ms = elapsed;
        let bytes = ByteCounts::payload_only(n, grpc);
        let mut round = RoundReport::new(1, bytes, link.transport(), timings);
        let prompt = self.prompt(p, Some(reply.text)).await?;
        let outcome = self.score(p, prompt, None).await?;
        outcome.add_to(&mut round);
        end_round(&mut round, round_start);
        Ok((outcome, vec![round], cap))
    }
}
