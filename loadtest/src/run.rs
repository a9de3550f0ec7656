//! The load driver: `concurrency` workers over `connections` gRPC channels (HTTP/2
//! connections; worker `w` uses channel `w mod connections`), each making calls back to back
//! until the plan's stop condition, while the services' memory and CPU are sampled.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use tonic::transport::Channel;

use crate::report::{Outcome, Report};
use crate::resources;
use crate::workload::{Workload, transfer};
use crate::{LoadPlan, Stop};

/// Largest message accepted from a service (a whole KV frame of a long prompt fits).
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Most connections one run opens.
pub const MAX_CONNECTIONS: usize = 256;

/// Which rpc the calls make.
#[derive(Debug, Clone)]
pub enum Calls {
    /// Receiver `Evaluate` calls as the workload says.
    Evaluate(Workload),
    /// Sharer `Share` streams of the workload's examples and KV methods (frames counted, not
    /// decoded); non-KV methods are skipped over.
    Share(Workload),
}

/// How a run is driven besides its plan.
#[derive(Debug, Clone)]
pub struct Driver {
    /// gRPC channels (connections) the workers share.
    pub connections: usize,
    /// Deadline of one call.
    pub timeout: Duration,
    /// Services whose `/metrics` pages are sampled, by name.
    pub metrics: Vec<(String, SocketAddr)>,
    /// How often they are sampled.
    pub sample_every: Duration,
    /// Readings before this are left out of the RSS slope.
    pub warmup: Duration,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Connections out of range.
    #[error("connections {0} must be in 1..={MAX_CONNECTIONS}")]
    Connections(usize),
    /// The target is not a URL a channel accepts.
    #[error("target URL: {0}")]
    Url(String),
    /// A connection could not be opened.
    #[error("connecting to {target}: {source}")]
    Connect {
        /// The target URL.
        target: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A share load without a KV method.
    #[error("share load needs a KV method (--methods kv-int8, ...)")]
    NoKvMethod,
    /// A worker task panicked or was cancelled.
    #[error("a load worker failed: {0}")]
    Worker(String),
}

/// Runs `calls` under `plan` and `driver`; the report includes the sampled resources.
pub async fn run(plan: &LoadPlan, driver: &Driver, calls: Calls) -> Result<Report, RunError> {
    if driver.connections == 0 || driver.connections > MAX_CONNECTIONS {
        return Err(RunError::Connections(driver.connections));
    }
    if let Calls::Share(w) = &calls
        && !w.methods.iter().any(|m| transfer(*m).is_some())
    {
        return Err(RunError::NoKvMethod);
    }
    let mut channels = Vec::with_capacity(driver.connections);
    for _ in 0..driver.connections {
        let connect = |source| RunError::Connect {
            target: plan.target.clone(),
            source,
        };
        let channel = Channel::from_shared(plan.target.clone())
            .map_err(|e| RunError::Url(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(connect)?;
        channels.push(channel);
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(resources::sample(
        driver.metrics.clone(),
        driver.sample_every,
        driver.warmup,
        async {
            let _ = done_rx.await;
        },
    ));
    let calls = Arc::new(calls);
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..plan.concurrency {
        let worker = Worker {
            calls: Arc::clone(&calls),
            channel: channels[w % channels.len()].clone(),
            timeout: driver.timeout,
            stop: plan.stop,
            start,
            issued: Arc::clone(&issued),
            outcomes: Arc::clone(&outcomes),
        };
        workers.spawn(worker.work());
    }
    while let Some(done) = workers.join_next().await {
        done.map_err(|e| RunError::Worker(e.to_string()))?;
    }
    let wall = start.elapsed();
    let _ = done_tx.send(());
    let sampled = sampler.await.map_err(|e| RunError::Worker(e.to_string()))?;
    let outcomes = outcomes
        .lock()
        .map_err(|_| RunError::Worker("outcome list poisoned".into()))?;
    let mut report = Report::of(&outcomes, wall);
    report.resources = sampled;
    report.connections = driver.connections;
    Ok(report)
}

struct Worker {
    calls: Arc<Calls>,
    channel: Channel,
    timeout: Duration,
    stop: Stop,
    start: Instant,
    issued: Arc<AtomicU64>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
}

impl Worker {
    async fn work(self) {
        loop {
            let i = self.issued.fetch_add(1, Ordering::Relaxed);
            let more = match self.stop {
                Stop::Requests(n) => i < n,
                Stop::Duration(d) => self.start.elapsed() < d,
            };
            if !more {
                break;
            }
            let t0 = Instant::now();
            let (kind, result) = call(&self.calls, i, self.channel.clone(), self.timeout).await;
            let (status, bytes) = match result {
                Ok(bytes) => ("Ok".to_string(), bytes),
                Err(status) => (format!("{:?}", status.code()), 0),
            };
            if let Ok(mut v) = self.outcomes.lock() {
                v.push(Outcome {
                    latency: t0.elapsed(),
                    status,
                    bytes,
                    kind,
                });
            }
        }
    }
}

/// Call `i`: its kind label and its payload bytes (KV blob of an evaluation, frames of a
/// share) or its status.
async fn call(
    calls: &Calls,
    i: u64,
    channel: Channel,
    timeout: Duration,
) -> (String, Result<u64, tonic::Status>) {
    match calls {
        Calls::Evaluate(w) => {
            let (kind, request) = w.request(i);
            let mut req = tonic::Request::new(request);
            req.set_timeout(timeout);
            let reply = ReceiverClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .evaluate(req)
                .await;
            let bytes = reply.map(|r| r.into_inner().total.map_or(0, |t| t.measured_total));
            (kind, bytes)
        }
        Calls::Share(w) => {
            // The i-th KV method of the list (non-KV methods have nothing to share).
            let kv: Vec<_> = w.methods.iter().filter_map(|m| transfer(*m)).collect();
            let Some(settings) = kv.get((i % kv.len().max(1) as u64) as usize).copied() else {
                // `run` refuses a share load without a KV method before any call.
                return (
                    "share".into(),
                    Err(tonic::Status::invalid_argument("no KV method")),
                );
            };
            let kind = format!("share-{:?}", settings.payload()).to_lowercase();
            (kind, share(w.example(i), settings, channel, timeout).await)
        }
    }
}

async fn share(
    example: pb::Example,
    settings: pb::TransferSettings,
    channel: Channel,
    timeout: Duration,
) -> Result<u64, tonic::Status> {
    let mut req = tonic::Request::new(pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Example(example)),
        transfer: Some(settings),
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
