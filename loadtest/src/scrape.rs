//! Reading a service's Prometheus `/metrics` page: one plain HTTP/1.1 GET over TCP (the
//! exporter speaks nothing else), and the value of one sample in the text format. The load
//! generator samples the services' `process_resident_memory_bytes` and
//! `process_cpu_seconds_total` this way, so it needs no access to their processes.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest page read (the services' pages are a few tens of KiB).
const MAX_PAGE_BYTES: u64 = 16 << 20;

/// Why a page could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connecting, writing or reading failed.
    #[error("metrics at {addr}: {source}")]
    Io {
        /// The exporter's address.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// No answer within the timeout.
    #[error("metrics at {addr}: no answer within {timeout:?}")]
    Timeout {
        /// The exporter's address.
        addr: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
    /// The answer is not `HTTP/1.x 200` with a body.
    #[error("metrics at {addr}: unexpected answer {status_line:?}")]
    Status {
        /// The exporter's address.
        addr: SocketAddr,
        /// Its first line.
        status_line: String,
    },
}

/// The `/metrics` page at `addr`, as text.
pub async fn fetch(addr: SocketAddr, timeout: Duration) -> Result<String, ScrapeError> {
    let io = |source| ScrapeError::Io { addr, source };
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.map_err(io)?;
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        stream
            .take(MAX_PAGE_BYTES)
            .read_to_end(&mut raw)
            .await
            .map_err(io)?;
        Ok::<_, ScrapeError>(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ScrapeError::Timeout { addr, timeout })??;
    let text = String::from_utf8_lossy(&raw);
    let status_line = text.lines().next().unwrap_or("").to_string();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b);
    match body {
        Some(body) if status_line.starts_with("HTTP/1.") && status_line.contains(" 200") => {
            Ok(dechunk(body))
        }
        _ => Err(ScrapeError::Status { addr, status_line }),
    }
}

/// The body of a `Transfer-Encoding: chunked` answer, or `body` itself when it is not chunked
/// (the text format never starts with a hex size line followed by CRLF).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return body.to_string();
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return body.to_string();
        };
        if n == 0 {
            return out;
        }
        let Some(chunk) = after.get(..n) else {
            return body.to_string();
        };
        out.push_str(chunk);
        rest = after[n..].trim_start_matches("\r\n");
    }
}

/// The value of the first sample of `name` whose labels include every `key="value"` pair of
/// `labels` (any other labels allowed), in a page of the Prometheus text format.
pub fn value(page: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_part, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let all = labels
                .iter()
                .all(|(k, v)| label_part.contains(&format!("{k}=\"{v}\"")));
            if !all {
                return None;
            }
            value.split_whitespace().next()?.parse().ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP x_total a\n# TYPE x_total counter\n\
        x_total{service=\"receiver\",level=\"blob\"} 12\n\
        x_total{service=\"sharer\",level=\"blob\"} 7\n\
        process_resident_memory_bytes 1048576\n\
        process_resident_memory_bytes_extra 3\n";

    #[test]
    fn samples_are_found_by_name_and_labels() {
        assert_eq!(value(PAGE, "x_total", &[("service", "sharer")]), Some(7.0));
        assert_eq!(
            value(
                PAGE,
                "x_total",
                &[("level", "blob"), ("service", "receiver")]
            ),
            Some(12.0)
        );
        assert_eq!(value(PAGE, "x_total", &[("service", "none")]), None);
        assert_eq!(
            value(PAGE, "process_resident_memory_bytes", &[]),
            Some(1048576.0)
        );
        assert_eq!(value(PAGE, "process_resident", &[]), None);
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
        assert_eq!(dechunk("# HELP a b\na 1\n"), "# HELP a b\na 1\n");
    }

    #[tokio::test]
    async fn a_closed_port_is_an_io_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = fetch(addr, Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(err, ScrapeError::Io { .. }), "{err}");
    }
}
