//! `coordinator run`: expand the grid, open (or resume) its run folder, load the datasets,
//! reach the services (given endpoints, or the embedded ones), run the pending samples, and
//! report. Every step before the first sample validates everything it can, so a bad grid or
//! an unreachable service fails in seconds, not after an hour.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use coordinator::cell::{Cell, CellPair, canonical_json, expand};
use coordinator::control::with_other_passages;
use coordinator::grid::{Grid, SCIQ_CONTEXT_LONG_DATASET, Shard};
use coordinator::link::LinkProfile;
use coordinator::manifest::{
    AssetRecord, GitInfo, LongContextRecord, ModelRecord, RunManifest, SystemInfo,
};
use coordinator::method::PassageSource;
use coordinator::registry::{CellPlan, RunDir, write_json_atomic, write_text_atomic};
use coordinator::runner::{self, ReadyCell, RunOptions, receiver_channel};
use coordinator::shard;
use coordinator::stop::{StopReason, StopSignal};
use coordinator::timestamp::now_unix_ms;
use coordinator::wire::RequestTemplate;
use kvwire_proto::v1 as pb;
use kvwire_proto::v1::receiver_client::ReceiverClient;
use kvwire_proto::v1::sharer_client::SharerClient;
use service_kit::config::load_layered;
use service_kit::model_spec::{ModelSpec, resolve_gguf};
use service_kit::transport::client::ClientTransport;
use service_kit::transport::settings::ClientSettings;
use sha2::{Digest, Sha256};

use crate::data;
use crate::embedded::{Embedded, ServicePlacement};
use crate::log::RunLog;
use crate::report;
use crate::stop_watch::stop_watchers;

/// Where the services are.
#[derive(Debug, Clone)]
pub enum Services {
    /// Running services; every pair of the grid must match the models they report.
    External {
        /// Sharer URL (as the receiver reaches it).
        sharer: String,
        /// Receiver URL.
        receiver: String,
        /// TLS and token settings given on the command line (each unset one from
        /// `KVWIRE_COORDINATOR__*`).
        client: ClientSettings,
    },
    /// Start one service per distinct model in-process on loopback, on this device and dtype.
    Embedded(ServicePlacement),
}

/// What `run` needs.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// The grid file's text.
    pub grid_text: String,
    /// Folder that holds run folders (one per grid name).
    pub out: PathBuf,
    /// Evaluate calls in flight.
    pub concurrency: usize,
    /// Where the services are.
    pub services: Services,
    /// Show a progress bar.
    pub progress: bool,
    /// Run only this shard of the grid's (cell, sample) units, in a folder of its own.
    pub shard: Option<Shard>,
    /// Start no new sample after this long (the run then finishes cleanly and resumes later).
    pub time_limit: Option<Duration>,
}

/// A loaded dataset slice: examples by id, and the ids in evaluation order.
type Slice = (Arc<BTreeMap<String, pb::Example>>, Vec<String>);

/// Endpoints of one pair.
struct PairEndpoints {
    sharer: String,
    receiver: String,
    /// The sharer as reached through each link profile of the grid, by profile name.
    sharer_via: BTreeMap<String, String>,
}

impl PairEndpoints {
    /// The sharer URL a cell on `link` sends the receiver to.
    fn sharer_for(&self, link: Option<&str>) -> anyhow::Result<String> {
        match link {
            None => Ok(self.sharer.clone()),
            Some(link) => self
                .sharer_via
                .get(link)
                .cloned()
                .with_context(|| format!("no path to the sharer through link {link}")),
        }
    }
}

/// The grid's link profiles; a profile other than loopback needs the embedded services (the
/// coordinator routes them through the profile's namespaces itself).
fn grid_links(grid: &Grid, services: &Services) -> anyhow::Result<Vec<LinkProfile>> {
    let links = grid
        .links
        .iter()
        .map(|name| LinkProfile::by_name(name))
        .collect::<Result<Vec<_>, _>>()?;
    if matches!(services, Services::External { .. }) && links.iter().any(|l| !l.is_loopback()) {
        bail!(
            "links other than loopback route embedded services through network namespaces; for \
             external services put the relay between them yourself (`coordinator relay`) and \
             leave `links` out"
        );
    }
    Ok(links)
}

/// Runs a grid; returns the run folder.
pub async fn run(args: RunArgs) -> anyhow::Result<PathBuf> {
    let started = Instant::now();
    let started_ms = now_unix_ms();
    let grid = Grid::from_toml(&args.grid_text)?;
    let cells = expand(&grid);
    let grid_sha256 = hex::encode(Sha256::digest(args.grid_text.as_bytes()));
    let dir = RunDir::create(match args.shard {
        Some(shard) => shard.run_folder(&args.out, &grid.name),
        None => args.out.join(&grid.name),
    })?;
    let log = Arc::new(RunLog::open(&dir.logs().join("coordinator.log"), true)?);
    log.line(format!(
        "run grid {:?}: {} cells, folder {}",
        grid.name,
        cells.len(),
        dir.root().display()
    ));
    write_text_atomic(&dir.configs().join("grid.toml"), &args.grid_text)?;
    write_json_atomic(&dir.configs().join("grid.resolved.json"), &grid)?;

    let templates = request_templates(&cells)?;
    let LoadedDatasets {
        slices: datasets,
        mut assets,
        long_context,
    } = load_datasets(&cells, &log)?;
    let pairs = distinct_pairs(&cells);
    let links = grid_links(&grid, &args.services)?;
    let reached = reach_services(&args.services, &pairs, &links, &log).await?;
    if let Some(e) = &reached.embedded {
        assets.extend(e.assets());
    }
    let (plans, ready) = ready_cells(
        &cells,
        templates,
        &datasets,
        &reached.endpoints,
        &reached.client,
    )?;
    let (plans, ready) = shard::narrow(args.shard, &grid_sha256, &dir, plans, ready)?;
    if let Some(shard) = args.shard {
        let units: usize = plans.iter().map(|p| p.sample_ids.len()).sum();
        log.line(format!(
            "shard {shard}: {units} (cell, sample) units of the grid"
        ));
    }
    dir.write_plans(&plans)?;
    warn_random_weights(&cells, &log);

    let stop = StopSignal::new();
    let mut watchers = stop_watchers(&stop, args.time_limit, &log);
    let options = RunOptions {
        concurrency: args.concurrency,
        progress: args.progress,
        retry: grid.retry,
        stop: stop.clone(),
    };
    let counts = runner::run(&dir, ready, options).await?;
    watchers.abort_all();
    log.line(format!(
        "finished: {} cells done now, {} already done; {} samples answered, {} failed, {} \
         already answered; {} failed tries retried",
        counts.cells_finished,
        counts.cells_skipped,
        counts.answered,
        counts.failed,
        counts.samples_skipped,
        counts.retried
    ));
    if let Some(e) = reached.embedded {
        for line in e.link_report() {
            log.line(line);
        }
        e.shutdown().await;
    }

    let summaries = report::summaries(&dir, &plans)?;
    let table = report::write_summaries(&dir, &summaries)?;
    println!("{table}");
    let manifest = RunManifest {
        grid: grid.name.clone(),
        grid_sha256,
        coordinator_version: env!("CARGO_PKG_VERSION").to_string(),
        services: services_label(&args.services),
        started_at_unix_ms: started_ms,
        finished_at_unix_ms: now_unix_ms(),
        wall_s: started.elapsed().as_secs_f64(),
        system: SystemInfo::collect(),
        git: GitInfo::collect(&std::env::current_dir()?),
        assets,
        models: reached.models,
        cells: Vec::new(),
        long_context,
    };
    let path = report::write_manifest(&dir, manifest, &plans, summaries)?;
    log.line(format!("manifest {}", path.display()));
    if counts.failed > 0 {
        log.line(format!(
            "{} samples failed; run the same command again to retry them",
            counts.failed
        ));
    }
    if let Some(reason) = stop.reason() {
        log.line(format!(
            "stopped early ({}): {} samples not run; run the same command again to continue",
            match reason {
                StopReason::TimeLimit => "time limit",
                StopReason::Interrupt => "interrupted",
            },
            counts.not_run
        ));
    }
    Ok(dir.root().to_path_buf())
}

/// Each cell's request template; every cell the services cannot serve is reported together.
fn request_templates(cells: &[Cell]) -> anyhow::Result<Vec<RequestTemplate>> {
    let mut problems = Vec::new();
    let mut templates = Vec::new();
    for cell in cells {
        match RequestTemplate::of(&cell.config) {
            Ok(t) => templates.push(t),
            Err(e) => problems.push(format!(
                "cell {} ({}): {e}",
                cell.id, cell.config.method_label
            )),
        }
    }
    if !problems.is_empty() {
        bail!(
            "the grid asks for what the services cannot do:\n  - {}",
            problems.join("\n  - ")
        );
    }
    Ok(templates)
}

/// The key of a cell's dataset slice (for the long variant and a `max_passage_tokens` slice
/// with the sharer model, whose tokenizer measures its passages).
fn dataset_key(cell: &Cell) -> anyhow::Result<String> {
    let mut key = canonical_json(&serde_json::to_value(&cell.config.dataset)?);
    let counted = cell.config.dataset.max_passage_tokens.is_some();
    if cell.config.dataset.name == SCIQ_CONTEXT_LONG_DATASET || counted {
        key.push_str(" sharer ");
        key.push_str(&cell.config.pair.sharer.model);
    }
    Ok(key)
}

/// The grid's dataset slices and what the manifest says about them.
struct LoadedDatasets {
    /// Slices by [`dataset_key`].
    slices: BTreeMap<String, Slice>,
    /// Provenance of the files read.
    assets: Vec<AssetRecord>,
    /// How each long-variant slice was built.
    long_context: Vec<LongContextRecord>,
}

/// Every distinct dataset slice of the grid, loaded once, with the provenance of its files
/// and how each long-variant slice was built.
fn load_datasets(cells: &[Cell], log: &RunLog) -> anyhow::Result<LoadedDatasets> {
    let mut datasets: BTreeMap<String, Slice> = BTreeMap::new();
    let mut assets = Vec::new();
    let mut long_context = Vec::new();
    for cell in cells {
        let key = dataset_key(cell)?;
        if datasets.contains_key(&key) {
            continue;
        }
        let loaded = data::load(&cell.config.dataset, &cell.config.pair.sharer.model)
            .with_context(|| format!("loading dataset {:?}", cell.config.dataset.name))?;
        log.line(format!(
            "dataset {} {}: {} examples ({} skipped: gold not A-D; {} dropped: passage over \
             max_passage_tokens)",
            cell.config.dataset.name,
            cell.config.dataset.split,
            loaded.examples.len(),
            loaded.skipped,
            loaded.too_long
        ));
        assets.extend(loaded.assets);
        if let Some(r) = loaded.long_context {
            log.line(format!(
                "dataset {}: passages of {} sharer tokens ({}): {} items, {}-{} tokens (mean \
                 {:.0}), {:.1} distractors each, {} over the target; corpus {} passages, {} \
                 excluded",
                r.dataset,
                r.context_tokens,
                r.sharer_model,
                r.items,
                r.tokens_min,
                r.tokens_max,
                r.tokens_mean,
                r.distractors_mean,
                r.items_over_target,
                r.corpus_passages,
                r.corpus_excluded.len()
            ));
            long_context.push(r);
        }
        let ids = loaded.examples.iter().map(|e| e.id.clone()).collect();
        let by_id = loaded
            .examples
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        datasets.insert(key, (Arc::new(by_id), ids));
    }
    Ok(LoadedDatasets {
        slices: datasets,
        assets,
        long_context,
    })
}

/// The grid's pairs, each once, in first-use order.
fn distinct_pairs(cells: &[Cell]) -> Vec<CellPair> {
    let mut seen: Vec<CellPair> = Vec::new();
    for c in cells {
        if !seen.contains(&c.config.pair) {
            seen.push(c.config.pair.clone());
        }
    }
    seen
}

/// The services every pair runs on, checked against the models the pair names.
struct Reached {
    /// The in-process services, when embedded.
    embedded: Option<Embedded>,
    /// Endpoints by pair label.
    endpoints: BTreeMap<String, PairEndpoints>,
    /// What each service reported.
    models: Vec<ModelRecord>,
    /// How the services are reached (TLS, token): plain for the embedded ones.
    client: ClientTransport,
}

/// Environment prefix of the coordinator's client settings for external services
/// (`KVWIRE_COORDINATOR__CA`, `__CERT`, `__KEY`, `__TOKEN_FILE`, `__TOKEN_ENV`).
const CLIENT_ENV_PREFIX: &str = "KVWIRE_COORDINATOR";

/// The client transport for external services: each setting from `flags` when given, else
/// from `KVWIRE_COORDINATOR__*` (docs/SECURITY.md).
fn external_client(flags: &ClientSettings) -> anyhow::Result<ClientTransport> {
    let env: ClientSettings = load_layered(None, CLIENT_ENV_PREFIX)?;
    let pick = |flag: &String, var: String| if flag.is_empty() { var } else { flag.clone() };
    let settings = ClientSettings {
        ca: pick(&flags.ca, env.ca),
        cert: pick(&flags.cert, env.cert),
        key: pick(&flags.key, env.key),
        token_file: pick(&flags.token_file, env.token_file),
        token_env: pick(&flags.token_env, env.token_env),
    };
    ClientTransport::load(&settings, "--tls-ca or KVWIRE_COORDINATOR__CA")
        .context("the coordinator's client settings (--tls-*, --token-*, KVWIRE_COORDINATOR__*)")
}

/// Starts the embedded services (or takes the given endpoints) and checks every pair.
async fn reach_services(
    services: &Services,
    pairs: &[CellPair],
    links: &[LinkProfile],
    log: &Arc<RunLog>,
) -> anyhow::Result<Reached> {
    let (embedded, client) = match services {
        Services::Embedded(placement) => (
            Some(Embedded::start(pairs, placement, links, log).await?),
            ClientTransport::default(),
        ),
        Services::External { client, .. } => (None, external_client(client)?),
    };
    let mut endpoints: BTreeMap<String, PairEndpoints> = BTreeMap::new();
    let mut models = Vec::new();
    for pair in pairs {
        let ep = match (services, &embedded) {
            (
                Services::External {
                    sharer, receiver, ..
                },
                _,
            ) => PairEndpoints {
                sharer: sharer.clone(),
                receiver: receiver.clone(),
                sharer_via: links
                    .iter()
                    .map(|l| (l.name.to_string(), sharer.clone()))
                    .collect(),
            },
            (_, Some(e)) => PairEndpoints {
                sharer: e.sharer_url(&pair.sharer.model)?,
                receiver: e.receiver_url(&pair.receiver.model, pair.fuser.as_deref())?,
                sharer_via: links
                    .iter()
                    .map(|l| {
                        Ok((
                            l.name.to_string(),
                            e.sharer_url_via(&pair.sharer.model, Some(l.name))?,
                        ))
                    })
                    .collect::<anyhow::Result<_>>()?,
            },
            (Services::Embedded(_), None) => bail!("embedded services did not start"),
        };
        models.extend(check_pair(pair, &ep, &client, log).await?);
        endpoints.insert(pair.label.clone(), ep);
    }
    Ok(Reached {
        embedded,
        endpoints,
        models,
        client,
    })
}

/// Each cell's plan (its samples) and what the runner needs to run it.
fn ready_cells(
    cells: &[Cell],
    templates: Vec<RequestTemplate>,
    datasets: &BTreeMap<String, Slice>,
    endpoints: &BTreeMap<String, PairEndpoints>,
    client: &ClientTransport,
) -> anyhow::Result<(Vec<CellPlan>, Vec<ReadyCell>)> {
    let mut plans = Vec::new();
    let mut ready = Vec::new();
    for (cell, template) in cells.iter().zip(templates) {
        let (examples, ids) = &datasets[&dataset_key(cell)?];
        // The random-passage control reads another item's passage (coordinator::control).
        let examples = match cell.config.method.passage() {
            PassageSource::Own => Arc::clone(examples),
            PassageSource::RandomOther => Arc::new(with_other_passages(
                ids,
                examples,
                cell.config.seed.unwrap_or(0),
            )),
        };
        let ep = &endpoints[&cell.config.pair.label];
        let plan = CellPlan {
            cell: cell.clone(),
            sample_ids: ids.clone(),
        };
        plans.push(plan.clone());
        ready.push(ReadyCell {
            plan,
            template,
            examples,
            receiver: receiver_channel(&ep.receiver, client)?,
            sharer_endpoint: ep.sharer_for(cell.config.link.as_deref())?,
        });
    }
    Ok((plans, ready))
}

/// How the manifest names the services.
fn services_label(services: &Services) -> String {
    match services {
        Services::External {
            sharer, receiver, ..
        } => {
            format!("external: sharer {sharer}, receiver {receiver}")
        }
        Services::Embedded(p) => format!(
            "embedded: in-process on loopback, real gRPC, {} {}, prefill chunk {}",
            p.device, p.dtype, p.prefill_chunk_tokens
        ),
    }
}

/// Asks both services of a pair for their model and refuses a pair they do not serve.
async fn check_pair(
    pair: &CellPair,
    ep: &PairEndpoints,
    client: &ClientTransport,
    log: &RunLog,
) -> anyhow::Result<Vec<ModelRecord>> {
    let receiver = ReceiverClient::new(receiver_channel(&ep.receiver, client)?)
        .info(pb::InfoRequest {})
        .await
        .with_context(|| format!("receiver {} did not answer Info", ep.receiver))?
        .into_inner();
    let sharer = SharerClient::new(receiver_channel(&ep.sharer, client)?)
        .info(pb::InfoRequest {})
        .await
        .with_context(|| format!("sharer {} did not answer Info", ep.sharer))?
        .into_inner();
    for (role, want, got) in [
        ("receiver", &pair.receiver.model, &receiver.spec),
        ("sharer", &pair.sharer.model, &sharer.spec),
    ] {
        if !same_model(want, got) {
            bail!(
                "pair {:?}: the {role} serves {got:?} but the grid wants {want:?}",
                pair.label
            );
        }
    }
    log.line(format!(
        "pair {}: sharer {} ({} layers, {}), receiver {} ({} layers, {})",
        pair.label,
        sharer.spec,
        sharer.layers,
        sharer.device,
        receiver.spec,
        receiver.layers,
        receiver.device
    ));
    Ok([("sharer", sharer), ("receiver", receiver)]
        .into_iter()
        .map(|(role, info)| ModelRecord {
            role: format!("{role} of {}", pair.label),
            weights: weights_description(&info),
            model: info.spec,
            device: info.device,
        })
        .collect())
}

/// Whether a service reporting spec `got` serves the model the grid names as `want`: the same
/// spec, or two `gguf:` specs for the same file (the grid's target resolves, here, to the
/// service's path) or for the same asset (an asset name, or a path ending in the asset's file
/// name, as a service on another machine or in a container reports it).
fn same_model(want: &str, got: &str) -> bool {
    if want == got {
        return true;
    }
    let (Ok(ModelSpec::Gguf(want)), Ok(ModelSpec::Gguf(got))) =
        (ModelSpec::parse(want), ModelSpec::parse(got))
    else {
        return false;
    };
    let asset = |target: &str| {
        let name = Path::new(target).file_name()?.to_str()?;
        assets::AssetId::from_str(name).ok()
    };
    resolve_gguf(&want).is_ok_and(|path| path == Path::new(&got))
        || asset(&want).is_some_and(|a| asset(&got) == Some(a))
}

fn weights_description(info: &pb::ModelInfo) -> String {
    if info.random_weights {
        "random (timing only; no accuracy)".into()
    } else if info.spec.starts_with("gguf:") {
        "gguf, dequantized at load (then run in the service's dtype)".into()
    } else {
        "as stored (hf safetensors)".into()
    }
}

fn warn_random_weights(cells: &[Cell], log: &RunLog) {
    let random = cells
        .iter()
        .filter(|c| c.config.pair.sharer.is_random() || c.config.pair.receiver.is_random())
        .count();
    if random > 0 {
        log.line(format!(
            "{random} cells use random weights: their accuracy means nothing (timing only)"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::same_model;

    #[test]
    fn a_service_serves_the_grid_model_by_spec_path_or_asset() {
        assert!(same_model("random:tiny-llama:7", "random:tiny-llama:7"));
        assert!(!same_model("random:tiny-llama:7", "random:tiny-llama:8"));
        assert!(same_model("gguf:smollm2-135m", "gguf:smollm2-135m"));
        // A container's path to the asset's file is the same asset.
        assert!(same_model(
            "gguf:smollm2-135m",
            "gguf:/models/smollm2-135m-instruct-q4_1.gguf"
        ));
        assert!(!same_model(
            "gguf:qwen2.5-coder-0.5b",
            "gguf:/models/smollm2-135m-instruct-q4_1.gguf"
        ));
        assert!(!same_model("gguf:/a/model.gguf", "gguf:/b/model.gguf"));
        assert!(!same_model("hf:/m/qwen", "gguf:/m/qwen"));
        // A local file is compared by path.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.gguf");
        std::fs::write(&file, b"gguf").unwrap();
        let spec = format!("gguf:{}", file.display());
        assert!(same_model(&spec, &spec));
    }
}
