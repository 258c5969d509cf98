//! Dataset versions: every commit to a key is a numbered version;
//! `GET /versions/{key}` lists them (paged like the catalog), `?version=N`
//! serves an old one like the current, `action/restore` commits an old one
//! again, `DELETE` keeps the versions unless `?versions=all`, retention by
//! count (at commit) and by age (a sweeper), and identical bytes stored once
//! (read-only hard links, the metrics, fsck after racing writers, a kill -9
//! mid-replace).
//!
//! Written against the contract ahead of the implementation.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use common::reply::{self, send, Reply};
use common::*;
use serde_json::{json, Value};

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const READ: &str = "rd-versions-8Jw2NsQ4";
const WRITE: &str = "wr-versions-4Pk7QdX1";
const ADMIN: &str = "ad-versions-1Vz9LcB6";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A node with three tokens: `reader` (read), `writer` (write), `boss` (admin).
fn secured_node(extra: &[(&str, &str)]) -> TestNode {
    let tokens = format!(
        r#"[{{name="reader",token="{READ}",scopes=["read"]}},{{name="writer",token="{WRITE}",scopes=["write"]}},{{name="boss",token="{ADMIN}",scopes=["admin"]}}]"#
    );
    let mut settings = vec![("SPILLWAY_TOKENS", tokens.as_str())];
    settings.extend_from_slice(extra);
    TestNode::start_with(&settings)
}

/// `req`, with `Authorization: Bearer <token>` when there is one.
fn with_token(req: reqwest::RequestBuilder, token: Option<&str>) -> reqwest::RequestBuilder {
    match token {
        Some(token) => req.bearer_auth(token),
        None => req,
    }
}

/// `PUT /data/{key}` (as `token`), which must commit; returns the record.
async fn put_as(node: &TestNode, key: &str, body: &[u8], token: Option<&str>) -> Value {
    let req = with_token(node.client.put(node.url(&format!("/data/{key}"))), token).body(body.to_vec());
    let r = send(req, &format!("PUT /data/{key}")).await;
    assert!(r.status == 200 || r.status == 201, "PUT /data/{key}: {}", r.describe());
    let record = r.json();
    assert_eq!(record["blake3"], b3(body), "PUT /data/{key}: {record}");
    record
}

async fn put_ok(node: &TestNode, key: &str, body: &[u8]) -> Value {
    put_as(node, key, body, None).await
}

async fn versions_as(node: &TestNode, key: &str, token: Option<&str>) -> Reply {
    send(with_token(node.client.get(node.url(&format!("/versions/{key}"))), token), &format!("GET /versions/{key}"))
        .await
}

/// `GET /versions/{key}` as `token`, which must answer 200 with a JSON array.
async fn versions_ok_as(node: &TestNode, key: &str, token: Option<&str>) -> Vec<Value> {
    let r = versions_as(node, key, token).await;
    assert_eq!(r.status, 200, "GET /versions/{key}: {}", r.describe());
    r.json().as_array().unwrap_or_else(|| panic!("GET /versions/{key}: not an array: {}", r.describe())).clone()
}

async fn versions(node: &TestNode, key: &str) -> Vec<Value> {
    versions_ok_as(node, key, None).await
}

/// The version numbers of a listing, in its order.
fn numbers(list: &[Value]) -> Vec<u64> {
    list.iter().map(|v| v["version"].as_u64().unwrap_or_else(|| panic!("`version` is not an integer: {v}"))).collect()
}

/// The `current` flags of a listing, in its order.
fn currents(list: &[Value]) -> Vec<bool> {
    list.iter().map(|v| v["current"].as_bool().unwrap_or_else(|| panic!("`current` is not a bool: {v}"))).collect()
}

/// `method /data/{key}?version={version}` (the version as given, valid or not).
async fn data_version(node: &TestNode, method: reqwest::Method, key: &str, version: &str) -> Reply {
    let path = format!("/data/{key}?version={version}");
    send(node.client.request(method.clone(), node.url(&path)), &format!("{method} {path}")).await
}

/// `GET /data/{key}?version={version}` serves exactly `bytes`, with its
/// length and ETag.
async fn assert_version_serves(node: &TestNode, key: &str, version: u64, bytes: &[u8]) {
    let what = format!("GET /data/{key}?version={version}");
    let r = data_version(node, reqwest::Method::GET, key, &version.to_string()).await;
    assert_eq!(r.status, 200, "{what}: {}", r.describe());
    assert_same_bytes(&r.body, bytes, &what);
    assert_eq!(r.header("content-length"), Some(bytes.len().to_string().as_str()), "{what}: Content-Length");
    assert_eq!(r.header("etag"), Some(format!("\"{}\"", b3(bytes)).as_str()), "{what}: ETag");
}

async fn restore_as(node: &TestNode, key: &str, version: u64, token: Option<&str>) -> Reply {
    let path = format!("/datasets/{key}/action/restore");
    let req = with_token(node.client.post(node.url(&path)), token).json(&json!({ "version": version }));
    send(req, &format!("POST {path} {{\"version\": {version}}}")).await
}

/// Restores `version` of `key`, which must answer 200 with the key's record
/// now holding `bytes`.
async fn restore_ok(node: &TestNode, key: &str, version: u64, bytes: &[u8]) -> Value {
    let r = restore_as(node, key, version, None).await;
    assert_eq!(r.status, 200, "restore {key} version {version}: {}", r.describe());
    let record = r.json();
    assert_eq!(record["key"], key, "restore: {record}");
    assert_eq!(record["path"], format!("/data/{key}"), "restore: {record}");
    assert_eq!(record["size"], bytes.len() as u64, "restore: {record}");
    assert_eq!(record["blake3"], b3(bytes), "restore: {record}");
    assert!(record["name"].is_string() && record["content_type"].is_string(), "restore: {record}");
    record
}

/// `DELETE /datasets/{key}` (`?versions=all` when `all`), as `token`.
async fn delete_as(node: &TestNode, key: &str, all: bool, token: Option<&str>) -> Reply {
    let path = if all { format!("/datasets/{key}?versions=all") } else { format!("/datasets/{key}") };
    send(with_token(node.client.delete(node.url(&path)), token), &format!("DELETE {path}")).await
}

/// Whether the catalog lists `key`.
async fn listed(node: &TestNode, key: &str) -> bool {
    node.list_all().await.iter().any(|r| r["key"] == key)
}

/// A 400 problem of any code.
fn assert_bad_request(r: &Reply, what: &str) {
    assert_eq!(r.status, 400, "{what}: {}", r.describe());
    assert!(
        r.header("content-type").is_some_and(|ct| ct.starts_with("application/problem+json")),
        "{what}: {}",
        r.describe()
    );
}

/// Bytes allocated to the files below `dir`, each inode counted once (as
/// `du` counts hard links), leaving out the SQLite index, whose pages come
/// and go with checkpoints.
fn allocated_bytes(dir: &Path) -> u64 {
    let mut seen = HashSet::new();
    let mut total = 0;
    for path in files_below(dir) {
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("index.sqlite")) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
    }
    total
}

/// The current file of `key` on disk is read-only (0444).
fn assert_read_only(node: &TestNode, key: &str) -> fs::Metadata {
    let path = node.datasets_dir().join(key);
    let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(meta.mode() & 0o777, 0o444, "{}: mode {:o}", path.display(), meta.mode() & 0o777);
    meta
}

// ---------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------

/// Numbers grow per key from 1; the listing is newest first, with the
/// documented fields, and only the newest is current; a key that never had
/// a version is 404.
#[tokio::test]
async fn versions_are_numbered_per_key_newest_first() {
    let node = TestNode::start();
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| generated(1000 + 10 * i, 10 + i as u64)).collect();
    for body in &bodies {
        let req = node.client.put(node.url("/data/sales/a.csv")).header("Content-Type", "text/csv").body(body.clone());
        let r = send(req, "PUT /data/sales/a.csv").await;
        assert!(r.status == 200 || r.status == 201, "PUT: {}", r.describe());
    }
    put_ok(&node, "b.bin", b"another key").await;

    let list = versions(&node, "sales/a.csv").await;
    assert_eq!(numbers(&list), [3, 2, 1], "{list:?}");
    assert_eq!(currents(&list), [true, false, false], "{list:?}");
    let mut newer: Option<time::OffsetDateTime> = None;
    for (entry, body) in list.iter().zip(bodies.iter().rev()) {
        assert_eq!(entry["blake3"], b3(body), "{entry}");
        assert_eq!(entry["size"], body.len() as u64, "{entry}");
        assert_eq!(entry["content_type"], "text/csv", "{entry}");
        assert!(entry.get("uploaded_by").is_none_or(Value::is_null), "uploaded_by on an open node: {entry}");
        let created = entry["created_at"].as_str().unwrap_or_else(|| panic!("created_at: {entry}"));
        let created = time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("created_at is not RFC 3339 ({e}): {entry}"));
        assert!(newer.is_none_or(|n| n >= created), "created_at out of order: {list:?}");
        newer = Some(created);
    }

    let other = versions(&node, "b.bin").await;
    assert_eq!(numbers(&other), [1], "numbers are per key: {other:?}");
    assert_eq!(currents(&other), [true]);
    for missing in ["nope.csv", "sales", "sales/a.csv/x"] {
        let r = versions_as(&node, missing, None).await;
        assert_problem(&r, 404, "not-found", &format!("GET /versions/{missing}"));
    }
}

/// A PUT, a multipart form and a tus upload each commit a version.
#[tokio::test]
async fn every_commit_path_makes_a_version() {
    let node = TestNode::start();
    let key = "paths/k.bin";
    let (put_body, form_body, tus_body) = (generated(3000, 1), generated(4000, 2), generated(5000, 3));
    put_ok(&node, key, &put_body).await;

    let boundary = "spillway-versions-boundary-7c1";
    let mut form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n{key}\r\n--{boundary}\r\n\
         Content-Disposition: form-data; name=\"file\"; filename=\"k.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(&form_body);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let req = node
        .client
        .post(node.url("/datasets"))
        .header("Content-Type", format!("multipart/form-data; boundary={boundary}"))
        .body(form);
    let r = send(req, "POST /datasets (form)").await;
    assert_eq!(r.status, 200, "a form replacing the key: {}", r.describe());

    let metadata = format!("key {}", base64::engine::general_purpose::STANDARD.encode(key));
    let req = node
        .client
        .post(node.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", tus_body.len().to_string())
        .header("Upload-Metadata", metadata);
    let r = send(req, "POST /uploads").await;
    assert_eq!(r.status, 201, "POST /uploads: {}", r.describe());
    let location = r.header("location").expect("Location").to_string();
    let upload = if location.starts_with("http") { location } else { node.url(&location) };
    let req = node
        .client
        .patch(upload)
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body(tus_body.clone());
    let r = send(req, "PATCH the whole upload").await;
    assert_eq!(r.status, 204, "PATCH: {}", r.describe());

    let list = versions(&node, key).await;
    assert_eq!(numbers(&list), [3, 2, 1], "{list:?}");
    let hashes: Vec<&str> = list.iter().map(|v| v["blake3"].as_str().unwrap_or_default()).collect();
    assert_eq!(hashes, [b3(&tus_body), b3(&form_body), b3(&put_body)], "tus, form, PUT");
    for (n, body) in [(1, &put_body), (2, &form_body), (3, &tus_body)] {
        assert_version_serves(&node, key, n, body).await;
    }
}

/// `limit` and `after` page the listing; `Link: rel="next"` names the next
/// page (`after` = the last number of this one) while more may remain.
#[tokio::test]
async fn versions_page_like_the_catalog() {
    let node = TestNode::start();
    let key = "paged/k.bin";
    for i in 0..7u64 {
        put_ok(&node, key, &generated(100, i + 1)).await;
    }

    let mut pages: Vec<Vec<u64>> = Vec::new();
    let mut next = Some(format!("/versions/{key}?limit=3"));
    while let Some(path) = next.take() {
        assert!(pages.len() < 10, "more than 10 pages: {pages:?}");
        let r = send(node.client.get(node.url(&path)), &format!("GET {path}")).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.describe());
        let page = numbers(r.json().as_array().expect("an array"));
        assert!(page.len() <= 3, "GET {path}: {page:?}");
        if let Some(link) = r.header("link") {
            let (target, params) = link
                .strip_prefix('<')
                .and_then(|l| l.split_once('>'))
                .unwrap_or_else(|| panic!("malformed Link: {link}"));
            assert!(params.contains("rel=\"next\""), "Link without rel=next: {link}");
            assert!(target.starts_with(&format!("/versions/{key}?")), "Link target: {target}");
            let after = target.split(['?', '&']).find_map(|p| p.strip_prefix("after="));
            assert!(!page.is_empty(), "GET {path}: an empty page with a next link");
            assert_eq!(after, Some(page.last().unwrap().to_string().as_str()), "Link target: {target}");
            next = Some(target.to_string());
        }
        pages.push(page);
    }
    assert_eq!(pages.concat(), [7, 6, 5, 4, 3, 2, 1], "pages: {pages:?}");
    assert_eq!(&pages[..2], &[vec![7, 6, 5], vec![4, 3, 2]], "pages: {pages:?}");

    let r = versions_as(&node, key, None).await;
    assert!(r.header("link").is_none(), "a whole listing with a next link: {}", r.describe());
    for (query, expected) in [("after=4", vec![3, 2, 1]), ("after=1", vec![]), ("after=5&limit=2", vec![4, 3])] {
        let path = format!("/versions/{key}?{query}");
        let r = send(node.client.get(node.url(&path)), &path).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.describe());
        assert_eq!(numbers(r.json().as_array().expect("an array")), expected, "GET {path}");
    }
    for limit in ["0", "abc"] {
        let path = format!("/versions/{key}?limit={limit}");
        assert_bad_request(&send(node.client.get(node.url(&path)), &path).await, &format!("GET {path}"));
    }
}

// ---------------------------------------------------------------------------
// Reading old versions
// ---------------------------------------------------------------------------

/// One upload replaced ten times: every version reads back byte-exact (GET
/// and HEAD), a Range of an old version is 206, its ETag gives 304.
#[tokio::test]
async fn replace_ten_times_and_read_every_version_back() {
    let node = TestNode::start_with(&[("SPILLWAY_KEEP_VERSIONS", "20")]);
    let key = "history/data.bin";
    let bodies: Vec<Vec<u8>> = (0..11).map(|i| generated(50 * KIB + 1000 * i, 100 + i as u64)).collect();
    for body in &bodies {
        put_ok(&node, key, body).await;
    }
    assert_eq!(numbers(&versions(&node, key).await), (1..=11).rev().collect::<Vec<u64>>());
    for (i, body) in bodies.iter().enumerate() {
        let n = i as u64 + 1;
        assert_version_serves(&node, key, n, body).await;
        let head = data_version(&node, reqwest::Method::HEAD, key, &n.to_string()).await;
        assert_eq!(head.status, 200, "HEAD version {n}: {}", head.describe());
        assert_eq!(head.header("content-length"), Some(body.len().to_string().as_str()), "HEAD version {n}");
        assert_eq!(head.etag(), Some(b3(body)), "HEAD version {n}");
    }
    assert_serves(&node, key, &bodies[10]).await;

    let old = &bodies[3];
    let path = format!("/data/{key}?version=4");
    let r = send(node.client.get(node.url(&path)).header("Range", "bytes=1000-2999"), "GET version 4, a Range").await;
    assert_eq!(r.status, 206, "{}", r.describe());
    assert_eq!(r.header("content-range"), Some(format!("bytes 1000-2999/{}", old.len()).as_str()));
    assert_same_bytes(&r.body, &old[1000..3000], "a Range of version 4");
    let etag = format!("\"{}\"", b3(old));
    let r = send(node.client.get(node.url(&path)).header("If-None-Match", &etag), "GET version 4, If-None-Match").await;
    assert_eq!(r.status, 304, "{}", r.describe());
    // The current version's ETag is not version 4's.
    let r =
        send(node.client.get(node.url(&format!("/data/{key}"))).header("If-None-Match", &etag), "GET current").await;
    assert_eq!(r.status, 200, "{}", r.describe());
}

/// `version` must be a positive integer (400 problem); an unknown version,
/// or a version of a key that never existed, is 404.
#[tokio::test]
async fn bad_and_unknown_versions() {
    let node = TestNode::start();
    put_ok(&node, "k.bin", b"one").await;
    put_ok(&node, "k.bin", b"two").await;
    for bad in ["abc", "0", "-1", "1.5"] {
        let r = data_version(&node, reqwest::Method::GET, "k.bin", bad).await;
        assert_bad_request(&r, &format!("GET ?version={bad}"));
        let r = data_version(&node, reqwest::Method::HEAD, "k.bin", bad).await;
        assert_eq!(r.status, 400, "HEAD ?version={bad}: {}", r.describe());
    }
    let r = data_version(&node, reqwest::Method::GET, "k.bin", "3").await;
    assert_problem(&r, 404, "not-found", "GET an unknown version");
    let r = data_version(&node, reqwest::Method::HEAD, "k.bin", "3").await;
    assert_eq!(r.status, 404, "HEAD an unknown version: {}", r.describe());
    let r = data_version(&node, reqwest::Method::GET, "never.bin", "1").await;
    assert_problem(&r, 404, "not-found", "GET a version of a key that never existed");
    assert_version_serves(&node, "k.bin", 1, b"one").await;
}

// ---------------------------------------------------------------------------
// Restore and delete
// ---------------------------------------------------------------------------

/// A restore commits the old bytes as a new current version; restoring the
/// version before it undoes it. Unknown versions and keys are 404.
#[tokio::test]
async fn restore_makes_a_new_version_and_can_be_undone() {
    let node = TestNode::start();
    let key = "r/data.csv";
    let (a, b, c) = (generated(2000, 1), generated(3000, 2), generated(4000, 3));
    for body in [&a, &b, &c] {
        put_ok(&node, key, body).await;
    }

    let record = restore_ok(&node, key, 1, &a).await;
    assert_serves(&node, key, &a).await;
    assert_eq!(node.json(&format!("/datasets/{key}")).await["blake3"], record["blake3"]);
    let list = versions(&node, key).await;
    assert_eq!(numbers(&list), [4, 3, 2, 1], "{list:?}");
    assert_eq!(currents(&list), [true, false, false, false], "{list:?}");
    assert_eq!(list[0]["blake3"], b3(&a), "the restored version: {list:?}");
    assert_eq!(list[0]["size"], a.len() as u64, "the restored version: {list:?}");

    // Undo: restore the version that was current before.
    restore_ok(&node, key, 3, &c).await;
    assert_serves(&node, key, &c).await;
    let list = versions(&node, key).await;
    assert_eq!(numbers(&list), [5, 4, 3, 2, 1], "{list:?}");
    assert_eq!(currents(&list), [true, false, false, false, false], "{list:?}");
    assert_eq!(list[0]["blake3"], b3(&c), "{list:?}");
    assert_version_serves(&node, key, 4, &a).await;
    assert_version_serves(&node, key, 2, &b).await;

    assert_problem(&restore_as(&node, key, 99, None).await, 404, "not-found", "restore an unknown version");
    assert_problem(&restore_as(&node, "never.csv", 1, None).await, 404, "not-found", "restore a key that never was");
    assert_eq!(numbers(&versions(&node, key).await), [5, 4, 3, 2, 1], "a failed restore made a version");
}

/// DELETE takes the key out of the catalog and `/data/`, but its versions
/// stay listed (none current) and readable, and a restore brings it back.
#[tokio::test]
async fn delete_keeps_versions_and_restore_brings_the_key_back() {
    let node = TestNode::start();
    let key = "d/data.bin";
    let (a, b) = (generated(2000, 1), generated(3000, 2));
    put_ok(&node, key, &a).await;
    put_ok(&node, key, &b).await;

    let r = delete_as(&node, key, false, None).await;
    assert_eq!(r.status, 204, "DELETE: {}", r.describe());
    assert!(!listed(&node, key).await, "a deleted key is still listed");
    assert_eq!(node.get(&format!("/data/{key}")).await.status(), 404);
    assert_eq!(node.get(&format!("/datasets/{key}")).await.status(), 404);
    let list = versions(&node, key).await;
    assert_eq!(numbers(&list), [2, 1], "{list:?}");
    assert_eq!(currents(&list), [false, false], "{list:?}");
    assert_version_serves(&node, key, 1, &a).await;

    restore_ok(&node, key, 2, &b).await;
    assert!(listed(&node, key).await, "a restored key is not listed");
    assert_serves(&node, key, &b).await;
    let list = versions(&node, key).await;
    assert_eq!(numbers(&list), [3, 2, 1], "{list:?}");
    assert_eq!(currents(&list), [true, false, false], "{list:?}");
}

/// `?versions=all` needs `admin` and leaves nothing: no listing, no version.
#[tokio::test]
async fn delete_all_versions_needs_admin_and_removes_everything() {
    let node = secured_node(&[]);
    let key = "all/data.bin";
    let (a, b) = (generated(2000, 1), generated(3000, 2));
    put_as(&node, key, &a, Some(WRITE)).await;
    put_as(&node, key, &b, Some(WRITE)).await;

    let r = delete_as(&node, key, true, Some(WRITE)).await;
    assert_problem(&r, 403, "forbidden", "DELETE ?versions=all with a write token");
    assert_eq!(numbers(&versions_ok_as(&node, key, Some(READ)).await), [2, 1], "after a refused delete");

    let r = delete_as(&node, key, true, Some(ADMIN)).await;
    assert_eq!(r.status, 204, "DELETE ?versions=all as admin: {}", r.describe());
    assert_problem(&versions_as(&node, key, Some(READ)).await, 404, "not-found", "GET /versions after ?versions=all");
    for path in [format!("/data/{key}"), format!("/data/{key}?version=1"), format!("/data/{key}?version=2")] {
        let r = send(node.client.get(node.url(&path)).bearer_auth(READ), &path).await;
        assert_problem(&r, 404, "not-found", &format!("GET {path} after ?versions=all"));
    }
    assert_problem(&restore_as(&node, key, 1, Some(WRITE)).await, 404, "not-found", "restore after ?versions=all");
}

/// With tokens: listing needs `read`, restore needs `write`, and each
/// version names the token that uploaded it.
#[tokio::test]
async fn versions_need_read_restore_needs_write_and_name_the_uploader() {
    let node = secured_node(&[]);
    let key = "who/data.bin";
    let (a, b) = (generated(2000, 1), generated(3000, 2));
    put_as(&node, key, &a, Some(WRITE)).await;
    put_as(&node, key, &b, Some(ADMIN)).await;

    assert_problem(&versions_as(&node, key, None).await, 401, "unauthorized", "GET /versions with no token");
    let list = versions_ok_as(&node, key, Some(READ)).await;
    assert_eq!(numbers(&list), [2, 1]);
    let by: Vec<&str> = list.iter().map(|v| v["uploaded_by"].as_str().unwrap_or("<none>")).collect();
    assert_eq!(by, ["boss", "writer"], "uploaded_by: {list:?}");

    let path = format!("/data/{key}?version=1");
    let r = send(node.client.get(node.url(&path)), &path).await;
    assert_problem(&r, 401, "unauthorized", "GET ?version=1 with no token");
    let r = send(node.client.get(node.url(&path)).bearer_auth(READ), &path).await;
    assert_eq!(r.status, 200, "GET ?version=1 as reader: {}", r.describe());
    assert_same_bytes(&r.body, &a, "GET ?version=1 as reader");

    assert_problem(&restore_as(&node, key, 1, None).await, 401, "unauthorized", "restore with no token");
    assert_problem(&restore_as(&node, key, 1, Some(READ)).await, 403, "forbidden", "restore as reader");
    let r = restore_as(&node, key, 1, Some(WRITE)).await;
    assert_eq!(r.status, 200, "restore as writer: {}", r.describe());
    assert_eq!(r.json()["blake3"], b3(&a));
}

// ---------------------------------------------------------------------------
// Retention
// ---------------------------------------------------------------------------

/// `keep_versions = 3`: after five commits exactly 5, 4, 3 are kept, at once
/// (the count is enforced at commit); the pruned ones are 404 to read and
/// to restore.
#[tokio::test]
async fn keep_versions_prunes_at_commit() {
    let node = TestNode::start_with(&[("SPILLWAY_KEEP_VERSIONS", "3")]);
    let key = "keep/data.bin";
    let bodies: Vec<Vec<u8>> = (0..5).map(|i| generated(2000 + i, 50 + i as u64)).collect();
    for body in &bodies {
        put_ok(&node, key, body).await;
    }
    let list = versions(&node, key).await;
    assert_eq!(numbers(&list), [5, 4, 3], "{list:?}");
    assert_eq!(currents(&list), [true, false, false], "{list:?}");
    for n in [1, 2] {
        let r = data_version(&node, reqwest::Method::GET, key, &n.to_string()).await;
        assert_problem(&r, 404, "not-found", &format!("GET pruned version {n}"));
        assert_problem(&restore_as(&node, key, n, None).await, 404, "not-found", &format!("restore pruned {n}"));
    }
    for n in 3..=5u64 {
        assert_version_serves(&node, key, n, &bodies[n as usize - 1]).await;
    }
}

/// The default keeps ten versions, the current one included.
#[tokio::test]
async fn default_keeps_ten_versions() {
    let node = TestNode::start();
    let key = "ten/data.bin";
    let bodies: Vec<Vec<u8>> = (0..11).map(|i| generated(1000 + i, 70 + i as u64)).collect();
    for body in &bodies {
        put_ok(&node, key, body).await;
    }
    assert_eq!(numbers(&versions(&node, key).await), (2..=11).rev().collect::<Vec<u64>>());
    let r = data_version(&node, reqwest::Method::GET, key, "1").await;
    assert_problem(&r, 404, "not-found", "GET version 1 of 11 with the default retention");
    assert_version_serves(&node, key, 2, &bodies[1]).await;
}

/// `keep_versions = 0` turns versioning off: only the current version is
/// kept, and a DELETE keeps nothing.
#[tokio::test]
async fn keep_versions_zero_keeps_only_the_current_one() {
    let node = TestNode::start_with(&[("SPILLWAY_KEEP_VERSIONS", "0")]);
    let key = "off/data.bin";
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| generated(2000 + i, 90 + i as u64)).collect();
    for body in &bodies {
        put_ok(&node, key, body).await;
    }
    let list = versions(&node, key).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(currents(&list), [true]);
    assert_eq!(list[0]["blake3"], b3(&bodies[2]), "{list:?}");
    assert_version_serves(&node, key, numbers(&list)[0], &bodies[2]).await;
    assert_serves(&node, key, &bodies[2]).await;

    let r = delete_as(&node, key, false, None).await;
    assert_eq!(r.status, 204, "DELETE: {}", r.describe());
    assert_problem(&versions_as(&node, key, None).await, 404, "not-found", "GET /versions after a DELETE, unversioned");
}

/// `keep_versions_for`: versions that stopped being current longer ago are
/// swept (a deleted key's too); a current version never is.
#[tokio::test]
async fn old_versions_expire_after_keep_versions_for() {
    let node = TestNode::start_with(&[("SPILLWAY_KEEP_VERSIONS_FOR", "3s")]);
    let solo = generated(1500, 1);
    put_ok(&node, "age/solo.bin", &solo).await;
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| generated(2000 + i, 10 + i as u64)).collect();
    for body in &bodies {
        put_ok(&node, "age/data.bin", body).await;
    }
    put_ok(&node, "age/gone.bin", b"deleted").await;
    assert_eq!(delete_as(&node, "age/gone.bin", false, None).await.status, 204);
    // Well within the 3 s: nothing swept yet.
    assert_eq!(numbers(&versions(&node, "age/data.bin").await), [3, 2, 1]);
    assert_eq!(numbers(&versions(&node, "age/gone.bin").await), [1]);

    let swept = eventually(Duration::from_secs(30), async || {
        numbers(&versions(&node, "age/data.bin").await) == [3]
            && versions_as(&node, "age/gone.bin", None).await.status == 404
    })
    .await;
    let (data, gone) = (versions_as(&node, "age/data.bin", None).await, versions_as(&node, "age/gone.bin", None).await);
    assert!(
        swept,
        "old versions not swept within 30 s: age/data.bin {}; age/gone.bin {}",
        data.describe(),
        gone.describe()
    );
    let list = versions(&node, "age/data.bin").await;
    assert_eq!(currents(&list), [true], "{list:?}");
    assert_serves(&node, "age/data.bin", &bodies[2]).await;
    let r = data_version(&node, reqwest::Method::GET, "age/data.bin", "1").await;
    assert_problem(&r, 404, "not-found", "GET a swept version");
    // The current version of a key with no other is never swept.
    let list = versions(&node, "age/solo.bin").await;
    assert_eq!((numbers(&list), currents(&list)), (vec![1], vec![true]), "{list:?}");
    assert_serves(&node, "age/solo.bin", &solo).await;
}

// ---------------------------------------------------------------------------
// Deduplication
// ---------------------------------------------------------------------------

/// Identical bytes are stored once: two keys' current files are the same
/// read-only inode, the second upload barely grows the disk while other
/// bytes grow it by their size, and removing one key leaves the other whole.
#[tokio::test]
async fn identical_bytes_are_stored_once_as_read_only_hard_links() {
    let node = TestNode::start();
    let same = generated(4 * MIB, 1);
    let other = generated(4 * MIB, 2);
    put_ok(&node, "dup/a.bin", &same).await;
    node.wait_spool_empty(Duration::from_secs(10));
    let before = allocated_bytes(&node.data_dir);
    put_ok(&node, "dup/b.bin", &same).await;
    node.wait_spool_empty(Duration::from_secs(10));
    let after_same = allocated_bytes(&node.data_dir);
    assert!(
        after_same < before + MIB as u64,
        "the same 4 MiB under a second key grew the data directory from {before} to {after_same} bytes"
    );
    put_ok(&node, "dup/c.bin", &other).await;
    node.wait_spool_empty(Duration::from_secs(10));
    let after_other = allocated_bytes(&node.data_dir);
    assert!(
        after_other >= after_same + 4 * MIB as u64,
        "other 4 MiB grew the data directory only from {after_same} to {after_other} bytes"
    );

    let (a, b, c) = (
        assert_read_only(&node, "dup/a.bin"),
        assert_read_only(&node, "dup/b.bin"),
        assert_read_only(&node, "dup/c.bin"),
    );
    assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "keys with the same bytes are not one inode");
    assert_ne!(a.ino(), c.ino(), "keys with other bytes share an inode");

    let r = delete_as(&node, "dup/a.bin", true, None).await;
    assert_eq!(r.status, 204, "DELETE ?versions=all: {}", r.describe());
    assert_serves(&node, "dup/b.bin", &same).await;
    assert_read_only(&node, "dup/b.bin");
    assert_eq!(fs::read(node.datasets_dir().join("dup/b.bin")).unwrap().len(), same.len());
    assert!(!node.datasets_dir().join("dup/a.bin").exists(), "dup/a.bin is still on disk");
}

/// `spillway_version_bytes` sums every kept version's size,
/// `spillway_stored_bytes` every distinct blob's.
#[tokio::test]
async fn metrics_count_logical_and_physical_bytes() {
    let node = TestNode::start();
    let thousand = generated(1000, 1);
    put_ok(&node, "m/a.bin", &thousand).await;
    put_ok(&node, "m/b.bin", &thousand).await;
    let gauges = async || (node.metric("spillway_version_bytes").await, node.metric("spillway_stored_bytes").await);
    let expect_gauges = async |version: f64, stored: f64, what: &str| {
        let reached =
            eventually(Duration::from_secs(10), async || gauges().await == (Some(version), Some(stored))).await;
        let got = gauges().await;
        assert!(reached, "{what}: (version_bytes, stored_bytes) = {got:?}, expected ({version}, {stored})");
    };
    expect_gauges(2000.0, 1000.0, "two keys with the same 1000 bytes").await;

    put_ok(&node, "m/a.bin", &generated(500, 2)).await;
    expect_gauges(2500.0, 1500.0, "a second version of 500 other bytes").await;
    assert_eq!(delete_as(&node, "m/b.bin", true, None).await.status, 204);
    expect_gauges(1500.0, 1500.0, "one key deleted with all its versions").await;
}

// ---------------------------------------------------------------------------
// Races, crashes, signed URLs
// ---------------------------------------------------------------------------

/// Eight writers upload the same few bodies to a few keys while deleting
/// them (keeping versions, or not); then fsck is clean, every listed version
/// reads back with its listed blake3, and keys holding the same bytes share
/// an inode.
#[test]
fn fsck_is_clean_after_racing_uploads_of_shared_bytes_and_deletes() {
    const TASKS: u64 = 8;
    const OPS: usize = 10;
    let mut node = TestNode::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    let bodies: Vec<Vec<u8>> = (0..3).map(|i| generated(256 * KIB + i, 500 + i as u64)).collect();
    let keys: Vec<String> = (0..5).map(|i| format!("race/k{i}.bin")).collect();

    let failures: Vec<String> = rt.block_on(async {
        let tasks = (0..TASKS).map(|t| {
            let (node, bodies, keys) = (&node, &bodies, &keys);
            async move {
                let mut rng = Rng(0x5EED_0000 + t);
                let mut failures = Vec::new();
                for _ in 0..OPS {
                    let key = &keys[rng.below(keys.len() as u64) as usize];
                    let (what, r, ok) = match rng.below(10) {
                        0..7 => {
                            let body = &bodies[rng.below(bodies.len() as u64) as usize];
                            let req = node.client.put(node.url(&format!("/data/{key}"))).body(body.clone());
                            (format!("PUT {key}"), send(req, "a racing PUT").await, &[200u16, 201][..])
                        }
                        n => {
                            let r = delete_as(node, key, n == 9, None).await;
                            (format!("DELETE {key} (all: {})", n == 9), r, &[204u16, 404][..])
                        }
                    };
                    if !ok.contains(&r.status) {
                        failures.push(format!("{what}: {}", r.describe()));
                    }
                }
                failures
            }
        });
        futures_util::future::join_all(tasks).await.concat()
    });
    assert!(failures.is_empty(), "racing requests failed:\n{}", failures.join("\n"));

    node.kill9();
    let fsck = node.cli(&["fsck"]);
    assert_eq!(fsck.code, Some(0), "fsck after the race: {fsck:?}");
    node.launch();

    rt.block_on(async {
        let catalog: BTreeMap<String, Value> =
            node.list_all().await.into_iter().map(|r| (r["key"].as_str().unwrap().to_string(), r)).collect();
        let mut inodes: BTreeMap<String, HashSet<(u64, u64)>> = BTreeMap::new();
        for key in &keys {
            let r = versions_as(&node, key, None).await;
            if r.status == 404 {
                assert!(!catalog.contains_key(key), "{key} is listed but has no versions");
                continue;
            }
            assert_eq!(r.status, 200, "GET /versions/{key}: {}", r.describe());
            let list = r.json().as_array().expect("an array").clone();
            let current: Vec<&Value> = list.iter().filter(|v| v["current"] == true).collect();
            assert!(current.len() <= 1, "{key}: more than one current version: {list:?}");
            match (current.first(), catalog.get(key)) {
                (Some(v), Some(record)) => assert_eq!(v["blake3"], record["blake3"], "{key}: {list:?} vs {record}"),
                (None, None) => {}
                (v, record) => panic!("{key}: current version {v:?} but catalog record {record:?}"),
            }
            for v in &list {
                let n = v["version"].as_u64().expect("version");
                let got = data_version(&node, reqwest::Method::GET, key, &n.to_string()).await;
                assert_eq!(got.status, 200, "GET {key}?version={n}: {}", got.describe());
                assert_eq!(got.body.len() as u64, v["size"].as_u64().unwrap(), "{key} version {n}: size");
                assert_eq!(b3(&got.body), v["blake3"].as_str().unwrap(), "{key} version {n}: blake3");
            }
            if let Some(record) = catalog.get(key) {
                let meta = assert_read_only(&node, key);
                let blake3 = record["blake3"].as_str().unwrap().to_string();
                inodes.entry(blake3).or_default().insert((meta.dev(), meta.ino()));
            }
        }
        for (blake3, set) in &inodes {
            assert_eq!(set.len(), 1, "current files with blake3 {blake3} are {} inodes", set.len());
        }
    });
}

/// A kill -9 while a replacement streams in never costs the version it
/// would have replaced.
#[test]
fn kill9_during_a_replace_keeps_the_previous_version() {
    let mut node = TestNode::start();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let key = "crash/data.bin";
    let v1 = generated(MIB, 1);
    rt.block_on(put_ok(&node, key, &v1));

    // A 64 MiB body, of which 16 MiB are fed before the kill; the sender
    // stays alive until then, so the body never ends.
    let (tx, body) = reply::fed_body();
    let req = node.client.put(node.url(&format!("/data/{key}"))).body(body);
    let put = rt.spawn(async move { req.send().await.map(|r| r.status()) });
    rt.block_on(async {
        for i in 0..16u64 {
            tokio::time::timeout(Duration::from_secs(30), tx.send(generated(MIB, 100 + i)))
                .await
                .expect("the node stopped taking the body")
                .expect("the PUT ended before the kill");
        }
    });
    node.kill9();
    drop(tx);
    let outcome =
        rt.block_on(async { tokio::time::timeout(Duration::from_secs(30), put).await }).expect("the PUT hung").unwrap();
    assert!(outcome.is_err(), "the PUT was answered before the kill: {outcome:?}");

    node.launch();
    rt.block_on(async {
        assert_serves(&node, key, &v1).await;
        let list = versions(&node, key).await;
        assert_eq!(numbers(&list), [1], "{list:?}");
        assert_eq!(currents(&list), [true], "{list:?}");
        assert_eq!(list[0]["blake3"], b3(&v1), "{list:?}");
    });
}

/// Version numbers grow with every commit to a key and are never reused,
/// not even once every version of the key is gone: a number names the same
/// bytes for good, so a URL signed for it (or a client resuming a `.part`
/// file) never gets other bytes. Numbering restarted at 1 after
/// `?versions=all`, and a URL signed for version 1 then served the new
/// upload. A URL for a version that does not exist is not minted.
#[tokio::test]
async fn version_numbers_are_never_reused() {
    let node = secured_node(&[]);
    let key = "reborn/life.bin";
    put_as(&node, key, b"one", Some(WRITE)).await;
    put_as(&node, key, b"two", Some(WRITE)).await;
    let path = format!("/datasets/{key}/download-url");
    let r = send(node.client.post(node.url(&path)).bearer_auth(READ).json(&json!({"version": 1})), &path).await;
    assert_eq!(r.status, 200, "POST {path} {{version: 1}}: {}", r.describe());
    let url = r.json()["url"].as_str().expect("url").to_string();
    let r = send(node.client.get(node.url(&url)), "the signed URL of version 1").await;
    assert_eq!(r.body, b"one");

    let purge = format!("/datasets/{key}?versions=all");
    let r = send(node.client.delete(node.url(&purge)).bearer_auth(ADMIN), &purge).await;
    assert_eq!(r.status, 204, "DELETE {purge}: {}", r.describe());
    put_as(&node, key, b"after the purge", Some(WRITE)).await;
    assert_eq!(numbers(&versions_ok_as(&node, key, Some(READ)).await), [3], "the version after a purge");
    let r = send(node.client.get(node.url(&url)), "the signed URL of version 1, after the purge").await;
    assert_problem(&r, 404, "not-found", "the signed URL of a purged version 1");

    for missing in [1, 4, 99] {
        let body = json!({ "version": missing });
        let r = send(node.client.post(node.url(&path)).bearer_auth(READ).json(&body), &path).await;
        assert_problem(&r, 404, "not-found", &format!("a download URL for version {missing}, which does not exist"));
    }
}

/// A download URL minted for a version serves that version; the signature
/// covers it, so another (or no) `version=` is 403.
#[tokio::test]
async fn signed_download_url_for_a_version() {
    let node = secured_node(&[]);
    let key = "signed/data.bin";
    let (v1, v2) = (generated(3000, 1), generated(4000, 2));
    put_as(&node, key, &v1, Some(WRITE)).await;
    put_as(&node, key, &v2, Some(WRITE)).await;

    let path = format!("/datasets/{key}/download-url");
    let r = send(node.client.post(node.url(&path)).bearer_auth(READ).json(&json!({"version": 1})), &path).await;
    assert_eq!(r.status, 200, "POST {path} {{version: 1}}: {}", r.describe());
    let url = r.json()["url"].as_str().expect("url").to_string();
    let (url_path, query) = url.split_once('?').unwrap_or_else(|| panic!("no query in {url}"));
    assert_eq!(url_path, format!("/data/{key}"), "{url}");
    let params: Vec<&str> = query.split('&').collect();
    assert!(params.contains(&"version=1"), "the URL does not carry version=1: {url}");

    let r = send(node.client.get(node.url(&url)), "the signed URL of version 1").await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_same_bytes(&r.body, &v1, "the signed URL of version 1");
    assert_eq!(r.etag(), Some(b3(&v1)));

    let other = params.iter().map(|p| if *p == "version=1" { "version=2" } else { p }).collect::<Vec<_>>().join("&");
    let without = params.iter().filter(|p| **p != "version=1").copied().collect::<Vec<_>>().join("&");
    for (what, tampered) in [("version=2", other), ("no version", without)] {
        let tampered = format!("{url_path}?{tampered}");
        let r = send(node.client.get(node.url(&tampered)), &tampered).await;
        assert_problem(&r, 403, "forbidden", &format!("the signed URL of version 1 with {what}"));
    }

    // Without a version, the URL serves the current bytes, as before.
    let r = send(node.client.post(node.url(&path)).bearer_auth(READ).json(&json!({})), &path).await;
    assert_eq!(r.status, 200, "{}", r.describe());
    let url = r.json()["url"].as_str().expect("url").to_string();
    let r = send(node.client.get(node.url(&url)), "a signed URL without a version").await;
    assert_eq!(r.status, 200, "{}", r.describe());
    assert_same_bytes(&r.body, &v2, "a signed URL without a version");
}

/// A data directory from before versions (datasets rows without a number,
/// no versions, no blobs, plain writable files) is adopted after a restart:
/// each dataset becomes version 1 of its key, its file read-only and its
/// blob, and a replace then keeps it as an older version.
#[tokio::test]
async fn datasets_from_before_versions_are_adopted() {
    let mut node = TestNode::start();
    let (old_a, old_b, newer) = (b"before versions: a".to_vec(), b"before versions: b".to_vec(), b"after".to_vec());
    put_ok(&node, "old/a.csv", &old_a).await;
    put_ok(&node, "old/b.csv", &old_b).await;
    node.kill9();
    // What a node from before versions left: rows without a number, and
    // files that are nobody's blob.
    let db = rusqlite::Connection::open(node.data_dir.join("index.sqlite")).unwrap();
    db.execute_batch(
        "DELETE FROM versions; DELETE FROM version_numbers; DELETE FROM blobs; UPDATE datasets SET number = 0;",
    )
    .unwrap();
    drop(db);
    fs::remove_dir_all(node.data_dir.join("blobs")).unwrap();
    for key in ["old/a.csv", "old/b.csv"] {
        let path = node.datasets_dir().join(key);
        let mut perms = fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        fs::set_permissions(&path, perms).unwrap();
    }

    node.launch();
    let adopted = eventually(Duration::from_secs(30), async || {
        let r = versions_as(&node, "old/b.csv", None).await;
        r.status == 200
    })
    .await;
    assert!(adopted, "old/b.csv was not adopted within 30 s:\n{}", node.log());
    for (key, body) in [("old/a.csv", &old_a), ("old/b.csv", &old_b)] {
        let list = versions(&node, key).await;
        assert_eq!((numbers(&list), currents(&list)), (vec![1], vec![true]), "{key}: {list:?}");
        assert_read_only(&node, key);
        assert_version_serves(&node, key, 1, body).await;
    }
    put_ok(&node, "old/a.csv", &newer).await;
    assert_eq!(numbers(&versions(&node, "old/a.csv").await), [2, 1]);
    assert_version_serves(&node, "old/a.csv", 1, &old_a).await;
    node.kill9();
    let fsck = node.cli(&["fsck"]);
    assert_eq!(fsck.code, Some(0), "fsck after the adoption: {fsck:?}");
}
