//! A service started as its own process: spawned with a config file and a log file, waited on
//! until its gRPC health says SERVING, and stopped (killed and reaped) at the end. The child is
//! also killed when its handle is dropped (an error or Ctrl-C unwinding the benchmark), so no
//! service outlives the benchmark.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use service_kit::transport::client::ClientTransport;
use service_kit::transport::settings::ClientSettings;
use tokio::process::{Child, Command};

use super::error::BenchError;

/// Environment prefixes of the services' config overrides: cleared in the children so that
/// the generated config file is the whole configuration.
const ENV_PREFIXES: [&str; 2] = ["KVWIRE_SHARER__", "KVWIRE_RECEIVER__"];

/// A service's log is quoted whole up to this many lines; a longer one by its first
/// [`LOG_HEAD`] lines (where a start-up error is, before any backtrace) and last [`LOG_TAIL`].
const LOG_WHOLE: usize = 30;
const LOG_HEAD: usize = 15;
const LOG_TAIL: usize = 10;

/// Which service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `sharer-svc`.
    Sharer,
    /// `receiver-svc`.
    Receiver,
}

impl Role {
    /// The binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Role::Sharer => "sharer-svc",
            Role::Receiver => "receiver-svc",
        }
    }

    /// The gRPC service its health reports on.
    fn health_service(self) -> &'static str {
        match self {
            Role::Sharer => kvwire_proto::service_names::SHARER,
            Role::Receiver => kvwire_proto::service_names::RECEIVER,
        }
    }
}

/// A running service process.
#[derive(Debug)]
pub struct ServiceProcess {
    /// Which service.
    pub role: Role,
    /// `sharer`, `receiver` with the phase (for messages).
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
    child: Child,
}

/// The path of a service binary in `dir`, or a typed error when it is not there.
pub fn binary_in(dir: &Path, role: Role) -> Result<PathBuf, BenchError> {
    let path = dir.join(role.binary());
    if path.is_file() {
        Ok(path)
    } else {
        Err(BenchError::MissingBinary {
            name: role.binary(),
            path,
        })
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(BenchError::io("binding a loopback port", "127.0.0.1:0"))?;
    let port = listener
        .local_addr()
        .map_err(BenchError::io("reading the bound port", "127.0.0.1:0"))?
        .port();
    Ok(port)
}

/// A log file to quote in an error: whole when short, else its start and its end (or why it
/// cannot be read).
pub fn log_excerpt(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            if lines.len() <= LOG_WHOLE {
                return lines.join("\n");
            }
            let head = lines[..LOG_HEAD].join("\n");
            let tail = lines[lines.len() - LOG_TAIL..].join("\n");
            format!("{head}\n  ...\n{tail}")
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

impl ServiceProcess {
    /// Starts `binary --config CONFIG` with stdout and stderr into `log`, serving on `port`.
    pub fn spawn(
        role: Role,
        name: String,
        binary: &Path,
        config: &Path,
        log: PathBuf,
        port: u16,
    ) -> Result<ServiceProcess, BenchError> {
        let out = std::fs::File::create(&log).map_err(BenchError::io("creating", &log))?;
        let err = out.try_clone().map_err(BenchError::io("opening", &log))?;
        let mut command = Command::new(binary);
        command
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if ENV_PREFIXES.iter().any(|p| key_text.starts_with(p)) {
                command.env_remove(&key);
            }
        }
        let spawn_err = |source| BenchError::Spawn {
            service: name.clone(),
            binary: binary.to_path_buf(),
            source,
        };
        let child = command.spawn().map_err(spawn_err)?;
        let pid = child.id().ok_or_else(|| BenchError::Spawn {
            service: name.clone(),
            binary: binary.to_path_buf(),
            source: std::io::Error::other("the process ended at once"),
        })?;
        Ok(ServiceProcess {
            role,
            name,
            pid,
            url: format!("http://127.0.0.1:{port}"),
            log,
            child,
        })
    }

    /// An error when the process has exited, `when` naming what it had not reached.
    pub fn check_alive(&mut self, when: &'static str) -> Result<(), BenchError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exited(status.to_string(), when)),
            Err(e) => Err(self.exited(format!("cannot be waited on: {e}"), when)),
        }
    }

    fn exited(&self, status: String, when: &'static str) -> BenchError {
        BenchError::Exited {
            service: self.name.clone(),
            status,
            when,
            log: self.log.clone(),
            log_excerpt: log_excerpt(&self.log),
        }
    }

    /// Waits until the service's gRPC health reports SERVING (it loads its model first), the
    /// process exits (an error with its log), or `timeout` passes.
    pub async fn wait_healthy(&mut self, timeout: Duration) -> Result<(), BenchError> {
        let transport = ClientTransport::load(&ClientSettings::default(), "bench")
            .map_err(|e| BenchError::Invalid(e.to_string()))?;
        let start = Instant::now();
        loop {
            self.check_alive("healthy")?;
            let probe = service_kit::health::check(
                &self.url,
                self.role.health_service(),
                Duration::from_secs(2),
                &transport,
            )
            .await;
            let reason = match probe {
                Ok(()) => return Ok(()),
                Err(e) => e.to_string(),
            };
            if start.elapsed() >= timeout {
                return Err(BenchError::NotHealthy {
                    service: self.name.clone(),
                    secs: timeout.as_secs(),
                    reason,
                    log: self.log.clone(),
                    log_excerpt: log_excerpt(&self.log),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Peak resident memory so far (`VmHWM` of `/proc/PID/status`), bytes; `None` where it
    /// cannot be read (not Linux, process gone).
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line["VmHWM:".len()..]
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib * 1024)
    }

    /// Kills the process and reaps it.
    pub async fn stop(mut self) -> Result<(), BenchError> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        // A service holds nothing worth a graceful shutdown here; SIGKILL cannot be ignored.
        self.child
            .kill()
            .await
            .map_err(BenchError::io("stopping", &self.log))
    }
}
