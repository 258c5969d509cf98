//! Several stateless nodes over one catalog: bytes in an S3-compatible store
//! (a real Garage, one node or a three-node cluster), the catalog in a real
//! PostgreSQL. Two Spillway nodes, each with its own data directory, answer
//! for the same datasets; concurrent writers through different nodes are
//! serialised by the index (never a mix, `If-None-Match: *` admits one);
//! signed URLs work across nodes; resumable uploads in progress continue on
//! any node (more in tests/cluster_tus.rs), belong to their token and are
//! capped across nodes; nodes start together on an empty database; a
//! Garage cluster losing a node keeps serving; a node killed mid-upload
//! comes back with every row matching its object; a PostgreSQL that goes
//! away (refusing connections, or never answering them) means 503 within a
//! few connect timeouts, never 500, until it is back; and
//! `postgres_tls = "require"` speaks TLS only to a server whose certificate
//! a trusted CA signed.
//!
//! Each test skips (with a line on stderr) when Garage or PostgreSQL is not
//! installed, unless `SPILLWAY_REQUIRE_CLUSTER=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::{self, Garage, Postgres};
use common::pair::*;
use common::reply::{fed_body, send, Reply};
use common::*;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// One token of every scope, for the tests that need access control.
const TOKENS: &str = r#"[{name="ci",token="cluster-secret",scopes=["admin"]}]"#;
const BEARER: &str = "Bearer cluster-secret";
/// Bound on any one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// 1. Two nodes, one catalog
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_catalog_and_one_bucket() {
    let Some(pair) = two_nodes(&[]) else {
        return;
    };
    let (a, b) = (&pair.a, &pair.b);

    let small = generated(100 * KIB + 7, 1);
    let big = generated(20 * MIB, 2);
    let r = put_ok(a, "shared/small.csv?name=Small", &small, &[("Content-Type", "text/csv")]).await;
    assert_eq!(r.status, 201, "{}", r.describe());
    let r = put_ok(a, "shared/big.bin", &big, &[]).await;
    assert_eq!(r.status, 201, "{}", r.describe());
    // A chunked upload too (no Content-Length: streamed into parts as it comes).
    let (body, hashes) = generated_stream(20 * MIB as u64 + 12_345, 3, MIB);
    let req = a.client.put(a.url("/data/shared/chunked.bin")).body(body);
    let r = send(req, "PUT /data/shared/chunked.bin (chunked) on A").await;
    assert_eq!(r.status, 201, "chunked PUT: {}", r.describe());
    let chunked_b3 = hashes.lock().unwrap().0.finalize().to_hex().to_string();
    assert_eq!(r.etag().as_deref(), Some(chunked_b3.as_str()), "chunked PUT: ETag");

    // The bytes are in the bucket, not on either node's disk.
    assert!(a.dataset_files().is_empty(), "A keeps dataset files: {:?}", a.dataset_files());
    assert!(b.dataset_files().is_empty(), "B keeps dataset files: {:?}", b.dataset_files());

    // B lists what A stored.
    let listed = list(b, "shared/", &[]).await;
    assert_eq!(keys_of(&listed), ["shared/big.bin", "shared/chunked.bin", "shared/small.csv"], "list on B");
    let by_key: BTreeMap<String, serde_json::Value> =
        listed.into_iter().map(|r| (r["key"].as_str().unwrap().to_string(), r)).collect();
    assert_eq!(by_key["shared/small.csv"]["blake3"], b3(&small));
    assert_eq!(by_key["shared/small.csv"]["name"], "Small");
    assert_eq!(by_key["shared/small.csv"]["content_type"], "text/csv");
    assert_eq!(by_key["shared/big.bin"]["blake3"], b3(&big));
    assert_eq!(by_key["shared/big.bin"]["size"], big.len() as u64);
    assert_eq!(by_key["shared/chunked.bin"]["blake3"], chunked_b3);

    // B serves the bytes, whole and in ranges (across the 8 MiB part boundary too).
    assert_downloads(b, "shared/small.csv", &small, &[]).await;
    assert_downloads(b, "shared/big.bin", &big, &[]).await;
    let r = call(b, "GET", "/data/shared/chunked.bin", &[], None).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_eq!((r.body.len(), b3(&r.body)), (20 * MIB + 12_345, chunked_b3.clone()), "chunked dataset on B");
    let total = big.len();
    for (range, from, to) in [
        (format!("bytes={}-{}", PART - 10, PART + 10), PART - 10, PART + 10),
        ("bytes=-1000".to_string(), total - 1000, total - 1),
        (format!("bytes={}-", 2 * PART - 1), 2 * PART - 1, total - 1),
        ("bytes=0-0".to_string(), 0, 0),
    ] {
        let r = call(b, "GET", "/data/shared/big.bin", &[("Range", &range)], None).await;
        assert_eq!(r.status, 206, "Range {range} on B: {}", r.describe());
        assert_eq!(r.header("content-range"), Some(format!("bytes {from}-{to}/{total}").as_str()), "Range {range}");
        assert!(r.body == big[from..=to], "Range {range} on B: wrong bytes ({} of them)", r.body.len());
        assert_eq!(r.etag().as_deref(), Some(b3(&big).as_str()), "Range {range}: ETag");
    }
    let r = call(b, "GET", "/data/shared/big.bin", &[("Range", &format!("bytes={total}-"))], None).await;
    assert_eq!(r.status, 416, "unsatisfiable Range on B: {}", r.describe());
    let r = call(b, "HEAD", "/data/shared/big.bin", &[], None).await;
    assert_eq!(r.status, 200, "HEAD on B: {}", r.describe());
    assert_eq!(r.header("content-length"), Some(total.to_string().as_str()), "HEAD on B");
    let etag = format!("\"{}\"", b3(&big));
    let r = call(b, "GET", "/data/shared/big.bin", &[("If-None-Match", &etag)], None).await;
    assert_eq!(r.status, 304, "If-None-Match on B: {}", r.describe());

    // Metadata changed on B is seen on A.
    let patch = serde_json::json!({"name": "Renamed", "description": "via B", "tags": ["x", "y"]});
    let r = call(
        b,
        "PATCH",
        "/datasets/shared/small.csv",
        &[("Content-Type", "application/json")],
        Some(patch.to_string().into_bytes()),
    )
    .await;
    assert_eq!(r.status, 200, "PATCH on B: {}", r.describe());
    let on_a = record(a, "shared/small.csv", &[]).await;
    assert_eq!(on_a.status, 200, "{}", on_a.describe());
    let on_a = on_a.json();
    assert_eq!((on_a["name"].clone(), on_a["description"].clone()), ("Renamed".into(), "via B".into()), "{on_a}");
    assert_eq!(on_a["tags"], serde_json::json!(["x", "y"]), "{on_a}");

    // A replace through B is what A serves next.
    let newer = generated(300 * KIB, 4);
    let r = put_ok(b, "shared/small.csv", &newer, &[]).await;
    assert_eq!(r.status, 200, "replace on B: {}", r.describe());
    assert_downloads(a, "shared/small.csv", &newer, &[]).await;

    // Deleted on B: gone on A.
    let r = call(b, "DELETE", "/datasets/shared/small.csv", &[], None).await;
    assert_eq!(r.status, 204, "DELETE on B: {}", r.describe());
    let r = call(a, "GET", "/data/shared/small.csv", &[], None).await;
    assert_eq!((r.status, r.code().as_deref()), (404, Some("not-found")), "GET after delete on A: {}", r.describe());
    let r = record(a, "shared/small.csv", &[]).await;
    assert_eq!((r.status, r.code().as_deref()), (404, Some("not-found")), "record after delete on A: {}", r.describe());
    assert_eq!(keys_of(&list(a, "shared/", &[]).await), ["shared/big.bin", "shared/chunked.bin"], "list on A");
    let r = call(a, "DELETE", "/datasets/shared/big.bin", &[], None).await;
    assert_eq!(r.status, 204, "DELETE on A: {}", r.describe());
    let r = call(b, "GET", "/data/shared/big.bin", &[], None).await;
    assert_eq!(r.status, 404, "GET on B after delete on A: {}", r.describe());
    assert_eq!(keys_of(&list(b, "shared/", &[]).await), ["shared/chunked.bin"], "list on B");

    assert_no_panic(a, "A");
    assert_no_panic(b, "B");
}

// ---------------------------------------------------------------------------
// 2. Concurrent writers, one key
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_through_two_nodes_never_mix() {
    let Some(pair) = two_nodes(&[]) else {
        return;
    };
    let (a, b) = (&pair.a, &pair.b);
    const ROUNDS: usize = 6;
    // Small bodies go in one PUT at the commit; bodies over 8 MiB stream
    // into multipart uploads completed at the commit.
    let size =
        |round: usize, which: usize| if (round + which).is_multiple_of(2) { 2 * MIB + round } else { 9 * MIB + round };

    // Three kinds of rounds, on one key: `If-None-Match: *` on both (on a
    // fresh key each round: exactly one creates it, the other gets 412),
    // `If-Match` on the same current ETag on both (exactly one replaces
    // it), and plain PUTs (both succeed, the later commit stays). Always:
    // both nodes agree on the record, and serve exactly its bytes, which
    // are one body whole. Unexpected answers are collected so that the
    // report says how often they happen.
    let mut unexpected = Vec::new();
    for (mode, seed) in [("If-None-Match", 2000u64), ("If-Match", 3000), ("plain", 1000)] {
        for round in 0..ROUNDS {
            let key = match mode {
                "If-None-Match" => format!("race/once-{round}.bin"),
                _ => "race/same.bin".to_string(),
            };
            if mode == "If-Match" && round == 0 {
                // A current version to match, written alone.
                put_ok(a, &key, &generated(MIB, 999), &[]).await;
            }
            let before = record(a, &key, &[]).await;
            let before = (before.status == 200).then(|| before.json()["blake3"].as_str().unwrap().to_string());
            let body_a = generated(size(round, 0), seed + 2 * round as u64);
            let body_b = generated(size(round, 1), seed + 1 + 2 * round as u64);
            let if_match = format!("\"{}\"", before.clone().unwrap_or_default());
            let headers: Vec<(&str, &str)> = match mode {
                "If-None-Match" => vec![("If-None-Match", "*")],
                "If-Match" => vec![("If-Match", &if_match)],
                _ => vec![],
            };
            let (ra, rb) = tokio::join!(put(a, &key, &body_a, &headers), put(b, &key, &body_b, &headers));
            let ok = |r: &Reply| r.status == 200 || r.status == 201;
            let refused = |r: &Reply| r.status == 412 && r.code().as_deref() == Some("precondition-failed");
            let as_expected = match mode {
                "plain" => ok(&ra) && ok(&rb),
                _ => (ok(&ra) && refused(&rb)) || (refused(&ra) && ok(&rb)),
            };
            if !as_expected {
                unexpected.push(format!(
                    "{mode} round {round}: {} bytes through A and {} through B at once: A {} / B {}",
                    body_a.len(),
                    body_b.len(),
                    ra.describe(),
                    rb.describe()
                ));
            }
            for (r, body, name) in [(&ra, &body_a, "A"), (&rb, &body_b, "B")] {
                if ok(r) {
                    assert_eq!(r.etag(), Some(b3(body)), "{mode} round {round}: {name}'s ETag");
                }
            }
            // Whatever the answers, the key holds one body whole: one that
            // succeeded (the later, for plain PUTs), or the one before.
            let rec_a = record(a, &key, &[]).await;
            let rec_b = record(b, &key, &[]).await;
            assert_eq!(rec_a.body, rec_b.body, "{mode} round {round}: the record differs between A and B");
            let stored = (rec_a.status == 200).then(|| rec_a.json()["blake3"].as_str().unwrap().to_string());
            let succeeded: Vec<&Vec<u8>> =
                [(&ra, &body_a), (&rb, &body_b)].into_iter().filter(|(r, _)| ok(r)).map(|(_, b)| b).collect();
            match succeeded.iter().find(|b| Some(b3(b)) == stored) {
                Some(body) => {
                    assert_downloads(a, &key, body, &[]).await;
                    assert_downloads(b, &key, body, &[]).await;
                }
                None => {
                    assert!(
                        succeeded.is_empty() && stored == before,
                        "{mode} round {round}: the key holds {stored:?}, not a body that succeeded; A {} / B {}",
                        ra.describe(),
                        rb.describe()
                    );
                }
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "{} of {} rounds of simultaneous PUTs answered unexpectedly:\n{}\n--- A's log ---\n{}\n--- B's log ---\n{}",
        unexpected.len(),
        3 * ROUNDS,
        unexpected.join("\n"),
        log_lines(a, &["WARN", "ERROR", "spillway::error"]),
        log_lines(b, &["WARN", "ERROR", "spillway::error"])
    );

    assert_no_panic(a, "A");
    assert_no_panic(b, "B");
}

/// The deterministic form of the race above: a big PUT is streaming into
/// its multipart upload (through B) when another write to the same key
/// (through A) commits. The streaming PUT must still commit when its body
/// ends (last writer wins), not fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_landing_while_a_big_put_streams_to_the_same_key_does_not_break_it() {
    let Some(pair) = two_nodes(&[]) else {
        return;
    };
    let (a, b) = (&pair.a, &pair.b);
    let mut failures = Vec::new();
    let cases: [(&str, &str); 2] = [("PUT", "stream/put-meanwhile.bin"), ("DELETE", "stream/delete-meanwhile.bin")];
    for (i, (meanwhile, key)) in cases.into_iter().enumerate() {
        let first = generated(64 * KIB, 60 + i as u64);
        put_ok(a, key, &first, &[]).await;
        // 9 MiB of a 10 MiB body through B: past the 8 MiB in-memory spool,
        // so its multipart upload is open and its first part sent.
        let big = generated(10 * MIB, 70 + i as u64);
        let (tx, body) = fed_body();
        let req = b.client.put(b.url(&format!("/data/{key}"))).body(body);
        let streaming = tokio::spawn(send(req, "the streaming PUT on B"));
        for chunk in big[..9 * MIB].chunks(MIB) {
            tx.send(chunk.to_vec()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Meanwhile, through A, another write to the key commits.
        let other = generated(128 * KIB, 80 + i as u64);
        let r = match meanwhile {
            "PUT" => put(a, key, &other, &[]).await,
            _ => call(a, "DELETE", &format!("/datasets/{key}"), &[], None).await,
        };
        assert!(r.status == 200 || r.status == 204, "{meanwhile} {key} on A while B streams: {}", r.describe());
        // The rest of the body; B's PUT commits last, so it wins.
        tx.send(big[9 * MIB..].to_vec()).await.unwrap();
        drop(tx);
        let r = tokio::time::timeout(REQUEST_TIMEOUT, streaming).await.expect("the streaming PUT answers").unwrap();
        let want = if meanwhile == "PUT" { 200 } else { 201 };
        if r.status != want || r.etag() != Some(b3(&big)) {
            failures.push(format!(
                "{meanwhile} of `{key}` committed through A while a 10 MiB PUT of it streamed through B: \
                 expected {want} with ETag {}, got {}\n  B's log: {}",
                b3(&big),
                r.describe(),
                log_lines(b, &[key, "WARN", "ERROR"]).replace('\n', "\n    ")
            ));
        }
        // Whatever happened, the row and the object agree.
        let rec = record(a, key, &[]).await;
        if rec.status == 200 {
            let stored = rec.json()["blake3"].as_str().unwrap().to_string();
            let body = [&big, &other].into_iter().find(|b| b3(b) == stored);
            let body = body.unwrap_or_else(|| panic!("`{key}`: the row's blake3 {stored} is neither upload's"));
            assert_downloads(a, key, body, &[]).await;
            assert_downloads(b, key, body, &[]).await;
        } else {
            assert_eq!(rec.status, 404, "{}", rec.describe());
            let r = call(b, "GET", &format!("/data/{key}"), &[], None).await;
            assert_eq!(r.status, 404, "no row but B serves `{key}`: {}", r.describe());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_no_panic(a, "A");
    assert_no_panic(b, "B");
}

// ---------------------------------------------------------------------------
// 3. Shared signing key
// ---------------------------------------------------------------------------

/// Mints a download URL for `key` on `node` (with the token).
async fn download_url(node: &TestNode, key: &str) -> String {
    let body = serde_json::json!({"expires_in": 600}).to_string().into_bytes();
    let headers = [("Authorization", BEARER), ("Content-Type", "application/json")];
    let r = call(node, "POST", &format!("/datasets/{key}/download-url"), &headers, Some(body)).await;
    assert_eq!(r.status, 200, "download-url on {}: {}", node.base, r.describe());
    let v = r.json();
    assert_eq!(v["method"], "GET", "{v}");
    let url = v["url"].as_str().unwrap().to_string();
    // Relative to the node (or absolute): keep the path and query.
    match url.strip_prefix("http://") {
        Some(rest) => rest[rest.find('/').unwrap()..].to_string(),
        None => url,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_url_minted_on_one_node_works_on_another() {
    let Some(mut pair) = two_nodes(&[("SPILLWAY_TOKENS", TOKENS)]) else {
        return;
    };
    let (a, b) = (&pair.a, &mut pair.b);
    let auth = [("Authorization", BEARER)];
    let body = generated(200 * KIB, 7);
    put_ok(a, "signed/report.bin", &body, &auth).await;

    // Without a token or signature B refuses; with A's signature it serves.
    let r = call(b, "GET", "/data/signed/report.bin", &[], None).await;
    assert_eq!(r.status, 401, "no token on B: {}", r.describe());
    let url = download_url(a, "signed/report.bin").await;
    assert!(url.starts_with("/data/signed/report.bin?") && url.contains("sig="), "{url}");
    let r = call(b, "GET", &url, &[], None).await;
    assert_eq!(r.status, 200, "A's signed URL on B: {}\n{}", r.describe(), log_lines(b, &["signing", "403"]));
    assert!(r.body == body, "A's signed URL on B: wrong bytes");
    let r = call(b, "HEAD", &url, &[], None).await;
    assert_eq!(r.status, 200, "HEAD with A's signed URL on B: {}", r.describe());
    let r = call(b, "GET", &url, &[("Range", "bytes=10-19")], None).await;
    assert_eq!(r.status, 206, "Range with A's signed URL on B: {}", r.describe());
    assert!(r.body == body[10..20]);

    // The signature is really checked on B: tampered, or used on another key, it fails.
    let sig_at = url.find("sig=").unwrap() + 4;
    let mut tampered = url.clone().into_bytes();
    tampered[sig_at] = if tampered[sig_at] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let r = call(b, "GET", &tampered, &[], None).await;
    assert_eq!((r.status, r.code().as_deref()), (403, Some("forbidden")), "tampered URL on B: {}", r.describe());
    let other = url.replacen("report.bin", "other.bin", 1);
    let r = call(b, "GET", &other, &[], None).await;
    assert_eq!(r.status, 403, "signed URL for another key on B: {}", r.describe());

    // The other way round, and after B restarts (the key is in the index, not in B's memory).
    let url_b = download_url(b, "signed/report.bin").await;
    let r = call(a, "GET", &url_b, &[], None).await;
    assert_eq!(r.status, 200, "B's signed URL on A: {}", r.describe());
    b.restart();
    let r = call(b, "GET", &url, &[], None).await;
    assert_eq!(r.status, 200, "A's signed URL on B after B restarted: {}", r.describe());
    assert!(!b.data_dir.join("signing.key").exists(), "B generated its own signing.key in its data dir");

    assert_no_panic(a, "A");
    assert_no_panic(b, "B");
}

// ---------------------------------------------------------------------------
// 4. tus across nodes
// ---------------------------------------------------------------------------

/// With the S3 store, an upload in progress is in the bucket and the
/// index, not on the node that created it: the other node answers HEAD
/// with its offset, takes PATCHes, and commits it; an upload terminated
/// through the node that did not create it is gone on both. Nothing of
/// either stays in the bucket. (tests/cluster_tus.rs has the rest: round
/// robin, a node dying mid-PATCH, racing PATCHes, expiry.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumable_upload_continues_on_any_node() {
    let Some(pair) = two_nodes(&[]) else {
        return;
    };
    let (a, b) = (&pair.a, &pair.b);
    // Bigger than a part: the finished file goes to the store as a multipart upload.
    let data = generated(10 * MIB + 333, 11);
    let key = "tus/across.bin";
    let length = data.len().to_string();
    let metadata = tus_metadata(&[("key", key), ("name", "Across")]);
    let r = call(a, "POST", "/uploads", &[TUS, ("Upload-Length", &length), ("Upload-Metadata", &metadata)], None).await;
    assert_eq!(r.status, 201, "POST /uploads on A: {}", r.describe());
    let loc = location_path(&r);
    let half = 4 * MIB;
    let r = call(a, "PATCH", &loc, &[TUS, OCTET, ("Upload-Offset", "0")], Some(data[..half].to_vec())).await;
    assert_eq!(r.status, 204, "first PATCH on A: {}", r.describe());
    assert_eq!(r.header("upload-offset"), Some(half.to_string().as_str()));

    // B knows the upload: its offset, its length.
    let offset = half.to_string();
    let r = call(b, "HEAD", &loc, &[TUS], None).await;
    assert_eq!(
        (r.status, r.header("upload-offset"), r.header("upload-length")),
        (200, Some(offset.as_str()), Some(length.as_str())),
        "HEAD {loc} on B: {}",
        r.describe()
    );
    // B takes the next bytes, and A sees them.
    let r =
        call(b, "PATCH", &loc, &[TUS, OCTET, ("Upload-Offset", &offset)], Some(data[half..half + 10].to_vec())).await;
    assert_eq!(r.status, 204, "PATCH {loc} on B: {}", r.describe());
    let offset = (half + 10).to_string();
    assert_eq!(r.header("upload-offset"), Some(offset.as_str()), "PATCH {loc} on B: {}", r.describe());
    let r = call(a, "HEAD", &loc, &[TUS], None).await;
    assert_eq!((r.status, r.header("upload-offset")), (200, Some(offset.as_str())), "HEAD on A: {}", r.describe());
    // Nothing of it is visible as a dataset yet.
    let r = call(b, "GET", &format!("/data/{key}"), &[], None).await;
    assert_eq!(r.status, 404, "GET /data/{key} on B mid-upload: {}", r.describe());

    let r = call(a, "PATCH", &loc, &[TUS, OCTET, ("Upload-Offset", &offset)], Some(data[half + 10..].to_vec())).await;
    assert_eq!(r.status, 204, "final PATCH on A: {}", r.describe());
    assert_eq!(r.header("upload-offset"), Some(length.as_str()));
    assert_eq!(r.etag(), Some(b3(&data)), "final PATCH on A: ETag: {}", r.describe());

    // Committed: a dataset everywhere; the finished upload answers on B too.
    assert_downloads(b, key, &data, &[]).await;
    assert_eq!(record(b, key, &[]).await.json()["name"], "Across");
    let r = call(b, "HEAD", &loc, &[TUS], None).await;
    assert_eq!(
        (r.status, r.header("upload-offset")),
        (200, Some(length.as_str())),
        "HEAD of the finished upload on B: {}",
        r.describe()
    );

    // Created and sent a part's worth through B, terminated through A.
    let metadata = tus_metadata(&[("key", "tus/terminated.bin")]);
    let r = call(b, "POST", "/uploads", &[TUS, ("Upload-Length", &length), ("Upload-Metadata", &metadata)], None).await;
    assert_eq!(r.status, 201, "POST /uploads on B: {}", r.describe());
    let gone = location_path(&r);
    let r = call(b, "PATCH", &gone, &[TUS, OCTET, ("Upload-Offset", "0")], Some(data[..PART + 1].to_vec())).await;
    assert_eq!(r.status, 204, "PATCH {gone} on B: {}", r.describe());
    let r = call(a, "DELETE", &gone, &[TUS], None).await;
    assert_eq!(r.status, 204, "DELETE {gone} on A: {}", r.describe());
    for (name, node) in [("A", a), ("B", b)] {
        let r = call(node, "HEAD", &gone, &[TUS], None).await;
        assert!(r.status == 404 || r.status == 410, "HEAD of the terminated upload on {name}: {}", r.describe());
    }
    let r = call(b, "PATCH", &gone, &[TUS, OCTET, ("Upload-Offset", &(PART + 1).to_string())], Some(vec![1])).await;
    assert!(r.status == 404 || r.status == 410, "PATCH of the terminated upload on B: {}", r.describe());

    assert_bucket_holds_only(&pair.garage, "", &[(key, &data)], "after one upload finished and one terminated").await;
    assert_no_panic(a, "A");
    assert_no_panic(b, "B");
}

/// Creations racing through two nodes on one PostgreSQL index never pass
/// the caps on open uploads, which count every node's uploads; an upload
/// belongs to its token on every node (the owner is in the shared row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creations_through_two_nodes_do_not_pass_the_caps() {
    if cluster::skip_without_postgres() {
        return;
    }
    let pg = Postgres::start();
    let tokens =
        r#"[{name="a",token="cap-secret-a1",scopes=["write"]},{name="b",token="cap-secret-b2",scopes=["write"]}]"#;
    let extra =
        [("SPILLWAY_TOKENS", tokens), ("SPILLWAY_MAX_OPEN_UPLOADS", "5"), ("SPILLWAY_MAX_OPEN_UPLOADS_PER_TOKEN", "3")];
    let s = settings(None, Some(&pg), &extra);
    let (a, b) = (start(&s), start(&s));
    let create = |node: &'static str, bearer: &'static str, i: usize| {
        let node = if node == "A" { &a } else { &b };
        let metadata = tus_metadata(&[("key", &format!("race/{i}.bin"))]);
        async move {
            let headers = [TUS, ("Authorization", bearer), ("Upload-Length", "10"), ("Upload-Metadata", &metadata)];
            call(node, "POST", "/uploads", &headers, None).await
        }
    };
    // Token a through both nodes at once: 3 of 16.
    let replies = futures_util::future::join_all(
        (0..16).map(|i| create(if i % 2 == 0 { "A" } else { "B" }, "Bearer cap-secret-a1", i)),
    )
    .await;
    let created: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    for r in replies.iter().filter(|r| r.status != 201) {
        assert_eq!((r.status, r.code().as_deref()), (429, Some("too-many-open-uploads")), "{}", r.describe());
        assert!(r.header("retry-after").is_some(), "no Retry-After: {}", r.describe());
    }
    assert_eq!(created.len(), 3, "token a's racing creations past max_open_uploads_per_token = 3");
    // Then token b: 2 more fill the total of 5, across nodes.
    let replies = futures_util::future::join_all(
        (16..32).map(|i| create(if i % 2 == 0 { "A" } else { "B" }, "Bearer cap-secret-b2", i)),
    )
    .await;
    let created_b = replies.iter().filter(|r| r.status == 201).count();
    assert_eq!(created_b, 2, "token b's racing creations past max_open_uploads = 5 (3 of a's open)");

    // One of a's uploads: to token b it does not exist on either node (to
    // a, the node not holding it says 503 `unavailable`).
    let loc = location_path(created[0]);
    for (name, node) in [("A", &a), ("B", &b)] {
        let owner = call(node, "HEAD", &loc, &[TUS, ("Authorization", "Bearer cap-secret-a1")], None).await;
        assert!(owner.status == 200 || owner.status == 503, "HEAD by its owner on {name}: {}", owner.describe());
        let other = call(node, "HEAD", &loc, &[TUS, ("Authorization", "Bearer cap-secret-b2")], None).await;
        assert_eq!(other.status, 404, "HEAD by another token on {name}: {}", other.describe());
    }
    assert_no_panic(&a, "A");
    assert_no_panic(&b, "B");
}

// ---------------------------------------------------------------------------
// 5. Start together
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_started_together_on_an_empty_database_both_serve() {
    if cluster::skip_without_garage() || cluster::skip_without_postgres() {
        return;
    }
    let garage = Garage::single();
    let pg = Postgres::start();
    // A few fresh databases, so that the two starts race more than once.
    for round in 0..3 {
        let url = pg.new_database(&format!("together_{round}"));
        let mut s = settings(Some(&garage), None, &[("SPILLWAY_TOKENS", TOKENS)]);
        s.extend([("SPILLWAY_INDEX".to_string(), "postgres".to_string()), ("SPILLWAY_POSTGRES_URL".to_string(), url)]);
        s.push(("SPILLWAY_S3__PREFIX".to_string(), format!("together{round}")));
        let (s1, s2) = (s.clone(), s.clone());
        let t1 = std::thread::spawn(move || start(&s1));
        let t2 = std::thread::spawn(move || start(&s2));
        let a = t1.join().unwrap_or_else(|_| panic!("round {round}: node A did not start"));
        let b = t2.join().unwrap_or_else(|_| panic!("round {round}: node B did not start"));
        for (node, name) in [(&a, "A"), (&b, "B")] {
            let r = call(node, "GET", "/ready", &[], None).await;
            assert_eq!(r.status, 200, "round {round}: /ready on {name}: {}\n{}", r.describe(), node.log());
        }
        let body = generated(50 * KIB, 20 + round);
        let auth = [("Authorization", BEARER)];
        put_ok(&a, "together/a.bin", &body, &auth).await;
        assert_downloads(&b, "together/a.bin", &body, &auth).await;
        put_ok(&b, "together/b.bin", &body, &auth).await;
        assert_eq!(keys_of(&list(&a, "together/", &auth).await), ["together/a.bin", "together/b.bin"]);
        // Both settled on one signing key.
        let url = download_url(&a, "together/a.bin").await;
        let r = call(&b, "GET", &url, &[], None).await;
        assert_eq!(r.status, 200, "round {round}: A's signed URL on B: {}", r.describe());
        assert_no_panic(&a, "A");
        assert_no_panic(&b, "B");
    }
}

// ---------------------------------------------------------------------------
// 6. A three-node Garage loses a node
// ---------------------------------------------------------------------------

/// Every dataset in `expected` downloads byte-exact from `node`, and the
/// node lists exactly those keys.
async fn assert_all_serve(node: &TestNode, expected: &BTreeMap<String, Vec<u8>>, when: &str) {
    for (key, body) in expected {
        let r = call(node, "GET", &format!("/data/{key}"), &[], None).await;
        assert_eq!(r.status, 200, "{when}: GET /data/{key}: {}", r.describe());
        assert_same_bytes(&r.body, body, &format!("{when}: GET /data/{key}"));
        assert_eq!(r.etag(), Some(b3(body)), "{when}: GET /data/{key}: ETag");
    }
    let listed = list(node, "", &[]).await;
    let want: Vec<&String> = expected.keys().collect();
    assert_eq!(keys_of(&listed).iter().collect::<Vec<_>>(), want, "{when}: list");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_garage_losing_a_node_keeps_serving() {
    if cluster::skip_without_garage() {
        return;
    }
    let with_pg = !cluster::skip_without_postgres();
    let mut garage = Garage::cluster3();
    let pg = with_pg.then(Postgres::start);
    // One node on its own SQLite index; one on PostgreSQL (if installed),
    // each below its own prefix of the bucket. Both talk to Garage node 0.
    let mut nodes = vec![("sqlite", start(&settings(Some(&garage), None, &[("SPILLWAY_S3__PREFIX", "lite")])))];
    if let Some(pg) = &pg {
        nodes.push(("postgres", start(&settings(Some(&garage), Some(pg), &[("SPILLWAY_S3__PREFIX", "pg")]))));
    }
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (i, size) in [10, 64 * KIB, 3 * MIB, 20 * MIB + 5].into_iter().enumerate() {
        expected.insert(format!("replicated/d{i}.bin"), generated(size, 30 + i as u64));
    }
    for (name, node) in &nodes {
        for (key, body) in &expected {
            let r = put(node, key, body, &[]).await;
            assert_eq!(r.status, 201, "[{name}] PUT /data/{key}: {}", r.describe());
        }
        assert_all_serve(node, &expected, &format!("[{name}] all three Garage nodes up")).await;
    }

    garage.kill_node(1);
    // At once, before the others notice: reads and writes reach a quorum of two.
    for (name, node) in &nodes {
        let started = Instant::now();
        let body = generated(100 * KIB, 43);
        let r = put(node, "replicated/right-after-the-kill.bin", &body, &[]).await;
        assert_eq!(r.status, 201, "[{name}] PUT right after Garage node 1 died: {}", r.describe());
        assert_downloads(node, "replicated/right-after-the-kill.bin", &body, &[]).await;
        let r = call(node, "DELETE", "/datasets/replicated/right-after-the-kill.bin", &[], None).await;
        assert_eq!(r.status, 204, "[{name}] DELETE right after Garage node 1 died: {}", r.describe());
        eprintln!("[{name}] PUT + GET + DELETE right after the kill took {:?}", started.elapsed());
    }
    let started = Instant::now();
    garage.wait_converged();
    eprintln!("Garage nodes 0 and 2 noticed node 1 down in {:?}", started.elapsed());
    let mut expected_now = expected.clone();
    expected_now.insert("replicated/while-down.bin".into(), generated(MIB, 40));
    expected_now.insert("replicated/while-down-big.bin".into(), generated(12 * MIB + 1, 41));
    for (name, node) in &nodes {
        assert_all_serve(node, &expected, &format!("[{name}] Garage node 1 down")).await;
        for key in ["replicated/while-down.bin", "replicated/while-down-big.bin"] {
            let r = put(node, key, &expected_now[key], &[]).await;
            assert_eq!(r.status, 201, "[{name}] PUT /data/{key} with Garage node 1 down: {}", r.describe());
        }
        // Replace and delete work on a quorum of two as well.
        let r = put(node, "replicated/d0.bin", b"replaced while node 1 is down", &[]).await;
        assert_eq!(r.status, 200, "[{name}] replace with Garage node 1 down: {}", r.describe());
        let r = call(node, "GET", "/ready", &[], None).await;
        assert_eq!(r.status, 200, "[{name}] /ready with Garage node 1 down: {}", r.describe());
    }
    expected_now.insert("replicated/d0.bin".into(), b"replaced while node 1 is down".to_vec());
    for (name, node) in &nodes {
        assert_all_serve(node, &expected_now, &format!("[{name}] after writes with Garage node 1 down")).await;
    }

    let started = Instant::now();
    garage.restart_node(1);
    eprintln!("Garage node 1 back and healthy in {:?}", started.elapsed());
    for (name, node) in &nodes {
        assert_all_serve(node, &expected_now, &format!("[{name}] Garage node 1 back")).await;
        let body = generated(9 * MIB, 42);
        let r = put(node, "replicated/after.bin", &body, &[]).await;
        assert_eq!(r.status, 201, "[{name}] PUT after node 1 came back: {}", r.describe());
        assert_downloads(node, "replicated/after.bin", &body, &[]).await;
        assert_no_panic(node, name);
    }
}

// ---------------------------------------------------------------------------
// 7. kill -9 in the middle of a stream of PUTs (S3 + PostgreSQL)
// ---------------------------------------------------------------------------

/// What a key may hold: the last acknowledged version, and every version
/// sent since (whose PUT may or may not have committed before the kill).
#[derive(Default, Debug, Clone)]
struct Possible {
    acked: Option<String>,
    maybe: BTreeSet<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_put_leaves_every_row_matching_its_object() {
    if cluster::skip_without_garage() || cluster::skip_without_postgres() {
        return;
    }
    const ROUNDS: usize = 10;
    const KEYS: [&str; 3] = ["crash/a.bin", "crash/deep/b.bin", "crash/c.bin"];
    let seed: u64 = std::env::var("SPILLWAY_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED_C1A5);
    eprintln!("crash schedule seed {seed} (SPILLWAY_CRASH_SEED replays it)");
    let mut rng = Rng(seed | 1);
    let garage = Garage::single();
    let pg = Postgres::start();
    let mut node = start(&settings(Some(&garage), Some(&pg), &[]));
    let possible: Arc<Mutex<BTreeMap<String, Possible>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let (mut acked_total, mut cut_total) = (0usize, 0usize);
    let mut next_seed = 10_000u64;

    for round in 0..ROUNDS {
        let mut writers = Vec::new();
        for key in KEYS {
            // Sizes: in one PUT at the commit, or multipart (> 8 MiB).
            let sizes: Vec<usize> = (0..40)
                .map(|_| match rng.below(4) {
                    0 => 1 + rng.below(64 * KIB as u64) as usize,
                    1 => MIB + rng.below(2 * MIB as u64) as usize,
                    _ => 8 * MIB + 1 + rng.below(6 * MIB as u64) as usize,
                })
                .collect();
            let first_seed = next_seed;
            next_seed += sizes.len() as u64;
            let (client, base, possible) = (node.client.clone(), node.base.clone(), possible.clone());
            writers.push(tokio::spawn(async move {
                let (mut acked, mut cut) = (0usize, 0usize);
                for (i, size) in sizes.into_iter().enumerate() {
                    let body = generated(size, first_seed + i as u64);
                    let hash = b3(&body);
                    possible.lock().unwrap().entry(key.to_string()).or_default().maybe.insert(hash.clone());
                    let sent = client.put(format!("{base}/data/{key}")).body(body).send().await;
                    let resp = match sent {
                        Ok(resp) => resp,
                        Err(_) => {
                            cut += 1;
                            break;
                        }
                    };
                    let status = resp.status().as_u16();
                    let etag = resp
                        .headers()
                        .get("etag")
                        .and_then(|v| v.to_str().ok())
                        .map(|e| e.trim_matches('"').to_string());
                    if resp.bytes().await.is_err() {
                        cut += 1;
                        break;
                    }
                    assert!(status == 200 || status == 201, "PUT /data/{key} (round {round}): {status}");
                    assert_eq!(etag.as_deref(), Some(hash.as_str()), "PUT /data/{key}: ETag");
                    let mut p = possible.lock().unwrap();
                    let entry = p.get_mut(key).unwrap();
                    entry.acked = Some(hash);
                    entry.maybe.clear();
                    acked += 1;
                }
                (acked, cut)
            }));
        }
        let delay = Duration::from_millis(150 + rng.below(1500));
        tokio::time::sleep(delay).await;
        node.kill9();
        for writer in writers {
            let (acked, cut) = tokio::time::timeout(Duration::from_secs(30), writer)
                .await
                .unwrap_or_else(|_| panic!("round {round}: a writer did not stop within 30 s of the kill"))
                .unwrap_or_else(|e| panic!("round {round}: a writer failed: {e}"));
            acked_total += acked;
            cut_total += cut;
        }
        node.launch();

        // Every listed dataset serves exactly the bytes its row describes,
        // and is a version the key may hold; every acknowledged key is listed.
        let listed = node.list_all().await;
        let known = possible.lock().unwrap().clone();
        let mut seen = BTreeSet::new();
        for rec in &listed {
            let key = rec["key"].as_str().unwrap().to_string();
            let row_b3 = rec["blake3"].as_str().unwrap().to_string();
            let p = known.get(&key).unwrap_or_else(|| panic!("round {round}: unexpected key `{key}` listed"));
            assert!(
                p.acked.as_ref() == Some(&row_b3) || p.maybe.contains(&row_b3),
                "round {round}: `{key}` has blake3 {row_b3}, which is neither its last acknowledged version ({:?}) \
                 nor one sent since ({:?})",
                p.acked,
                p.maybe
            );
            let r = call(&node, "GET", &format!("/data/{key}"), &[], None).await;
            assert_eq!(
                r.status,
                200,
                "round {round}: GET /data/{key} after restart: {}\n{}",
                r.describe(),
                log_lines(&node, &["WARN", "ERROR", "interrupted", "disagree"])
            );
            assert_eq!(b3(&r.body), row_b3, "round {round}: `{key}`: the bytes served are not the row's");
            assert_eq!(r.etag(), Some(row_b3.clone()), "round {round}: `{key}`: ETag");
            assert_eq!(r.body.len() as u64, rec["size"].as_u64().unwrap(), "round {round}: `{key}`: size");
            seen.insert(key);
        }
        for (key, p) in &known {
            if p.acked.is_some() {
                assert!(
                    seen.contains(key),
                    "round {round}: `{key}` was acknowledged ({:?}) but is not listed",
                    p.acked
                );
            }
        }
        // What the key holds now is the only thing it may hold.
        let mut p = possible.lock().unwrap();
        for rec in &listed {
            let entry = p.get_mut(rec["key"].as_str().unwrap()).unwrap();
            entry.acked = Some(rec["blake3"].as_str().unwrap().to_string());
            entry.maybe.clear();
        }
        for (key, entry) in p.iter_mut() {
            if !seen.contains(key) {
                entry.maybe.clear();
            }
        }
        drop(p);
        eprintln!("round {round}: killed after {delay:?}; {} datasets listed and served", listed.len());
    }
    let resolved = log_lines(&node, &["interrupted commit", "interrupted delete", "multipart upload(s)"]);
    eprintln!(
        "{ROUNDS} kills: {acked_total} PUTs acknowledged, {cut_total} cut by a kill; start-up recovery said:\n{resolved}"
    );
    assert!(cut_total > 0, "no PUT was in flight at any kill: the test did not test anything");
    assert_no_panic(&node, "node");
}

// ---------------------------------------------------------------------------
// 8. PostgreSQL goes away
// ---------------------------------------------------------------------------

/// A request: method, path, headers, body.
type Probe<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, Option<Vec<u8>>);

/// `postgres_connect_timeout` of the nodes whose PostgreSQL goes away.
const PG_CONNECT_TIMEOUT: &str = "200ms";

/// How long any one answer may take with PostgreSQL gone: a request tries
/// at most one new connection (bounded by the connect timeout) and waits
/// for no other. Unloaded, answers take about one connect timeout; the
/// bound leaves a loaded machine room and still fails the old wait for
/// deadpool's 3 s create timeout.
fn pg_down_bound() -> Duration {
    let connect = humantime::parse_duration(PG_CONNECT_TIMEOUT).unwrap();
    (connect * 12).min(Duration::from_millis(2500))
}

/// A Garage, a PostgreSQL and a node on both that stored
/// `pgdown/present.bin` and said ready; `None` (the test skips) without
/// Garage or PostgreSQL.
async fn node_before_outage() -> Option<(Garage, Postgres, TestNode)> {
    if cluster::skip_without_garage() || cluster::skip_without_postgres() {
        return None;
    }
    let (garage, pg) = (Garage::single(), Postgres::start());
    let connect_timeout = [("SPILLWAY_POSTGRES_CONNECT_TIMEOUT", PG_CONNECT_TIMEOUT)];
    let node = start(&settings(Some(&garage), Some(&pg), &connect_timeout));
    let body = generated(100 * KIB, 50);
    put_ok(&node, "pgdown/present.bin", &body, &[]).await;
    assert_downloads(&node, "pgdown/present.bin", &body, &[]).await;
    let r = call(&node, "GET", "/ready", &[], None).await;
    assert_eq!(r.status, 200, "/ready with PostgreSQL up: {}", r.describe());
    Some((garage, pg, node))
}

/// Every kind of request needing the index, all at once and twice (the first
/// calls find the pool's dead connections, the second none), /ready beside
/// them: each must answer 503 (`unavailable` with Retry-After; /ready
/// `not-ready`) within [`pg_down_bound`], and /health 200.
async fn assert_fast_503s(node: &TestNode, outage: &str) {
    let tus_meta = tus_metadata(&[("key", "pgdown/tus.bin")]);
    let mut probes: Vec<Probe> = vec![
        ("GET", "/datasets".into(), vec![], None),
        ("GET", "/datasets/pgdown/present.bin".into(), vec![], None),
        ("GET", "/data/pgdown/present.bin".into(), vec![], None),
        ("PUT", "/data/pgdown/new.bin".into(), vec![], Some(generated(10 * KIB, 51))),
        ("PUT", "/data/pgdown/big.bin".into(), vec![], Some(generated(9 * MIB, 52))),
        (
            "PATCH",
            "/datasets/pgdown/present.bin".into(),
            vec![("Content-Type", "application/json")],
            Some(br#"{"name":"x"}"#.to_vec()),
        ),
        ("DELETE", "/datasets/pgdown/present.bin".into(), vec![], None),
        ("POST", "/uploads".into(), vec![TUS, ("Upload-Length", "10"), ("Upload-Metadata", &tus_meta)], None),
    ];
    // More at once than the node's 16 PostgreSQL connections: those queued
    // behind the pool must not wait longer.
    probes.extend((0..24).map(|i| ("GET", format!("/datasets?prefix=pgdown/{i}"), vec![], None)));
    probes.push(("GET", "/ready".into(), vec![], None));
    let bound = pg_down_bound();
    let started = Instant::now();
    let mut bad = Vec::new();
    for attempt in 0..2 {
        let answers = futures_util::future::join_all(probes.iter().map(|(method, path, headers, body)| async move {
            let sent = Instant::now();
            let r = call(node, method, path, headers, body.clone()).await;
            (r, sent.elapsed())
        }))
        .await;
        for ((method, path, _, _), (r, took)) in probes.iter().zip(&answers) {
            eprintln!("{outage}, attempt {attempt}: {method} {path} → {} {:?} in {took:?}", r.status, r.code());
            let expected = if path == "/ready" {
                r.status == 503
            } else {
                r.status == 503 && r.code().as_deref() == Some("unavailable") && r.header("retry-after").is_some()
            };
            if !expected {
                bad.push(format!("attempt {attempt}: {method} {path} → {}", r.describe()));
            } else if *took > bound {
                bad.push(format!("attempt {attempt}: {method} {path} → 503 after {took:?}, more than {bound:?}"));
            }
        }
        let r = call(node, "GET", "/health", &[], None).await;
        assert_eq!(r.status, 200, "/health with {outage}: {}", r.describe());
    }
    eprintln!("answers with {outage} took {:?}", started.elapsed());
    assert!(
        bad.is_empty(),
        "with {outage}, expected 503 `unavailable` with Retry-After within {bound:?}:\n{}\n--- node log (warnings and errors) ---\n{}",
        bad.join("\n"),
        log_lines(node, &["WARN", "ERROR", "panicked"])
    );
    assert_no_panic(node, "node");
}

/// Once PostgreSQL is back the node serves again, reads and commits (an
/// outage it noted does not outlive it).
async fn assert_recovers(node: &TestNode) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = call(node, "GET", "/ready", &[], None).await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/ready with PostgreSQL back: {}", r.describe());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_downloads(node, "pgdown/present.bin", &generated(100 * KIB, 50), &[]).await;
    put_ok(node, "pgdown/after.bin", b"after the outage", &[]).await;
    assert_no_panic(node, "node");
}

/// The server stops: its sessions end and new connections are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_means_503_never_500() {
    let Some((_garage, mut pg, node)) = node_before_outage().await else { return };
    pg.stop();
    assert_fast_503s(&node, "PostgreSQL down").await;
    pg.restart();
    assert_recovers(&node).await;
}

/// The server stops and its port takes connections that never answer (a
/// host whose PostgreSQL hangs, or a proxy in front of a dead one): each new
/// connection hangs until the connect timeout, not longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_that_never_answers_means_503_within_the_connect_timeout() {
    let Some((_garage, mut pg, node)) = node_before_outage().await else { return };
    pg.stop();
    // Never accepted: the kernel completes each handshake into the backlog
    // and the startup message goes unanswered.
    let silent = std::net::TcpListener::bind(("127.0.0.1", pg.port)).expect("PostgreSQL's port, free again");
    assert_fast_503s(&node, "PostgreSQL silent").await;
    drop(silent);
    pg.restart();
    assert_recovers(&node).await;
}

/// A node on PostgreSQL stops cleanly on SIGTERM (as `systemctl stop` does):
/// its synchronous PostgreSQL client must not be closed inside tokio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_postgres_stops_cleanly() {
    if cluster::skip_without_postgres() {
        return;
    }
    let pg = Postgres::start();
    let mut node = start(&settings(None, Some(&pg), &[]));
    put_ok(&node, "stop/a.bin", b"bytes", &[]).await;
    assert_downloads(&node, "stop/a.bin", b"bytes", &[]).await;
    let status = node.terminate();
    assert!(status.success(), "the node exited with {status} on SIGTERM:\n{}", node.log());
    assert_no_panic(&node, "a_node_on_postgres_stops_cleanly");
}

// ---------------------------------------------------------------------------
// 9. TLS to PostgreSQL
// ---------------------------------------------------------------------------

/// A CA, and a certificate it signed for 127.0.0.1 with its key, made with
/// `openssl` in a directory PostgreSQL's user can read (the key is its own,
/// mode 0600, as PostgreSQL demands).
fn tls_files(pg: &Postgres) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("server.ext"), "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        .unwrap();
    let steps: [&[&str]; 3] = [
        &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem"],
        &["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr"],
        &["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"],
    ];
    let tails: [&[&str]; 3] = [
        &["-days", "2", "-subj", "/CN=spillway test CA"],
        &["-subj", "/CN=127.0.0.1"],
        &["-out", "server.crt", "-days", "2", "-extfile", "server.ext"],
    ];
    for (step, tail) in steps.iter().zip(tails) {
        let out = std::process::Command::new("openssl")
            .args(*step)
            .args(tail)
            .current_dir(dir.path())
            .output()
            .expect("run openssl");
        assert!(out.status.success(), "openssl {step:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    for file in ["server.crt", "server.key"] {
        let status = std::process::Command::new("chown").arg(&pg.user).arg(dir.path().join(file)).status().unwrap();
        assert!(status.success(), "chown {file} to {}", pg.user);
    }
    dir
}

/// `spillway fsck` (no runtime of its own) with these settings: its exit
/// code and what it printed.
fn fsck_with(settings: &[(String, String)]) -> (Option<i32>, String) {
    let root = tempfile::tempdir().expect("temp dir");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_spillway"));
    cmd.arg("fsck")
        .current_dir(root.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ROCKET_CONFIG", root.path().join("none.toml"))
        .env("SPILLWAY_DATA_DIR", root.path().join("data"))
        .env("SPILLWAY_SPOOL_DIR", root.path().join("spool"));
    for (k, v) in settings {
        cmd.env(k, v);
    }
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// With `postgres_tls = "require"` the node speaks TLS to PostgreSQL, and
/// only to a server whose certificate a CA of the operating system's store
/// signed (here the test's CA, through `SSL_CERT_FILE`, which that store
/// honours): a server without TLS, or with a certificate of an unknown CA,
/// is refused, by the node and by the offline commands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_require_checks_the_server_certificate() {
    if cluster::skip_without_postgres() {
        return;
    }
    let pg = Postgres::start();
    let tls = settings(None, Some(&pg), &[("SPILLWAY_POSTGRES_TLS", "require")]);

    let (code, out) = fsck_with(&tls);
    assert_ne!(code, Some(0), "fsck with postgres_tls = require reached a server without TLS:\n{out}");

    let files = tls_files(&pg);
    let path = |name: &str| files.path().join(name).display().to_string();
    pg.sql("postgres", &format!("ALTER SYSTEM SET ssl_cert_file = '{}'", path("server.crt")));
    pg.sql("postgres", &format!("ALTER SYSTEM SET ssl_key_file = '{}'", path("server.key")));
    pg.sql("postgres", "ALTER SYSTEM SET ssl = on");
    pg.sql("postgres", "SELECT pg_reload_conf()");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pg.sql("postgres", "SHOW ssl").trim() != "on" {
        assert!(Instant::now() < deadline, "PostgreSQL did not turn TLS on:\n{}", pg.log());
        std::thread::sleep(Duration::from_millis(50));
    }

    let (code, out) = fsck_with(&tls);
    assert_ne!(code, Some(0), "fsck trusted a certificate no trusted CA signed:\n{out}");

    let trusted =
        settings(None, Some(&pg), &[("SPILLWAY_POSTGRES_TLS", "require"), ("SSL_CERT_FILE", &path("ca.pem"))]);
    let (code, out) = fsck_with(&trusted);
    assert_eq!(code, Some(0), "fsck over TLS:\n{out}");

    let mut node = start(&trusted);
    put_ok(&node, "tls/a.bin", b"over TLS", &[]).await;
    assert_downloads(&node, "tls/a.bin", b"over TLS", &[]).await;
    let encrypted = pg.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE ssl AND datname = 'spillway'",
    );
    assert_ne!(encrypted.trim(), "0", "no connection to `spillway` uses TLS");
    let plain = pg.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) WHERE NOT ssl AND datname = 'spillway'",
    );
    assert_eq!(plain.trim(), "0", "a connection to `spillway` does not use TLS");
    let status = node.terminate();
    assert!(status.success(), "the node exited with {status} on SIGTERM:\n{}", node.log());
    assert_no_panic(&node, "postgres_tls_require_checks_the_server_certificate");
}

/// Versions on a shared PostgreSQL index: commits through either node
/// number one history; each node lists, reads and restores it; a blob both
/// keys share is one; pruning by count frees what no version needs, and a
/// purge of both keys leaves no blob row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_on_a_shared_index() {
    let Some(pair) = two_nodes(&[("SPILLWAY_KEEP_VERSIONS", "2")]) else {
        return;
    };
    let (a, b) = (&pair.a, &pair.b);
    let (v1, v2, v3) = (generated(40 * KIB, 31), generated(50 * KIB, 32), generated(60 * KIB, 33));
    assert_eq!(put_ok(a, "ver/k", &v1, &[]).await.status, 201);
    assert_eq!(put_ok(b, "ver/k", &v2, &[]).await.status, 200);
    assert_eq!(put_ok(b, "ver/twin", &v1, &[]).await.status, 201);
    for node in [a, b] {
        let r = call(node, "GET", "/versions/ver/k", &[], None).await;
        assert_eq!(r.status, 200, "{}", r.describe());
        let listed: Vec<(u64, bool)> = r
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["version"].as_u64().unwrap(), v["current"].as_bool().unwrap()))
            .collect();
        assert_eq!(listed, [(2, true), (1, false)], "versions on {}", node.base);
        let old = call(node, "GET", "/data/ver/k?version=1", &[], None).await;
        assert_eq!(old.status, 200, "{}", old.describe());
        assert_same_bytes(&old.body, &v1, "version 1");
    }
    let restored = call(a, "POST", "/datasets/ver/k/action/restore", &[], Some(br#"{"version": 1}"#.to_vec())).await;
    assert_eq!(restored.status, 200, "{}", restored.describe());
    let now = call(b, "GET", "/data/ver/k", &[], None).await;
    assert_same_bytes(&now.body, &v1, "after the restore, through B");
    // keep_versions = 2: version 1 goes; its bytes stay (version 3, the twin).
    assert_eq!(put_ok(b, "ver/k", &v3, &[]).await.status, 200);
    let r = call(a, "GET", "/versions/ver/k", &[], None).await;
    let numbers: Vec<u64> = r.json().as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [4, 3]);
    let metrics = call(a, "GET", "/metrics", &[], None).await.text();
    let stored = metrics.lines().find(|l| l.starts_with("spillway_stored_bytes ")).unwrap_or_default().to_owned();
    let expected = (v1.len() + v3.len()) as u64;
    assert_eq!(stored, format!("spillway_stored_bytes {expected}"), "v2's blob is freed, v1's and v3's stay");
    for key in ["ver/k", "ver/twin"] {
        let gone = call(b, "DELETE", &format!("/datasets/{key}?versions=all"), &[], None).await;
        assert_eq!(gone.status, 204, "{}", gone.describe());
    }
    let metrics = call(a, "GET", "/metrics", &[], None).await.text();
    assert!(metrics.lines().any(|l| l == "spillway_stored_bytes 0"), "no blob left:\n{metrics}");
}

/// Across nodes, as on one: node A's install of `slow/one` held for
/// seconds (a failpoint) does not hold up node B's commits of other keys,
/// while B's commit of a key below it waits for A, then meets the conflict.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_install_on_one_node_holds_up_only_its_key_on_the_other() {
    let Some(pair) = two_nodes(&[("FAILPOINTS", "commit.install=return(slow/one@12000)")]) else {
        return;
    };
    let Pair { a, b, garage: _garage, pg: _pg } = pair;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let timed =
        |node: Arc<TestNode>, key: &'static str, body: Vec<u8>| async move { put(&node, key, &body, &[]).await.status };
    let held = tokio::spawn(timed(a.clone(), "slow/one", generated(20 * KIB, 1)));
    let seen =
        eventually(Duration::from_secs(60), async || a.log().contains("failpoint commit.install: `slow/one` waits"))
            .await;
    assert!(seen, "node A never reached the failpoint:\n{}", a.log());
    let below = tokio::spawn(timed(b.clone(), "slow/one/below", generated(10 * KIB, 2)));
    for i in 0..10u64 {
        let key = format!("slow/sibling{i}");
        let body = generated(16 * KIB, 10 + i);
        put_ok(&b, &key, &body, &[]).await;
        assert!(!held.is_finished(), "`{key}` through B was committed only after A's held install ended");
    }
    assert_eq!(held.await.unwrap(), 201, "the held PUT on A");
    // Its conflict says it committed after A's install (the order of the
    // answers would not: A's locks go just before its answer does).
    assert_eq!(below.await.unwrap(), 409, "B's PUT below `slow/one`");
}
