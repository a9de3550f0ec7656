//! `coordinator merge OUT SHARD_DIR...`: N shard folders of one run ([`crate::shard`]) put back
//! together into the run folder an unsharded run of the same grid writes: the full cell plans,
//! every try's row of every cell (ordered by sample, then attempt), a done marker for every cell
//! whose samples are all settled, each shard's logs and manifests under `shard-I/`, and
//! `configs/merge.json` saying what was merged.
//!
//! Nothing is written until every check passes: the folders are shards (`configs/shard.json`)
//! of one grid (the same grid text), of one code (every invocation's manifest names the same
//! commit and dirty flag), of one split (the same count; every index once, none missing), with
//! the same full plan (the same cells and items), and each holds only its own slice (its plans
//! are its slice of the full plan; every row is a unit of that slice).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cell::Cell;
use crate::error::{MergeError, RegistryError};
use crate::grid::Shard;
use crate::manifest::GitInfo;
use crate::registry::{
    CellPlan, CellRows, DoneMarker, RunDir, read_json, write_json_atomic, write_text_atomic,
};
use crate::row::ResultRow;
use crate::shard::ShardRecord;
use crate::timestamp::now_unix_ms;

/// The part of a run manifest a merge checks.
#[derive(Debug, Deserialize)]
struct ManifestHead {
    grid_sha256: String,
    git: GitInfo,
}

/// One shard folder, read and checked on its own.
#[derive(Debug)]
struct ShardFolder {
    dir: RunDir,
    record: ShardRecord,
    git: GitInfo,
    plans: Vec<CellPlan>,
}

/// `configs/merge.json` of a merged run folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeRecord {
    /// sha256 of the grid file text.
    pub grid_sha256: String,
    /// The code every shard ran.
    pub git: GitInfo,
    /// Shard count.
    pub count: usize,
    /// The folders merged, by shard index.
    pub shards: Vec<String>,
    /// When the merge was made, ms since the Unix epoch.
    pub merged_at_unix_ms: u64,
}

/// What a merge wrote.
#[derive(Debug)]
pub struct MergeReport {
    /// The merged run folder.
    pub dir: RunDir,
    /// Its full cell plans, in grid order.
    pub plans: Vec<CellPlan>,
    /// The record written to `configs/merge.json`.
    pub record: MergeRecord,
    /// Rows merged (every try).
    pub rows: usize,
    /// Cells with every sample settled (answered, or refused for good).
    pub cells_done: usize,
}

fn code(git: &GitInfo) -> String {
    format!("{}{}", git.commit, if git.dirty { "+dirty" } else { "" })
}

fn read_shard(path: &Path) -> Result<ShardFolder, MergeError> {
    let dir = RunDir::open(path)?;
    let record = ShardRecord::read(&dir)?.ok_or_else(|| MergeError::NotAShard(path.into()))?;
    let mut manifests: Vec<PathBuf> = list_files(&dir.manifests())?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    manifests.sort();
    let mut git: Option<GitInfo> = None;
    for file in &manifests {
        let head: ManifestHead = read_json(file)?;
        if head.grid_sha256 != record.grid_sha256 {
            return Err(MergeError::DifferentGrid {
                first: ShardRecord::path(&dir),
                first_grid: record.grid_sha256.clone(),
                other: file.clone(),
                other_grid: head.grid_sha256,
            });
        }
        match &git {
            Some(g) if *g != head.git => {
                return Err(MergeError::DifferentCommit {
                    first: manifests[0].clone(),
                    first_code: code(g),
                    other: file.clone(),
                    other_code: code(&head.git),
                });
            }
            Some(_) => {}
            None => git = Some(head.git),
        }
    }
    let git = git.ok_or_else(|| MergeError::NoManifest(path.into()))?;
    let plans = dir.read_plans()?;
    Ok(ShardFolder {
        dir,
        record,
        git,
        plans,
    })
}

/// The plain files of a folder (none when it does not exist).
fn list_files(dir: &Path) -> Result<Vec<PathBuf>, RegistryError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RegistryError::io("list", dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| RegistryError::io("list", dir, e))?.path();
        if path.is_file() {
            files.push(path);
        }
    }
    Ok(files)
}

/// Checks the shards against the first one and each other; returns them by index.
fn check_split(shards: Vec<ShardFolder>) -> Result<Vec<ShardFolder>, MergeError> {
    let first = &shards[0];
    let count = first.record.shard.count;
    for other in &shards[1..] {
        let (a, b) = (
            first.dir.root().to_path_buf(),
            other.dir.root().to_path_buf(),
        );
        if other.record.grid_sha256 != first.record.grid_sha256 {
            return Err(MergeError::DifferentGrid {
                first: a,
                first_grid: first.record.grid_sha256.clone(),
                other: b,
                other_grid: other.record.grid_sha256.clone(),
            });
        }
        if other.git != first.git {
            return Err(MergeError::DifferentCommit {
                first: a,
                first_code: code(&first.git),
                other: b,
                other_code: code(&other.git),
            });
        }
        let Shard { index, count: c } = other.record.shard;
        if c != count {
            return Err(MergeError::DifferentCount {
                first: a,
                first_count: count,
                other: b,
                index,
                count: c,
            });
        }
        if other.record.cells != first.record.cells {
            return Err(MergeError::DifferentItems { first: a, other: b });
        }
    }
    let mut by_index: BTreeMap<usize, ShardFolder> = BTreeMap::new();
    for shard in shards {
        let index = shard.record.shard.index;
        if let Some(held) = by_index.get(&index) {
            return Err(MergeError::Overlap {
                index,
                first: held.dir.root().to_path_buf(),
                other: shard.dir.root().to_path_buf(),
            });
        }
        by_index.insert(index, shard);
    }
    let missing: Vec<usize> = (0..count).filter(|i| !by_index.contains_key(i)).collect();
    if !missing.is_empty() {
        return Err(MergeError::Missing { missing, count });
    }
    Ok(by_index.into_values().collect())
}

/// The full plans (the cells as the shards planned them, every sample of each).
fn full_plans(shard: &ShardFolder) -> Result<Vec<CellPlan>, MergeError> {
    let cells: Vec<&Cell> = shard.plans.iter().map(|p| &p.cell).collect();
    let ids: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
    let record_ids: Vec<&str> = shard.record.cells.iter().map(|c| c.id.as_str()).collect();
    if ids != record_ids {
        return Err(MergeError::NotItsSlice {
            path: shard.dir.root().to_path_buf(),
            what: "its cell plans are not the cells of configs/shard.json".into(),
        });
    }
    Ok(cells
        .into_iter()
        .zip(&shard.record.cells)
        .map(|(cell, full)| CellPlan {
            cell: cell.clone(),
            sample_ids: full.sample_ids.clone(),
        })
        .collect())
}

/// Every row of every shard by cell, each checked to be a unit of its shard's slice.
fn collect_rows(
    shards: &[ShardFolder],
    full: &[CellPlan],
) -> Result<Vec<Vec<ResultRow>>, MergeError> {
    let mut merged: Vec<Vec<ResultRow>> = vec![Vec::new(); full.len()];
    for shard in shards {
        let path = shard.dir.root().to_path_buf();
        let slice = shard.record.shard.slice_plans(full);
        if shard.plans != slice {
            return Err(MergeError::NotItsSlice {
                path,
                what: format!(
                    "its plans are not shard {} of the full plan",
                    shard.record.shard
                ),
            });
        }
        for (c, plan) in slice.iter().enumerate() {
            let own: BTreeSet<&str> = plan.sample_ids.iter().map(String::as_str).collect();
            for row in shard.dir.read_rows(&plan.cell.id)?.rows {
                if row.cell_id != plan.cell.id || !own.contains(row.sample_id.as_str()) {
                    return Err(MergeError::NotItsSlice {
                        path,
                        what: format!(
                            "a row of cell {} sample {} is not a unit of shard {}",
                            row.cell_id, row.sample_id, shard.record.shard
                        ),
                    });
                }
                merged[c].push(row);
            }
        }
    }
    for (rows, plan) in merged.iter_mut().zip(full) {
        let position: BTreeMap<&str, usize> = plan
            .sample_ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        rows.sort_by_key(|r| (position[r.sample_id.as_str()], r.attempt));
    }
    Ok(merged)
}

/// Rows as a results file's text (one JSON line each).
fn jsonl(path: &Path, rows: &[ResultRow]) -> Result<String, RegistryError> {
    let mut text = String::new();
    for row in rows {
        let line = serde_json::to_string(row).map_err(|e| RegistryError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        text.push_str(&line);
        text.push('\n');
    }
    Ok(text)
}

/// Copies the plain files of `from` into `to` (created).
fn copy_files(from: &Path, to: &Path) -> Result<(), RegistryError> {
    fs::create_dir_all(to).map_err(|e| RegistryError::io("create folder", to, e))?;
    for file in list_files(from)? {
        if let Some(name) = file.file_name() {
            let dest = to.join(name);
            fs::copy(&file, &dest).map_err(|e| RegistryError::io("copy into", &dest, e))?;
        }
    }
    Ok(())
}

/// Merges the shard folders `shard_dirs` into a new run folder `out`.
pub fn merge(out: &Path, shard_dirs: &[PathBuf]) -> Result<MergeReport, MergeError> {
    if shard_dirs.is_empty() {
        return Err(MergeError::NoShards);
    }
    let shards = check_split(
        shard_dirs
            .iter()
            .map(|p| read_shard(p))
            .collect::<Result<_, _>>()?,
    )?;
    let full = full_plans(&shards[0])?;
    let rows = collect_rows(&shards, &full)?;
    if out.join("configs").exists() || out.join("results").exists() {
        return Err(MergeError::OutExists(out.to_path_buf()));
    }

    let dir = RunDir::create(out)?;
    let first = &shards[0].dir;
    for name in ["grid.toml", "grid.resolved.json"] {
        let from = first.configs().join(name);
        let to = dir.configs().join(name);
        fs::copy(&from, &to).map_err(|e| RegistryError::io("copy into", &to, e))?;
    }
    dir.write_plans(&full)?;
    let mut cells_done = 0;
    for (plan, rows) in full.iter().zip(&rows) {
        let path = dir.rows_path(&plan.cell.id);
        write_text_atomic(&path, &jsonl(&path, rows)?)?;
        let cell_rows = CellRows {
            rows: rows.clone(),
            torn_tail_bytes: 0,
        };
        if !cell_rows.pending(&plan.sample_ids).is_empty() {
            continue;
        }
        let mut finished = None;
        for shard in &shards {
            let at = shard.dir.done_marker(&plan.cell.id)?;
            finished = finished.max(at.map(|m| m.finished_at_unix_ms));
        }
        dir.mark_done(&DoneMarker {
            cell_id: plan.cell.id.clone(),
            samples: plan.sample_ids.len(),
            attempts: rows.len(),
            finished_at_unix_ms: finished.unwrap_or_else(now_unix_ms),
        })?;
        cells_done += 1;
    }
    for shard in &shards {
        let sub = format!("shard-{}", shard.record.shard.index);
        copy_files(&shard.dir.logs(), &dir.logs().join(&sub))?;
        copy_files(&shard.dir.manifests(), &dir.manifests().join(&sub))?;
    }
    let record = MergeRecord {
        grid_sha256: shards[0].record.grid_sha256.clone(),
        git: shards[0].git.clone(),
        count: shards.len(),
        shards: shards
            .iter()
            .map(|s| s.dir.root().display().to_string())
            .collect(),
        merged_at_unix_ms: now_unix_ms(),
    };
    write_json_atomic(&dir.configs().join("merge.json"), &record)?;
    Ok(MergeReport {
        dir,
        plans: full,
        record,
        rows: rows.iter().map(Vec::len).sum(),
        cells_done,
    })
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
