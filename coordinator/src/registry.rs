//! The run folder and its registry of results: `configs/`, `logs/`, `results/`, `manifests/`.
//!
//! Durability rules, so a crash at any instant loses no answered sample and duplicates none:
//! - result rows are appended one JSON line at a time and `fsync`ed before the next sample is
//!   counted as done; a line cut by a crash (no trailing newline) is ignored by readers and cut
//!   off before the next append;
//! - whole documents (configs, manifests, the per-cell done marker) are written to a temporary
//!   file, `fsync`ed and renamed over the target, so they are either old or new, never partial;
//! - a cell is skipped only when its done marker exists; within a cell, a sample is skipped
//!   when its latest row (highest attempt) is answered.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cell::Cell;
use crate::error::RegistryError;
use crate::row::ResultRow;

/// A cell with the sample ids it evaluates, as written to `configs/cells/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellPlan {
    /// The cell.
    pub cell: Cell,
    /// Example ids of its dataset slice, in evaluation order.
    pub sample_ids: Vec<String>,
}

/// A run folder.
#[derive(Debug, Clone)]
pub struct RunDir {
    root: PathBuf,
}

/// The done marker of a cell, written once all its samples are answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneMarker {
    /// The cell.
    pub cell_id: String,
    /// Number of answered samples.
    pub samples: usize,
    /// Number of tries, retries included.
    pub attempts: usize,
    /// When the cell finished, ms since the Unix epoch.
    pub finished_at_unix_ms: u64,
}

impl RunDir {
    /// Creates (or reopens) a run folder with its four sub-folders.
    pub fn create(root: impl Into<PathBuf>) -> Result<RunDir, RegistryError> {
        let dir = RunDir { root: root.into() };
        for sub in [
            dir.configs(),
            dir.logs(),
            dir.results(),
            dir.manifests(),
            dir.cell_configs(),
        ] {
            fs::create_dir_all(&sub).map_err(|e| RegistryError::io("create folder", &sub, e))?;
        }
        Ok(dir)
    }

    /// Opens an existing run folder (for `status` and `summary`).
    pub fn open(root: impl Into<PathBuf>) -> Result<RunDir, RegistryError> {
        let dir = RunDir { root: root.into() };
        let results = dir.results();
        if !results.is_dir() {
            return Err(RegistryError::io(
                "open run folder (no results/)",
                &results,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        Ok(dir)
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `configs/`: the grid and each cell's resolved config.
    pub fn configs(&self) -> PathBuf {
        self.root.join("configs")
    }
    /// `configs/cells/`.
    pub fn cell_configs(&self) -> PathBuf {
        self.configs().join("cells")
    }
    /// `logs/`.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    /// `results/`: one JSONL file per cell, done markers, `summary.csv`.
    pub fn results(&self) -> PathBuf {
        self.root.join("results")
    }
    /// `manifests/`.
    pub fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }
    /// The results file of a cell.
    pub fn rows_path(&self, cell_id: &str) -> PathBuf {
        self.results().join(format!("{cell_id}.jsonl"))
    }
    /// The done marker of a cell.
    pub fn done_path(&self, cell_id: &str) -> PathBuf {
        self.results().join(format!("{cell_id}.done.json"))
    }

    /// Whether the cell's done marker exists.
    pub fn is_done(&self, cell_id: &str) -> bool {
        self.done_path(cell_id).is_file()
    }

    /// Reads the done marker of a cell, if written.
    pub fn done_marker(&self, cell_id: &str) -> Result<Option<DoneMarker>, RegistryError> {
        let path = self.done_path(cell_id);
        if !path.is_file() {
            return Ok(None);
        }
        let text = fs::read_to_string(&path).map_err(|e| RegistryError::io("read", &path, e))?;
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| RegistryError::Json {
                path,
                message: e.to_string(),
            })
    }

    /// Marks a cell done (atomically).
    pub fn mark_done(&self, marker: &DoneMarker) -> Result<(), RegistryError> {
        write_json_atomic(&self.done_path(&marker.cell_id), marker)
    }

    /// Writes the resolved grid (cell order) and each cell's plan.
    pub fn write_plans(&self, plans: &[CellPlan]) -> Result<(), RegistryError> {
        let order: Vec<&Cell> = plans.iter().map(|p| &p.cell).collect();
        write_json_atomic(&self.configs().join("cells.json"), &order)?;
        for plan in plans {
            let path = self.cell_configs().join(format!("{}.json", plan.cell.id));
            write_json_atomic(&path, plan)?;
        }
        Ok(())
    }

    /// Reads the cell plans in grid order.
    pub fn read_plans(&self) -> Result<Vec<CellPlan>, RegistryError> {
        let order: Vec<Cell> = read_json(&self.configs().join("cells.json"))?;
        order
            .iter()
            .map(|c| read_json(&self.cell_configs().join(format!("{}.json", c.id))))
            .collect()
    }

    /// Reads a cell's rows; a missing file is an empty cell.
    pub fn read_rows(&self, cell_id: &str) -> Result<CellRows, RegistryError> {
        read_rows(&self.rows_path(cell_id))
    }

    /// Opens a cell's results file for appending, first cutting off a line torn by a crash.
    pub fn appender(&self, cell_id: &str) -> Result<RowAppender, RegistryError> {
        let path = self.rows_path(cell_id);
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| RegistryError::io("open for append", &path, e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| RegistryError::io("read", &path, e))?;
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if complete < bytes.len() {
            file.set_len(complete as u64)
                .map_err(|e| RegistryError::io("truncate torn line of", &path, e))?;
            file.sync_all()
                .map_err(|e| RegistryError::io("fsync", &path, e))?;
        }
        Ok(RowAppender {
            file,
            path,
            cell_id: cell_id.to_string(),
        })
    }
}

/// Appends rows to one cell's results file, each durable before `append` returns.
#[derive(Debug)]
pub struct RowAppender {
    file: File,
    path: PathBuf,
    cell_id: String,
}

impl RowAppender {
    /// Appends one row as one line and syncs it to disk.
    pub fn append(&mut self, row: &ResultRow) -> Result<(), RegistryError> {
        if row.cell_id != self.cell_id {
            return Err(RegistryError::WrongCell {
                file_cell: self.cell_id.clone(),
                row_cell: row.cell_id.clone(),
            });
        }
        let mut line = serde_json::to_vec(row).map_err(|e| RegistryError::Json {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .map_err(|e| RegistryError::io("append row to", &self.path, e))?;
        self.file
            .sync_data()
            .map_err(|e| RegistryError::io("fsync", &self.path, e))
    }
}

/// The rows of one cell as read from disk.
#[derive(Debug, Clone, Default)]
pub struct CellRows {
    /// Every complete row, in file order.
    pub rows: Vec<ResultRow>,
    /// Bytes of a trailing line cut by a crash (ignored).
    pub torn_tail_bytes: usize,
}

impl CellRows {
    /// The latest try of each sample (highest attempt), by sample id.
    pub fn latest(&self) -> BTreeMap<&str, &ResultRow> {
        let mut latest: BTreeMap<&str, &ResultRow> = BTreeMap::new();
        for row in &self.rows {
            let slot = latest.entry(row.sample_id.as_str()).or_insert(row);
            if row.attempt > slot.attempt {
                *slot = row;
            }
        }
        latest
    }

    /// The latest try of each sample that was answered, by sample id.
    pub fn answered(&self) -> BTreeMap<&str, &ResultRow> {
        let mut latest = self.latest();
        latest.retain(|_, r| r.is_ok());
        latest
    }

    /// The attempt number the next try of `sample_id` gets.
    pub fn next_attempt(&self, sample_id: &str) -> u32 {
        self.rows
            .iter()
            .filter(|r| r.sample_id == sample_id)
            .map(|r| r.attempt)
            .max()
            .unwrap_or(0)
            + 1
    }

    /// The samples of `wanted` that still need a try, in order: no row yet, or a latest try
    /// that failed in a way another try could change. A sample whose latest try was refused
    /// ([`ResultRow::is_refusal`]: the request cannot be served as asked, for example a byte
    /// cap below one token) is settled: the same request would be refused again.
    pub fn pending<'a>(&self, wanted: &'a [String]) -> Vec<&'a str> {
        let latest = self.latest();
        wanted
            .iter()
            .map(String::as_str)
            .filter(|id| !latest.get(id).is_some_and(|r| r.is_ok() || r.is_refusal()))
            .collect()
    }
}

/// Reads a results file; a missing file is empty, a torn last line is counted and skipped.
pub fn read_rows(path: &Path) -> Result<CellRows, RegistryError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(CellRows::default()),
        Err(e) => return Err(RegistryError::io("read", path, e)),
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut rows = Vec::new();
    for (i, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let row = serde_json::from_slice(line).map_err(|e| RegistryError::CorruptRow {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        rows.push(row);
    }
    Ok(CellRows {
        rows,
        torn_tail_bytes: bytes.len() - complete,
    })
}

/// Reads a JSON document.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, RegistryError> {
    let text = fs::read_to_string(path).map_err(|e| RegistryError::io("read", path, e))?;
    serde_json::from_str(&text).map_err(|e| RegistryError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Writes `value` as pretty JSON to `path` atomically (temp file, fsync, rename).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), RegistryError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|e| RegistryError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    text.push('\n');
    write_text_atomic(path, &text)
}

/// Writes `text` to `path` atomically (temp file, fsync, rename, fsync of the folder).
pub fn write_text_atomic(path: &Path, text: &str) -> Result<(), RegistryError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = File::create(&tmp).map_err(|e| RegistryError::io("create", &tmp, e))?;
    file.write_all(text.as_bytes())
        .map_err(|e| RegistryError::io("write", &tmp, e))?;
    file.sync_all()
        .map_err(|e| RegistryError::io("fsync", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| RegistryError::io("rename into", path, e))?;
    if let Some(parent) = path.parent()
        && let Ok(dir) = File::open(parent)
    {
        // Makes the rename itself durable; not all file systems allow syncing a folder.
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
