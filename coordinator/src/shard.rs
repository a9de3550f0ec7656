//! Shards: one round-robin rule, used at two levels. A grid's dataset `shard` key takes every
//! `count`-th item of the dataset's seeded order (part of the experiment: it enters each cell's
//! id). `coordinator run --shard I/N` takes every `N`-th unit of the grid's work: the list of
//! (cell, sample) pairs in grid order, cells in expansion order and each cell's samples in
//! evaluation order. That slice leaves every cell's id as it is, so `coordinator merge` can put
//! N shard folders back together into the run folder one unsharded run writes
//! ([`crate::merge`]).
//!
//! A shard folder is an ordinary run folder whose cell plans hold the shard's slice (a cell
//! with no unit in the slice has an empty plan), plus `configs/shard.json`: the shard, the grid
//! text's sha256 and the full, unsharded plan (every cell's sample ids), so a merge can check
//! that all shards read the same grid and the same items.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::RegistryError;
use crate::grid::Shard;
use crate::registry::{CellPlan, RunDir, read_json, write_json_atomic};
use crate::runner::ReadyCell;

impl Shard {
    /// Whether the item at `position` of an ordered list belongs to this shard.
    pub fn takes(&self, position: usize) -> bool {
        self.count > 0 && position % self.count == self.index
    }

    /// The items of this shard, in their order.
    pub fn slice<T: Clone>(&self, items: &[T]) -> Vec<T> {
        items
            .iter()
            .enumerate()
            .filter(|(i, _)| self.takes(*i))
            .map(|(_, item)| item.clone())
            .collect()
    }

    /// The shard's plans: every cell of `plans`, each with the samples whose (cell, sample)
    /// unit falls in this shard.
    pub fn slice_plans(&self, plans: &[CellPlan]) -> Vec<CellPlan> {
        let mut position = 0;
        plans
            .iter()
            .map(|plan| {
                let sample_ids = plan
                    .sample_ids
                    .iter()
                    .filter(|_| {
                        position += 1;
                        self.takes(position - 1)
                    })
                    .cloned()
                    .collect();
                CellPlan {
                    cell: plan.cell.clone(),
                    sample_ids,
                }
            })
            .collect()
    }

    /// The run folder of this shard of the grid `name` under `out`: `<out>/<name>.shard-I-of-N`
    /// (a grid name has no `.`, so it never meets an unsharded run's folder).
    pub fn run_folder(&self, out: &Path, name: &str) -> PathBuf {
        out.join(format!("{name}.shard-{}-of-{}", self.index, self.count))
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// `I/N` that is not two numbers with `I < N`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shard {0:?}: expected I/N with 0 <= I < N (for example 0/4)")]
pub struct ShardParseError(pub String);

impl FromStr for Shard {
    type Err = ShardParseError;

    fn from_str(s: &str) -> Result<Shard, ShardParseError> {
        let (index, count) =
            eval_harness::parse_shard(s).ok_or_else(|| ShardParseError(s.to_string()))?;
        Ok(Shard { index, count })
    }
}

/// A cell of the full plan: its id and every sample id, in evaluation order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FullCell {
    /// Cell id.
    pub id: String,
    /// Every sample of the cell, unsharded.
    pub sample_ids: Vec<String>,
}

/// `configs/shard.json` of a shard folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardRecord {
    /// Which shard this folder holds.
    pub shard: Shard,
    /// sha256 of the grid file text.
    pub grid_sha256: String,
    /// The unsharded plan: every cell, in grid order, with all its samples.
    pub cells: Vec<FullCell>,
}

/// Why a run folder cannot hold the run asked for.
#[derive(Debug, thiserror::Error)]
pub enum ShardFolderError {
    /// The folder holds another shard, another grid, or other items.
    #[error(
        "{path} holds shard {held} of grid sha256 {held_grid}, not shard {wanted} of grid \
         sha256 {wanted_grid} with these items: use another --out, or delete that folder"
    )]
    Mismatch {
        /// The folder's shard record.
        path: PathBuf,
        /// The shard it holds.
        held: Shard,
        /// Its grid's sha256.
        held_grid: String,
        /// The shard asked for.
        wanted: Shard,
        /// The grid asked for.
        wanted_grid: String,
    },
    /// A sharded run into a folder of an unsharded run, or the other way round.
    #[error("{path}: {reason}")]
    Kind {
        /// The run folder.
        path: PathBuf,
        /// Which way round.
        reason: &'static str,
    },
    /// The folder could not be read or written.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl ShardRecord {
    /// The record of `shard` of a run whose full plan is `plans`.
    pub fn new(shard: Shard, grid_sha256: &str, plans: &[CellPlan]) -> ShardRecord {
        ShardRecord {
            shard,
            grid_sha256: grid_sha256.to_string(),
            cells: plans
                .iter()
                .map(|p| FullCell {
                    id: p.cell.id.clone(),
                    sample_ids: p.sample_ids.clone(),
                })
                .collect(),
        }
    }

    /// Where a run folder keeps it.
    pub fn path(dir: &RunDir) -> PathBuf {
        dir.configs().join("shard.json")
    }

    /// Reads a folder's record; `None` for an unsharded run folder.
    pub fn read(dir: &RunDir) -> Result<Option<ShardRecord>, RegistryError> {
        let path = ShardRecord::path(dir);
        if !path.is_file() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    /// Checks that `dir` holds this shard (or nothing yet) and writes the record.
    pub fn claim(&self, dir: &RunDir) -> Result<(), ShardFolderError> {
        let path = ShardRecord::path(dir);
        match ShardRecord::read(dir)? {
            Some(held) if held != *self => Err(ShardFolderError::Mismatch {
                path,
                held: held.shard,
                held_grid: held.grid_sha256,
                wanted: self.shard,
                wanted_grid: self.grid_sha256.clone(),
            }),
            Some(_) => Ok(()),
            None if dir.configs().join("cells.json").is_file() => Err(ShardFolderError::Kind {
                path: dir.root().to_path_buf(),
                reason: "holds an unsharded run; a shard runs in a folder of its own",
            }),
            None => Ok(write_json_atomic(&path, self)?),
        }
    }
}

/// What a run of `shard` (or of every unit, with `None`) runs: claims `dir` for the shard and
/// narrows each ready cell to the shard's slice of its samples. The full plans go into the
/// shard record; the folder's cell plans are the slices.
pub fn narrow(
    shard: Option<Shard>,
    grid_sha256: &str,
    dir: &RunDir,
    plans: Vec<CellPlan>,
    ready: Vec<ReadyCell>,
) -> Result<(Vec<CellPlan>, Vec<ReadyCell>), ShardFolderError> {
    let Some(shard) = shard else {
        refuse_shard_folder(dir)?;
        return Ok((plans, ready));
    };
    ShardRecord::new(shard, grid_sha256, &plans).claim(dir)?;
    let sliced = shard.slice_plans(&plans);
    let ready = ready
        .into_iter()
        .zip(&sliced)
        .map(|(cell, plan)| ReadyCell {
            plan: plan.clone(),
            ..cell
        })
        .collect();
    Ok((sliced, ready))
}

/// Refuses an unsharded run into a shard's folder.
pub fn refuse_shard_folder(dir: &RunDir) -> Result<(), ShardFolderError> {
    if ShardRecord::path(dir).is_file() {
        return Err(ShardFolderError::Kind {
            path: dir.root().to_path_buf(),
            reason: "holds one shard of a run (configs/shard.json); resume it with the same \
                     --shard, or combine the shards with `coordinator merge`",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;

    fn plans(samples: &[usize]) -> Vec<CellPlan> {
        samples
            .iter()
            .enumerate()
            .map(|(c, &n)| CellPlan {
                cell: testutil::cell(&format!("c{c}")),
                sample_ids: (0..n).map(|s| format!("s{s}")).collect(),
            })
            .collect()
    }

    #[test]
    fn shards_partition_the_units_in_order() {
        let full = plans(&[5, 0, 3, 1]);
        let count = 4;
        let shards: Vec<Vec<CellPlan>> = (0..count)
            .map(|index| Shard { index, count }.slice_plans(&full))
            .collect();
        for (c, plan) in full.iter().enumerate() {
            let mut back: Vec<String> = shards
                .iter()
                .flat_map(|s| s[c].sample_ids.clone())
                .collect();
            back.sort();
            let mut want = plan.sample_ids.clone();
            want.sort();
            assert_eq!(back, want, "cell {c}");
            assert!(shards.iter().all(|s| s[c].cell == plan.cell));
        }
        // Units 0..9 round-robin: c0 s0..s4 are units 0..4, c2 s0..s2 units 5..7, c3 s0 unit 8.
        let sizes: Vec<usize> = shards
            .iter()
            .map(|s| s.iter().map(|p| p.sample_ids.len()).sum())
            .collect();
        assert_eq!(sizes, [3, 2, 2, 2]);
        assert_eq!(shards[1][0].sample_ids, ["s1"]);
        assert_eq!(shards[1][2].sample_ids, ["s0"]);
        // The same rule as the dataset key's shard of a list.
        let one = Shard { index: 1, count: 3 };
        assert_eq!(one.slice(&[0, 1, 2, 3, 4, 5, 6]), [1, 4]);
    }

    #[test]
    fn shard_specs_parse_and_print() {
        let s: Shard = "2/4".parse().unwrap();
        assert_eq!(s, Shard { index: 2, count: 4 });
        assert_eq!(s.to_string(), "2/4");
        for bad in ["4/4", "x/4", "1", "-1/4", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert!(
            s.run_folder(Path::new("runs"), "g")
                .ends_with("g.shard-2-of-4")
        );
    }

    #[test]
    fn a_folder_holds_one_shard_of_one_grid() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::create(tmp.path().join("r")).unwrap();
        let full = plans(&[3]);
        let record = ShardRecord::new(Shard { index: 0, count: 2 }, "abc", &full);
        record.claim(&dir).unwrap();
        record.claim(&dir).unwrap();
        let other = ShardRecord::new(Shard { index: 1, count: 2 }, "abc", &full);
        assert!(matches!(
            other.claim(&dir),
            Err(ShardFolderError::Mismatch { .. })
        ));
        let other_grid = ShardRecord::new(Shard { index: 0, count: 2 }, "abd", &full);
        assert!(matches!(
            other_grid.claim(&dir),
            Err(ShardFolderError::Mismatch { .. })
        ));
        assert!(refuse_shard_folder(&dir).is_err());

        let plain = RunDir::create(tmp.path().join("p")).unwrap();
        refuse_shard_folder(&plain).unwrap();
        plain.write_plans(&full).unwrap();
        assert!(matches!(
            record.claim(&plain),
            Err(ShardFolderError::Kind { .. })
        ));
    }
}
