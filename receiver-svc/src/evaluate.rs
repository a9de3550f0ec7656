//! One evaluation, method by method: what is asked of the sharer, what the receiver runs, and
//! the per-round byte and time accounting of the data capture contract.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvwire_proto::v1 as pb;
use service_kit::counting::ByteSnapshot;
use service_kit::metrics_catalog::{add_bytes, record_stage_ms};
use service_kit::prompt::LETTERS;
use service_kit::rpc::JobPool;
use service_kit::timing::{ms, timed};
use service_kit::trace_context::TraceContext;

use crate::client::{RoundTransfer, SharerLink};
use crate::config::FuserKind;
use crate::config::ReceiverConfig;
use crate::decode::DecodedCache;
use crate::domain::{EvaluateParams, Method, Scoring};
use crate::engine::{ReceiverEngine, ReceiverPrompt, Scored};
use crate::error::ReceiverError;
use crate::fuser::{C2cFuser, Fuser, fuser_for};
use crate::report::{Outcome, round_report, sum_rounds};

const SERVICE: &str = "receiver";

/// What a method produced: the outcome, its rounds, and the byte cap that applied.
type MethodResult = Result<(Outcome, Vec<pb::RoundReport>, u64), ReceiverError>;

/// One KV round after fusion.
struct FusedRound {
    /// The decoded sharer cache (what later rounds refine).
    raw: DecodedCache,
    /// The round's report.
    report: pb::RoundReport,
    /// Session id for Refine (empty when not kept).
    session_id: String,
    /// The receiver's prompt cache.
    fused: DecodedCache,
}

/// Everything an evaluation needs: the engine, the job pool, the pair's fuser, the config.
#[derive(Debug)]
pub struct ReceiverCore {
    pool: JobPool<ReceiverEngine>,
    fuser: Option<Arc<dyn Fuser>>,
    c2c: Option<Arc<C2cFuser>>,
    config: ReceiverConfig,
}

impl ReceiverCore {
    /// A core around a loaded engine (loads the C2C fuser when the config names one).
    pub fn new(engine: ReceiverEngine, config: ReceiverConfig) -> Result<Self, ReceiverError> {
        let spec = engine.loaded().spec.to_string();
        let c2c = match config.fuser {
            FuserKind::C2c => Some(Arc::new(C2cFuser::load(
                &config.c2c,
                &engine.loaded().model,
            )?)),
            FuserKind::Identity | FuserKind::None => None,
        };
        Ok(Self {
            fuser: fuser_for(config.fuser, &spec).map(Arc::from),
            c2c,
            pool: JobPool::new(engine, config.limits.max_concurrent_jobs),
            config,
        })
    }

    /// The engine (Info).
    pub fn engine(&self) -> &ReceiverEngine {
        self.pool.resource()
    }

    /// The configured deadline of one evaluation.
    pub fn default_timeout(&self) -> Duration {
        Duration::from_secs(self.config.limits.default_timeout_secs)
    }

    /// Runs `f` on a blocking thread once a job slot is free.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReceiverEngine) -> Result<T, ReceiverError> + Send + 'static,
    ) -> Result<T, ReceiverError> {
        self.pool.run(f).await
    }

    async fn connect(
        &self,
        p: &EvaluateParams,
        trace: TraceContext,
        deadline: Instant,
    ) -> Result<SharerLink, ReceiverError> {
        let endpoint = match p.sharer_endpoint.as_deref() {
            Some(e) => e,
            None if !self.config.sharer_endpoint.is_empty() => &self.config.sharer_endpoint,
            None => {
                return Err(ReceiverError::invalid(
                    "sharer_endpoint",
                    "the request names no sharer and this receiver has no default one",
                ));
            }
        };
        let l = &self.config.limits;
        SharerLink::connect(
            endpoint,
            l.max_message_bytes,
            Duration::from_secs(l.connect_timeout_secs),
            trace,
            deadline,
        )
        .await
    }

    /// The receiver's prompt for the request's scoring mode, with an optional sharer message.
    async fn prompt(
        &self,
        p: &EvaluateParams,
        message: Option<String>,
    ) -> Result<ReceiverPrompt, ReceiverError> {
        let example = p.example.clone();
        let max = self.config.limits.max_prompt_tokens;
        let scoring = p.scoring;
        let prompt = self
            .blocking(move |e| {
                let message = message.as_deref();
                Ok(match scoring {
                    Scoring::Letter => ReceiverPrompt::Letter(e.letter_prompt(&example, message)?),
                    Scoring::Generate => {
                        ReceiverPrompt::Generate(e.letter_prompt(&example, message)?)
                    }
                    Scoring::Rank(chosen) => {
                        ReceiverPrompt::Rank(e.rank_prompt(&example, message)?, chosen)
                    }
                })
            })
            .await?;
        if prompt.ids().len() > max {
            return Err(ReceiverError::invalid(
                "example",
                format!("prompt has {} tokens, limit {max}", prompt.ids().len()),
            ));
        }
        Ok(prompt)
    }

    /// Scores by letters, by rank or by generation, with an optional injected cache.
    async fn score(
        &self,
        p: &EvaluateParams,
        prompt: ReceiverPrompt,
        cache: Option<DecodedCache>,
    ) -> Result<Outcome, ReceiverError> {
        let n = p.example.choices.len();
        match prompt {
            ReceiverPrompt::Letter(prompt) => {
                let scored: Scored = self
                    .blocking(move |e| e.score(&prompt, cache.as_ref()))
                    .await?;
                Ok(Outcome::from_scored(scored))
            }
            ReceiverPrompt::Rank(prompt, chosen) => {
                let ranked = self
                    .blocking(move |e| e.rank(&prompt, cache.as_ref()))
                    .await?;
                Outcome::from_ranked(ranked, chosen)
            }
            ReceiverPrompt::Generate(prompt) => {
                let max_new = match p.max_new_tokens {
                    0 => self.config.limits.max_new_tokens,
                    k => k.min(self.config.limits.max_new_tokens),
                };
                let (text, letter, gen_ms) = self
                    .blocking(move |e| e.generate(&prompt, cache.as_ref(), max_new, n))
                    .await?;
                Ok(Outcome::generated(text, letter, gen_ms))
            }
        }
    }

    /// Runs one evaluation to completion.
    pub async fn evaluate(
        &self,
        p: EvaluateParams,
        trace: TraceContext,
        deadline: Instant,
    ) -> Result<pb::EvaluateReply, ReceiverError> {
        let start = Instant::now();
        let (outcome, rounds, cap) = match p.method {
            Method::ReceiverOnly => {
                let prompt = self.prompt(&p, None).await?;
                (self.score(&p, prompt, None).await?, Vec::new(), 0)
            }
            Method::SharerOnly => self.sharer_only(&p, trace, deadline).await?,
            Method::Text { kind, byte_cap } => {
                self.text(&p, kind, byte_cap, trace, deadline).await?
            }
            Method::Kv => self.kv(&p, trace, deadline, false).await?,
            Method::C2c => self.kv(&p, trace, deadline, true).await?,
        };
        let total = sum_rounds(&rounds);
        let mut timings = total.1;
        if rounds.is_empty() {
            timings.receiver_prefill_ms = outcome.prefill_ms;
            timings.score_ms = outcome.score_ms;
        }
        timings.end_to_end_ms = ms(start.elapsed());
        record_stage_ms(SERVICE, "receiver_prefill", outcome.prefill_ms);
        record_stage_ms(SERVICE, "score", outcome.score_ms);
        record_stage_ms(SERVICE, "end_to_end", timings.end_to_end_ms);
        let correct = outcome.prediction.is_some() && outcome.prediction == p.example.gold;
        Ok(pb::EvaluateReply {
            prediction: outcome
                .prediction
                .map(|i| LETTERS[i].to_string())
                .unwrap_or_default(),
            correct,
            margin: outcome.margin,
            probabilities: outcome.probabilities,
            rounds,
            total: Some(total.0),
            timings: Some(timings),
            generated: outcome.generated,
            budget_cap_bytes: cap,
            rank: outcome.rank,
        })
    }

    async fn sharer_only(
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
        let bytes = pb::ByteCounts {
            measured_total: reply.prediction.len() as u64,
            breakdown: Some(pb::BlobBreakdown {
                payload: reply.prediction.len() as u64,
                ..Default::default()
            }),
            estimated_total: reply.prediction.len() as u64,
            grpc_message_bytes: grpc,
            ..Default::default()
        };
        let mut timings = reply.timings.unwrap_or_default();
        timings.end_to_end_ms = elapsed;
        let round = round_report(1, bytes, link.transport(), timings);
        let outcome = Outcome {
            prediction,
            margin: reply.margin,
            probabilities: reply.probabilities,
            ..Outcome::default()
        };
        Ok((outcome, vec![round], 0))
    }

    async fn text(
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
        let bytes = pb::ByteCounts {
            measured_total: n,
            breakdown: Some(pb::BlobBreakdown {
                payload: n,
                ..Default::default()
            }),
            estimated_total: n,
            grpc_message_bytes: grpc,
            ..Default::default()
        };
        let mut timings = reply.timings.unwrap_or_default();
        timings.transfer_ms = elapsed;
        let mut round = round_report(1, bytes, link.transport(), timings);
        let prompt = self.prompt(p, Some(reply.text)).await?;
        let outcome = self.score(p, prompt, None).await?;
        outcome.add_to(&mut round);
        end_round(&mut round, round_start);
        Ok((outcome, vec![round], cap))
    }

    /// KV transfer (`c2c` false: through the pair's identity fuser) or C2C (the sharer's cache
    /// projected and fused into the receiver's own prompt cache; rank scoring only, the context
    /// the fuser was trained on).
    async fn kv(
        &self,
        p: &EvaluateParams,
        trace: TraceContext,
        deadline: Instant,
        c2c: bool,
    ) -> MethodResult {
        let configured = if self.c2c.is_some() { "c2c" } else { "none" };
        let (fuser, c2c_fuser): (Arc<dyn Fuser>, Option<Arc<C2cFuser>>) = if c2c {
            let f = self.c2c.clone().ok_or(ReceiverError::NoFuser {
                method: "c2c",
                fuser: self.fuser.as_ref().map_or("none", |f| f.name()),
            })?;
            (Arc::new(PassThrough), Some(f))
        } else {
            let f = self.fuser.clone().ok_or(ReceiverError::NoFuser {
                method: "kv",
                fuser: configured,
            })?;
            (f, None)
        };
        let prompt = self.prompt(p, None).await?;
        if c2c && !matches!(prompt, ReceiverPrompt::Rank(..)) {
            return Err(ReceiverError::invalid(
                "scoring",
                "c2c fuses the plain \"Question: ...\\nAnswer:\" context its fuser was trained on: \
                 use rank scoring",
            ));
        }
        let round1_start = Instant::now();
        let mut link = self.connect(p, trace, deadline).await?;
        // The sharer builds the same prompt: the chat prompt from the example, or the plain
        // rank context as text.
        let shared_prompt = match &prompt {
            ReceiverPrompt::Rank(r, _) => pb::share_request::Prompt::Text(r.text.clone()),
            ReceiverPrompt::Letter(_) | ReceiverPrompt::Generate(_) => {
                pb::share_request::Prompt::Example(p.wire_example.clone())
            }
        };
        let req = pb::ShareRequest {
            prompt: Some(shared_prompt),
            transfer: Some(p.transfer),
            keep_session: p.refine.is_some(),
        };
        let round1 = link.share(req).await?;
        let snapshot1 = link.transport();
        let FusedRound {
            raw: cache,
            report: mut report1,
            session_id,
            fused,
        } = self.fuse_round(1, round1, snapshot1, fuser.as_ref())?;
        let fused = self
            .project(c2c_fuser.as_ref(), &prompt, fused, &mut report1)
            .await?;
        let mut outcome = self.score(p, prompt.clone(), Some(fused)).await?;
        outcome.add_to(&mut report1);
        end_round(&mut report1, round1_start);
        let mut rounds = vec![report1];
        if let Some(plan) = p
            .refine
            .filter(|plan| outcome.margin < plan.margin_threshold && !session_id.is_empty())
        {
            let req = pb::RefineRequest {
                session_id,
                want: Some(pb::refine_request::Want::Upgrade(pb::PrecisionUpgrade {
                    positions: cache.positions.clone(),
                    payload: plan.upgrade_payload as i32,
                })),
                granularity: p.transfer.granularity,
            };
            let round2_start = Instant::now();
            let round2 = link.refine(req, cache).await?;
            let round2 =
                self.fuse_round(2, round2, link.transport().since(snapshot1), fuser.as_ref())?;
            let mut report2 = round2.report;
            let fused2 = self
                .project(c2c_fuser.as_ref(), &prompt, round2.fused, &mut report2)
                .await?;
            outcome = self.score(p, prompt, Some(fused2)).await?;
            outcome.add_to(&mut report2);
            end_round(&mut report2, round2_start);
            rounds.push(report2);
        }
        Ok((outcome, rounds, p.transfer.byte_cap))
    }

    /// C2C: projects the decoded sharer cache into the receiver's own prompt cache on the job
    /// pool (the receiver model runs its prefill), adding the time to the round's fuse stage.
    /// Without a C2C fuser the cache passes unchanged.
    async fn project(
        &self,
        c2c: Option<&Arc<C2cFuser>>,
        prompt: &ReceiverPrompt,
        sharer: DecodedCache,
        report: &mut pb::RoundReport,
    ) -> Result<DecodedCache, ReceiverError> {
        let (Some(c2c), ReceiverPrompt::Rank(rank, _)) = (c2c, prompt) else {
            return Ok(sharer);
        };
        let (c2c, text, ids) = (Arc::clone(c2c), rank.text.clone(), rank.ids.clone());
        let (fused, fuse_ms) = self
            .blocking(move |e| {
                let loaded = e.loaded();
                Ok(timed(|| {
                    c2c.fuse(&loaded.model, &loaded.tokenizer, &text, &ids, &sharer)
                }))
            })
            .await?;
        record_stage_ms(SERVICE, "fuse", fuse_ms);
        report.timings.get_or_insert_default().fuse_ms += fuse_ms;
        fused
    }

    /// Accounts one KV round and runs the fuser.
    fn fuse_round(
        &self,
        round: u32,
        t: RoundTransfer,
        transport: ByteSnapshot,
        fuser: &dyn Fuser,
    ) -> Result<FusedRound, ReceiverError> {
        add_bytes(SERVICE, "blob", t.blob_bytes);
        add_bytes(SERVICE, "grpc_message", t.grpc_bytes);
        record_stage_ms(SERVICE, "transfer", t.transfer_ms);
        record_stage_ms(SERVICE, "decode", t.decode_ms);
        let request = if round > 1 { t.request_bytes } else { 0 };
        let b = t.breakdown;
        let bytes = pb::ByteCounts {
            measured_total: t.blob_bytes + request,
            breakdown: Some(pb::BlobBreakdown {
                headers: b.header,
                indices: b.indices,
                payload: b.payload,
                scales: b.scales,
                request,
            }),
            estimated_total: t.estimated + request,
            grpc_message_bytes: t.grpc_bytes,
            frames: t.frames,
            ..Default::default()
        };
        let (fused, fuse_ms) = timed(|| fuser.fuse(t.cache.clone()));
        record_stage_ms(SERVICE, "fuse", fuse_ms);
        let mut timings = t.sharer_timings;
        timings.transfer_ms = t.transfer_ms;
        timings.decode_ms = t.decode_ms;
        timings.fuse_ms = fuse_ms;
        Ok(FusedRound {
            raw: t.cache,
            report: round_report(round, bytes, transport, timings),
            session_id: t.session_id,
            fused: fused?,
        })
    }
}

/// The `kv`-slot fuser of a C2C round: the decoded sharer cache goes to [`C2cFuser`] as is.
#[derive(Debug)]
struct PassThrough;

impl Fuser for PassThrough {
    fn name(&self) -> &'static str {
        "c2c"
    }

    fn fuse(&self, sharer: DecodedCache) -> Result<DecodedCache, ReceiverError> {
        Ok(sharer)
    }
}

/// Sets a round's end-to-end time: from its first request to the sharer (connection included)
/// to the end of scoring on what it brought.
fn end_round(round: &mut pb::RoundReport, start: Instant) {
    round.timings.get_or_insert_default().end_to_end_ms = ms(start.elapsed());
}
