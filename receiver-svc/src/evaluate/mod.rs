//! One evaluation: the core that holds the engine, the job pool and the pair's fuser, and runs
//! each method ([`kv`]: KV transfer and C2C with refinement; [`text`]: the sharer's text message
//! and the sharer's own answer) to a domain [`Evaluation`] with the per-round byte and time
//! accounting of the data capture contract.

mod kv;
pub mod refine;
mod text;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fuser::{C2cFuser, CacheFuser, FuserError, IdentityFuser, PromptLayout};
use kvwire::HostLayer;
use service_kit::metrics_catalog::record_stage_ms;
use service_kit::prompt_limit::PromptLimit;
use service_kit::rpc::JobPool;
use service_kit::timing::ms;
use service_kit::trace_context::TraceContext;
use service_kit::transport::client::ClientTransport;

use crate::allow::AllowList;
use crate::channels::{ChannelSettings, SharerChannels};
use crate::client::SharerLink;
use crate::config::{FuserKind, ReceiverConfig};
use crate::domain::{EvaluateParams, Method, Scoring};
use crate::engine::{Injected, ReceiverEngine, ReceiverPrompt, Scored};
use crate::error::ReceiverError;
use crate::report::{Evaluation, Outcome, RoundReport, sum_rounds};

const SERVICE: &str = "receiver";

/// Buffer sets kept for later transfers to decode into (bounded: one per concurrent job is
/// enough to avoid fresh allocations in a steady grid).
const MAX_SPARE_BUFFERS: usize = 8;

/// What a method produced: the outcome, its rounds, and the byte cap that applied.
type MethodResult = Result<(Outcome, Vec<RoundReport>, u64), ReceiverError>;

/// Everything an evaluation needs: the engine, the job pool, the pair's fuser, the config.
#[derive(Debug)]
pub struct ReceiverCore {
    pool: JobPool<ReceiverEngine>,
    fuser: Option<Arc<dyn CacheFuser>>,
    spare: Mutex<Vec<Vec<HostLayer>>>,
    allowed: AllowList,
    sharers: SharerChannels,
    prompt_bytes: usize,
    config: ReceiverConfig,
}

impl ReceiverCore {
    /// A core around a loaded engine (loads the C2C fuser when the config names one) that
    /// reaches its sharers through `sharer_client`.
    pub fn new(
        engine: ReceiverEngine,
        config: ReceiverConfig,
        sharer_client: ClientTransport,
    ) -> Result<Self, ReceiverError> {
        let fuser: Option<Arc<dyn CacheFuser>> = match config.fuser {
            FuserKind::Identity => Some(Arc::new(IdentityFuser)),
            FuserKind::C2c => Some(Arc::new(load_c2c(&config, &engine)?)),
            FuserKind::None => None,
        };
        let l = &config.limits;
        Ok(Self {
            fuser,
            spare: Mutex::new(Vec::new()),
            pool: JobPool::new(engine, l.max_concurrent_jobs, l.max_queued_jobs),
            allowed: AllowList::new(
                &config.sharer_endpoint,
                &config.allowed_sharers,
                sharer_client.has_tls(),
            ),
            sharers: SharerChannels::new(ChannelSettings::new(&config, sharer_client)),
            prompt_bytes: service_kit::config::prompt_bytes_limit(
                l.max_prompt_bytes,
                l.max_prompt_tokens,
            ),
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

    /// The pair's fuser when it is the one `method` needs (identity for `kv`, C2C for `c2c`).
    fn fuser_for(&self, method: &'static str) -> Result<Arc<dyn CacheFuser>, ReceiverError> {
        match &self.fuser {
            Some(f) if f.name() == fuser_name_for(method) => Ok(Arc::clone(f)),
            other => Err(ReceiverError::NoFuser {
                method,
                fuser: other.as_ref().map_or("none", |f| f.name()),
            }),
        }
    }

    /// Buffers from an earlier transfer to decode into (none when the pool is empty).
    fn take_buffers(&self) -> Vec<HostLayer> {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        spare.pop().unwrap_or_default()
    }

    /// Keeps a finished transfer's buffers for a later one.
    fn return_buffers(&self, buffers: Vec<HostLayer>) {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() < MAX_SPARE_BUFFERS {
            spare.push(buffers);
        }
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
        let conn = self.sharers.checkout(endpoint).await?;
        Ok(SharerLink::new(conn, trace, deadline))
    }

    /// Connections this receiver opened to sharers so far.
    pub fn sharer_connections_opened(&self) -> u64 {
        self.sharers.opened()
    }

    /// The receiver's prompt for the request's scoring mode, with an optional sharer message.
    /// In the context layout (rank scoring only) the prompt is the question alone, or a
    /// message (the passage sent as text) in the passage wrapper before it.
    async fn prompt(
        &self,
        p: &EvaluateParams,
        message: Option<String>,
    ) -> Result<ReceiverPrompt, ReceiverError> {
        // What this prompt tokenizes: the question, the choices and the sharer's message (in
        // the context layout the passage reaches the receiver only as that message or as KV).
        let e = &p.example;
        let own = e.question.len() + e.choices.iter().map(String::len).sum::<usize>();
        let message_bytes = message.as_ref().map_or(0, String::len);
        self.check_prompt_bytes(
            own + message_bytes,
            "question, choices and the sharer's message",
        )?;
        let example = p.example.clone();
        let max = self.config.limits.max_prompt_tokens;
        let (scoring, layout) = (p.scoring, p.layout);
        let prompt = self
            .blocking(move |e| {
                let message = message.as_deref();
                if let (PromptLayout::Context, Scoring::Rank(chosen)) = (layout, scoring) {
                    let passage = message.unwrap_or_default();
                    let prompt = e.rank_prompt_after_passage(&example, passage)?;
                    return Ok(ReceiverPrompt::Rank(prompt, chosen));
                }
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
        PromptLimit::check_tokens(prompt.ids().len(), max)?;
        Ok(prompt)
    }

    /// Scores by letters, by rank or by generation, with an optional injected prompt cache
    /// (on the model's device, from the fuser, with where the receiver's own tokens go).
    async fn score(
        &self,
        p: &EvaluateParams,
        prompt: ReceiverPrompt,
        cache: Option<Injected>,
    ) -> Result<Outcome, ReceiverError> {
        let n = p.example.choices.len();
        match prompt {
            ReceiverPrompt::Letter(prompt) => {
                let scored: Scored = self.blocking(move |e| e.score(&prompt, cache)).await?;
                Ok(Outcome::from_scored(scored))
            }
            ReceiverPrompt::Rank(prompt, chosen) => {
                let ranked = self.blocking(move |e| e.rank(&prompt, cache)).await?;
                Outcome::from_ranked(ranked, chosen)
            }
            ReceiverPrompt::Generate(prompt) => {
                let max_new = match p.max_new_tokens {
                    0 => self.config.limits.max_new_tokens,
                    k => k.min(self.config.limits.max_new_tokens),
                };
                let (text, letter, gen_ms) = self
                    .blocking(move |e| e.generate(&prompt, cache, max_new, n))
                    .await?;
                Ok(Outcome::generated(text, letter, gen_ms))
            }
        }
    }

    /// Refuses prompt text over `limits.max_prompt_bytes`, before anything tokenizes it.
    fn check_prompt_bytes(&self, bytes: usize, what: &'static str) -> Result<(), ReceiverError> {
        Ok(PromptLimit::check_bytes(bytes, self.prompt_bytes, what)?)
    }

    /// What is refused before any work: a sharer not on the allow-list (or `https://`), and
    /// prompt text over the byte limit.
    fn admit(&self, p: &EvaluateParams) -> Result<(), ReceiverError> {
        if let Some(endpoint) = p.sharer_endpoint.as_deref() {
            self.allowed.check(endpoint)?;
        }
        self.check_prompt_bytes(p.text_bytes(), "question, choices and passage")
    }

    /// Runs one evaluation to completion.
    pub async fn evaluate(
        &self,
        p: EvaluateParams,
        trace: TraceContext,
        deadline: Instant,
    ) -> Result<Evaluation, ReceiverError> {
        let start = Instant::now();
        self.admit(&p)?;
        let (outcome, rounds, cap) = match p.method {
            Method::ReceiverOnly => {
                let prompt = self.prompt(&p, None).await?;
                (self.score(&p, prompt, None).await?, Vec::new(), 0)
            }
            Method::SharerOnly => self.sharer_only(&p, trace, deadline).await?,
            Method::Text { kind, byte_cap } => {
                self.text(&p, kind, byte_cap, trace, deadline).await?
            }
            Method::Kv => self.kv(&p, trace, deadline, "kv").await?,
            Method::C2c => self.kv(&p, trace, deadline, "c2c").await?,
        };
        let (total, mut timings) = sum_rounds(&rounds);
        if rounds.is_empty() {
            timings.receiver_prefill_ms = outcome.prefill_ms;
            timings.score_ms = outcome.score_ms;
        }
        timings.end_to_end_ms = ms(start.elapsed());
        record_stage_ms(SERVICE, "receiver_prefill", outcome.prefill_ms);
        record_stage_ms(SERVICE, "score", outcome.score_ms);
        record_stage_ms(SERVICE, "end_to_end", timings.end_to_end_ms);
        let correct = outcome.prediction.is_some() && outcome.prediction == p.example.gold;
        Ok(Evaluation {
            outcome,
            correct,
            rounds,
            total,
            timings,
            budget_cap_bytes: cap,
        })
    }
}

/// The fuser a method needs.
fn fuser_name_for(method: &str) -> &'static str {
    if method == "c2c" { "c2c" } else { "identity" }
}

/// Loads the pair's C2C fuser; a folder or tokenizer that does not load is a config error.
fn load_c2c(config: &ReceiverConfig, engine: &ReceiverEngine) -> Result<C2cFuser, ReceiverError> {
    let c = &config.c2c;
    let model = &engine.loaded().model;
    C2cFuser::load(
        Path::new(&c.fuser_dir),
        Path::new(&c.sharer_tokenizer),
        model,
    )
    .map_err(|e| {
        let field = match e {
            FuserError::Runtime(_) => "c2c.sharer_tokenizer",
            _ => "c2c.fuser_dir",
        };
        ReceiverError::invalid(field, e.to_string())
    })
}

/// Sets a round's end-to-end time: from its first request to the sharer (connection included)
/// to the end of scoring on what it brought.
fn end_round(round: &mut RoundReport, start: Instant) {
    round.timings.end_to_end_ms = ms(start.elapsed());
}
