//! A tower layer that corrects two statuses tonic produces before any handler runs, so that a
//! client sees the codes of `docs/STATUS_CODES.md`:
//!
//! - a request message that does not decode (malformed protobuf, a string field that is not
//!   UTF-8): tonic answers INTERNAL ("failed to decode Protobuf message: ..."), the gRPC
//!   convention for a *server's* parse failure; the fault is the caller's, so INVALID_ARGUMENT
//!   with tonic's message;
//! - a service or method this server does not serve: tonic answers UNIMPLEMENTED with no
//!   message; the message now names the path and the services served;
//! - a request message over the server's decoding bound: tonic answers OUT_OF_RANGE
//!   ("decoded message length too large") with no label; it becomes INVALID_ARGUMENT (a
//!   request argument over a configured bound, as `prompt_too_long` is) with the label
//!   `request_too_large` and a message naming the size, the limit and where the limit comes
//!   from.
//!
//! Only trailers-only answers (the status in the response headers, which is how tonic answers
//! both before a handler runs) are touched; a handler's own statuses pass unchanged. Each call
//! answered so (no handler ran, so no handler counted it) is counted in the rpc metrics under
//! its final code (`metrics_catalog::count_rejected`: `malformed_request`,
//! `request_too_large`, `unimplemented`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::HeaderValue;

use crate::metrics_catalog::count_rejected;
use crate::rpc::ERROR_TYPE_KEY;

/// The prefix of prost's decode error, as tonic's codec puts it in `grpc-message`.
const DECODE_FAILURE: &str = "failed to decode Protobuf message";

/// What tonic's codec says of a message over the decoding bound (`found N bytes, the limit
/// is: M bytes` follows).
const TOO_LARGE: &str = "decoded message length too large";

/// Adds [`StatusFix`] to every request of a server that serves `served`.
#[derive(Debug, Clone)]
pub struct StatusFixLayer {
    role: &'static str,
    served: Arc<[&'static str]>,
}

impl StatusFixLayer {
    /// For a server of `role` serving these fully qualified services.
    pub fn new(role: &'static str, served: &[&'static str]) -> Self {
        Self {
            role,
            served: served.into(),
        }
    }
}

impl<S> tower::Layer<S> for StatusFixLayer {
    type Service = StatusFix<S>;

    fn layer(&self, inner: S) -> Self::Service {
        StatusFix {
            inner,
            role: self.role,
            served: Arc::clone(&self.served),
        }
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct StatusFix<S> {
    inner: S,
    role: &'static str,
    served: Arc<[&'static str]>,
}

impl<S, B, R> tower::Service<http::Request<B>> for StatusFix<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let (role, served) = (self.role, Arc::clone(&self.served));
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            if let Some((code, error_type)) = fix(response.headers_mut(), &path, &served) {
                count_rejected(role, method_label(&path, &served), code, error_type);
            }
            Ok(response)
        })
    }
}

/// Every method name of the services' protos, health and reflection: the `method` labels a
/// refused call may carry (the path is the caller's; the label set stays bounded).
const METHODS: &[&str] = &[
    "Evaluate",
    "Share",
    "Refine",
    "Release",
    "Message",
    "Answer",
    "Info",
    "Check",
    "Watch",
    "ServerReflectionInfo",
];

/// The `method` label of a refused call: the method's name (as the handlers label theirs)
/// when its service is served here and the name is one of [`METHODS`], `unserved` otherwise.
fn method_label(path: &str, served: &[&str]) -> &'static str {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !served.contains(&service) {
        return "unserved";
    }
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("unserved")
}

/// Rewrites the status in `headers` where the module documentation says; returns the final
/// code and error label of a rewritten answer.
pub(crate) fn fix(
    headers: &mut http::HeaderMap,
    path: &str,
    served: &[&str],
) -> Option<(tonic::Code, &'static str)> {
    let code = headers.get("grpc-status").map(HeaderValue::as_bytes);
    let message = headers
        .get("grpc-message")
        .map(|m| percent_decode(m.as_bytes()))
        .unwrap_or_default();
    match code {
        Some(b"13") if message.starts_with(DECODE_FAILURE) => {
            headers.insert("grpc-status", HeaderValue::from_static("3"));
            Some((tonic::Code::InvalidArgument, "malformed_request"))
        }
        Some(b"11") if message.contains(TOO_LARGE) => {
            headers.insert("grpc-status", HeaderValue::from_static("3"));
            headers.insert(
                ERROR_TYPE_KEY,
                HeaderValue::from_static("request_too_large"),
            );
            if let Ok(v) = HeaderValue::from_str(&percent_encode(&too_large_message(&message))) {
                headers.insert("grpc-message", v);
            }
            Some((tonic::Code::InvalidArgument, "request_too_large"))
        }
        Some(b"12") if message.is_empty() => {
            let text = format!(
                "{path} is not served here: unknown service or method (this server serves {})",
                served.join(", ")
            );
            if let Ok(v) = HeaderValue::from_str(&percent_encode(&text)) {
                headers.insert("grpc-message", v);
            }
            Some((tonic::Code::Unimplemented, "unimplemented"))
        }
        _ => None,
    }
}

/// The message of a request over the decoding bound: its size and the limit from tonic's
/// message (tonic's message kept after them if they cannot be read from it), and where the
/// limit comes from.
fn too_large_message(tonic_message: &str) -> String {
    let mut numbers = tonic_message
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u64>().ok());
    let sizes = match (numbers.next(), numbers.next()) {
        (Some(found), Some(limit)) => {
            format!("request message of {found} bytes is over this server's limit of {limit} bytes")
        }
        _ => format!("request message over this server's limit ({tonic_message})"),
    };
    format!(
        "{sizes}: the decoding bound is limits.max_prompt_bytes + 8 bytes per prompt token + \
         64 KiB, at most limits.max_message_bytes; shorten the prompt text"
    )
}

/// `grpc-message` encoding: printable ASCII except `%` as is, every other byte `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`percent_encode`] (lossy on invalid UTF-8; a bad escape is kept as is).
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(code: &'static str, message: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static(code));
        if let Some(m) = message {
            h.insert(
                "grpc-message",
                HeaderValue::from_str(&percent_encode(m)).unwrap(),
            );
        }
        h
    }

    #[test]
    fn decode_failures_become_invalid_argument_and_other_internals_stay() {
        let mut h = headers(
            "13",
            Some("failed to decode Protobuf message: invalid string value: data is not UTF-8"),
        );
        fix(&mut h, "/a.B/C", &["a.B"]);
        assert_eq!(h["grpc-status"], "3");
        let mut h = headers("13", Some("model: out of memory"));
        fix(&mut h, "/a.B/C", &["a.B"]);
        assert_eq!(h["grpc-status"], "13");
    }

    #[test]
    fn an_empty_unimplemented_names_the_path_and_what_is_served() {
        let mut h = headers("12", None);
        fix(&mut h, "/x.Y/Z", &["a.B", "grpc.health.v1.Health"]);
        let m = percent_decode(h["grpc-message"].as_bytes());
        assert!(
            m.contains("/x.Y/Z") && m.contains("a.B, grpc.health.v1.Health"),
            "{m}"
        );
        // A handler's own UNIMPLEMENTED keeps its message.
        let mut h = headers("12", Some("not in this build"));
        fix(&mut h, "/a.B/C", &["a.B"]);
        assert_eq!(
            percent_decode(h["grpc-message"].as_bytes()),
            "not in this build"
        );
    }

    #[test]
    fn a_request_over_the_decoding_bound_is_labelled_invalid_argument_naming_the_limit() {
        let tonic = "Error, decoded message length too large: found 4194400 bytes, the limit \
                     is: 86016 bytes";
        let mut h = headers("11", Some(tonic));
        fix(&mut h, "/a.B/C", &["a.B"]);
        assert_eq!(h["grpc-status"], "3");
        assert_eq!(h[ERROR_TYPE_KEY], "request_too_large");
        let m = percent_decode(h["grpc-message"].as_bytes());
        assert!(
            m.starts_with(
                "request message of 4194400 bytes is over this server's limit of 86016 bytes"
            ),
            "{m}"
        );
        assert!(m.contains("limits.max_message_bytes"), "{m}");
        // Another OUT_OF_RANGE is left alone.
        let mut h = headers("11", Some("position 9 past the end"));
        fix(&mut h, "/a.B/C", &["a.B"]);
        assert_eq!(h["grpc-status"], "11");
        assert!(h.get(ERROR_TYPE_KEY).is_none());
    }

    #[test]
    fn rewritten_answers_are_reported_for_counting_with_bounded_method_labels() {
        let decode = "failed to decode Protobuf message: x";
        let mut h = headers("13", Some(decode));
        let rewritten = fix(&mut h, "/a.B/Share", &["a.B"]);
        assert_eq!(
            rewritten,
            Some((tonic::Code::InvalidArgument, "malformed_request"))
        );
        let mut h = headers("12", None);
        let rewritten = fix(&mut h, "/x.Y/Z", &["a.B"]);
        assert_eq!(
            rewritten,
            Some((tonic::Code::Unimplemented, "unimplemented"))
        );
        let mut h = headers("13", Some("model: out of memory"));
        assert_eq!(fix(&mut h, "/a.B/C", &["a.B"]), None);
        assert_eq!(method_label("/a.B/Share", &["a.B"]), "Share");
        assert_eq!(method_label("/a.B/Nope", &["a.B"]), "unserved");
        assert_eq!(method_label("/x.Y/Share", &["a.B"]), "unserved");
        assert_eq!(method_label("", &["a.B"]), "unserved");
    }

    #[test]
    fn percent_coding_round_trips() {
        for s in ["plain text", "100% sure", "naïve \n line"] {
            assert_eq!(percent_decode(percent_encode(s).as_bytes()), s);
        }
    }
}
