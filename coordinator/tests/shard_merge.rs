//! `coordinator run --shard I/N` and `coordinator merge`, through the binary with embedded
//! services on random tiny models: four shards merged give the rows and the summary of one
//! unsharded run of the same grid (apart from timings), and an incomplete or overlapping set of
//! shards is refused with the reason named.

mod common;

use common::{assert_same_rows, coordinator, ok, rows, summary_without_timings, write_grid};

#[test]
fn four_shards_merged_equal_the_unsharded_run() {
    let tmp = tempfile::tempdir().unwrap();
    let grid = write_grid(tmp.path(), "sharded", 7);
    let grid = grid.to_str().unwrap();
    let path = |p: &str| tmp.path().join(p).to_str().unwrap().to_string();
    let whole = path("whole");
    ok(&["run", grid, "--out", &whole, "--no-progress"]);
    let shards = path("shards");
    let mut dirs = Vec::new();
    for i in 0..4 {
        let spec = format!("{i}/4");
        ok(&[
            "run",
            grid,
            "--out",
            &shards,
            "--shard",
            &spec,
            "--no-progress",
        ]);
        dirs.push(format!("{shards}/sharded.shard-{i}-of-4"));
    }
    let merged = path("merged");
    let mut args = vec!["merge", merged.as_str()];
    args.extend(dirs.iter().map(String::as_str));
    let out = ok(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("4/4 cells done"), "{stdout}");

    let unsharded = rows(&tmp.path().join("whole/sharded"));
    assert_eq!(unsharded.len(), 28, "4 cells x 7 items, one try each");
    // Each shard ran its own quarter of the units.
    for dir in &dirs {
        let n = rows(std::path::Path::new(dir)).len();
        assert!(n == 7, "{dir}: {n} rows");
    }
    assert_same_rows(&rows(&tmp.path().join("merged")), &unsharded);
    assert_eq!(
        summary_without_timings(&tmp.path().join("merged")),
        summary_without_timings(&tmp.path().join("whole/sharded"))
    );

    // Three of four shards, or one shard twice: refused, nothing written.
    for (label, picked, reason) in [
        (
            "missing",
            vec![&dirs[0], &dirs[1], &dirs[2]],
            "shards [3] of 4 are missing",
        ),
        (
            "overlap",
            vec![&dirs[0], &dirs[1], &dirs[2], &dirs[2]],
            "both hold shard 2",
        ),
    ] {
        let out_dir = path(label);
        let mut args = vec!["merge", out_dir.as_str()];
        args.extend(picked.iter().map(|d| d.as_str()));
        let out = coordinator(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(reason),
            "{label}: {stderr}"
        );
        assert!(!tmp.path().join(label).exists());
    }
    // A shard folder resumed as another shard is refused.
    let one_of_three = || {
        let args = [
            "run",
            grid,
            "--out",
            &shards,
            "--shard",
            "1/3",
            "--no-progress",
        ];
        coordinator(&args).output().unwrap()
    };
    assert!(
        one_of_three().status.success(),
        "another split is another folder"
    );
    std::fs::rename(
        format!("{shards}/sharded.shard-1-of-3"),
        format!("{shards}/moved"),
    )
    .unwrap();
    std::fs::rename(&dirs[1], format!("{shards}/sharded.shard-1-of-3")).unwrap();
    let out = one_of_three();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("holds shard 1/4"),
        "{stderr}"
    );
}
