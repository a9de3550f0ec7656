//! One phase: a sharer and a receiver process started on free loopback ports with generated
//! configs, waited on until healthy, then, per prompt length and method, warm-up and measured
//! Evaluate calls one at a time; peak memory read before both processes are stopped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use tonic::transport::Channel;

use super::config::{self, Placement, ReceiverFuser};
use super::error::BenchError;
use super::gpu_memory::{GpuPeaks, GpuPoller};
use super::methods::{Method, Phase};
use super::process::{Role, ServiceProcess, free_port};
use super::report::{CardMemory, PhaseRecord, ProcessRecord};
use super::stats::{Sample, Summary};

/// Progress of a benchmark, for a bar or a log.
pub trait Progress: Send + Sync {
    /// The number of Evaluate calls the whole benchmark makes.
    fn begin(&self, total: u64);
    /// One call done (`what`: phase, method, length).
    fn advance(&self, what: &str);
    /// A line worth showing (a phase starting, services healthy).
    fn note(&self, line: &str);
}

/// What a phase runs with.
#[derive(Debug)]
pub struct PhasePlan<'a> {
    /// Which phase.
    pub phase: Phase,
    /// The sharer's model spec.
    pub sharer_model: &'a str,
    /// The receiver's model spec.
    pub receiver_model: &'a str,
    /// The receiver's fuser.
    pub fuser: ReceiverFuser,
    /// Its methods, in report order.
    pub methods: Vec<Method>,
    /// Device, dtype and limits.
    pub placement: &'a Placement,
    /// `sharer-svc` and `receiver-svc`.
    pub binaries: (&'a Path, &'a Path),
    /// Config files and logs go here.
    pub work: &'a Path,
    /// Longest wait for a service to load its model.
    pub ready_timeout: Duration,
}

/// Items per prompt length: warm-up items first, then measured ones.
#[derive(Debug)]
pub struct Items {
    /// (tokens, items).
    pub lengths: Vec<(usize, Vec<pb::Example>)>,
    /// Leading items per length that are not measured.
    pub warmup: usize,
}

/// A phase's outcome: its record and a summary per (tokens, method).
pub type PhaseOutcome = (PhaseRecord, Vec<(usize, Method, Summary)>);

fn spawn(
    plan: &PhasePlan<'_>,
    role: Role,
    table: &toml::Table,
    port: u16,
) -> Result<ServiceProcess, BenchError> {
    let name = format!("{}-{}", plan.phase.label(), role_name(role));
    let config = plan.work.join(format!("{name}.toml"));
    config::write(table, &config)?;
    let log: PathBuf = plan.work.join(format!("{name}.log"));
    let binary = match role {
        Role::Sharer => plan.binaries.0,
        Role::Receiver => plan.binaries.1,
    };
    ServiceProcess::spawn(role, name, binary, &config, log, port)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Sharer => "sharer",
        Role::Receiver => "receiver",
    }
}

/// Runs one phase to its end; the processes are stopped on every path (dropping a
/// [`ServiceProcess`] kills it).
pub async fn run(
    plan: PhasePlan<'_>,
    items: &Items,
    progress: &dyn Progress,
) -> Result<PhaseOutcome, BenchError> {
    let (sport, rport) = (free_port()?, free_port()?);
    let sharer_cfg = config::sharer(plan.sharer_model, sport, plan.placement);
    let receiver_cfg = config::receiver(
        plan.receiver_model,
        rport,
        sport,
        &plan.fuser,
        plan.placement,
    );
    progress.note(&format!(
        "phase {}: sharer {} and receiver {} on {} {}",
        plan.phase.label(),
        plan.sharer_model,
        plan.receiver_model,
        plan.placement.device,
        plan.placement.dtype
    ));
    // Polling starts first, so that the card's use "before" excludes this phase's processes.
    let poller = if plan.placement.device.starts_with("cuda") {
        GpuPoller::start()
    } else {
        None
    };
    let started = Instant::now();
    let mut sharer = spawn(&plan, Role::Sharer, &sharer_cfg, sport)?;
    let mut receiver = spawn(&plan, Role::Receiver, &receiver_cfg, rport)?;
    sharer.wait_healthy(plan.ready_timeout).await?;
    receiver.wait_healthy(plan.ready_timeout).await?;
    let startup_s = started.elapsed().as_secs_f64();
    progress.note(&format!(
        "phase {}: services healthy after {startup_s:.1} s",
        plan.phase.label()
    ));
    let summaries = measure(&plan, items, &mut sharer, &mut receiver, progress).await?;
    let rss = (sharer.peak_rss_bytes(), receiver.peak_rss_bytes());
    let gpu_memory = match (&poller, plan.placement.device.starts_with("cuda")) {
        (Some(_), _) => "measured (nvidia-smi every 100 ms)".to_string(),
        (None, true) => "not measured (nvidia-smi does not run here)".to_string(),
        (None, false) => "not measured (CPU device)".to_string(),
    };
    let gpu = poller.map(GpuPoller::finish).unwrap_or_default();
    let record = |p: &ServiceProcess, model: &str, rss: Option<u64>| ProcessRecord {
        service: role_name(p.role).into(),
        model: model.into(),
        pid: p.pid,
        peak_rss_bytes: rss,
        peak_gpu_mib: gpu.by_pid.get(&p.pid).copied(),
    };
    let processes = vec![
        record(&sharer, plan.sharer_model, rss.0),
        record(&receiver, plan.receiver_model, rss.1),
    ];
    sharer.stop().await?;
    receiver.stop().await?;
    let phase = PhaseRecord {
        phase: plan.phase.label().into(),
        receiver_fuser: match plan.fuser {
            ReceiverFuser::Identity => "identity",
            ReceiverFuser::C2c { .. } => "c2c",
            ReceiverFuser::None => "none",
        }
        .into(),
        processes,
        gpu_memory,
        card: card_memory(&plan.placement.device, &gpu),
        startup_s,
    };
    Ok((phase, summaries))
}

/// The card of `device` (`cuda` is card 0), its use before the phase and its peak during it.
fn card_memory(device: &str, gpu: &GpuPeaks) -> Option<CardMemory> {
    let index: u32 = match device.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest.strip_prefix(':')?.parse().ok()?,
        None => return None,
    };
    Some(CardMemory {
        index,
        before_mib: *gpu.before.get(&index)?,
        peak_mib: *gpu.by_card.get(&index)?,
    })
}

/// The Evaluate calls of a phase.
async fn measure(
    plan: &PhasePlan<'_>,
    items: &Items,
    sharer: &mut ServiceProcess,
    receiver: &mut ServiceProcess,
    progress: &dyn Progress,
) -> Result<Vec<(usize, Method, Summary)>, BenchError> {
    let mut client = connect(&receiver.url).await?;
    let mut out = Vec::new();
    for (tokens, examples) in &items.lengths {
        for &method in &plan.methods {
            let mut samples = Vec::with_capacity(examples.len().saturating_sub(items.warmup));
            for (i, example) in examples.iter().enumerate() {
                let request = method.request(example.clone());
                let t0 = Instant::now();
                let reply = client.evaluate(request).await;
                let client_ms = t0.elapsed().as_secs_f64() * 1e3;
                let reply = match reply {
                    Ok(r) => r.into_inner(),
                    Err(status) => {
                        // A dead service explains the failure better than the status.
                        sharer.check_alive("done")?;
                        receiver.check_alive("done")?;
                        return Err(BenchError::Rpc {
                            method: method.to_string(),
                            tokens: *tokens,
                            call: "Evaluate",
                            status: format!("{}: {}", status.code(), status.message()),
                        });
                    }
                };
                if i >= items.warmup {
                    samples.push(Sample::of(&reply, client_ms));
                }
                progress.advance(&format!("{} {method} T={tokens}", plan.phase.label()));
            }
            out.push((*tokens, method, Summary::of(&samples)));
        }
    }
    Ok(out)
}

async fn connect(url: &str) -> Result<ReceiverClient<Channel>, BenchError> {
    let err = |e: String| BenchError::Rpc {
        method: "-".into(),
        tokens: 0,
        call: "connect",
        status: e,
    };
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| err(e.to_string()))?
        .connect()
        .await
        .map_err(|e| err(format!("{url}: {e}")))?;
    Ok(ReceiverClient::new(channel))
}
