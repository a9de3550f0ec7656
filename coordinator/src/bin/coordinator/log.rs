//! The run's log file (`logs/coordinator.log`): one line per event, stamped in RFC 3339 UTC,
//! appended, so every invocation on a run folder (first run, resumes) leaves its trace.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use coordinator::timestamp::{now_unix_ms, rfc3339_utc};

/// An append-only log file; lines also go to stderr when `echo` is set.
#[derive(Debug)]
pub struct RunLog {
    file: Mutex<File>,
    echo: bool,
}

impl RunLog {
    /// Opens (or creates) the log file for appending.
    pub fn open(path: &Path, echo: bool) -> anyhow::Result<RunLog> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening log file {}", path.display()))?;
        Ok(RunLog {
            file: Mutex::new(file),
            echo,
        })
    }

    /// Writes one line, prefixed by the time in RFC 3339 UTC.
    pub fn line(&self, message: impl AsRef<str>) {
        let stamp = rfc3339_utc(now_unix_ms());
        let text = format!("{stamp} {}\n", message.as_ref());
        if self.echo {
            eprint!("{text}");
        }
        if let Ok(mut f) = self.file.lock()
            && let Err(e) = f.write_all(text.as_bytes())
        {
            eprintln!("warning: could not write to the run log: {e}");
        }
    }
}
