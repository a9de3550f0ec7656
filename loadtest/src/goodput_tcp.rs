//! The raw TCP side of `loadtest goodput`: one loopback connection; per share the client sends
//! an 8-byte request and the server answers with the frames' bytes, one `write_all` a frame,
//! which the client reads into one reused 1 MiB buffer. The same request/stream pattern as a
//! Share call, without HTTP/2 or protobuf.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A connected raw stream pair: the client end and the serving task.
#[derive(Debug)]
pub struct RawTcp {
    client: TcpStream,
    buf: Vec<u8>,
    share_bytes: u64,
    server: JoinHandle<std::io::Result<()>>,
}

impl RawTcp {
    /// Listens on loopback, connects, and serves `frames` per request.
    pub async fn start(frames: Arc<Vec<Bytes>>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let share_bytes = frames.iter().map(|f| f.len() as u64).sum();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await?;
            socket.set_nodelay(true)?;
            let mut request = [0u8; 8];
            // Serves until the client closes its end.
            while socket.read_exact(&mut request).await.is_ok() {
                for frame in frames.iter() {
                    socket.write_all(frame).await?;
                }
            }
            Ok(())
        });
        let client = TcpStream::connect(addr).await?;
        client.set_nodelay(true)?;
        Ok(Self {
            client,
            buf: vec![0; 1 << 20],
            share_bytes,
            server,
        })
    }

    /// `shares` request/stream exchanges; their bytes and the time they took.
    pub async fn transfer(&mut self, shares: u64) -> std::io::Result<(u64, Duration)> {
        let start = Instant::now();
        let mut total = 0u64;
        for i in 0..shares {
            self.client.write_all(&i.to_le_bytes()).await?;
            let mut left = self.share_bytes;
            while left > 0 {
                let want = self.buf.len().min(left as usize);
                let n = self.client.read(&mut self.buf[..want]).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                left -= n as u64;
            }
            total += self.share_bytes;
        }
        Ok((total, start.elapsed()))
    }

    /// Closes the connection and waits for the server task.
    pub async fn stop(self) -> std::io::Result<()> {
        drop(self.client);
        self.server
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }
}
