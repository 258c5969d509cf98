//! Crash safety on the real binary: uploads in flight, `kill -9` at random
//! moments, restart, and then `spillway fsck`, the catalog and the bytes
//! must show that every acknowledged upload survived and nothing half-done
//! is left behind.
//!
//! The random schedule is printed; `SPILLWAY_CRASH_SEED=<n>` replays it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1024 * 1024;
/// Crashes to provoke (the test fails if fewer happen within the time cap).
const KILLS: usize = 40;
const MIN_KILLS: usize = 20;
const TIME_CAP: Duration = Duration::from_secs(80);
/// The keys uploads go to; a small pool, so that uploads replace each other.
const KEYS: usize = 10;

fn key_name(i: usize) -> String {
    // Some keys nested, so that parent directories are created and fsynced.
    if i.is_multiple_of(3) {
        format!("crash/deep/{i}/k{i}.bin")
    } else {
        format!("crash/k{i}.bin")
    }
}

/// One upload of an iteration.
struct Upload {
    key: String,
    size: usize,
    blake3: String,
    chunked: bool,
}

/// What the test knows of one key: the versions it may legitimately hold
/// (`None`: absent). One element once a version was acknowledged; more while
/// an unacknowledged upload may or may not have committed before the kill.
type Possible = BTreeSet<Option<String>>;

#[test]
fn kill9_during_uploads_loses_nothing_acknowledged() {
    let seed = std::env::var("SPILLWAY_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("crash schedule seed: {seed} (replay with SPILLWAY_CRASH_SEED={seed})");
    let mut rng = Rng(seed);

    let mut node = TestNode::start_with(&[("SPILLWAY_SPOOL_MEMORY", "1MiB")]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let keys: Vec<String> = (0..KEYS).map(key_name).collect();
    let mut state: BTreeMap<String, Possible> = keys.iter().map(|k| (k.clone(), BTreeSet::from([None]))).collect();

    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let (mut kills, mut acked_total, mut lost_in_flight, mut committed_unacked) = (0, 0, 0, 0);
    for round in 0..KILLS {
        if started.elapsed() > TIME_CAP {
            break;
        }
        // Several concurrent uploads to distinct keys of the pool.
        let n = 3 + rng.below(4) as usize;
        let mut pool: Vec<usize> = (0..KEYS).collect();
        let mut uploads = Vec::new();
        let mut bodies = Vec::new();
        for _ in 0..n {
            let key = keys[pool.swap_remove(rng.below(pool.len() as u64) as usize)].clone();
            let size = MIB / 2 + rng.below((16 * MIB - MIB / 2) as u64) as usize;
            let body = generated(size, rng.next());
            uploads.push(Upload { key, size, blake3: b3(&body), chunked: rng.below(2) == 0 });
            bodies.push(body);
        }
        let tasks: Vec<_> = uploads
            .iter()
            .zip(bodies)
            .map(|(u, body)| {
                let client = node.client.clone();
                let url = node.url(&format!("/data/{}", u.key));
                let chunked = u.chunked;
                rt.spawn(async move {
                    let req = client.put(url);
                    let req = if chunked {
                        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
                            body.chunks(MIB).map(|c| Ok(c.to_vec())).collect();
                        req.body(reqwest::Body::wrap_stream(futures_util::stream::iter(pieces)))
                    } else {
                        req.body(body)
                    };
                    let resp = req.send().await.ok()?;
                    let status = resp.status().as_u16();
                    let etag = resp
                        .headers()
                        .get("etag")
                        .and_then(|v| v.to_str().ok())
                        .map(|v| v.trim_matches('"').to_string());
                    // Only a whole response counts as an acknowledgement.
                    let record: serde_json::Value = resp.json().await.ok()?;
                    Some((status, etag, record))
                })
            })
            .collect();

        let delay = Duration::from_millis(rng.below(301));
        std::thread::sleep(delay);
        node.kill9();
        kills += 1;

        let results: Vec<_> = rt.block_on(async {
            let mut out = Vec::new();
            for t in tasks {
                out.push(
                    tokio::time::timeout(Duration::from_secs(30), t)
                        .await
                        .expect("an upload hung after the kill")
                        .unwrap(),
                );
            }
            out
        });
        let mut acked_now = 0;
        for (u, result) in uploads.iter().zip(&results) {
            let possible = state.get_mut(&u.key).unwrap();
            match result {
                Some((status, etag, record)) if *status == 200 || *status == 201 => {
                    acked_now += 1;
                    if etag.as_deref() != Some(u.blake3.as_str())
                        || record["blake3"] != u.blake3.as_str()
                        || record["size"] != u.size as u64
                    {
                        failures.push(format!(
                            "round {round}: `{}` acknowledged as {etag:?} / {record}, but its blake3 is {} ({} bytes)",
                            u.key, u.blake3, u.size
                        ));
                    }
                    *possible = BTreeSet::from([Some(u.blake3.clone())]);
                }
                Some((status, _, record)) => {
                    failures.push(format!("round {round}: `{}` answered {status} {record} before the kill", u.key))
                }
                None => {
                    possible.insert(Some(u.blake3.clone()));
                }
            }
        }
        acked_total += acked_now;

        // Restart (sweeps leftovers), stop it again, and fsck with it stopped.
        node.launch();
        node.kill9();
        let fsck = node.cli(&["fsck"]);
        if fsck.code != Some(0) {
            // What does the restarted node make of it, unrepaired?
            let log_start = node.log().len();
            node.launch();
            let reads = rt.block_on(probe_reads(&node));
            let reconcile: Vec<String> =
                node.log()[log_start..].lines().filter(|l| l.contains("reconcile")).map(str::to_owned).collect();
            node.kill9();
            let in_flight: Vec<String> = uploads
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_none())
                .map(|(u, _)| format!("`{}` {} bytes {}", u.key, u.size, u.blake3))
                .collect();
            failures.push(format!(
                "round {round} (kill after {delay:?}, {acked_now}/{n} acknowledged): \
                 fsck exited {:?}:\n{}{}  unacknowledged uploads in flight: {in_flight:?}\n  \
                 restarted node's reconcile log: {reconcile:?}\n  \
                 reads before repair: {reads:?}",
                fsck.code, fsck.stdout, fsck.stderr
            ));
            // Repair, so that later rounds test crashes, not this finding.
            let repair = node.cli(&["fsck", "--repair"]);
            eprintln!("round {round}: fsck --repair exited {:?}: {}", repair.code, repair.stdout);
        }
        node.launch();

        // Every key holds a version it may hold; every listed dataset's bytes
        // hash to its record.
        let listed: BTreeMap<String, serde_json::Value> =
            rt.block_on(node.list_all()).into_iter().map(|r| (r["key"].as_str().unwrap().to_string(), r)).collect();
        for key in listed.keys() {
            if !state.contains_key(key) {
                failures.push(format!("round {round}: unexpected dataset `{key}` listed"));
            }
        }
        for (key, possible) in state.iter_mut() {
            let actual = listed.get(key).map(|r| r["blake3"].as_str().unwrap().to_string());
            if !possible.contains(&actual) {
                failures.push(format!(
                    "round {round} (kill after {delay:?}): `{key}` holds {actual:?}, expected one of {possible:?}"
                ));
            }
            if possible.len() > 1 {
                let was_in_flight =
                    uploads.iter().any(|u| u.key == *key && actual.as_deref() == Some(u.blake3.as_str()));
                if was_in_flight {
                    committed_unacked += 1;
                } else {
                    lost_in_flight += 1;
                }
            }
            if let Some(record) = listed.get(key) {
                let (status, bytes) = rt.block_on(async {
                    let resp = node.get(&format!("/data/{key}")).await;
                    let status = resp.status().as_u16();
                    (status, resp.bytes().await.unwrap())
                });
                if status != 200
                    || b3(&bytes) != record["blake3"].as_str().unwrap()
                    || bytes.len() as u64 != record["size"].as_u64().unwrap()
                {
                    failures.push(format!(
                        "round {round}: GET /data/{key} answered {status} with {} bytes, blake3 {}; record {record}",
                        bytes.len(),
                        b3(&bytes)
                    ));
                }
            }
            *possible = BTreeSet::from([actual]);
        }

        // Nothing half-done: no spool/staging file, no file without a row.
        let left = node.spool_files();
        if !left.is_empty() {
            failures.push(format!("round {round}: spool/staging files after restart: {left:?}"));
        }
        let root = node.datasets_dir();
        let on_disk: BTreeSet<String> = node
            .dataset_files()
            .iter()
            .map(|p| p.strip_prefix(&root).unwrap().to_string_lossy().into_owned())
            .collect();
        let rows: BTreeSet<String> = listed.keys().cloned().collect();
        if on_disk != rows {
            failures.push(format!(
                "round {round}: files without rows {:?}, rows without files {:?}",
                on_disk.difference(&rows).collect::<Vec<_>>(),
                rows.difference(&on_disk).collect::<Vec<_>>()
            ));
        }
        eprintln!(
            "round {round}: {n} uploads, kill after {delay:?}, {acked_now} acknowledged, {} datasets ({:?} elapsed)",
            listed.len(),
            started.elapsed()
        );
    }
    eprintln!(
        "{kills} kills in {:?}: {acked_total} uploads acknowledged; of the unacknowledged \
         ones, {committed_unacked} had committed and {lost_in_flight} had not",
        started.elapsed()
    );
    assert!(kills >= MIN_KILLS, "only {kills} kills within {TIME_CAP:?} (need {MIN_KILLS})");
    assert!(acked_total > 0, "no upload was ever acknowledged before a kill: the test proved nothing");
    assert!(failures.is_empty(), "seed {seed}: {} problem(s):\n{}", failures.len(), failures.join("\n"));
}

/// Reads every listed dataset; returns what did not read back as listed.
async fn probe_reads(node: &TestNode) -> Vec<String> {
    let mut problems = Vec::new();
    for record in node.list_all().await {
        let key = record["key"].as_str().unwrap();
        let resp = node.get(&format!("/data/{key}")).await;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        if status != 200 || b3(&bytes) != record["blake3"].as_str().unwrap() {
            problems.push(format!(
                "GET /data/{key} -> {status}, {} bytes, blake3 {}, while the record says {} bytes, blake3 {}",
                bytes.len(),
                b3(&bytes),
                record["size"],
                record["blake3"]
            ));
        }
    }
    problems
}
