//! Tests of `merge` on shard folders written here (no services): the merged folder holds every
//! unit once, in the unsharded order; inconsistent shards are refused before anything is
//! written.

use super::*;
use crate::registry::write_json_atomic;
use crate::shard::ShardRecord;
use crate::testutil::{GRID, cells, row};

const COUNT: usize = 3;

fn full() -> Vec<CellPlan> {
    cells()
        .into_iter()
        .map(|cell| CellPlan {
            cell,
            sample_ids: (0..5).map(|s| format!("s{s}")).collect(),
        })
        .collect()
}

/// Writes shard `index` of [`full`] under `root` as `coordinator run --shard` would (one try per
/// unit, answered; a manifest of commit `commit`); returns its folder.
fn write_shard(root: &Path, index: usize, grid_sha: &str, commit: &str) -> PathBuf {
    let shard = Shard {
        index,
        count: COUNT,
    };
    let path = root.join(format!("g.shard-{index}-of-{COUNT}"));
    let dir = RunDir::create(&path).unwrap();
    let full = full();
    ShardRecord::new(shard, grid_sha, &full)
        .claim(&dir)
        .unwrap();
    write_text_atomic(&dir.configs().join("grid.toml"), GRID).unwrap();
    write_text_atomic(&dir.configs().join("grid.resolved.json"), "{}\n").unwrap();
    let slice = shard.slice_plans(&full);
    dir.write_plans(&slice).unwrap();
    for plan in &slice {
        let mut out = dir.appender(&plan.cell.id).unwrap();
        for s in &plan.sample_ids {
            out.append(&row(&plan.cell.id, s, 1, true)).unwrap();
        }
    }
    let manifest = serde_json::json!({
        "grid_sha256": grid_sha,
        "git": { "commit": commit, "dirty": false },
        "wall_s": 1.0,
    });
    write_json_atomic(&dir.manifests().join("run-1.json"), &manifest).unwrap();
    std::fs::write(
        dir.logs().join("coordinator.log"),
        format!("shard {index}\n"),
    )
    .unwrap();
    path
}

fn shards(root: &Path) -> Vec<PathBuf> {
    (0..COUNT)
        .map(|i| write_shard(root, i, "g1", "c1"))
        .collect()
}

#[test]
fn merged_shards_hold_every_unit_once_in_the_unsharded_order() {
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = shards(tmp.path());
    dirs.reverse();
    let report = merge(&tmp.path().join("merged"), &dirs).unwrap();
    assert_eq!(report.plans, full());
    assert_eq!((report.rows, report.cells_done), (15, 3));
    let dir = RunDir::open(tmp.path().join("merged")).unwrap();
    assert_eq!(dir.read_plans().unwrap(), full());
    for plan in full() {
        let rows = dir.read_rows(&plan.cell.id).unwrap().rows;
        let ids: Vec<&str> = rows.iter().map(|r| r.sample_id.as_str()).collect();
        assert_eq!(ids, ["s0", "s1", "s2", "s3", "s4"]);
        assert!(dir.is_done(&plan.cell.id));
    }
    for i in 0..COUNT {
        assert!(
            dir.logs()
                .join(format!("shard-{i}/coordinator.log"))
                .is_file()
        );
        assert!(
            dir.manifests()
                .join(format!("shard-{i}/run-1.json"))
                .is_file()
        );
    }
    let record: MergeRecord = read_json(&dir.configs().join("merge.json")).unwrap();
    assert_eq!((record.count, record.git.commit.as_str()), (3, "c1"));
    // The same output twice is refused.
    assert!(matches!(
        merge(&tmp.path().join("merged"), &dirs),
        Err(MergeError::OutExists(_))
    ));
}

#[test]
fn a_cell_with_an_unanswered_sample_gets_no_done_marker() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = shards(tmp.path());
    let first = full().remove(0);
    // Shard 1 holds sample s1 of the first cell; its latest try failed.
    let dir = RunDir::open(&dirs[1]).unwrap();
    let mut out = dir.appender(&first.cell.id).unwrap();
    out.append(&row(&first.cell.id, "s1", 2, false)).unwrap();
    let report = merge(&tmp.path().join("m"), &dirs).unwrap();
    assert_eq!((report.rows, report.cells_done), (16, 2));
    let rows = report.dir.read_rows(&first.cell.id).unwrap().rows;
    assert_eq!(rows[1].sample_id, "s1");
    assert_eq!((rows[2].sample_id.as_str(), rows[2].attempt), ("s1", 2));
    assert!(!report.dir.is_done(&first.cell.id));
}

fn refused(dirs: &[PathBuf], root: &Path) -> MergeError {
    let out = root.join("out");
    let err = merge(&out, dirs).unwrap_err();
    assert!(!out.exists(), "nothing is written when a merge is refused");
    err
}

#[test]
fn missing_overlapping_and_foreign_shards_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let dirs = shards(root);
    let err = refused(&dirs[..2], root);
    assert!(
        matches!(&err, MergeError::Missing { missing, count: 3 } if missing == &[2]),
        "{err}"
    );
    let twice = [dirs[0].clone(), dirs[1].clone(), dirs[1].clone()];
    assert!(matches!(
        refused(&twice, root),
        MergeError::Overlap { index: 1, .. }
    ));
    assert!(matches!(refused(&[], root), MergeError::NoShards));

    let plain = RunDir::create(root.join("plain")).unwrap();
    let with_plain = [dirs[0].clone(), plain.root().to_path_buf()];
    assert!(matches!(
        refused(&with_plain, root),
        MergeError::NotAShard(_)
    ));

    // A row of a unit that belongs to another shard.
    let first = full().remove(0);
    let dir = RunDir::open(&dirs[0]).unwrap();
    dir.appender(&first.cell.id)
        .unwrap()
        .append(&row(&first.cell.id, "s1", 1, true))
        .unwrap();
    let err = refused(&dirs, root);
    assert!(matches!(&err, MergeError::NotItsSlice { .. }), "{err}");
    assert!(err.to_string().contains("sample s1"), "{err}");
}

#[test]
fn shards_of_other_grids_code_counts_or_items_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let base = |i| write_shard(&root.join("a"), i, "g1", "c1");
    let grid = [
        base(0),
        base(1),
        write_shard(&root.join("b"), 2, "g2", "c1"),
    ];
    assert!(matches!(
        refused(&grid, root),
        MergeError::DifferentGrid { .. }
    ));
    let code = [
        base(0),
        base(1),
        write_shard(&root.join("c"), 2, "g1", "c2"),
    ];
    let err = refused(&code, root);
    assert!(matches!(&err, MergeError::DifferentCommit { .. }), "{err}");
    assert!(err.to_string().contains("c2"), "{err}");

    // One shard of a split into two.
    let other = root.join("d");
    let dir = RunDir::create(&other).unwrap();
    let record = ShardRecord::new(Shard { index: 1, count: 2 }, "g1", &full());
    record.claim(&dir).unwrap();
    let manifest =
        serde_json::json!({"grid_sha256": "g1", "git": {"commit": "c1", "dirty": false}});
    write_json_atomic(&dir.manifests().join("run-1.json"), &manifest).unwrap();
    dir.write_plans(&record.shard.slice_plans(&full())).unwrap();
    assert!(matches!(
        refused(&[base(0), other], root),
        MergeError::DifferentCount { count: 2, .. }
    ));

    // The same grid read other items in one shard.
    let items = write_shard(&root.join("e"), 2, "g1", "c1");
    let dir = RunDir::open(&items).unwrap();
    let mut changed = ShardRecord::read(&dir).unwrap().unwrap();
    changed.cells[0].sample_ids[4] = "other".into();
    write_json_atomic(&ShardRecord::path(&dir), &changed).unwrap();
    assert!(matches!(
        refused(&[base(0), base(1), items], root),
        MergeError::DifferentItems { .. }
    ));

    // A shard that never finished an invocation.
    let unfinished = write_shard(&root.join("f"), 2, "g1", "c1");
    std::fs::remove_file(unfinished.join("manifests/run-1.json")).unwrap();
    assert!(matches!(
        refused(&[base(0), base(1), unfinished], root),
        MergeError::NoManifest(_)
    ));
}
