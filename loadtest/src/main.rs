//! `loadtest`: sends bounded load to a running receiver (`Evaluate`) or sharer (`Share`) on
//! loopback and prints throughput, latency percentiles and errors by status code.
//!
//! Every call uses the same built-in multiple-choice example, so the run measures the service,
//! not the data. The run stops by itself after `--requests` calls or `--duration-s` seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use loadtest::{LoadPlan, Outcome, Report, Stop};
use tonic::transport::Channel;

/// Largest message accepted from a service (a whole KV frame of a long prompt fits).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    target: Target,
    /// Calls in flight.
    #[arg(short, long, default_value_t = 4, global = true)]
    concurrency: usize,
    /// Stop after this many calls.
    #[arg(long, global = true, conflicts_with = "duration_s")]
    requests: Option<u64>,
    /// Stop starting calls after this many seconds.
    #[arg(long, global = true)]
    duration_s: Option<u64>,
    /// Deadline of one call, seconds.
    #[arg(long, default_value_t = 120, global = true)]
    timeout_s: u64,
    /// Print the report as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Target {
    /// Receiver `Evaluate` calls.
    Evaluate {
        /// Receiver URL (loopback only).
        #[arg(long, default_value = "http://127.0.0.1:50052")]
        receiver: String,
        /// Sharer URL the receiver should call; empty means the receiver's default.
        #[arg(long, default_value = "")]
        sharer: String,
        /// Method of every call.
        #[arg(long, value_enum, default_value_t = Method::KvInt8)]
        method: Method,
    },
    /// Sharer `Share` streams (frames are read and counted, not decoded).
    Share {
        /// Sharer URL (loopback only).
        #[arg(long, default_value = "http://127.0.0.1:50051")]
        sharer: String,
        /// Payload precision.
        #[arg(long, value_enum, default_value_t = Method::KvInt8)]
        method: Method,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Method {
    ReceiverOnly,
    Text,
    KvFp16,
    KvInt8,
    KvInt4,
}

fn example() -> pb::Example {
    pb::Example {
        id: "loadtest-0".into(),
        question: "Which part of a plant takes in most of the water the plant needs?".into(),
        choices: vec![
            "roots".into(),
            "leaves".into(),
            "flowers".into(),
            "seeds".into(),
        ],
        gold: "A".into(),
        passage: String::new(),
    }
}

fn transfer(method: Method) -> Option<pb::TransferSettings> {
    let payload = match method {
        Method::KvFp16 => pb::Payload::Fp16,
        Method::KvInt8 => pb::Payload::Int8,
        Method::KvInt4 => pb::Payload::Int4,
        Method::ReceiverOnly | Method::Text => return None,
    };
    Some(pb::TransferSettings {
        payload: payload as i32,
        granularity: pb::Granularity::PerBlock as i32,
        selection: pb::Selection::All as i32,
        keep_fraction: 1.0,
        byte_cap: 0,
        seed: 0,
        ..Default::default()
    })
}

fn evaluate_request(method: Method, sharer: &str) -> pb::EvaluateRequest {
    let (m, text) = match method {
        Method::ReceiverOnly => (pb::Method::ReceiverOnly, None),
        Method::Text => (
            pb::Method::Text,
            Some(pb::TextSettings {
                kind: pb::MessageKind::Raw as i32,
                byte_cap: 0,
            }),
        ),
        _ => (pb::Method::Kv, None),
    };
    pb::EvaluateRequest {
        example: Some(example()),
        method: m as i32,
        transfer: transfer(method),
        text,
        scoring: pb::Scoring::Letter as i32,
        sharer_endpoint: sharer.to_string(),
        refine: None,
        max_new_tokens: 0,
        rank_normalization: pb::RankNormalization::Unspecified as i32,
        layout: pb::Layout::Unspecified as i32,
    }
}

/// One call; returns its status name and payload bytes.
async fn call(target: &Target, channel: Channel, timeout: Duration) -> (String, u64) {
    let result: Result<u64, tonic::Status> = async {
        match target {
            Target::Evaluate { sharer, method, .. } => {
                let mut req = tonic::Request::new(evaluate_request(*method, sharer));
                req.set_timeout(timeout);
                let reply = ReceiverClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .evaluate(req)
                    .await?
                    .into_inner();
                Ok(reply.total.map_or(0, |t| t.measured_total))
            }
            Target::Share { method, .. } => {
                let mut req = tonic::Request::new(pb::ShareRequest {
                    prompt: Some(pb::share_request::Prompt::Example(example())),
                    transfer: transfer(*method),
                    keep_session: false,
                    all_positions: false,
                    query: String::new(),
                });
                req.set_timeout(timeout);
                let mut stream = SharerClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .share(req)
                    .await?
                    .into_inner();
                let mut bytes = 0u64;
                while let Some(chunk) = stream.message().await? {
                    bytes += chunk.frame.len() as u64;
                }
                Ok(bytes)
            }
        }
    }
    .await;
    match result {
        Ok(bytes) => ("Ok".into(), bytes),
        Err(status) => (format!("{:?}", status.code()), 0),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let stop = match (cli.requests, cli.duration_s) {
        (Some(n), _) => Stop::Requests(n),
        (None, Some(s)) => Stop::Duration(Duration::from_secs(s)),
        (None, None) => Stop::Requests(100),
    };
    let url = match &cli.target {
        Target::Evaluate { receiver, .. } => receiver.clone(),
        Target::Share { sharer, .. } => sharer.clone(),
    };
    let plan = LoadPlan::new(&url, cli.concurrency, stop)?;
    let channel = Channel::from_shared(plan.target.clone())
        .context("target URL")?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {}", plan.target))?;
    eprintln!(
        "loadtest: {:?} against {}, {} in flight",
        plan.stop, plan.target, plan.concurrency
    );

    let target = Arc::new(cli.target);
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let timeout = Duration::from_secs(cli.timeout_s);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..plan.concurrency {
        let (target, outcomes, issued, channel) = (
            Arc::clone(&target),
            Arc::clone(&outcomes),
            Arc::clone(&issued),
            channel.clone(),
        );
        workers.spawn(async move {
            loop {
                let more = match stop {
                    Stop::Requests(n) => issued.fetch_add(1, Ordering::Relaxed) < n,
                    Stop::Duration(d) => start.elapsed() < d,
                };
                if !more {
                    break;
                }
                let t0 = Instant::now();
                let (status, bytes) = call(&target, channel.clone(), timeout).await;
                let outcome = Outcome {
                    latency: t0.elapsed(),
                    status,
                    bytes,
                };
                if let Ok(mut v) = outcomes.lock() {
                    v.push(outcome);
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a load worker panicked")?;
    }
    let wall = start.elapsed();
    let outcomes = outcomes
        .lock()
        .map_err(|_| anyhow::anyhow!("outcome list poisoned"))?;
    let report = Report::of(&outcomes, wall);
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(())
}
