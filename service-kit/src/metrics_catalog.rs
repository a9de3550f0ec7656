//! Every metric the services emit: names, units, descriptions and histogram buckets, in one
//! place. [`describe_all`] runs at start-up so `/metrics` documents each series before its first
//! sample.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Requests by `service`, `method` and `status` (a tonic code name).
pub const RPC_REQUESTS: &str = "kvwire_rpc_requests_total";
/// Errors by `service` and stable `error_type` label.
pub const RPC_ERRORS: &str = "kvwire_rpc_errors_total";
/// Handler latency by `service` and `method`.
pub const RPC_DURATION: &str = "kvwire_rpc_duration_seconds";
/// Stage latency by `service` and `stage` (prefill, select, quantize, encode, transfer, ...).
pub const STAGE_DURATION: &str = "kvwire_stage_duration_seconds";
/// Bytes by `service` and `level`: `blob` (KVWire frames), `grpc_message`, `text`,
/// `transport_read`/`transport_written` (the server's own connections, TLS records under TLS)
/// and, on the receiver, `link_read`/`link_written` (its connections to sharers).
pub const BYTES: &str = "kvwire_bytes_total";
/// KVWire frames sent (sharer) or decoded (receiver), by `service`.
pub const FRAMES: &str = "kvwire_frames_total";
/// Refinement sessions currently held by the sharer.
pub const SESSIONS_ACTIVE: &str = "kvwire_sessions_active";
/// Sessions that left the sharer's store, by `reason` (ttl, client_limit, released).
pub const SESSIONS_EVICTED: &str = "kvwire_sessions_evicted_total";
/// The receiver's Release calls that freed nothing, by `reason` (`not_held`: the session was
/// gone already; else the call's status code).
pub const SESSION_RELEASES_FAILED: &str = "kvwire_session_releases_failed_total";

/// Connections a server closed itself, by `service` and `reason` (`limit`: over
/// `connections.max_connections`; `handshake_timeout`; `idle_timeout`).
pub const CONNECTIONS_CLOSED: &str = "kvwire_connections_closed_total";

/// Resident set size of the process, bytes (Prometheus' standard process metric name).
pub const PROCESS_RSS: &str = "process_resident_memory_bytes";
/// User plus system CPU time of the process, seconds (a gauge set to the kernel's running
/// total: the `metrics` counters are integers, and whole seconds are too coarse for `rate`).
pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
/// Threads of the process.
pub const PROCESS_THREADS: &str = "process_threads";
/// Open file descriptors of the process (sockets included).
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";

/// Buckets of the latency histograms, in seconds: 25 us to 60 s. Measured stages span that
/// range: on the 2-core CPU VM (README) decode is 0.2-0.4 ms and the identity `project`
/// 0.1-0.2 ms, C2C's fuse about 11 ms, prefills 50-450 ms and whole evaluations 0.4-1 s (up
/// to 7 s queued under the 64-session soak); on the H200 whole evaluations at 2,048 tokens took
/// 44-395 ms (receiver end-to-end p50s, README); decode is host-side KVWire decoding on
/// either (no GPU stage histogram was recorded for this choice).
/// With 1 ms as the lowest bucket every decode and project sample fell in the first bucket.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Describes every metric (unit and help text). Harmless when no recorder is installed.
pub fn describe_all() {
    describe_counter!(
        RPC_REQUESTS,
        Unit::Count,
        "gRPC requests handled, by service, method and status code"
    );
    describe_counter!(
        RPC_ERRORS,
        Unit::Count,
        "gRPC requests that failed, by service and error type"
    );
    describe_histogram!(
        RPC_DURATION,
        Unit::Seconds,
        "gRPC handler latency, by service and method"
    );
    describe_histogram!(
        STAGE_DURATION,
        Unit::Seconds,
        "Latency of one pipeline stage, by service and stage"
    );
    describe_counter!(
        BYTES,
        Unit::Bytes,
        "Bytes moved, by service and accounting level"
    );
    describe_counter!(
        FRAMES,
        Unit::Count,
        "KVWire frames sent or decoded, by service"
    );
    describe_gauge!(
        SESSIONS_ACTIVE,
        Unit::Count,
        "Refinement sessions held in the sharer's store"
    );
    describe_counter!(
        SESSIONS_EVICTED,
        Unit::Count,
        "Sessions that left the sharer's store, by reason"
    );
    describe_counter!(
        SESSION_RELEASES_FAILED,
        Unit::Count,
        "Receiver Release calls that freed no session, by reason"
    );
    describe_gauge!(
        PROCESS_RSS,
        Unit::Bytes,
        "Resident set size of the service process"
    );
    describe_gauge!(
        PROCESS_CPU,
        Unit::Seconds,
        "User and system CPU time of the service process (a running total)"
    );
    describe_gauge!(
        PROCESS_THREADS,
        Unit::Count,
        "Threads of the service process"
    );
    describe_gauge!(
        PROCESS_OPEN_FDS,
        Unit::Count,
        "Open file descriptors of the service process"
    );
    describe_counter!(
        CONNECTIONS_CLOSED,
        Unit::Count,
        "Connections the server closed: over the connection limit, or past the handshake or \
         idle timeout"
    );
}

/// Counts one connection closed by the server for `reason`.
pub fn count_closed_connection(service: &'static str, reason: &'static str) {
    metrics::counter!(CONNECTIONS_CLOSED, "service" => service, "reason" => reason).increment(1);
}

/// Counts one call the server answered before any handler ran (tonic's decoding, an unknown
/// method, a request over the decoding bound): as a request with its `status` under `method`
/// and as an error of `error_type`, as the handlers' own failures are counted. No latency is
/// recorded (no handler ran).
pub fn count_rejected(
    service: &'static str,
    method: &'static str,
    status: tonic::Code,
    error_type: &'static str,
) {
    metrics::counter!(RPC_REQUESTS, "service" => service, "method" => method, "status" => code_label(status))
        .increment(1);
    metrics::counter!(RPC_ERRORS, "service" => service, "error_type" => error_type).increment(1);
}

/// Records one stage latency given in milliseconds.
pub fn record_stage_ms(service: &'static str, stage: &'static str, ms: f64) {
    metrics::histogram!(STAGE_DURATION, "service" => service, "stage" => stage).record(ms / 1e3);
}

/// Adds bytes at one accounting level.
pub fn add_bytes(service: &'static str, level: &'static str, bytes: u64) {
    metrics::counter!(BYTES, "service" => service, "level" => level).increment(bytes);
}

/// Records the outcome of one rpc: count by status, latency, and the error type on failure.
pub fn record_rpc(
    service: &'static str,
    method: &'static str,
    status: tonic::Code,
    error_type: Option<&'static str>,
    seconds: f64,
) {
    metrics::counter!(RPC_REQUESTS, "service" => service, "method" => method, "status" => code_label(status))
        .increment(1);
    metrics::histogram!(RPC_DURATION, "service" => service, "method" => method).record(seconds);
    if let Some(error_type) = error_type {
        metrics::counter!(RPC_ERRORS, "service" => service, "error_type" => error_type)
            .increment(1);
    }
}

/// A stable, bounded label for a gRPC status code.
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}
