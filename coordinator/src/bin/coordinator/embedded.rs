//! Embedded services: one sharer per distinct sharer model and one receiver per distinct
//! (receiver model, fuser) of the grid, each started in-process through its crate's `serve`
//! on an ephemeral loopback port, on the device and dtype given (`--device`, `--dtype`). The
//! coordinator talks to them over real gRPC, exactly as it would to remote ones.
//!
//! Model specs go to the services as the grid writes them: the services resolve
//! `gguf:<asset-name>` through the asset cache themselves (`service_kit::model_spec`, the one
//! resolver); the coordinator only fetches a missing asset first, so that a fresh machine
//! needs one command.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use assets::{AssetId, Store};
use coordinator::cell::CellPair;
use coordinator::link::{LinkPath, LinkProfile};
use coordinator::manifest::AssetRecord;
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use receiver_svc::ReceiverConfig;
use receiver_svc::config::{C2cSettings, FuserKind};
use service_kit::device::Placement;
use service_kit::model_spec::{ModelSpec, resolve_gguf};
use sharer_svc::SharerConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::data::asset_record;
use crate::log::RunLog;

/// Longest wait for a service to load its model and answer `Info`.
const READY_TIMEOUT: Duration = Duration::from_secs(900);

/// Which service a [`Running`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Sharer,
    Receiver,
}

/// The device and dtype of every embedded service (the services' `device` and `dtype` keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePlacement {
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// `f32`, `bf16` or `f16`.
    pub dtype: String,
    /// Model jobs each service runs at once (`limits.max_concurrent_jobs`).
    pub jobs: usize,
    /// Query-chunk length of the services' prefills (`prefill_chunk_tokens`; 0 = one pass).
    pub prefill_chunk_tokens: usize,
}

impl Default for ServicePlacement {
    fn default() -> Self {
        Self {
            device: "cpu".into(),
            dtype: "f32".into(),
            jobs: 1,
            prefill_chunk_tokens: model_runtime::DEFAULT_PREFILL_CHUNK_TOKENS,
        }
    }
}

impl ServicePlacement {
    /// Checks both values (and that a CUDA device is built in) before any service starts.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.jobs > 0, "--jobs must be at least 1");
        Placement::parse(&self.device, &self.dtype)
            .map(|_| ())
            .with_context(|| format!("--device {} --dtype {}", self.device, self.dtype))
    }
}

/// A started service.
struct Running {
    role: Role,
    model: String,
    fuser: Option<String>,
    url: String,
    task: JoinHandle<anyhow::Result<()>>,
}

/// A sharer reached through a link profile (`coordinator::link`).
struct Linked {
    model: String,
    url: String,
    path: LinkPath,
}

/// The services of one run.
pub struct Embedded {
    sharers: Vec<Running>,
    receivers: Vec<Running>,
    linked: Vec<Linked>,
    stop: watch::Sender<bool>,
    assets: Vec<AssetRecord>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self
            .sharers
            .iter()
            .chain(&self.receivers)
            .map(|r| r.url.as_str())
            .collect();
        f.debug_struct("Embedded").field("urls", &urls).finish()
    }
}

async fn bind() -> anyhow::Result<(TcpListener, String)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding a loopback port")?;
    let url = format!("http://{}", listener.local_addr()?);
    Ok((listener, url))
}

/// The asset a `gguf:<asset-name>` spec names (as the services resolve it); `None` for any
/// other spec (an existing GGUF file, a Hugging Face folder, random weights, or a spec that
/// does not parse).
fn spec_asset(spec: &str) -> Option<AssetId> {
    ModelSpec::parse(spec).ok()?.asset()
}

/// Fetches the asset a `gguf:<asset-name>` spec names when the cache does not have it yet
/// (the services never download; they resolve the name in the same cache).
fn fetch_model_asset(spec: &str) -> anyhow::Result<()> {
    if let Some(id) = spec_asset(spec) {
        crate::asset_fetch::asset_path(&Store::from_env()?, id)?;
    }
    Ok(())
}

/// The sharer's tokenizer file for C2C alignment: the GGUF file itself (a path, or the file
/// of the asset the spec names), or a Hugging Face folder's `tokenizer.json`.
fn sharer_tokenizer(spec: &str, pair: &str) -> anyhow::Result<String> {
    let parsed = ModelSpec::parse(spec)
        .with_context(|| format!("pair {pair:?}: the sharer's model spec"))?;
    match parsed {
        ModelSpec::Gguf(target) => {
            let path = resolve_gguf(&target)
                .with_context(|| format!("pair {pair:?}: the sharer's tokenizer"))?;
            Ok(path.display().to_string())
        }
        ModelSpec::Hf(dir) => Ok(format!("{}/tokenizer.json", dir.display())),
        ModelSpec::Random { .. } => {
            bail!("pair {pair:?}: the sharer {spec:?} has no tokenizer file for C2C alignment")
        }
    }
}

/// Starts the sharer of `pair` on a loopback port.
async fn start_sharer(
    pair: &CellPair,
    placement: &ServicePlacement,
    stop: watch::Receiver<bool>,
    log: &RunLog,
) -> anyhow::Result<Running> {
    let (listener, url) = bind().await?;
    fetch_model_asset(&pair.sharer.model)?;
    let mut config = SharerConfig {
        model: pair.sharer.model.clone(),
        device: placement.device.clone(),
        dtype: placement.dtype.clone(),
        prefill_chunk_tokens: placement.prefill_chunk_tokens,
        ..Default::default()
    };
    config.limits.max_concurrent_jobs = placement.jobs;
    log.line(format!(
        "starting embedded sharer {} on {url} ({} {}, {} job(s) at once)",
        config.model, config.device, config.dtype, placement.jobs
    ));
    let served = sharer_svc::serve(config, listener, stopped(stop));
    let task = tokio::spawn(async move { served.await.map_err(anyhow::Error::from) });
    Ok(Running {
        role: Role::Sharer,
        model: pair.sharer.model.clone(),
        fuser: None,
        url,
        task,
    })
}

/// What a receiver of one pair starts with.
struct ReceiverStart<'a> {
    pair: &'a CellPair,
    placement: &'a ServicePlacement,
    /// The embedded sharers, the receiver's allow-list.
    sharer_urls: &'a [String],
}

/// Starts the receiver of `pair` on a loopback port: identity fuser, or the pair's C2C fuser.
async fn start_receiver(
    start: ReceiverStart<'_>,
    stop: watch::Receiver<bool>,
    log: &RunLog,
) -> anyhow::Result<Running> {
    let ReceiverStart {
        pair,
        placement,
        sharer_urls,
    } = start;
    let (listener, url) = bind().await?;
    fetch_model_asset(&pair.receiver.model)?;
    let mut config = ReceiverConfig {
        model: pair.receiver.model.clone(),
        device: placement.device.clone(),
        dtype: placement.dtype.clone(),
        prefill_chunk_tokens: placement.prefill_chunk_tokens,
        // Every request names its sharer: one of the embedded ones.
        sharer_endpoint: String::new(),
        allowed_sharers: sharer_urls.to_vec(),
        fuser: FuserKind::Identity,
        ..Default::default()
    };
    config.limits.max_concurrent_jobs = placement.jobs;
    if let Some(fuser) = &pair.fuser {
        // A C2C pair: the receiver loads the fuser folder and aligns prompts with the sharer's
        // tokenizer (read from the sharer's GGUF or HF folder).
        let tokenizer = sharer_tokenizer(&pair.sharer.model, &pair.label)?;
        config.fuser = FuserKind::C2c;
        config.c2c = C2cSettings {
            fuser_dir: fuser.clone(),
            sharer_tokenizer: tokenizer,
        };
    }
    log.line(format!(
        "starting embedded receiver {} on {url} ({} {}, {} job(s) at once)",
        config.model, config.device, config.dtype, placement.jobs
    ));
    let served = receiver_svc::serve(config, listener, stopped(stop));
    let task = tokio::spawn(async move { served.await.map_err(anyhow::Error::from) });
    Ok(Running {
        role: Role::Receiver,
        model: pair.receiver.model.clone(),
        fuser: pair.fuser.clone(),
        url,
        task,
    })
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // Either a stop signal or the sender going away ends the service.
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Embedded {
    /// Starts the services the pairs need on `placement` and waits until each answers `Info`;
    /// every sharer is also reachable through each of `links` (a [`LinkPath`] per sharer and
    /// profile; loopback needs none).
    pub async fn start(
        pairs: &[CellPair],
        placement: &ServicePlacement,
        links: &[LinkProfile],
        log: &RunLog,
    ) -> anyhow::Result<Embedded> {
        placement.check()?;
        let (stop, stop_rx) = watch::channel(false);
        let mut me = Embedded {
            sharers: Vec::new(),
            receivers: Vec::new(),
            linked: Vec::new(),
            stop,
            assets: Vec::new(),
        };
        for pair in pairs {
            if !me.sharers.iter().any(|s| s.model == pair.sharer.model) {
                let running = start_sharer(pair, placement, stop_rx.clone(), log).await?;
                me.sharers.push(running);
            }
        }
        // Receivers start once every sharer has its URL: each may connect to any of them
        // (its allow-list), and to nothing else.
        me.open_links(links, log)?;
        let sharer_urls: Vec<String> = me
            .sharers
            .iter()
            .map(|s| s.url.clone())
            .chain(me.linked.iter().map(|l| l.url.clone()))
            .collect();
        for pair in pairs {
            if !me
                .receivers
                .iter()
                .any(|r| r.model == pair.receiver.model && r.fuser == pair.fuser)
            {
                let receiver = ReceiverStart {
                    pair,
                    placement,
                    sharer_urls: &sharer_urls,
                };
                let running = start_receiver(receiver, stop_rx.clone(), log).await?;
                me.receivers.push(running);
            }
        }
        for running in me.sharers.iter_mut().chain(me.receivers.iter_mut()) {
            wait_ready(running, log).await?;
        }
        if let Ok(store) = Store::from_env() {
            for running in me.sharers.iter().chain(&me.receivers) {
                if let Some(id) = spec_asset(&running.model) {
                    let record = asset_record(&store, id);
                    if !me.assets.contains(&record) {
                        me.assets.push(record);
                    }
                }
            }
        }
        Ok(me)
    }

    /// URL of the sharer serving `model`.
    pub fn sharer_url(&self, model: &str) -> anyhow::Result<String> {
        self.sharers
            .iter()
            .find(|s| s.model == model)
            .map(|s| s.url.clone())
            .with_context(|| format!("no embedded sharer for {model}"))
    }

    /// Routes every sharer through every profile of `links` but loopback.
    fn open_links(&mut self, links: &[LinkProfile], log: &RunLog) -> anyhow::Result<()> {
        for profile in links.iter().filter(|p| !p.is_loopback()) {
            for sharer in &self.sharers {
                let addr: std::net::SocketAddr =
                    sharer
                        .url
                        .trim_start_matches("http://")
                        .parse()
                        .with_context(|| format!("the sharer's address in {}", sharer.url))?;
                let path = LinkPath::open(*profile, addr)?;
                let url = format!("http://{}", path.addr());
                log.line(format!(
                    "link {}: sharer {} reached at {url} (veth {} <-> {}, relay delay {:?} \
                     each way)",
                    profile.name,
                    sharer.url,
                    profile.receiver_namespace(),
                    profile.sharer_namespace(),
                    profile.one_way_delay()
                ));
                self.linked.push(Linked {
                    model: sharer.model.clone(),
                    url,
                    path,
                });
            }
        }
        Ok(())
    }

    /// URL of the sharer serving `model` through link profile `link` (`None` or `loopback`:
    /// the sharer itself).
    pub fn sharer_url_via(&self, model: &str, link: Option<&str>) -> anyhow::Result<String> {
        match link {
            None | Some(coordinator::link::LOOPBACK) => self.sharer_url(model),
            Some(link) => self
                .linked
                .iter()
                .find(|l| l.model == model && l.path.profile.name == link)
                .map(|l| l.url.clone())
                .with_context(|| format!("no link path {link} to the sharer {model}")),
        }
    }

    /// Each link path's relay counters, one line per path.
    pub fn link_report(&self) -> Vec<String> {
        self.linked
            .iter()
            .map(|l| {
                let s = l.path.relay().stats();
                format!(
                    "link {} to {}: {} connections, {} B up, {} B down, {} upstream failures",
                    l.path.profile.name,
                    l.model,
                    s.connections,
                    s.bytes_up,
                    s.bytes_down,
                    s.upstream_failures
                )
            })
            .collect()
    }

    /// URL of the receiver serving `model` with `fuser`.
    pub fn receiver_url(&self, model: &str, fuser: Option<&str>) -> anyhow::Result<String> {
        self.receivers
            .iter()
            .find(|r| r.model == model && r.fuser.as_deref() == fuser)
            .map(|r| r.url.clone())
            .with_context(|| format!("no embedded receiver for {model}"))
    }

    /// Provenance of the model files the services loaded (asset-store models only).
    pub fn assets(&self) -> Vec<AssetRecord> {
        self.assets.clone()
    }

    /// Stops every service and waits for them to finish.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for running in self.sharers.into_iter().chain(self.receivers) {
            match running.task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("warning: service {} ended with: {e:#}", running.url),
                Err(e) => eprintln!("warning: service {} task failed: {e}", running.url),
            }
        }
    }
}

/// Waits until the service answers `Info`, or reports why its task ended.
async fn wait_ready(running: &mut Running, log: &RunLog) -> anyhow::Result<()> {
    let start = Instant::now();
    let channel = Channel::from_shared(running.url.clone())?.connect_lazy();
    loop {
        if running.task.is_finished() {
            let reason = match (&mut running.task).await {
                Ok(Ok(())) => "it stopped without an error".to_string(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => e.to_string(),
            };
            bail!(
                "embedded service {} ({}) failed to start: {reason}",
                running.url,
                running.model
            );
        }
        let probe = async {
            match running.role {
                Role::Sharer => SharerClient::new(channel.clone())
                    .info(pb::InfoRequest {})
                    .await
                    .is_ok(),
                Role::Receiver => ReceiverClient::new(channel.clone())
                    .info(pb::InfoRequest {})
                    .await
                    .is_ok(),
            }
        };
        if tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .unwrap_or(false)
        {
            log.line(format!(
                "{} ({}) ready after {:.1} s",
                running.url,
                running.model,
                start.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if start.elapsed() > READY_TIMEOUT {
            bail!(
                "embedded service {} ({}) not ready after {READY_TIMEOUT:?}",
                running.url,
                running.model
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
#[path = "embedded_tests.rs"]
mod tests;
