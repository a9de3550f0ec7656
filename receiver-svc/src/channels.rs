//! The receiver's connections to its sharers, reused across evaluations: a small pool of gRPC
//! channels per sharer endpoint, each lent to one evaluation at a time.
//!
//! A channel is checked out by one evaluation and returned when that evaluation's calls all
//! finished cleanly, so the transport bytes counted on it while it was lent (its
//! [`ByteCounters`] delta) are that evaluation's alone even with concurrent evaluations:
//! concurrency opens more connections instead of mixing bytes. The first evaluation on a
//! connection carries the TCP (and TLS) handshake bytes; later ones do not, which is what
//! crossed the wire. A channel whose call failed, timed out or was dropped mid-call is not
//! returned (the next evaluation opens a fresh connection: reconnect on failure), nor is one
//! idle longer than `limits.sharer_reuse_idle_secs` (the sharer closes connections idle past
//! its own `connections.idle_timeout_secs`); `0` opens a connection per evaluation. The key is
//! the endpoint URL: the transport settings (TLS, token, message size, connect timeout) are
//! the receiver's own and the same for every endpoint, and the endpoints are bounded by the
//! allow-list; at most `limits.max_concurrent_jobs` idle channels are kept per endpoint.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvwire_proto::v1::sharer_client::SharerClient;
use service_kit::counting::{ByteCounters, ByteSnapshot, CountingConnector};
use service_kit::transport::client::{ClientChannel, ClientError, ClientTransport};

use crate::config::ReceiverConfig;
use crate::error::ReceiverError;

/// The settings every sharer connection of this receiver shares.
#[derive(Debug, Clone)]
pub struct ChannelSettings {
    /// TLS and token of `[sharer_client]`.
    pub transport: ClientTransport,
    /// Largest gRPC message sent or accepted.
    pub max_message_bytes: usize,
    /// Wait for the TCP connection.
    pub connect_timeout: Duration,
    /// Longest idle time after which a connection is not reused; zero: never reused.
    pub reuse_idle: Duration,
    /// Idle connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
}

impl ChannelSettings {
    /// The settings `config` gives, over `transport` (`[sharer_client]` loaded).
    pub fn new(config: &ReceiverConfig, transport: ClientTransport) -> Self {
        let l = &config.limits;
        Self {
            transport,
            max_message_bytes: l.max_message_bytes,
            connect_timeout: Duration::from_secs(l.connect_timeout_secs),
            reuse_idle: Duration::from_secs(l.sharer_reuse_idle_secs),
            max_idle_per_endpoint: l.max_concurrent_jobs,
        }
    }
}

/// One connection to a sharer: the client over it and the counters of its bytes.
#[derive(Debug)]
struct Pooled {
    client: SharerClient<ClientChannel>,
    counters: Arc<ByteCounters>,
    idle_since: Instant,
}

#[derive(Debug)]
struct Inner {
    settings: ChannelSettings,
    idle: Mutex<HashMap<String, Vec<Pooled>>>,
    opened: AtomicU64,
}

/// The pool of sharer connections (cheap to clone; clones share the pool).
#[derive(Debug, Clone)]
pub struct SharerChannels {
    inner: Arc<Inner>,
}

impl SharerChannels {
    /// An empty pool.
    pub fn new(settings: ChannelSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                idle: Mutex::new(HashMap::new()),
                opened: AtomicU64::new(0),
            }),
        }
    }

    /// The TLS and token settings of the pool's connections.
    pub fn transport(&self) -> &ClientTransport {
        &self.inner.settings.transport
    }

    /// Connections opened so far (for tests and logs).
    pub fn opened(&self) -> u64 {
        self.inner.opened.load(Ordering::Relaxed)
    }

    /// A connection to `endpoint` for one evaluation: an idle one when there is a recent one,
    /// otherwise a fresh one through a counting connector.
    pub async fn checkout(&self, endpoint: &str) -> Result<Checkout, ReceiverError> {
        // A fresh connection's bytes count from zero: its handshake and HTTP/2 preface are
        // this evaluation's.
        let (pooled, start) = match self.take_idle(endpoint) {
            Some(p) => {
                let start = p.counters.snapshot();
                (p, start)
            }
            None => (self.open(endpoint).await?, ByteSnapshot::default()),
        };
        Ok(Checkout {
            pool: self.clone(),
            endpoint: endpoint.to_string(),
            pooled: Some(pooled),
            start,
            clean: true,
        })
    }

    fn take_idle(&self, endpoint: &str) -> Option<Pooled> {
        let reuse = self.inner.settings.reuse_idle;
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(endpoint)?;
        list.retain(|p| p.idle_since.elapsed() < reuse);
        list.pop()
    }

    fn give_back(&self, endpoint: String, mut pooled: Pooled) {
        let s = &self.inner.settings;
        if s.reuse_idle.is_zero() {
            return;
        }
        pooled.idle_since = Instant::now();
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(endpoint).or_default();
        list.retain(|p| p.idle_since.elapsed() < s.reuse_idle);
        if list.len() < s.max_idle_per_endpoint {
            list.push(pooled);
        }
    }

    async fn open(&self, endpoint: &str) -> Result<Pooled, ReceiverError> {
        let s = &self.inner.settings;
        let counters = ByteCounters::new();
        let channel = s
            .transport
            .endpoint(endpoint)
            .map_err(|e| match e {
                ClientError::NoCa { .. } => ReceiverError::TlsUnsupported {
                    endpoint: endpoint.to_string(),
                },
                other => ReceiverError::invalid("sharer_endpoint", other.to_string()),
            })?
            .connect_timeout(s.connect_timeout)
            .tcp_nodelay(true)
            .connect_with_connector(CountingConnector::new(counters.clone()))
            .await
            .map_err(|e| ReceiverError::SharerUnreachable {
                endpoint: endpoint.to_string(),
                reason: format!("{e}: {}", source_chain(&e)),
            })?;
        self.inner.opened.fetch_add(1, Ordering::Relaxed);
        let client = SharerClient::new(s.transport.wrap(channel))
            .max_decoding_message_size(s.max_message_bytes)
            .max_encoding_message_size(s.max_message_bytes);
        Ok(Pooled {
            client,
            counters,
            idle_since: Instant::now(),
        })
    }
}

/// A connection lent to one evaluation; back to the pool on drop when every call on it
/// finished cleanly (see [`Checkout::begin`] and [`Checkout::finish`]).
#[derive(Debug)]
pub struct Checkout {
    pool: SharerChannels,
    endpoint: String,
    pooled: Option<Pooled>,
    start: ByteSnapshot,
    clean: bool,
}

impl Checkout {
    /// The client for the next call; the connection counts as in use (not returned) until
    /// [`Checkout::finish`] says the call ended cleanly.
    pub fn begin(&mut self) -> &mut SharerClient<ClientChannel> {
        self.clean = false;
        // Always present: taken only in drop.
        &mut self
            .pooled
            .as_mut()
            .expect("a checkout holds its connection until dropped")
            .client
    }

    /// The call started with [`Checkout::begin`] ended cleanly (a whole reply or stream).
    pub fn finish(&mut self) {
        self.clean = true;
    }

    /// Transport bytes on this connection since it was lent.
    pub fn transport(&self) -> ByteSnapshot {
        self.pooled
            .as_ref()
            .map_or_else(ByteSnapshot::default, |p| {
                p.counters.snapshot().since(self.start)
            })
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(pooled) = self.pooled.take()
            && self.clean
        {
            self.pool
                .give_back(std::mem::take(&mut self.endpoint), pooled);
        }
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}
