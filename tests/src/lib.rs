//! Cross-crate end-to-end tests, and the harness they share: both services started in-process
//! on loopback (real gRPC over TCP) with tiny random-weight models, plus a TCP relay that can
//! cut a connection mid-stream.

pub mod one_cell;
pub mod sessions;

use std::net::SocketAddr;
use std::time::Duration;

use kvwire_proto::v1 as pb;
use receiver_svc::ReceiverConfig;
use service_kit::transport::client::ClientTransport;
use sharer_svc::SharerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// The model both sides run in tests (a same-model pair).
pub const TINY_MODEL: &str = "random:tiny-llama:7";

/// A service running in this process; dropping it shuts it down.
#[derive(Debug)]
pub struct Running {
    /// Its address.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// `http://addr`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `https://addr`.
    pub fn https_endpoint(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops the server and returns its result.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await?
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Starts a sharer with `model`.
pub async fn start_sharer(model: &str) -> Running {
    let (listener, _) = bind().await;
    start_sharer_on(model, listener).await
}

/// Starts a sharer with `model` on an already bound listener (for example a second instance
/// on the address of one that died).
pub async fn start_sharer_on(model: &str, listener: TcpListener) -> Running {
    let config = SharerConfig {
        model: model.into(),
        ..SharerConfig::default()
    };
    start_sharer_with_on(config, listener, &ClientTransport::default()).await
}

/// A sharer of the tiny model with one job slot, four queue places and hints of up to
/// `hint_tokens` new tokens: a long generation holds its only slot.
pub fn one_slot_sharer(hint_tokens: u32) -> SharerConfig {
    let mut config = SharerConfig {
        model: TINY_MODEL.into(),
        ..SharerConfig::default()
    };
    config.limits.max_concurrent_jobs = 1;
    config.limits.max_queued_jobs = 4;
    config.limits.max_hint_tokens = hint_tokens as usize;
    config
}

/// Starts a sharer with `config` (its listen address aside: a free loopback port), waiting
/// for its health through `health` (`https://` when that has a CA).
pub async fn start_sharer_with(config: SharerConfig, health: &ClientTransport) -> Running {
    let (listener, _) = bind().await;
    start_sharer_with_on(config, listener, health).await
}

async fn start_sharer_with_on(
    config: SharerConfig,
    listener: TcpListener,
    health: &ClientTransport,
) -> Running {
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    let served = sharer_svc::serve(config, listener, async move {
        let _ = rx.await;
    });
    let task = tokio::spawn(async move { served.await.map_err(anyhow::Error::from) });
    wait_serving_with(addr, kvwire_proto::service_names::SHARER, health).await;
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

/// Starts a receiver with `model` whose default (and only allowed) sharer is
/// `sharer_endpoint`.
pub async fn start_receiver(model: &str, sharer_endpoint: &str) -> Running {
    start_receiver_allowing(model, sharer_endpoint, &[]).await
}

/// Starts a receiver with `model` whose default sharer is `sharer_endpoint` (empty: none) and
/// that requests may also point at the sharers in `allowed`.
pub async fn start_receiver_allowing(
    model: &str,
    sharer_endpoint: &str,
    allowed: &[String],
) -> Running {
    let config = ReceiverConfig {
        model: model.into(),
        sharer_endpoint: sharer_endpoint.into(),
        allowed_sharers: allowed.to_vec(),
        ..ReceiverConfig::default()
    };
    start_receiver_with(config).await
}

/// Starts a receiver with `config` (its listen address aside: a free loopback port).
pub async fn start_receiver_with(config: ReceiverConfig) -> Running {
    start_receiver_secured(config, &ClientTransport::default()).await
}

/// [`start_receiver_with`], waiting for its health through `health` (`https://` when that has
/// a CA).
pub async fn start_receiver_secured(config: ReceiverConfig, health: &ClientTransport) -> Running {
    let (listener, addr) = bind().await;
    let (tx, rx) = oneshot::channel::<()>();
    let served = receiver_svc::serve(config, listener, async move {
        let _ = rx.await;
    });
    let task = tokio::spawn(async move { served.await.map_err(anyhow::Error::from) });
    wait_serving_with(addr, kvwire_proto::service_names::RECEIVER, health).await;
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

/// Polls gRPC health until `service` is SERVING (the model is loaded), for up to 60 s.
pub async fn wait_serving(addr: SocketAddr, service: &str) {
    wait_serving_with(addr, service, &ClientTransport::default()).await;
}

/// [`wait_serving`] through `client`: `https://` when it has a CA.
pub async fn wait_serving_with(addr: SocketAddr, service: &str, client: &ClientTransport) {
    let scheme = if client.has_tls() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}");
    let mut last = String::new();
    for _ in 0..600 {
        match service_kit::health::check(&url, service, Duration::from_secs(5), client).await {
            Ok(()) => return,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{service} on {url} never became SERVING: {last}");
}

/// A TCP relay to `target` that forwards at most `limit` bytes from the server back to the
/// client, then closes both sides: a sharer that dies mid-stream, as the receiver sees it.
pub async fn cutting_relay(target: SocketAddr, limit: usize) -> SocketAddr {
    let (listener, addr) = bind().await;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                relay_one(client, target, limit).await;
            });
        }
    });
    addr
}

/// A sharer that dies mid-stream, as everyone else sees it: a TCP relay at its own address to
/// `target` that forwards server bytes until one connection has carried `limit` of them; then
/// it cuts every connection, stops listening (the port refuses connections) and fires the
/// returned signal, so a test can bring a new sharer up on the same address.
pub async fn dying_sharer(target: SocketAddr, limit: usize) -> (SocketAddr, oneshot::Receiver<()>) {
    let (listener, addr) = bind().await;
    let (died_tx, died_rx) = oneshot::channel();
    let (dead, _) = watch::channel(false);
    tokio::spawn(async move {
        let mut watching = dead.subscribe();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((client, _)) = accepted else { break };
                    let dead = dead.clone();
                    tokio::spawn(async move {
                        let mut cut = dead.subscribe();
                        tokio::select! {
                            reached = relay_one(client, target, limit) => {
                                if reached {
                                    dead.send_replace(true);
                                }
                            }
                            _ = cut.wait_for(|d| *d) => {}
                        }
                    });
                }
                _ = watching.wait_for(|d| *d) => break,
            }
        }
        drop(listener);
        let _ = died_tx.send(());
    });
    (addr, died_rx)
}

/// Binds `addr` again once its previous owner has let go (retrying for up to 10 s).
pub async fn rebind(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return listener;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{addr} could not be bound again");
}

/// Total bytes of the KVWire records a sharer sends for `example` at `payload`, read straight
/// from its Share stream (session header and every frame).
pub async fn share_blob_bytes(sharer: &str, example: pb::Example, payload: pb::Payload) -> usize {
    use kvwire_proto::v1::sharer_client::SharerClient;
    let mut client = SharerClient::connect(sharer.to_string())
        .await
        .expect("sharer reachable");
    let req = pb::ShareRequest {
        prompt: Some(pb::share_request::Prompt::Example(example)),
        transfer: Some(pb::TransferSettings {
            payload: payload as i32,
            ..Default::default()
        }),
        keep_session: false,
        all_positions: false,
        query: String::new(),
    };
    let mut stream = client.share(req).await.expect("share").into_inner();
    let mut total = 0;
    while let Some(chunk) = stream.message().await.expect("share stream") {
        total += chunk.frame.len();
    }
    total
}

/// Relays one connection; true when the server-to-client direction reached `limit` bytes
/// (the connection was cut on purpose).
async fn relay_one(client: TcpStream, target: SocketAddr, limit: usize) -> bool {
    let Ok(server) = TcpStream::connect(target).await else {
        return false;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut sw).await;
    });
    let mut buf = vec![0u8; 4096];
    let mut forwarded = 0;
    while forwarded < limit {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n.min(limit - forwarded),
        };
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
        forwarded += n;
    }
    upstream.abort();
    // Dropping both halves closes the connections.
    forwarded >= limit
}

/// A four-choice example.
pub fn example(id: &str) -> pb::Example {
    pb::Example {
        id: id.into(),
        question: "Plants need light to grow. A seed was kept in a dark closet. Which factor stops the seed from growing?".into(),
        choices: vec!["water".into(), "darkness".into(), "soil".into(), "air".into()],
        gold: "B".into(),
        passage: String::new(),
    }
}

/// A `kv` evaluation of [`example`] `e1` at int8 through the sharer at `sharer_endpoint`.
pub fn kv_request(sharer_endpoint: &str) -> pb::EvaluateRequest {
    pb::EvaluateRequest {
        example: Some(example("e1")),
        method: pb::Method::Kv as i32,
        transfer: Some(pb::TransferSettings {
            payload: pb::Payload::Int8 as i32,
            ..Default::default()
        }),
        sharer_endpoint: sharer_endpoint.into(),
        ..Default::default()
    }
}

/// Installs this process's Prometheus exporter (and the process-metrics sampler) on a free
/// loopback port and returns its address. A port found free can be taken before the exporter
/// binds it (an outgoing connection's ephemeral port): the bind is retried on fresh ports.
pub fn install_metrics_exporter() -> SocketAddr {
    let mut last = None;
    for _ in 0..8 {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port");
        match service_kit::telemetry::install_prometheus(addr) {
            Ok(()) => return addr,
            Err(e) => last = Some(e.to_string()),
        }
    }
    panic!("no port for the Prometheus exporter: {last:?}");
}
