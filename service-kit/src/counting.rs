//! Transport byte truth: a TCP stream wrapper that counts bytes read and written, and a tonic
//! client connector that hands out such streams (one counter set per channel). Servers count
//! their connections through `transport::bounds::bounded_incoming`. Under TLS the counted
//! stream is below TLS: the counts are TLS record bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::transport::bounds::ConnGuard;

/// Bytes read and written on one or more connections.
#[derive(Debug, Default)]
pub struct ByteCounters {
    read: AtomicU64,
    written: AtomicU64,
}

/// A point-in-time copy of [`ByteCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ByteSnapshot {
    /// Bytes read from the peer.
    pub read: u64,
    /// Bytes written to the peer.
    pub written: u64,
}

impl ByteSnapshot {
    /// Bytes moved since `earlier`.
    pub fn since(self, earlier: ByteSnapshot) -> ByteSnapshot {
        ByteSnapshot {
            read: self.read.saturating_sub(earlier.read),
            written: self.written.saturating_sub(earlier.written),
        }
    }
}

impl ByteCounters {
    /// Fresh shared counters.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Current totals.
    pub fn snapshot(&self) -> ByteSnapshot {
        ByteSnapshot {
            read: self.read.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
        }
    }
}

/// A stream that adds every byte it reads or writes to shared counters; a server's
/// connections also carry their [`ConnGuard`] (connection slot, handshake and idle timeouts).
#[derive(Debug)]
pub struct CountingStream<S> {
    inner: S,
    counters: Arc<ByteCounters>,
    guard: Option<ConnGuard>,
}

impl<S> CountingStream<S> {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: S, counters: Arc<ByteCounters>) -> Self {
        Self {
            inner,
            counters,
            guard: None,
        }
    }

    /// Wraps `inner`, counting into `counters`, under `guard`: its reads fail with `TimedOut`
    /// once one of the guard's timeouts passes.
    pub fn guarded(inner: S, counters: Arc<ByteCounters>, guard: ConnGuard) -> Self {
        Self {
            inner,
            counters,
            guard: Some(guard),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before) as u64;
        self.counters.read.fetch_add(n, Ordering::Relaxed);
        match &mut self.guard {
            Some(guard) if poll.is_pending() => guard.poll_deadline(cx).map(Err),
            Some(guard) => {
                guard.on_read(n);
                poll
            }
            None => poll,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            self.counters
                .written
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &poll {
            self.counters
                .written
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for CountingStream<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// A tonic/hyper connector that opens TCP connections counting their bytes.
///
/// Every connection the channel opens adds to the same counters, so a channel made for one
/// evaluation gives that evaluation's transport bytes exactly. For an `https://` endpoint
/// tonic runs TLS over the counted stream, so the counts are TLS record bytes (handshake,
/// record headers and authentication tags included): what crosses the socket.
#[derive(Debug, Clone)]
pub struct CountingConnector {
    counters: Arc<ByteCounters>,
}

impl CountingConnector {
    /// A connector counting into `counters`.
    pub fn new(counters: Arc<ByteCounters>) -> Self {
        Self { counters }
    }
}

impl tower::Service<http::Uri> for CountingConnector {
    type Response = TokioIo<CountingStream<TcpStream>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let counters = self.counters.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("no host in {uri}"))
            })?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let default_port = if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            };
            let port = uri.port_u16().unwrap_or(default_port);
            let stream = TcpStream::connect((host, port)).await?;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(CountingStream::new(stream, counters)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn counts_both_directions_of_a_loopback_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(b"0123456789").await.unwrap();
        });
        let counters = ByteCounters::new();
        let mut connector = CountingConnector::new(counters.clone());
        let uri: http::Uri = format!("http://{addr}").parse().unwrap();
        let io = tower::Service::call(&mut connector, uri).await.unwrap();
        let mut stream = io.into_inner();
        stream.write_all(b"hello").await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        server.await.unwrap();
        assert_eq!(got, b"0123456789");
        assert_eq!(
            counters.snapshot(),
            ByteSnapshot {
                read: 10,
                written: 5
            }
        );
        let later = ByteSnapshot {
            read: 12,
            written: 9,
        };
        assert_eq!(
            later.since(counters.snapshot()),
            ByteSnapshot {
                read: 2,
                written: 4
            }
        );
    }
}
