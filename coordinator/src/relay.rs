//! A delaying TCP relay: accepts connections, opens one upstream connection for each, and
//! forwards bytes both ways, holding every chunk for a fixed one-way delay per direction
//! (docs/REGIME_MAP.md, "The relay").
//!
//! Each direction of a connection is a reader thread and a writer thread joined by a bounded
//! channel: the reader stamps each chunk with the instant it was read and hands it on at once,
//! the writer releases it at stamp + delay. Chunks therefore overlap in flight (a delay line,
//! not a store-and-forward stall): a stream of N bytes takes delay + N / rate, not N chunks
//! times the delay. Blocking threads and `std::thread::sleep` rather than tokio timers: tokio's
//! timer wheel rounds every sleep up to the next millisecond, which alone would break the
//! 1 ms delay tolerance. A relay can be paused: writers stop before their next chunk (readers
//! go on until the channel is full, then TCP back-pressure stalls the sender), which is a
//! stalled stream as a fault test needs it.
//!
//! The upstream connection is opened by a [`Connector`], so the caller decides where it comes
//! from (a thread moved into another network namespace: [`crate::link`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes read at once from a socket.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks held per direction of a connection (at most 64 MiB in flight: more than 20 ms of
/// a 10 Gbit/s link).
const CHANNEL_CHUNKS: usize = 1024;

/// Opens the upstream connection for an accepted one; runs on the relay's accept thread.
pub type Connector = Box<dyn FnMut() -> io::Result<TcpStream> + Send>;

/// One-way delays of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delays {
    /// Client to upstream.
    pub up: Duration,
    /// Upstream to client.
    pub down: Duration,
}

impl Delays {
    /// The same delay both ways.
    pub fn both(delay: Duration) -> Delays {
        Delays {
            up: delay,
            down: delay,
        }
    }
}

/// What a relay has forwarded so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelayStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections whose upstream could not be opened (the client was closed at once).
    pub upstream_failures: u64,
    /// Bytes written upstream.
    pub bytes_up: u64,
    /// Bytes written back to clients.
    pub bytes_down: u64,
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    paused: Mutex<bool>,
    resumed: Condvar,
    connections: AtomicU64,
    upstream_failures: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl Shared {
    /// Blocks while the relay is paused.
    fn wait_unpaused(&self) {
        let mut paused = self.paused.lock().unwrap_or_else(PoisonError::into_inner);
        while *paused && !self.stop.load(Ordering::Relaxed) {
            paused = self
                .resumed
                .wait(paused)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A running relay; stops (and closes its listener) when dropped.
pub struct Relay {
    addr: SocketAddr,
    listener: TcpListener,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("addr", &self.addr).finish()
    }
}

impl Relay {
    /// Starts relaying connections accepted on `listener` through `connect`, with `delays`.
    /// `on_accept_thread` runs once on the accept thread before the first accept (to move it
    /// into another network namespace, so that `connect` opens sockets there).
    pub fn start(
        listener: TcpListener,
        connect: Connector,
        delays: Delays,
        on_accept_thread: Option<Box<dyn FnOnce() -> io::Result<()> + Send>>,
    ) -> io::Result<Relay> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(false)?;
        let accept_listener = listener.try_clone()?;
        let shared = Arc::new(Shared::default());
        let (ready_tx, ready_rx) = sync_channel(1);
        let thread_shared = Arc::clone(&shared);
        let accept = std::thread::Builder::new()
            .name(format!("relay-accept-{}", addr.port()))
            .spawn(move || {
                let setup = on_accept_thread.map_or(Ok(()), |f| f());
                let ok = setup.is_ok();
                let _ = ready_tx.send(setup);
                if ok {
                    accept_loop(accept_listener, connect, delays, thread_shared);
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("the relay's accept thread ended")),
        }
        Ok(Relay {
            addr,
            listener,
            shared,
            accept: Some(accept),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding: every connection's writers hold their next chunk until [`resume`].
    ///
    /// [`resume`]: Relay::resume
    pub fn pause(&self) {
        *self
            .shared
            .paused
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
    }

    /// Forwards again after [`Relay::pause`].
    pub fn resume(&self) {
        *self
            .shared
            .paused
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = false;
        self.shared.resumed.notify_all();
    }

    /// Counters so far.
    pub fn stats(&self) -> RelayStats {
        let s = &self.shared;
        RelayStats {
            connections: s.connections.load(Ordering::Relaxed),
            upstream_failures: s.upstream_failures.load(Ordering::Relaxed),
            bytes_up: s.bytes_up.load(Ordering::Relaxed),
            bytes_down: s.bytes_down.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.resume();
        // Shutting a listening socket down wakes a blocked accept (Linux), whichever network
        // namespace the socket lives in.
        let _ = rustix::net::shutdown(self.listener.as_fd(), rustix::net::Shutdown::Read);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, mut connect: Connector, delays: Delays, s: Arc<Shared>) {
    for client in listener.incoming() {
        if s.stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(client) = client else {
            // A failed accept (the client gave up first) ends only that connection.
            continue;
        };
        s.connections.fetch_add(1, Ordering::Relaxed);
        let upstream = match connect() {
            Ok(u) => u,
            Err(_) => {
                s.upstream_failures.fetch_add(1, Ordering::Relaxed);
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
        };
        if let Err(_e) = spawn_connection(client, upstream, delays, &s) {
            s.upstream_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts both directions of one relayed connection.
fn spawn_connection(
    client: TcpStream,
    upstream: TcpStream,
    delays: Delays,
    s: &Arc<Shared>,
) -> io::Result<()> {
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let up = Direction {
        from: client.try_clone()?,
        to: upstream.try_clone()?,
        delay: delays.up,
        up: true,
    };
    let down = Direction {
        from: upstream,
        to: client,
        delay: delays.down,
        up: false,
    };
    up.spawn(Arc::clone(s))?;
    down.spawn(Arc::clone(s))
}

/// One direction of a connection.
struct Direction {
    from: TcpStream,
    to: TcpStream,
    delay: Duration,
    up: bool,
}

type Stamped = (Instant, Vec<u8>);

impl Direction {
    fn spawn(self, s: Arc<Shared>) -> io::Result<()> {
        let (tx, rx) = sync_channel::<Stamped>(CHANNEL_CHUNKS);
        let to_for_reader = self.to.try_clone()?;
        let from_for_writer = self.from.try_clone()?;
        let from = self.from;
        std::thread::Builder::new()
            .name("relay-read".into())
            .spawn(move || read_side(from, to_for_reader, tx))?;
        let (to, delay, up) = (self.to, self.delay, self.up);
        std::thread::Builder::new()
            .name("relay-write".into())
            .spawn(move || write_side(rx, to, from_for_writer, delay, up, &s))?;
        Ok(())
    }
}

/// Reads chunks and stamps them; at end of stream the writer finishes what it holds and
/// half-closes its side.
fn read_side(mut from: TcpStream, to: TcpStream, tx: SyncSender<Stamped>) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                // A broken source: the other side sees the connection end too.
                let _ = to.shutdown(Shutdown::Both);
                break;
            }
        }
    }
}

/// Releases each chunk at its stamp plus the delay (and not while paused).
fn write_side(
    rx: Receiver<Stamped>,
    mut to: TcpStream,
    from: TcpStream,
    delay: Duration,
    up: bool,
    s: &Shared,
) {
    let counter = if up { &s.bytes_up } else { &s.bytes_down };
    for (stamp, chunk) in rx {
        let due = stamp + delay;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        s.wait_unpaused();
        if s.stop.load(Ordering::Relaxed) || to.write_all(&chunk).is_err() {
            // The destination is gone (or the relay stopped): end both directions.
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
        counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
