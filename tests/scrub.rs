//! Scrubbing: `spillway scrub` re-hashes every stored blob and names each
//! corrupt one by key and version (exit 1); a corrupt dataset then answers
//! `500 corrupt-data` until its good bytes are uploaded again; the
//! background scrubber finds the same and counts it in
//! `spillway_scrub_corrupt_total`.
//!
//! Written against the contract ahead of the implementation.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::reply::send;
use common::*;

/// Where a byte is flipped in a dataset file.
const FLIP_AT: u64 = 5000;

/// Stores `body` at `key` (a PUT that must commit).
async fn store(node: &TestNode, key: &str, body: &[u8]) {
    let r = send(node.client.put(node.url(&format!("/data/{key}"))).body(body.to_vec()), &format!("PUT {key}")).await;
    assert!(r.status == 200 || r.status == 201, "PUT /data/{key}: {}", r.describe());
}

/// Flips one byte of a (read-only) dataset file in place, keeping its size
/// and its mode.
fn flip_byte(path: &Path, at: u64) {
    let mode = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode();
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut file = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(at)).unwrap();
    file.read_exact(&mut byte).unwrap();
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&[byte[0] ^ 0xFF]).unwrap();
    file.sync_all().unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Whether a line of `output` names `key` and, as a number of its own,
/// `version` (blake3 digests on the line are not searched for it).
fn names_key_and_version(output: &str, key: &str, version: u64) -> bool {
    let version = version.to_string();
    output.lines().filter(|l| l.contains(key)).any(|line| {
        line.replace(key, " ")
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|word| !(word.len() == 64 && word.chars().all(|c| c.is_ascii_hexdigit())))
            .flat_map(|word| word.split(|c: char| !c.is_ascii_digit()))
            .any(|digits| digits == version)
    })
}

/// A store with nothing wrong (shared bytes, old versions): scrub exits 0.
#[test]
fn scrub_of_a_clean_store_exits_0() {
    let mut node = TestNode::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let shared = generated(100_000, 1);
        store(&node, "clean/a.bin", &shared).await;
        store(&node, "clean/b.bin", &shared).await;
        store(&node, "clean/a.bin", &generated(50_000, 2)).await;
        store(&node, "clean/c.bin", &generated(70_000, 3)).await;
    });
    node.kill9();
    let out = node.cli(&["scrub"]);
    assert_eq!(out.code, Some(0), "scrub of a clean store: {out:?}");
}

/// A byte flipped on disk: scrub exits 1 naming the key and the version;
/// the node then answers `500 corrupt-data` for that key (its older
/// versions and other keys still serve), until the good bytes are
/// uploaded again.
#[test]
fn scrub_finds_a_flipped_byte_and_the_key_serves_corrupt_data_until_reuploaded() {
    let mut node = TestNode::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = "scrub/bad.bin";
    // Seven versions, so that the corrupt one has a number of its own.
    let bodies: Vec<Vec<u8>> = (0..7).map(|i| generated(100_000 + i, 10 + i as u64)).collect();
    let good = generated(80_000, 99);
    rt.block_on(async {
        for body in &bodies {
            store(&node, key, body).await;
        }
        store(&node, "scrub/good.bin", &good).await;
        // Another key with the same bytes: one blob, damaged for both.
        store(&node, "scrub/twin.bin", &bodies[6]).await;
    });
    node.kill9();
    flip_byte(&node.datasets_dir().join(key), FLIP_AT);
    assert_eq!(fs::metadata(node.datasets_dir().join(key)).unwrap().len(), bodies[6].len() as u64);

    let out = node.cli(&["scrub"]);
    assert_eq!(out.code, Some(1), "scrub with a flipped byte: {out:?}");
    let output = format!("{}\n{}", out.stdout, out.stderr);
    assert!(names_key_and_version(&output, key, 7), "scrub does not name `{key}` version 7:\n{output}");

    node.launch();
    rt.block_on(async {
        let r = send(node.client.get(node.url(&format!("/data/{key}"))), "GET the corrupt key").await;
        assert_problem(&r, 500, "corrupt-data", "GET a dataset whose blob scrub found corrupt");
        assert_serves(&node, "scrub/good.bin", &good).await;
        let path = format!("/data/{key}?version=6");
        let r = send(node.client.get(node.url(&path)), &path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.describe());
        assert_same_bytes(&r.body, &bodies[5], &format!("GET {path}"));

        let r = send(node.client.get(node.url("/data/scrub/twin.bin")), "GET the twin").await;
        assert_problem(&r, 500, "corrupt-data", "GET a key that shares the damaged blob");

        // Good bytes again, under one key, repair both keys' files.
        store(&node, key, &bodies[6]).await;
        assert_serves(&node, key, &bodies[6]).await;
        assert_serves(&node, "scrub/twin.bin", &bodies[6]).await;
    });
    node.kill9();
    let out = node.cli(&["scrub"]);
    assert_eq!(out.code, Some(0), "scrub after the repair: {out:?}");
}

/// The background scrubber (`scrub_every`, `scrub_rate`) finds a byte
/// flipped under a running node: `spillway_scrub_corrupt_total` counts it
/// and the key answers `500 corrupt-data`.
#[tokio::test]
async fn background_scrub_counts_corruption_in_metrics() {
    let node = TestNode::start_with(&[("SPILLWAY_SCRUB_EVERY", "1s"), ("SPILLWAY_SCRUB_RATE", "1073741824")]);
    let (bad, good) = (generated(100_000, 1), generated(80_000, 2));
    store(&node, "bg/bad.bin", &bad).await;
    store(&node, "bg/good.bin", &good).await;
    flip_byte(&node.datasets_dir().join("bg/bad.bin"), FLIP_AT);

    let metric = "spillway_scrub_corrupt_total";
    let found = eventually(Duration::from_secs(30), async || node.metric(metric).await.is_some_and(|n| n >= 1.0)).await;
    assert!(found, "{metric} did not reach 1 within 30 s: {:?}", node.metric(metric).await);
    let r = send(node.client.get(node.url("/data/bg/bad.bin")), "GET the corrupt key").await;
    assert_problem(&r, 500, "corrupt-data", "GET a dataset the background scrub found corrupt");
    assert_serves(&node, "bg/good.bin", &good).await;
}
