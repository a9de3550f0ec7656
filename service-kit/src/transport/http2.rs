//! HTTP/2 flow-control and framing settings of the services' gRPC connections, applied on both
//! sides: the server builder of both services ([`crate::server::serve_grpc`]) and every client
//! endpoint made by [`crate::transport::client::ClientTransport`] (the receiver's channels to
//! its sharers, the coordinator's to its receiver).
//!
//! A Share stream is one KVWire frame per layer, hundreds of KiB each, flowing from the sharer
//! to the receiver. With hyper's defaults (a 16 KiB largest DATA frame, 1-2 MiB stream
//! windows) the sender stops for a WINDOW_UPDATE every window and cuts each message into many
//! small frames. `loadtest goodput` measures what the defaults and these values reach against
//! a raw TCP stream of the same bytes in the same run; `docs/OPERATIONS.md` ("Transport
//! tuning") has the figures that chose [`Http2Settings::default`].

use tonic::transport::{Endpoint, Server};

use crate::config::Problems;

/// Smallest HTTP/2 frame size a peer may announce (RFC 9113, SETTINGS_MAX_FRAME_SIZE).
pub const MIN_FRAME_BYTES: u32 = 16_384;
/// Largest HTTP/2 frame size (2^24 - 1).
pub const MAX_FRAME_BYTES: u32 = (1 << 24) - 1;
/// Largest flow-control window (2^31 - 1).
pub const MAX_WINDOW_BYTES: u32 = (1 << 31) - 1;

/// The HTTP/2 settings a connection announces: how much its peer may send before waiting and
/// how large a frame it accepts. A receiving side's windows and frame size are what bound a
/// sender's throughput. A server reads them from `[connections]`
/// ([`crate::transport::settings::ConnectionSettings::http2`]); clients use the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    /// Flow-control window of each stream (bytes the peer may send on one call before it
    /// waits for a WINDOW_UPDATE).
    pub stream_window_bytes: u32,
    /// Flow-control window of the whole connection.
    pub connection_window_bytes: u32,
    /// Largest HTTP/2 frame this side accepts (16 KiB to 16 MiB - 1).
    pub max_frame_bytes: u32,
}

impl Default for Http2Settings {
    /// The values chosen by `loadtest goodput` (`docs/OPERATIONS.md`, "Transport tuning").
    fn default() -> Self {
        Self {
            stream_window_bytes: 8 << 20,
            connection_window_bytes: 16 << 20,
            max_frame_bytes: 1 << 20,
        }
    }
}

impl Http2Settings {
    /// Records every problem under `section` (`connections`, `sharer_client`).
    pub fn check(&self, section: &str, p: &mut Problems) {
        for (key, v) in [
            ("stream_window_bytes", self.stream_window_bytes),
            ("connection_window_bytes", self.connection_window_bytes),
        ] {
            p.check(
                (65_535..=MAX_WINDOW_BYTES).contains(&v),
                &format!("{section}.{key}"),
                format!("must be 65535 (HTTP/2's initial window) to {MAX_WINDOW_BYTES}"),
            );
        }
        p.check(
            (MIN_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&self.max_frame_bytes),
            &format!("{section}.max_frame_bytes"),
            format!("must be {MIN_FRAME_BYTES} to {MAX_FRAME_BYTES} (HTTP/2's bounds)"),
        );
    }
}

/// What a server or client applies: these settings, or tonic's and hyper's own defaults
/// (the baseline of `loadtest goodput --tonic-defaults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http2Tuning {
    /// Leave tonic's builders as they are.
    TonicDefaults,
    /// Apply these settings.
    Tuned(Http2Settings),
}

impl Default for Http2Tuning {
    fn default() -> Self {
        Self::Tuned(Http2Settings::default())
    }
}

impl Http2Tuning {
    /// `builder` with these settings.
    pub fn server<L>(&self, builder: Server<L>) -> Server<L> {
        match self {
            Self::TonicDefaults => builder,
            Self::Tuned(s) => builder
                .initial_stream_window_size(s.stream_window_bytes)
                .initial_connection_window_size(s.connection_window_bytes)
                .max_frame_size(s.max_frame_bytes),
        }
    }

    /// `endpoint` with these settings.
    pub fn client(&self, endpoint: Endpoint) -> Endpoint {
        match self {
            Self::TonicDefaults => endpoint,
            Self::Tuned(s) => endpoint
                .initial_stream_window_size(s.stream_window_bytes)
                .initial_connection_window_size(s.connection_window_bytes)
                .max_frame_size(s.max_frame_bytes),
        }
    }
}

impl std::fmt::Display for Http2Tuning {
    /// What a start-up log says of it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TonicDefaults => f.write_str("HTTP/2 at tonic's defaults"),
            Self::Tuned(s) => write!(
                f,
                "HTTP/2 windows {} KiB per stream, {} KiB per connection, frames up to {} KiB",
                s.stream_window_bytes >> 10,
                s.connection_window_bytes >> 10,
                s.max_frame_bytes >> 10
            ),
        }
    }
}
