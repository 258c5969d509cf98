//! `spillway fsck`, `fsck --repair` and `reindex` on real data directories
//! with planted inconsistencies, and the start-up reconcile.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;

/// The finding lines of an fsck run (its summary line excluded).
fn finding_lines(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("checked ")).collect()
}

fn one_line_with<'a>(lines: &[&'a str], needles: &[&str], what: &str) -> &'a str {
    let found: Vec<&&str> = lines.iter().filter(|l| needles.iter().all(|n| l.contains(n))).collect();
    assert_eq!(found.len(), 1, "{what}: expected one finding containing {needles:?} in:\n{}", lines.join("\n"));
    found[0]
}

async fn put_ok(node: &TestNode, key: &str, body: Vec<u8>) -> serde_json::Value {
    let hash = b3(&body);
    let resp = node.put(key, body).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 201, "PUT {key}: {text}");
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["blake3"], hash.as_str(), "PUT {key}");
    record
}

async fn assert_serves(node: &TestNode, key: &str, expected: &[u8]) {
    let resp = node.get(&format!("/data/{key}")).await;
    assert_eq!(resp.status(), 200, "GET /data/{key}");
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let got = resp.bytes().await.unwrap();
    assert!(got[..] == expected[..], "GET /data/{key}: other bytes");
    assert_eq!(etag, format!("\"{}\"", b3(expected)), "GET /data/{key}: ETag");
}

fn by_key(records: Vec<serde_json::Value>) -> BTreeMap<String, serde_json::Value> {
    records.into_iter().map(|r| (r["key"].as_str().unwrap().to_string(), r)).collect()
}

/// Every kind of inconsistency, planted by hand in a stopped node's data
/// directory: fsck reports each one without changing anything, `--repair`
/// fixes the safe ones, and the node then serves the repaired state.
#[test]
fn fsck_reports_planted_inconsistencies_and_repairs_the_safe_ones() {
    let mut node = TestNode::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kept = generated(300_000, 1);
    let same_size_new = generated(200_000, 22);
    let other_size_new = generated(123_457, 33);
    let planted = generated(77_777, 44);
    rt.block_on(async {
        put_ok(&node, "gone.bin", generated(1000, 5)).await;
        put_ok(&node, "changed/same-size.bin", generated(200_000, 2)).await;
        put_ok(&node, "changed/other-size.bin", generated(500_000, 3)).await;
        put_ok(&node, "kept.txt", kept.clone()).await;
    });

    // fsck and reindex refuse to run beside the node.
    for args in [&["fsck"][..], &["fsck", "--repair"], &["reindex"]] {
        let out = node.cli(args);
        assert_eq!(out.code, Some(2), "`spillway {}` beside a running node: {out:?}", args.join(" "));
        assert!(out.stderr.contains("another spillway process"), "`spillway {}`: {out:?}", args.join(" "));
    }
    node.kill9();
    let clean = node.cli(&["fsck"]);
    assert_eq!(clean.code, Some(0), "fsck of a clean directory: {clean:?}");
    assert!(finding_lines(&clean.stdout).is_empty(), "{clean:?}");

    // Plant.
    let datasets = node.datasets_dir();
    fs::remove_file(datasets.join("gone.bin")).unwrap();
    fs::write(datasets.join("changed/same-size.bin"), &same_size_new).unwrap();
    fs::write(datasets.join("changed/other-size.bin"), &other_size_new).unwrap();
    fs::create_dir_all(datasets.join("some")).unwrap();
    fs::write(datasets.join("some/key"), &planted).unwrap();
    let spool_leftover = node.spool_dir.join(".spillway-leftover");
    let staging_leftover = node.data_dir.join("staging/.spillway-leftover");
    fs::write(&spool_leftover, b"half an upload").unwrap();
    fs::write(&staging_leftover, b"half a staged file").unwrap();
    let invalid = datasets.join("bad\\name");
    fs::write(&invalid, b"put there by hand").unwrap();

    let report = node.cli(&["fsck"]);
    assert_eq!(report.code, Some(1), "fsck with findings: {report:?}");
    let lines = finding_lines(&report.stdout);
    one_line_with(&lines, &["gone.bin", "without file"], "row without file");
    one_line_with(&lines, &["some/key", "without row"], "file without row");
    one_line_with(&lines, &["changed/same-size.bin", "200000"], "content mismatch");
    one_line_with(&lines, &["changed/other-size.bin", "500000", "123457"], "size mismatch");
    one_line_with(&lines, &[&spool_leftover.display().to_string()], "stray spool file");
    one_line_with(&lines, &[&staging_leftover.display().to_string()], "stray staging file");
    one_line_with(&lines, &["bad\\name"], "invalid name");
    // The file edited in place to another size was the blob of its first
    // version: those bytes are gone for good.
    one_line_with(&lines, &["500000 bytes", "missing or holds other bytes"], "damaged blob");
    assert_eq!(lines.len(), 8, "findings:\n{}", report.stdout);

    // Plain fsck changed nothing: the same report again, the files still there.
    let again = node.cli(&["fsck"]);
    assert_eq!(again.code, Some(1));
    assert_eq!(finding_lines(&again.stdout), lines, "a second plain fsck saw something else");
    assert!(spool_leftover.exists() && staging_leftover.exists() && invalid.exists());

    // Repair: everything but the invalid name.
    let repair = node.cli(&["fsck", "--repair"]);
    assert_eq!(
        repair.code,
        Some(1),
        "fsck --repair leaves the invalid name, so it still reports a finding: {repair:?}"
    );
    assert!(!spool_leftover.exists(), "the stray spool file survived --repair");
    assert!(!staging_leftover.exists(), "the stray staging file survived --repair");
    assert!(invalid.exists(), "--repair must not touch a file it cannot name");
    assert_eq!(fs::read(datasets.join("some/key")).unwrap(), planted);

    let after = node.cli(&["fsck"]);
    assert_eq!(after.code, Some(1), "{after:?}");
    let left = finding_lines(&after.stdout);
    assert_eq!(left.len(), 1, "after --repair:\n{}", after.stdout);
    assert!(left[0].contains("bad\\name"), "after --repair: {left:?}");

    fs::remove_file(&invalid).unwrap();
    let clean = node.cli(&["fsck"]);
    assert_eq!(clean.code, Some(0), "fsck after removing the invalid name: {clean:?}");

    // The node serves the repaired state.
    node.launch();
    rt.block_on(async {
        let listed = by_key(node.list_all().await);
        assert_eq!(
            listed.keys().map(String::as_str).collect::<Vec<_>>(),
            ["changed/other-size.bin", "changed/same-size.bin", "kept.txt", "some/key"],
            "keys after repair"
        );
        for (key, bytes) in [
            ("changed/other-size.bin", &other_size_new),
            ("changed/same-size.bin", &same_size_new),
            ("kept.txt", &kept),
            ("some/key", &planted),
        ] {
            assert_eq!(listed[key]["blake3"], b3(bytes).as_str(), "{key}: blake3");
            assert_eq!(listed[key]["size"], bytes.len() as u64, "{key}: size");
            assert_serves(&node, key, bytes).await;
        }
        assert_eq!(listed["some/key"]["name"], "key");
        assert_eq!(node.get("/datasets/gone.bin").await.status(), 404);
        assert_eq!(node.get("/data/gone.bin").await.status(), 404);
    });
}

/// The node's start-up reconcile (existence and size) logs what it finds.
#[test]
fn start_up_reconcile_logs_what_it_finds() {
    let mut node = TestNode::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        put_ok(&node, "vanished.bin", generated(1000, 1)).await;
        put_ok(&node, "resized.bin", generated(1000, 2)).await;
        put_ok(&node, "fine.bin", generated(1000, 3)).await;
    });
    node.kill9();
    fs::remove_file(node.datasets_dir().join("vanished.bin")).unwrap();
    fs::write(node.datasets_dir().join("resized.bin"), b"shorter").unwrap();
    let start = node.log().len();
    node.launch();
    let log = node.log()[start..].to_string();
    let reconcile: Vec<&str> = log.lines().filter(|l| l.contains("reconcile")).collect();
    assert!(
        reconcile.iter().any(|l| l.contains("vanished.bin")) && reconcile.iter().any(|l| l.contains("resized.bin")),
        "the start-up reconcile did not log the missing and the resized file; \
         its lines: {reconcile:?} (of {} start-up log lines)",
        log.lines().count()
    );
}

/// `reindex` rebuilds the index of 1,000 datasets: with the old index
/// present it keeps the metadata; with the index deleted it recovers every
/// dataset's size and blake3 from the files.
#[test]
fn reindex_rebuilds_the_index_of_1000_datasets() {
    const N: usize = 1000;
    let mut node = TestNode::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let key_of = |i: usize| format!("set/{:02}/item-{i:04}.bin", i % 37);
    let size_of = |i: usize| 1 + (i * 7919) % 5000;

    // 1,000 uploads, 16 at a time.
    let stored: BTreeMap<String, (u64, String)> = rt.block_on(async {
        let node = &node;
        futures_util::stream::iter(0..N)
            .map(|i| async move {
                let key = key_of(i);
                let body = generated(size_of(i), i as u64 + 1000);
                let record = put_ok(node, &key, body.clone()).await;
                assert_eq!(record["size"], body.len() as u64, "{key}");
                (key, (record["size"].as_u64().unwrap(), record["blake3"].as_str().unwrap().to_string()))
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    });
    assert_eq!(stored.len(), N);

    // Metadata on a few.
    let patched: Vec<(String, String, String)> = [3usize, 141, 592, 653, 999]
        .iter()
        .map(|&i| (key_of(i), format!("Dataset number {i}"), format!("described by hand, #{i}")))
        .collect();
    rt.block_on(async {
        for (key, name, description) in &patched {
            let resp = node
                .client
                .patch(node.url(&format!("/datasets/{key}")))
                .json(&serde_json::json!({"name": name, "description": description}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "PATCH {key}");
        }
    });
    node.kill9();

    let check = |node: &TestNode, keep_metadata: bool, what: &str| {
        rt.block_on(async {
            let listed = by_key(node.list_all().await);
            assert_eq!(listed.len(), N, "{what}: datasets listed");
            for (key, (size, blake3)) in &stored {
                let r = listed.get(key).unwrap_or_else(|| panic!("{what}: `{key}` is not listed"));
                assert_eq!(r["size"], *size, "{what}: `{key}` size");
                assert_eq!(r["blake3"], blake3.as_str(), "{what}: `{key}` blake3");
            }
            for (key, name, description) in &patched {
                if keep_metadata {
                    assert_eq!(listed[key]["name"], name.as_str(), "{what}: `{key}` name");
                    assert_eq!(listed[key]["description"], description.as_str(), "{what}: `{key}` description");
                } else {
                    let last = key.rsplit('/').next().unwrap();
                    assert_eq!(listed[key]["name"], last, "{what}: `{key}` default name");
                }
            }
            // A sample reads back whole (the rows match the files' inodes).
            for i in (0..N).step_by(50) {
                let key = key_of(i);
                let resp = node.get(&format!("/data/{key}")).await;
                assert_eq!(resp.status(), 200, "{what}: GET /data/{key}");
                let bytes = resp.bytes().await.unwrap();
                assert_eq!(b3(&bytes), stored[&key].1, "{what}: GET /data/{key}");
            }
        })
    };

    // With the old index present: metadata kept.
    let out = node.cli(&["reindex"]);
    assert_eq!(out.code, Some(0), "reindex with the old index: {out:?}");
    node.launch();
    check(&node, true, "reindex with the old index");
    node.kill9();

    // With the index deleted.
    for suffix in ["", "-wal", "-shm"] {
        let path = node.data_dir.join(format!("index.sqlite{suffix}"));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {}: {e}", path.display()),
        }
    }
    assert!(!Path::new(&node.data_dir.join("index.sqlite")).exists());
    let started = std::time::Instant::now();
    let out = node.cli(&["reindex"]);
    eprintln!("reindex of {N} files: {:?}", started.elapsed());
    assert_eq!(out.code, Some(0), "reindex without an index: {out:?}");
    assert!(out.stdout.contains(&N.to_string()), "reindex does not say how many it indexed: {out:?}");
    let fsck = node.cli(&["fsck"]);
    assert_eq!(fsck.code, Some(0), "fsck after reindex: {fsck:?}");
    node.launch();
    check(&node, false, "reindex without an index");
    assert!(node.wait_spool_empty(Duration::from_secs(1)).is_empty());
}

/// fsck names every symlink below the data directory (to a file or a
/// folder, in `datasets/` or beside it), leaves it alone even with
/// `--repair`, and exits 1 while one is there; reindex skips it.
#[test]
fn fsck_reports_symlinks_below_the_data_dir() {
    let mut node = TestNode::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        put_ok(&node, "real/file.bin", generated(1000, 7)).await;
    });
    node.kill9();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("target.txt"), b"outside").unwrap();
    let datasets = node.datasets_dir();
    let planted = [
        (datasets.join("to-file.csv"), outside.path().join("target.txt")),
        (datasets.join("real/to-dir"), outside.path().to_path_buf()),
        (node.data_dir.join("staging/link"), outside.path().join("target.txt")),
    ];
    for (link, target) in &planted {
        std::os::unix::fs::symlink(target, link).unwrap();
    }

    for args in [&["fsck"][..], &["fsck", "--repair"]] {
        let report = node.cli(args);
        assert_eq!(report.code, Some(1), "`spillway {}` with symlinks: {report:?}", args.join(" "));
        let lines = finding_lines(&report.stdout);
        for (link, _) in &planted {
            one_line_with(&lines, &["symlink", &link.display().to_string()], "a planted symlink");
        }
        assert_eq!(lines.len(), planted.len(), "findings:\n{}", report.stdout);
    }
    for (link, _) in &planted {
        assert!(fs::symlink_metadata(link).unwrap().file_type().is_symlink(), "{} was touched", link.display());
    }
    let reindex = node.cli(&["reindex"]);
    assert_eq!(reindex.code, Some(0), "{reindex:?}");
    assert!(reindex.stdout.contains("indexed 1 datasets"), "{reindex:?}");
    assert_eq!(fs::read(outside.path().join("target.txt")).unwrap(), b"outside");
}
