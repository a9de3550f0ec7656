//! Bounds on a server's connections, below TLS and HTTP/2: at most `max_connections` open (one
//! more is accepted and closed at once), a handshake timeout (a new connection must send its
//! first [`HANDSHAKE_BYTES`] within it) and an idle timeout (a connection that has sent nothing
//! for that long is closed). The server pings quiet connections (HTTP/2 PING, see
//! [`crate::transport::ServerTransport`]), so a live client reads as active.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::counting::{ByteCounters, CountingStream};
use crate::metrics_catalog::count_closed_connection;

/// Bytes a new connection must send within the handshake timeout: the length of the HTTP/2
/// client preface (any TLS ClientHello is longer).
pub const HANDSHAKE_BYTES: u64 = 24;

/// The bounds, as durations.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Most open connections.
    pub max_connections: usize,
    /// Time for the first [`HANDSHAKE_BYTES`].
    pub handshake: Duration,
    /// Time without a byte read before the connection is closed.
    pub idle: Duration,
}

/// What bounds one server connection: it holds the connection's slot until dropped, and its
/// [`ConnGuard::poll_deadline`] fails the connection's reads once a timeout passes (the server
/// then closes it). Carried by the connection's [`CountingStream`].
#[derive(Debug)]
pub struct ConnGuard {
    _slot: OwnedSemaphorePermit,
    role: &'static str,
    peer: SocketAddr,
    timer: Pin<Box<Sleep>>,
    /// The handshake deadline, until [`HANDSHAKE_BYTES`] have been read.
    handshake: Option<Instant>,
    read: u64,
    last_read: Instant,
    idle: Duration,
}

impl ConnGuard {
    fn new(slot: OwnedSemaphorePermit, role: &'static str, peer: SocketAddr, b: Bounds) -> Self {
        let now = Instant::now();
        let handshake = now + b.handshake;
        Self {
            _slot: slot,
            role,
            peer,
            timer: Box::pin(tokio::time::sleep_until(handshake)),
            handshake: Some(handshake),
            read: 0,
            last_read: now,
            idle: b.idle,
        }
    }

    /// Records `n` bytes read.
    pub fn on_read(&mut self, n: u64) {
        if n > 0 {
            self.last_read = Instant::now();
            self.read = self.read.saturating_add(n);
            if self.read >= HANDSHAKE_BYTES {
                self.handshake = None;
            }
        }
    }

    /// The next deadline and which timeout it is.
    fn deadline(&self) -> (Instant, &'static str) {
        let idle = self.last_read + self.idle;
        match self.handshake {
            Some(h) if h < idle => (h, "handshake_timeout"),
            _ => (idle, "idle_timeout"),
        }
    }

    /// For a read that is pending: `Ready(TimedOut)` once the deadline has passed, else
    /// pending with the timer armed to wake the reader at the deadline.
    pub fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let (deadline, which) = self.deadline();
            if Instant::now() >= deadline {
                tracing::info!(peer = %self.peer, reason = which, "closing connection");
                count_closed_connection(self.role, which);
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connection closed: {which}"),
                ));
            }
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// A server connection: counted (transport bytes) and guarded.
pub type ServerConn = CountingStream<TcpStream>;

/// Accepted connections of `listener`, counted into `counters` and under `bounds`. A
/// connection beyond `max_connections` is closed at once; an accept error (out of file
/// descriptors, say) is logged and accepting goes on after a pause, so neither stops the
/// server.
pub fn bounded_incoming(
    role: &'static str,
    listener: TcpListener,
    counters: Arc<ByteCounters>,
    bounds: Bounds,
) -> impl Stream<Item = io::Result<ServerConn>> + Send + 'static {
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    futures::stream::unfold(
        (listener, counters, slots),
        move |(listener, counters, slots)| async move {
            let conn = accept(role, &listener, &counters, &slots, bounds).await;
            Some((Ok(conn), (listener, counters, slots)))
        },
    )
}

async fn accept(
    role: &'static str,
    listener: &TcpListener,
    counters: &Arc<ByteCounters>,
    slots: &Arc<Semaphore>,
    bounds: Bounds,
) -> ServerConn {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(slots).try_acquire_owned() else {
            tracing::warn!(%peer, max = bounds.max_connections, "connection limit reached: closing");
            count_closed_connection(role, "limit");
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "set_nodelay");
        }
        let guard = ConnGuard::new(slot, role, peer, bounds);
        return CountingStream::guarded(stream, Arc::clone(counters), guard);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn server(bounds: Bounds) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let incoming = bounded_incoming("test", listener, ByteCounters::new(), bounds);
            let mut incoming = std::pin::pin!(incoming);
            while let Some(Ok(mut conn)) = futures::StreamExt::next(&mut incoming).await {
                // Echo until the connection fails (a timeout) or closes.
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n @ 1..) = conn.read(&mut buf).await {
                        if conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    /// Seconds until the server closes `client` (what it sends is dropped).
    async fn closed_after(client: &mut TcpStream) -> f64 {
        let start = std::time::Instant::now();
        let mut sink = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "connection still open after 10 s");
        start.elapsed().as_secs_f64()
    }

    #[tokio::test]
    async fn silent_idle_and_surplus_connections_are_closed() {
        let bounds = Bounds {
            max_connections: 2,
            handshake: Duration::from_millis(300),
            idle: Duration::from_millis(900),
        };
        let (addr, task) = server(bounds).await;
        // Sends nothing: closed at the handshake timeout.
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let t = closed_after(&mut silent).await;
        assert!(
            (0.2..2.0).contains(&t),
            "silent connection closed after {t} s"
        );
        // Sends its first bytes, then nothing: closed at the idle timeout.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        idle.write_all(&[0u8; HANDSHAKE_BYTES as usize])
            .await
            .unwrap();
        let t = closed_after(&mut idle).await;
        assert!(
            (0.7..3.0).contains(&t),
            "idle connection closed after {t} s"
        );
        // Two live connections fill the slots; a third is closed at once.
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        for c in [&mut a, &mut b] {
            c.write_all(&[1u8; 32]).await.unwrap();
            let mut echo = [0u8; 32];
            c.read_exact(&mut echo).await.unwrap();
        }
        // Refused, not served: closed without echoing what it sent.
        let mut third = TcpStream::connect(addr).await.unwrap();
        let _ = third.write_all(&[2u8; 32]).await;
        let mut buf = [0u8; 64];
        let got = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf)).await;
        assert!(
            matches!(got, Ok(Ok(0) | Err(_))),
            "surplus connection: {got:?}"
        );
        drop((a, b));
        task.abort();
    }
}
