//! Probes of a TCP path: round-trip time of small messages and the rate of a bulk transfer,
//! each against a small server started here. They measure the relay's own overhead on
//! loopback (`coordinator link-probe`, docs/REGIME_MAP.md) and check the link profiles
//! (rate and delay) in the tests.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::relay::{Delays, Relay};

/// Serves every connection on `listener`: a connection whose first byte is `b'e'` is echoed
/// back (round-trip probes); one whose first byte is `b's'` is read to its end and answered
/// with the count of bytes read, 8 bytes little-endian (bulk probes). Runs until the listener
/// is shut down.
pub fn serve_probes(listener: TcpListener) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("probe-server".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let _ = std::thread::Builder::new()
                    .name("probe-conn".into())
                    .spawn(move || {
                        let _ = serve_one(conn);
                    });
            }
        })
}

fn serve_one(mut conn: TcpStream) -> io::Result<()> {
    conn.set_nodelay(true)?;
    let mut kind = [0u8; 1];
    conn.read_exact(&mut kind)?;
    let mut buf = vec![0u8; 64 * 1024];
    match kind[0] {
        b'e' => loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            conn.write_all(&buf[..n])?;
        },
        b's' => {
            let mut total = 0u64;
            loop {
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            conn.write_all(&total.to_le_bytes())
        }
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, "unknown probe")),
    }
}

/// Round-trip times of `pings` messages of `size` bytes on one connection (the first, which
/// opens the path, is not counted).
pub fn round_trips(stream: &mut TcpStream, pings: usize, size: usize) -> io::Result<Vec<f64>> {
    stream.set_nodelay(true)?;
    stream.write_all(b"e")?;
    let msg = vec![0x5au8; size.max(1)];
    let mut back = vec![0u8; msg.len()];
    let mut out = Vec::with_capacity(pings);
    for i in 0..=pings {
        let t = Instant::now();
        stream.write_all(&msg)?;
        stream.read_exact(&mut back)?;
        if i > 0 {
            out.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(out)
}

/// Sends `bytes` on a fresh bulk probe and waits for the server's count: bits per second of
/// the whole transfer (first byte written to the count read) and the count.
pub fn bulk_rate(mut stream: TcpStream, bytes: u64) -> io::Result<(f64, u64)> {
    stream.write_all(b"s")?;
    let chunk = vec![0xa5u8; 256 * 1024];
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    let mut count = [0u8; 8];
    stream.read_exact(&mut count)?;
    let secs = t.elapsed().as_secs_f64();
    Ok((bytes as f64 * 8.0 / secs, u64::from_le_bytes(count)))
}

/// The relay's own cost on loopback, direct path against the same path through a relay with
/// no delay, in one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overhead {
    /// Pings per path.
    pub pings: usize,
    /// Median round trip direct, ms.
    pub rtt_direct_ms: f64,
    /// Median round trip through the relay, ms.
    pub rtt_relay_ms: f64,
    /// Bytes of each bulk transfer.
    pub bulk_bytes: u64,
    /// Bulk rate direct, bit/s.
    pub rate_direct_bps: f64,
    /// Bulk rate through the relay, bit/s.
    pub rate_relay_bps: f64,
}

/// Median of `v` (`NaN` when empty).
pub fn median(v: &[f64]) -> f64 {
    eval_harness::percentile(v, 0.5).unwrap_or(f64::NAN)
}

/// Measures [`Overhead`]: `pings` round trips of 64 bytes and a bulk transfer of `bulk_bytes`,
/// each direct and through a zero-delay relay, on 127.0.0.1.
pub fn loopback_overhead(pings: usize, bulk_bytes: u64) -> io::Result<Overhead> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let server = listener.local_addr()?;
    let keep = listener.try_clone()?;
    let _server = serve_probes(listener)?;
    let relay = Relay::start(
        TcpListener::bind("127.0.0.1:0")?,
        Box::new(move || TcpStream::connect(server)),
        Delays::default(),
        None,
    )?;
    let via = relay.addr();
    let rtt = |addr: SocketAddr| -> io::Result<f64> {
        Ok(median(&round_trips(
            &mut TcpStream::connect(addr)?,
            pings,
            64,
        )?))
    };
    let rate = |addr: SocketAddr| -> io::Result<f64> {
        Ok(bulk_rate(TcpStream::connect(addr)?, bulk_bytes)?.0)
    };
    let out = Overhead {
        pings,
        rtt_direct_ms: rtt(server)?,
        rtt_relay_ms: rtt(via)?,
        bulk_bytes,
        rate_direct_bps: rate(server)?,
        rate_relay_bps: rate(via)?,
    };
    drop(relay);
    let _ = rustix::net::shutdown(&keep, rustix::net::Shutdown::Read);
    Ok(out)
}
