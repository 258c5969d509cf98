//! The store contract: the same behavioural tests run against both byte
//! stores, the filesystem (`fs_*`) and an S3-compatible object store (`s3_*`,
//! a real single-node Garage started per test): round trips of empty, small
//! and multipart bodies both framed ways, ranges, atomic replace, create-only
//! and compare-and-swap uploads, delete, key conflicts, listing, failed
//! uploads that leave nothing (no spool file; no object and no unfinished
//! multipart upload), digests, tus, restarts and `spillway reindex`.
//!
//! Then what only the object store does: presigned direct uploads and their
//! acknowledgement (size limits, digests, unusual keys, key conflicts, and
//! races with a second direct PUT or a second acknowledge), redirect
//! downloads, Garage going away and coming back (also in the middle of a
//! multipart upload), and multipart uploads whose client disconnects or
//! whose node crashes.
//!
//! What is in the bucket is read with `object_store` (the node's own S3
//! client crate) and Garage's admin API (`GetBucketInfo`:
//! `unfinishedMultipartUploads`).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use common::cluster::{self, http_get, Garage};
use common::reply::{fed_body, send, Reply};
use common::*;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::{json, Value};
use sha2::Digest;

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
/// How long what a failed upload leaves (spool files, multipart uploads)
/// may take to go away.
const SETTLE: Duration = Duration::from_secs(15);
/// How long one HTTP call may take.
const CALL: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// The fixture: a node on one of the stores.
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Fs,
    /// The S3 store as configured by default (uploads staged in a private
    /// object, copied into place at the commit).
    S3,
    /// The S3 store with `s3.stage_uploads = false`: the multipart upload is
    /// opened at the key's object and completed at the commit.
    S3Unstaged,
}

/// A node on the filesystem store, or on a Garage of its own.
struct Fx {
    /// Declared first, so the node stops before its Garage.
    node: TestNode,
    garage: Option<Garage>,
    kind: Kind,
}

impl Fx {
    /// A node on `kind`, with `SPILLWAY_MAX_DATASET_SIZE = 1 GiB` (so S3
    /// parts are 8 MiB) and `extra` settings on top.
    fn start(kind: Kind, extra: &[(&str, &str)]) -> Fx {
        let garage = (kind != Kind::Fs).then(Garage::single);
        let mut settings: Vec<(String, String)> = garage.as_ref().map(Garage::settings).unwrap_or_default();
        settings.push(("SPILLWAY_MAX_DATASET_SIZE".into(), "1 GiB".into()));
        if kind == Kind::S3Unstaged {
            settings.push(("SPILLWAY_S3__STAGE_UPLOADS".into(), "false".into()));
        }
        for (k, v) in extra {
            settings.retain(|(key, _)| key != k);
            settings.push((k.to_string(), v.to_string()));
        }
        let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let node = TestNode::start_with(&pairs);
        Fx { node, garage, kind }
    }

    /// [`Fx::start`] on an S3 `kind`; `None` (the test skips) where Garage
    /// is not installed.
    fn on_garage(kind: Kind, extra: &[(&str, &str)]) -> Option<Fx> {
        (!cluster::skip_without_garage()).then(|| Fx::start(kind, extra))
    }

    fn garage(&self) -> &Garage {
        self.garage.as_ref().expect("an S3 fixture")
    }

    /// What the store holds: `datasets/{key}` (and, S3, `incoming/{key}`)
    /// → size.
    async fn stored(&self) -> BTreeMap<String, u64> {
        match &self.garage {
            None => files_below(&self.node.datasets_dir())
                .into_iter()
                .map(|path| {
                    let size = std::fs::metadata(&path).map_or(u64::MAX, |m| m.len());
                    let rel = path.strip_prefix(&self.node.data_dir).unwrap().to_string_lossy().into_owned();
                    (rel, size)
                })
                .collect(),
            Some(garage) => bucket_objects(garage).await,
        }
    }

    /// Waits (bounded) until no upload is in flight: the spool and staging
    /// directories are empty and (S3) the bucket has no unfinished
    /// multipart upload. Panics with what is left.
    fn settle(&self, what: &str) {
        self.settle_within(what, SETTLE);
    }

    /// [`Fx::settle`], with a bound of `within`.
    fn settle_within(&self, what: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let spool = self.node.spool_files();
            let unfinished = self.garage.as_ref().map(unfinished_uploads);
            if spool.is_empty() && unfinished.is_none_or(|(uploads, parts)| uploads == 0 && parts == 0) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: after {within:?} the spool still holds {spool:?} and the bucket has \
                 (unfinished multipart uploads, parts) = {unfinished:?}\n{}",
                self.node.log_tail(40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<reqwest::Body>) -> Reply {
        let method_ = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.node.client.request(method_, self.node.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        send(req, &format!("{method} {path}")).await
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.call("GET", path, headers, None).await
    }

    async fn put(&self, key: &str, body: impl Into<reqwest::Body>, headers: &[(&str, &str)]) -> Reply {
        self.call("PUT", &data_path(key), headers, Some(body.into())).await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Reply {
        let headers = [("Content-Type", "application/json")];
        self.call("POST", path, &headers, Some(body.to_string().into())).await
    }

    /// PUT that must succeed (`201`/`200`) with the body's size, blake3 and
    /// ETag; returns the record.
    async fn put_ok(&self, key: &str, body: &[u8], framing: Framing, headers: &[(&str, &str)]) -> Value {
        let r = self.put(key, framed(body, framing), headers).await;
        // The node's log says what the store answered (a 503's cause is
        // logged, never sent).
        assert!(
            r.status == 201 || r.status == 200,
            "PUT {key} ({framing:?}): {}\n{}",
            r.describe(),
            self.node.log_tail(40)
        );
        let record = r.json();
        assert_eq!(record["key"], key, "PUT {key}: {record}");
        assert_eq!(record["size"], body.len() as u64, "PUT {key} ({framing:?}): {record}");
        assert_eq!(record["blake3"], b3(body), "PUT {key} ({framing:?}): {record}");
        assert_eq!(r.header("etag"), Some(etag_of(body).as_str()), "PUT {key} ({framing:?})");
        record
    }

    /// The stored blobs (versions' bytes, one per distinct content) → size.
    async fn blobs(&self) -> BTreeMap<String, u64> {
        match &self.garage {
            None => files_below(&self.node.data_dir.join("blobs"))
                .into_iter()
                .map(|path| {
                    let size = std::fs::metadata(&path).map_or(u64::MAX, |m| m.len());
                    (path.file_name().unwrap().to_string_lossy().into_owned(), size)
                })
                .collect(),
            Some(garage) => every_object(garage)
                .await
                .into_iter()
                .filter_map(|(path, size)| path.strip_prefix("blobs/").map(|name| (name.to_owned(), size)))
                .collect(),
        }
    }

    /// `GET /versions/{key}`: the version numbers, newest first.
    async fn versions(&self, key: &str) -> Vec<u64> {
        let r = self.get(&format!("/versions/{}", encode_key(key)), &[]).await;
        assert_eq!(r.status, 200, "GET /versions/{key}: {}", r.describe());
        r.json().as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect()
    }

    /// The record at `key`, or `None` on 404.
    async fn record(&self, key: &str) -> Option<Value> {
        let r = self.get(&record_path(key), &[]).await;
        match r.status {
            200 => Some(r.json()),
            404 => None,
            _ => panic!("GET /datasets/{key}: {}", r.describe()),
        }
    }

    /// Every record under `prefix`.
    async fn list(&self, prefix: &str) -> Vec<Value> {
        let r = self.get(&format!("/datasets?prefix={}&limit=10000", encode(prefix)), &[]).await;
        assert_eq!(r.status, 200, "list {prefix}: {}", r.describe());
        r.json().as_array().expect("a JSON array").clone()
    }

    /// `GET /data/{key}` answers 200 with exactly `expected` and its ETag.
    async fn assert_serves(&self, key: &str, expected: &[u8]) {
        let r = self.get(&data_path(key), &[]).await;
        assert_eq!(r.status, 200, "GET /data/{key}: {}", r.describe());
        assert_same_bytes(&r.body, expected, &format!("GET /data/{key} on {:?}", self.kind));
        assert_eq!(r.header("etag"), Some(etag_of(expected).as_str()), "GET /data/{key}");
        assert_eq!(r.header("content-length"), Some(expected.len().to_string().as_str()), "GET /data/{key}");
    }

    /// The node answered no request with a 500 so far.
    fn assert_no_500(&self) {
        let log = self.node.log();
        let fives: Vec<&str> = log.lines().filter(|l| l.contains("status=500") || l.contains("answered 500")).collect();
        assert!(fives.is_empty(), "the node answered 500:\n{}\n{}", fives.join("\n"), self.node.log_tail(40));
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/data/{key}` with each segment percent-encoded (the node decodes once).
fn data_path(key: &str) -> String {
    format!("/data/{}", encode_key(key))
}

/// `/datasets/{key}`, encoded the same way.
fn record_path(key: &str) -> String {
    format!("/datasets/{}", encode_key(key))
}

fn encode_key(key: &str) -> String {
    key.split('/').map(encode).collect::<Vec<_>>().join("/")
}

fn etag_of(bytes: &[u8]) -> String {
    format!("\"{}\"", b3(bytes))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`.
    Sized,
    /// `Transfer-Encoding: chunked`, in 256 KiB pieces.
    Chunked,
}

fn framed(body: &[u8], framing: Framing) -> reqwest::Body {
    match framing {
        Framing::Sized => body.to_vec().into(),
        Framing::Chunked => chunked(body, 256 * KIB),
    }
}

/// A body without a length (sent chunked), in `piece`-sized chunks.
fn chunked(body: &[u8], piece: usize) -> reqwest::Body {
    let pieces: Vec<Result<Bytes, std::io::Error>> =
        body.chunks(piece).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    reqwest::Body::wrap_stream(futures_util::stream::iter(pieces))
}

/// A chunked body whose first 64 KiB go at once and the rest after
/// `delay`: concurrent uploads all pass the node's early checks before any
/// of them commits.
fn delayed_body(body: &[u8], delay: Duration) -> reqwest::Body {
    let pieces = [Bytes::copy_from_slice(&body[..64 * KIB]), Bytes::copy_from_slice(&body[64 * KIB..])];
    let stream = futures_util::stream::iter(pieces).enumerate().then(move |(i, piece)| async move {
        if i == 1 {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, std::io::Error>(piece)
    });
    reqwest::Body::wrap_stream(stream)
}

fn assert_problem(r: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.describe());
    assert_eq!(r.code().as_deref(), Some(code), "{what}: {}", r.describe());
}

/// `503` problem `unavailable` with `Retry-After: 5`.
fn assert_unavailable(r: &Reply, what: &str) {
    assert_problem(r, 503, "unavailable", what);
    assert_eq!(r.header("retry-after"), Some("5"), "{what}: {}", r.describe());
}

// ---------------------------------------------------------------------------
// Looking into Garage: the bucket's objects (S3 API) and its counters
// (admin API).
// ---------------------------------------------------------------------------

fn bucket_client(garage: &Garage) -> AmazonS3 {
    AmazonS3Builder::new()
        .with_endpoint(garage.endpoint())
        .with_region(&garage.region)
        .with_bucket_name(&garage.bucket)
        .with_access_key_id(&garage.access_key)
        .with_secret_access_key(&garage.secret_key)
        .with_virtual_hosted_style_request(false)
        .with_allow_http(true)
        .build()
        .expect("an S3 client for the test's Garage")
}

/// Every object in the bucket → its size.
/// The bucket's objects but the blobs (versions' bytes, by content):
/// what uploads leave, by key.
async fn bucket_objects(garage: &Garage) -> BTreeMap<String, u64> {
    every_object(garage).await.into_iter().filter(|(path, _)| !path.starts_with("blobs/")).collect()
}

/// Every object in the bucket → size.
async fn every_object(garage: &Garage) -> BTreeMap<String, u64> {
    let client = bucket_client(garage);
    let objects: Vec<object_store::ObjectMeta> = tokio::time::timeout(CALL, client.list(None).try_collect())
        .await
        .expect("listing the bucket timed out")
        .expect("listing the bucket");
    objects.into_iter().map(|o| (o.location.to_string(), o.size)).collect()
}

/// The S3 ETag of the object at `path`.
async fn object_etag(garage: &Garage, path: &str) -> String {
    let client = bucket_client(garage);
    let meta = tokio::time::timeout(CALL, client.head(&object_store::path::Path::from(path)))
        .await
        .expect("HEAD timed out")
        .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
    meta.e_tag.unwrap_or_default().trim_matches('"').to_string()
}

/// Admin `GetBucketInfo` of the test bucket.
fn bucket_info(garage: &Garage) -> Value {
    let url = format!("{}/v2/GetBucketInfo?globalAlias={}", garage.admin_endpoint_of(0), garage.bucket);
    let token = format!("Bearer {}", garage.admin_token);
    let (status, body) = http_get(&url, &[("Authorization", &token)], Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("GetBucketInfo: {e}"));
    assert_eq!(status, 200, "GetBucketInfo: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GetBucketInfo ({e}): {body}"))
}

/// (unfinished multipart uploads, their parts) in the test bucket.
fn unfinished_uploads(garage: &Garage) -> (u64, u64) {
    let info = bucket_info(garage);
    let n = |field: &str| info[field].as_u64().unwrap_or_else(|| panic!("GetBucketInfo has no {field}: {info}"));
    (n("unfinishedMultipartUploads"), n("unfinishedMultipartUploadParts"))
}

/// Waits (bounded) until the bucket has at least one unfinished multipart
/// upload: the node is streaming a body into one.
fn wait_multipart_started(garage: &Garage, what: &str) {
    let deadline = Instant::now() + SETTLE;
    while unfinished_uploads(garage).0 == 0 {
        assert!(Instant::now() < deadline, "{what}: no multipart upload started within {SETTLE:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------
// Raw requests (bodies that break off, stall, or lack their last chunk).
// ---------------------------------------------------------------------------

/// How a raw upload's client ends.
#[derive(Clone, Copy, Debug)]
enum End {
    /// Closes the connection (after a moment, so the node saw the bytes).
    Drop,
    /// Half-closes (no more body) and reads the answer.
    HalfClose,
    /// Sends nothing more and reads the answer (the stall timeout's).
    Stall,
}

/// Sends a PUT head with `framing` and then `sent` bytes of body (as 1 MiB
/// chunks when chunked, never the last chunk), then ends as `end` says.
fn raw_put(node: &TestNode, key: &str, framing: &str, sent: &[u8], end: End) -> Option<RawResponse> {
    let mut s = node.raw();
    let chunked = framing.starts_with("Transfer-Encoding");
    let head = format!("PUT /data/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\n{framing}\r\nConnection: close\r\n\r\n");
    let _ = s.write_all(head.as_bytes());
    for piece in sent.chunks(MIB) {
        let written = if chunked {
            s.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .and_then(|_| s.write_all(piece))
                .and_then(|_| s.write_all(b"\r\n"))
        } else {
            s.write_all(piece)
        };
        if written.is_err() {
            break;
        }
    }
    let _ = s.flush();
    match end {
        End::Drop => {
            std::thread::sleep(Duration::from_millis(300));
            drop(s);
            None
        }
        End::HalfClose => {
            let _ = s.shutdown(Shutdown::Write);
            Some(read_response(&mut s, Duration::from_secs(30)).unwrap_or_else(|e| panic!("PUT {key}: {e}")))
        }
        End::Stall => Some(read_response(&mut s, Duration::from_secs(30)).unwrap_or_else(|e| panic!("PUT {key}: {e}"))),
    }
}

// ---------------------------------------------------------------------------
// The contract, once per store.
// ---------------------------------------------------------------------------

/// Each contract test runs as `fs_<name>` and `s3_<name>`; the S3 one skips
/// (with a line on stderr) where Garage is not installed. Those that
/// depend on how an upload reaches its key also run as
/// `s3_unstaged_<name>` (`s3.stage_uploads = false`).
macro_rules! contract {
    ($($name:ident => $fs:ident, $s3:ident $(, $unstaged:ident)?;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $fs() {
            $name(Kind::Fs).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $s3() {
            if cluster::skip_without_garage() {
                return;
            }
            $name(Kind::S3).await;
        }

        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $unstaged() {
                if cluster::skip_without_garage() {
                    return;
                }
                $name(Kind::S3Unstaged).await;
            }
        )?
    )*};
}

contract! {
    round_trip_empty => fs_round_trip_empty, s3_round_trip_empty;
    round_trip_small => fs_round_trip_small, s3_round_trip_small;
    round_trip_multipart => fs_round_trip_multipart, s3_round_trip_multipart, s3_unstaged_round_trip_multipart;
    ranges => fs_ranges, s3_ranges;
    replace_is_atomic => fs_replace_is_atomic, s3_replace_is_atomic, s3_unstaged_replace_is_atomic;
    conditional_uploads => fs_conditional_uploads, s3_conditional_uploads, s3_unstaged_conditional_uploads;
    delete_then_404 => fs_delete_then_404, s3_delete_then_404;
    key_conflicts => fs_key_conflicts, s3_key_conflicts;
    listing_by_prefix_and_pages => fs_listing_by_prefix_and_pages, s3_listing_by_prefix_and_pages;
    broken_uploads_leave_nothing => fs_broken_uploads_leave_nothing, s3_broken_uploads_leave_nothing, s3_unstaged_broken_uploads_leave_nothing;
    digest_mismatch_leaves_nothing => fs_digest_mismatch_leaves_nothing, s3_digest_mismatch_leaves_nothing, s3_unstaged_digest_mismatch_leaves_nothing;
    tus_upload_commits => fs_tus_upload_commits, s3_tus_upload_commits, s3_unstaged_tus_upload_commits;
    restart_keeps_everything => fs_restart_keeps_everything, s3_restart_keeps_everything;
    reindex_rebuilds_the_catalog => fs_reindex_rebuilds_the_catalog, s3_reindex_rebuilds_the_catalog, s3_unstaged_reindex_rebuilds_the_catalog;
    unusual_keys_round_trip => fs_unusual_keys_round_trip, s3_unusual_keys_round_trip;
    form_upload_commits => fs_form_upload_commits, s3_form_upload_commits;
    versions_restore_prune_and_dedup => fs_versions_restore_prune_and_dedup, s3_versions_restore_prune_and_dedup, s3_unstaged_versions_restore_prune_and_dedup;
}

/// Versions on either store: older versions read back (whole and a range),
/// a restore is a new version, a delete keeps them, pruning by count frees
/// what no version needs, and identical bytes under two keys are one blob.
async fn versions_restore_prune_and_dedup(kind: Kind) {
    let fx = Fx::start(kind, &[("SPILLWAY_KEEP_VERSIONS", "3")]);
    // One body past the part size (8 MiB), so S3 streams it in parts.
    let bodies = [generated(64 * KIB, 91), generated(9 * MIB, 92), generated(3 * KIB, 93)];
    fx.put_ok("ver/a", &bodies[0], Framing::Sized, &[]).await;
    fx.put_ok("ver/a", &bodies[1], Framing::Chunked, &[]).await;
    fx.put_ok("ver/twin", &bodies[0], Framing::Sized, &[]).await;
    assert_eq!(fx.versions("ver/a").await, [2, 1]);
    assert_eq!(fx.blobs().await.len(), 2, "two distinct contents, one blob each: {:?}", fx.blobs().await);

    let old = fx.get("/data/ver/a?version=1", &[]).await;
    assert_eq!(old.status, 200, "GET version 1: {}", old.describe());
    assert_same_bytes(&old.body, &bodies[0], "version 1");
    let range = fx.get("/data/ver/a?version=2", &[("Range", "bytes=8388600-8388615")]).await;
    assert_eq!(range.status, 206, "a range of version 2: {}", range.describe());
    assert_same_bytes(&range.body, &bodies[1][8_388_600..8_388_616], "a range of version 2");

    let restored = fx.post_json("/datasets/ver/a/action/restore", &json!({"version": 1})).await;
    assert_eq!(restored.status, 200, "restore: {}", restored.describe());
    fx.assert_serves("ver/a", &bodies[0]).await;
    assert_eq!(fx.versions("ver/a").await, [3, 2, 1]);

    let deleted = fx.call("DELETE", &record_path("ver/a"), &[], None).await;
    assert_eq!(deleted.status, 204, "DELETE: {}", deleted.describe());
    assert_eq!(fx.get(&data_path("ver/a"), &[]).await.status, 404);
    let back = fx.post_json("/datasets/ver/a/action/restore", &json!({"version": 2})).await;
    assert_eq!(back.status, 200, "restore a deleted key: {}", back.describe());
    fx.assert_serves("ver/a", &bodies[1]).await;
    // Four commits with `keep_versions = 3`: version 1 is pruned; its bytes
    // stay, since version 3 and the twin hold the same.
    assert_eq!(fx.versions("ver/a").await, [4, 3, 2]);
    fx.put_ok("ver/a", &bodies[2], Framing::Sized, &[]).await;
    fx.put_ok("ver/a", &bodies[2], Framing::Sized, &[]).await;
    assert_eq!(fx.versions("ver/a").await, [6, 5, 4]);
    // Versions 1 to 3 are pruned; version 4 (the restore of 2) still
    // holds the 9 MiB.
    assert_eq!(fx.blobs().await.len(), 3, "{:?}", fx.blobs().await);
    fx.put_ok("ver/a", &bodies[2], Framing::Sized, &[]).await;
    assert_eq!(fx.versions("ver/a").await, [7, 6, 5]);
    let sizes: Vec<u64> = fx.blobs().await.into_values().collect();
    assert_eq!(fx.blobs().await.len(), 2, "the 9 MiB blob is freed with its last version: {sizes:?}");
    fx.assert_serves("ver/twin", &bodies[0]).await;

    for key in ["ver/a", "ver/twin"] {
        let gone = fx.call("DELETE", &format!("{}?versions=all", record_path(key)), &[], None).await;
        assert_eq!(gone.status, 204, "DELETE {key}?versions=all: {}", gone.describe());
    }
    assert!(fx.blobs().await.is_empty(), "no version left, no blob left: {:?}", fx.blobs().await);
    fx.settle("after versions");
    fx.assert_no_500();
}

/// An empty dataset, with `Content-Length: 0` and as a chunked body of only
/// its last chunk.
async fn round_trip_empty(kind: Kind) {
    let fx = Fx::start(kind, &[]);
    let record = fx.put_ok("empty/sized", b"", Framing::Sized, &[]).await;
    assert_eq!(record["size"], 0);
    let raw = raw_request(
        &fx.node,
        b"PUT /data/empty/chunked HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(status_of(&raw), 201, "empty chunked PUT: {raw}");
    for key in ["empty/sized", "empty/chunked"] {
        fx.assert_serves(key, b"").await;
        let head = fx.call("HEAD", &format!("/data/{key}"), &[], None).await;
        assert_eq!(head.status, 200, "HEAD {key}: {}", head.describe());
        assert_eq!(head.header("content-length"), Some("0"), "HEAD {key}");
        assert_eq!(head.header("etag"), Some(etag_of(b"").as_str()), "HEAD {key}");
        // No byte of an empty dataset can be asked for.
        let r = fx.get(&format!("/data/{key}"), &[("Range", "bytes=0-0")]).await;
        assert_problem(&r, 416, "range-not-satisfiable", &format!("Range bytes=0-0 of empty {key}"));
        assert_eq!(r.header("content-range"), Some("bytes */0"));
    }
    let listed = fx.list("empty/").await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().all(|r| r["size"] == 0 && r["blake3"] == b3(b"")), "{listed:?}");
    let expected: BTreeMap<String, u64> =
        [("datasets/empty/chunked".into(), 0), ("datasets/empty/sized".into(), 0)].into();
    assert_eq!(fx.stored().await, expected);
    fx.settle("after empty uploads");
    fx.assert_no_500();
}

/// A small body (in the node's memory spool; one S3 PUT), both framings.
async fn round_trip_small(kind: Kind) {
    let fx = Fx::start(kind, &[]);
    let body = generated(100 * KIB + 3, 7);
    for (key, framing) in [("small/sized.csv", Framing::Sized), ("small/chunked.csv", Framing::Chunked)] {
        let record = fx.put_ok(key, &body, framing, &[("Content-Type", "text/csv")]).await;
        assert_eq!(record["content_type"], "text/csv", "{record}");
        fx.assert_serves(key, &body).await;
        let r = fx.get(&format!("/data/{key}"), &[]).await;
        assert_eq!(r.header("content-type"), Some("text/csv"), "GET {key}");
        // The ETag is the blake3: If-None-Match with it is a 304.
        let r = fx.get(&format!("/data/{key}"), &[("If-None-Match", &etag_of(&body))]).await;
        assert_eq!(r.status, 304, "If-None-Match on {key}: {}", r.describe());
    }
    if let Some(garage) = &fx.garage {
        // One PUT: an S3 ETag without a part count.
        let etag = object_etag(garage, "datasets/small/sized.csv").await;
        assert!(!etag.contains('-'), "a small body became a multipart object (ETag {etag})");
    }
    let size = body.len() as u64;
    let expected: BTreeMap<String, u64> =
        [("datasets/small/chunked.csv".into(), size), ("datasets/small/sized.csv".into(), size)].into();
    assert_eq!(fx.stored().await, expected);
    fx.settle("after small uploads");
    fx.assert_no_500();
}

/// Bodies around and past the 8 MiB memory spool: exactly 8 MiB stays in
/// memory (one S3 PUT); past it the filesystem spools to disk and the S3
/// store streams into a multipart upload of 8 MiB parts (exactly two full
/// parts, a full part and one byte, three parts).
async fn round_trip_multipart(kind: Kind) {
    let fx = Fx::start(kind, &[]);
    // (size, framing, S3 parts: 0 for a single PUT)
    let cases = [
        (8 * MIB, Framing::Sized, 0),
        (8 * MIB, Framing::Chunked, 0),
        (8 * MIB + 1, Framing::Chunked, 2),
        (16 * MIB, Framing::Sized, 2),
        (16 * MIB, Framing::Chunked, 2),
        (20 * MIB + 5, Framing::Sized, 3),
        (20 * MIB + 5, Framing::Chunked, 3),
    ];
    let mut expected = BTreeMap::new();
    for (i, (size, framing, parts)) in cases.into_iter().enumerate() {
        let key = format!("big/{i}-{size}-{framing:?}.bin");
        let body = generated(size, 8 + size as u64);
        let record = fx.put_ok(&key, &body, framing, &[]).await;
        assert_eq!(record["content_type"], "application/octet-stream", "{record}");
        fx.assert_serves(&key, &body).await;
        if let Some(garage) = &fx.garage {
            let etag = object_etag(garage, &format!("datasets/{key}")).await;
            if parts == 0 {
                assert!(!etag.contains('-'), "{key}: S3 ETag {etag}: a multipart object, not one PUT");
            } else {
                assert!(etag.ends_with(&format!("-{parts}")), "{key}: S3 ETag {etag}, not a {parts}-part upload");
            }
        }
        expected.insert(format!("datasets/{key}"), size as u64);
        fx.settle(&format!("after PUT {key}"));
    }
    let listed = fx.list("big/").await;
    assert_eq!(listed.len(), cases.len());
    assert_eq!(fx.stored().await, expected);
    fx.assert_no_500();
}

/// Ranges of a dataset that (S3) spans two parts: first bytes, the
/// middle, across the part edge, suffix, open-ended; 416 past the end.
async fn ranges(kind: Kind) {
    let fx = Fx::start(kind, &[("SPILLWAY_SPOOL_MEMORY", "1 MiB")]);
    let len = 9 * MIB + 17;
    let body = generated(len, 9);
    fx.put_ok("r/data.bin", &body, Framing::Sized, &[]).await;
    if let Some(garage) = &fx.garage {
        let etag = object_etag(garage, "datasets/r/data.bin").await;
        assert!(etag.ends_with("-2"), "S3 ETag {etag}, not a 2-part upload");
    }
    let etag = etag_of(&body);
    let (last, edge) = (len - 1, 8 * MIB);
    let cases: Vec<(String, usize, usize)> = vec![
        ("bytes=0-0".into(), 0, 0),
        ("bytes=0-99".into(), 0, 99),
        (format!("bytes={}-{}", 3 * MIB + 5, 3 * MIB + 70_004), 3 * MIB + 5, 3 * MIB + 70_004),
        (format!("bytes={}-{}", edge - 10, edge + 10), edge - 10, edge + 10),
        ("bytes=-500".into(), len - 500, last),
        (format!("bytes={}-", len - 1000), len - 1000, last),
        (format!("bytes={last}-{last}"), last, last),
    ];
    for (range, start, end) in cases {
        let r = fx.get("/data/r/data.bin", &[("Range", &range)]).await;
        assert_eq!(r.status, 206, "{range}: {}", r.describe());
        assert_eq!(r.header("content-range"), Some(format!("bytes {start}-{end}/{len}").as_str()), "{range}");
        assert_eq!(r.header("content-length"), Some((end - start + 1).to_string().as_str()), "{range}");
        assert_eq!(r.header("etag"), Some(etag.as_str()), "{range}");
        assert!(r.body[..] == body[start..=end], "{range}: {} other bytes", r.body.len());
    }
    for range in [format!("bytes={len}-"), "bytes=99999999-".to_string()] {
        let r = fx.get("/data/r/data.bin", &[("Range", &range)]).await;
        assert_problem(&r, 416, "range-not-satisfiable", &range);
        assert_eq!(r.header("content-range"), Some(format!("bytes */{len}").as_str()), "{range}");
    }
    let head = fx.call("HEAD", "/data/r/data.bin", &[], None).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some(len.to_string().as_str()));
    assert_eq!(head.header("accept-ranges"), Some("bytes"));
    fx.assert_no_500();
}

/// Replacing a dataset (S3: a multipart upload completed over the old
/// object) keeps one version, and readers all along see the old bytes or
/// the new, whole, with the matching ETag.
async fn replace_is_atomic(kind: Kind) {
    let fx = Fx::start(kind, &[("SPILLWAY_SPOOL_MEMORY", "1 MiB")]);
    let versions = [generated(3 * MIB, 11), generated(3 * MIB, 12)];
    let hashes: Arc<Vec<String>> = Arc::new(versions.iter().map(|v| b3(v)).collect());
    fx.put_ok("rep/data", &versions[0], Framing::Sized, &[]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, hashes, stop) =
                (fx.node.client.clone(), fx.node.url("/data/rep/data"), hashes.clone(), stop.clone());
            tokio::spawn(async move {
                let mut reads = 0usize;
                while !stop.load(Ordering::SeqCst) || reads == 0 {
                    let resp = client.get(&url).send().await.map_err(|e| format!("GET: {e:?}"))?;
                    let status = resp.status();
                    let etag = resp.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let body = resp.bytes().await.map_err(|e| format!("a download broke off: {e:?}"))?;
                    if status != 200 {
                        return Err(format!("GET answered {status}: {}", String::from_utf8_lossy(&body)));
                    }
                    let hash = b3(&body);
                    if !hashes.contains(&hash) {
                        return Err(format!("a mix of versions: {} bytes, blake3 {hash}", body.len()));
                    }
                    if etag != format!("\"{hash}\"") {
                        return Err(format!("ETag {etag} with the bytes of {hash}"));
                    }
                    reads += 1;
                }
                Ok::<usize, String>(reads)
            })
        })
        .collect();
    for round in 1..=40 {
        let version = &versions[round % 2];
        let r = fx.put("rep/data", version.clone(), &[]).await;
        assert_eq!(r.status, 200, "replace {round}: {}", r.describe());
        assert_eq!(r.json()["blake3"], b3(version));
    }
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        let reads =
            reader.await.unwrap().unwrap_or_else(|e| panic!("a reader during replaces: {e}\n{}", fx.node.log_tail(40)));
        assert!(reads > 0);
    }
    fx.assert_serves("rep/data", &versions[0]).await;
    let listed = fx.list("rep/").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["blake3"], hashes[0]);
    let expected: BTreeMap<String, u64> = [("datasets/rep/data".into(), 3 * MIB as u64)].into();
    assert_eq!(fx.stored().await, expected, "one version is kept");
    fx.settle("after replaces");
    fx.assert_no_500();
}

/// `If-None-Match: *` creates only; `If-Match` is a compare-and-swap, also
/// between concurrent uploads (the index decides: one wins, the others get
/// 412 and leave nothing, S3 multipart uploads included).
async fn conditional_uploads(kind: Kind) {
    let fx = Fx::start(kind, &[("SPILLWAY_SPOOL_MEMORY", "1 MiB")]);
    let v1 = generated(50 * KIB, 21);
    let v2 = generated(2 * MIB, 22);
    let v3 = generated(60 * KIB, 23);

    let r = fx.put("c/k", v1.clone(), &[("If-None-Match", "*")]).await;
    assert_eq!(r.status, 201, "create-only on a new key: {}", r.describe());
    let r = fx.put("c/k", v3.clone(), &[("If-None-Match", "*")]).await;
    assert_problem(&r, 412, "precondition-failed", "create-only on an existing key");
    fx.assert_serves("c/k", &v1).await;

    let r = fx.put("c/k", framed(&v2, Framing::Chunked), &[("If-Match", &etag_of(&v1))]).await;
    assert_eq!(r.status, 200, "If-Match with the current ETag: {}", r.describe());
    let r = fx.put("c/k", v3.clone(), &[("If-Match", &etag_of(&v1))]).await;
    assert_problem(&r, 412, "precondition-failed", "If-Match with a stale ETag");
    fx.assert_serves("c/k", &v2).await;
    let r = fx.put("c/absent", v3.clone(), &[("If-Match", &etag_of(&v1))]).await;
    assert_problem(&r, 412, "precondition-failed", "If-Match on an absent key");
    assert!(fx.record("c/absent").await.is_none());

    // Four compare-and-swaps from the same version at once: exactly one wins.
    let bodies: Vec<Vec<u8>> = (0..4).map(|i| generated(2 * MIB, 30 + i)).collect();
    let tag = etag_of(&v2);
    let if_match = [("If-Match", tag.as_str())];
    let replies = futures_util::future::join_all(
        bodies.iter().map(|b| fx.put("c/k", delayed_body(b, Duration::from_secs(1)), &if_match)),
    )
    .await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    let winners: Vec<usize> = (0..4).filter(|&i| replies[i].status == 200).collect();
    assert_eq!(winners.len(), 1, "concurrent If-Match: {statuses:?}");
    for r in replies.iter().filter(|r| r.status != 200) {
        assert_problem(r, 412, "precondition-failed", "a concurrent If-Match that lost");
    }
    fx.assert_serves("c/k", &bodies[winners[0]]).await;

    // Four create-only uploads of a new key at once: exactly one creates it.
    let create_only = [("If-None-Match", "*")];
    let replies = futures_util::future::join_all(
        bodies.iter().map(|b| fx.put("c/new", delayed_body(b, Duration::from_secs(1)), &create_only)),
    )
    .await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    let winners: Vec<usize> = (0..4).filter(|&i| replies[i].status == 201).collect();
    assert_eq!(winners.len(), 1, "concurrent If-None-Match: *: {statuses:?}");
    for r in replies.iter().filter(|r| r.status != 201) {
        assert_problem(r, 412, "precondition-failed", "a concurrent create-only that lost");
    }
    fx.assert_serves("c/new", &bodies[winners[0]]).await;

    let expected: BTreeMap<String, u64> =
        [("datasets/c/k".into(), 2 * MIB as u64), ("datasets/c/new".into(), 2 * MIB as u64)].into();
    assert_eq!(fx.stored().await, expected);
    fx.settle("after the losing conditional uploads");
    fx.assert_no_500();
}

/// DELETE removes bytes and record: 404 after, and the key is new again.
async fn delete_then_404(kind: Kind) {
    let fx = Fx::start(kind, &[]);
    let small = generated(10 * KIB, 41);
    let big = generated(10 * MIB, 42);
    fx.put_ok("d/small", &small, Framing::Sized, &[]).await;
    fx.put_ok("d/big", &big, Framing::Chunked, &[]).await;
    fx.put_ok("keep", b"kept", Framing::Sized, &[]).await;
    for key in ["d/small", "d/big"] {
        let r = fx.call("DELETE", &format!("/datasets/{key}"), &[], None).await;
        assert_eq!(r.status, 204, "DELETE {key}: {}", r.describe());
        assert_problem(&fx.get(&format!("/data/{key}"), &[]).await, 404, "not-found", &format!("GET /data/{key}"));
        assert_problem(&fx.get(&format!("/datasets/{key}"), &[]).await, 404, "not-found", &format!("record {key}"));
        let r = fx.call("HEAD", &format!("/data/{key}"), &[], None).await;
        assert_eq!(r.status, 404, "HEAD {key} after DELETE");
        let r = fx.call("DELETE", &format!("/datasets/{key}"), &[], None).await;
        assert_problem(&r, 404, "not-found", &format!("DELETE {key} again"));
    }
    assert_eq!(fx.list("d/").await, Vec::<Value>::new());
    let expected: BTreeMap<String, u64> = [("datasets/keep".into(), 4)].into();
    assert_eq!(fx.stored().await, expected);
    let r = fx.put("d/small", small.clone(), &[]).await;
    assert_eq!(r.status, 201, "PUT after DELETE creates: {}", r.describe());
    fx.assert_serves("d/small", &small).await;
    fx.assert_serves("keep", b"kept").await;
    fx.assert_no_500();
}

/// `a` and `a/b` cannot both be datasets, either way round.
async fn key_conflicts(kind: Kind) {
    let fx = Fx::start(kind, &[]);
    fx.put_ok("a", b"file a", Framing::Sized, &[]).await;
    for key in ["a/b", "a/b/c"] {
        let r = fx.put(key, "below a file".as_bytes().to_vec(), &[]).await;
        assert_problem(&r, 409, "key-conflict", &format!("PUT {key} with `a` stored"));
    }
    fx.put_ok("x/y", b"file x/y", Framing::Sized, &[]).await;
    let r = fx.put("x", "over a folder".as_bytes().to_vec(), &[]).await;
    assert_problem(&r, 409, "key-conflict", "PUT x with `x/y` stored");
    let r = fx.put("x", framed(b"over a folder", Framing::Chunked), &[]).await;
    assert_problem(&r, 409, "key-conflict", "chunked PUT x with `x/y` stored");
    let expected: BTreeMap<String, u64> = [("datasets/a".into(), 6), ("datasets/x/y".into(), 8)].into();
    assert_eq!(fx.stored().await, expected);
    fx.settle("after refused conflicting keys");
    // Once `a` is gone, `a/b` may be a dataset (and then `a` may not).
    assert_eq!(fx.call("DELETE", "/datasets/a", &[], None).await.status, 204);
    fx.put_ok("a/b", b"now a folder", Framing::Sized, &[]).await;
    let r = fx.put("a", "file again".as_bytes().to_vec(), &[]).await;
    assert_problem(&r, 409, "key-conflict", "PUT a with `a/b` stored");
    fx.assert_serves("a/b", b"now a folder").await;
    fx.assert_serves("x/y", b"file x/y").await;
    fx.assert_no_500();
}

/// `GET /datasets`: prefix, bytewise order, `limit` and `Link` paging.
async fn listing_by_prefix_and_pages(kind: Kind) {
    let fx = Fx::start(kind, &[]);
    let keys = ["l/a", "l/b", "l/c/1", "l/c/2", "l/d", "lz", "m"];
    for (i, key) in keys.iter().rev().enumerate() {
        fx.put_ok(key, &generated(100 + i, i as u64), Framing::Sized, &[]).await;
    }
    let all: Vec<String> = fx.list("").await.iter().map(|r| r["key"].as_str().unwrap().to_string()).collect();
    assert_eq!(all, keys);
    let below_c: Vec<Value> = fx.list("l/c/").await;
    assert_eq!(below_c.iter().map(|r| r["key"].as_str().unwrap()).collect::<Vec<_>>(), ["l/c/1", "l/c/2"]);

    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut next = Some("/datasets?prefix=l%2F&limit=2".to_string());
    while let Some(path) = next.take() {
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
        let r = fx.get(&path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.describe());
        let page: Vec<String> =
            r.json().as_array().unwrap().iter().map(|v| v["key"].as_str().unwrap().into()).collect();
        for record in r.json().as_array().unwrap() {
            assert!(record["size"].is_u64() && record["blake3"].as_str().is_some_and(|h| h.len() == 64), "{record}");
        }
        next = r.header("link").map(|link| {
            assert!(link.ends_with("rel=\"next\""), "Link: {link}");
            link[link.find('<').unwrap() + 1..link.find('>').unwrap()].to_string()
        });
        if !page.is_empty() {
            pages.push(page);
        }
    }
    assert_eq!(pages, [vec!["l/a", "l/b"], vec!["l/c/1", "l/c/2"], vec!["l/d"]]);
    let r = fx.get("/datasets?limit=5&after=l%2Fd", &[]).await;
    let rest: Vec<String> = r.json().as_array().unwrap().iter().map(|v| v["key"].as_str().unwrap().into()).collect();
    assert_eq!(rest, ["lz", "m"]);
    fx.assert_no_500();
}

/// A body that breaks off (dropped mid-way, either framing), ends short
/// (half-close) or stalls is never stored: nothing at the key, no spool
/// file, no unfinished multipart upload, and the version already stored at
/// the key keeps serving.
async fn broken_uploads_leave_nothing(kind: Kind) {
    let fx = Fx::start(kind, &[("SPILLWAY_STALL_TIMEOUT", "2")]);
    let previous = generated(100 * KIB, 51);
    let record = fx.put_ok("t/prev", &previous, Framing::Sized, &[]).await;
    let twelve = generated(12 * MIB, 52);
    let whole = "Content-Length: 20971520";
    let chunked = "Transfer-Encoding: chunked";
    let cases: [(&str, &str, &[u8], End); 6] = [
        ("t/prev", whole, &twelve, End::Drop),
        ("t/new", chunked, &twelve, End::Drop),
        ("t/prev", chunked, &twelve, End::HalfClose),
        ("t/new", "Content-Length: 100", b"only forty bytes of the hundred promised", End::HalfClose),
        ("t/prev", whole, &twelve, End::Stall),
        ("t/new", chunked, &twelve, End::Stall),
    ];
    for (key, framing, sent, end) in cases {
        let what = format!("PUT {key} ({framing}, {} bytes sent, {end:?})", sent.len());
        if let Some(resp) = raw_put(&fx.node, key, framing, sent, end) {
            assert!(!(200..300).contains(&resp.status), "{what}: {} {}", resp.status, resp.text());
            assert_ne!(resp.status, 500, "{what}: {}", resp.text());
            if matches!(end, End::Stall) {
                assert_eq!(resp.status, 408, "{what}: {}", resp.text());
                assert_eq!(resp.code().as_deref(), Some("upload-stalled"), "{what}: {}", resp.text());
            }
        }
        fx.settle(&what);
        assert_eq!(fx.record("t/prev").await.as_ref(), Some(&record), "{what}: the stored version changed");
        assert!(fx.record("t/new").await.is_none(), "{what}: t/new exists");
        fx.assert_serves("t/prev", &previous).await;
        let expected: BTreeMap<String, u64> = [("datasets/t/prev".into(), previous.len() as u64)].into();
        assert_eq!(fx.stored().await, expected, "{what}");
    }
    fx.assert_no_500();
}

/// A body whose `X-Blake3`, `Content-Digest` or `Repr-Digest` does not
/// match is refused (400 digest-mismatch), small or multipart, and leaves
/// nothing; the stored version keeps serving.
async fn digest_mismatch_leaves_nothing(kind: Kind) {
    let fx = Fx::start(kind, &[]);
    let previous = generated(50 * KIB, 61);
    fx.put_ok("dg/k", &previous, Framing::Sized, &[]).await;
    let small = generated(MIB, 62);
    let big = generated(20 * MIB, 63);
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let wrong_b3 = b3(b"something else");
    let wrong_sha256 = format!("sha-256=:{}:", b64(&sha2::Sha256::digest(b"something else")));
    let wrong_sha512 = format!("sha-512=:{}:", b64(&sha2::Sha512::digest(b"something else")));
    let cases: [(&str, &[u8], Framing, &str, &str); 5] = [
        ("dg/k", &small, Framing::Sized, "X-Blake3", &wrong_b3),
        ("dg/k", &big, Framing::Sized, "Content-Digest", &wrong_sha256),
        ("dg/k", &big, Framing::Chunked, "X-Blake3", &wrong_b3),
        ("dg/new", &big, Framing::Chunked, "Repr-Digest", &wrong_sha512),
        ("dg/new", &small, Framing::Chunked, "Content-Digest", &wrong_sha256),
    ];
    for (key, body, framing, header, value) in cases {
        let what = format!("PUT {key} ({} bytes, {framing:?}) with a wrong {header}", body.len());
        let r = fx.put(key, framed(body, framing), &[(header, value)]).await;
        assert_problem(&r, 400, "digest-mismatch", &what);
        fx.settle(&what);
        assert!(fx.record("dg/new").await.is_none(), "{what}: dg/new exists");
        fx.assert_serves("dg/k", &previous).await;
        let expected: BTreeMap<String, u64> = [("datasets/dg/k".into(), previous.len() as u64)].into();
        assert_eq!(fx.stored().await, expected, "{what}");
    }
    // The right digest is accepted, for the record.
    fx.put_ok("dg/new", &big, Framing::Chunked, &[("X-Blake3", &b3(&big))]).await;
    fx.assert_serves("dg/new", &big).await;
    fx.settle("after a good upload");
    fx.assert_no_500();
}

/// A resumable upload (creation, then two PATCHes) commits the dataset at
/// its key like a PUT (S3: a multipart upload from the local file).
async fn tus_upload_commits(kind: Kind) {
    let fx = Fx::start(kind, &[]);
    let body = generated(10 * MIB + 3, 71);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let metadata = format!("key {},name {}", b64("tus/data.bin"), b64("Resumed"));
    let length = body.len().to_string();
    let r = fx
        .call(
            "POST",
            "/uploads",
            &[("Tus-Resumable", "1.0.0"), ("Upload-Length", &length), ("Upload-Metadata", &metadata)],
            None,
        )
        .await;
    assert_eq!(r.status, 201, "tus creation: {}", r.describe());
    let location = r.header("location").expect("a Location").to_string();
    let path = match location.find("/uploads/") {
        Some(i) => location[i..].to_string(),
        None => panic!("Location {location}"),
    };
    let split = 6 * MIB;
    for (offset, piece) in [(0, &body[..split]), (split, &body[split..])] {
        let offset_text = offset.to_string();
        let headers = [
            ("Tus-Resumable", "1.0.0"),
            ("Content-Type", "application/offset+octet-stream"),
            ("Upload-Offset", offset_text.as_str()),
        ];
        let r = fx.call("PATCH", &path, &headers, Some(piece.to_vec().into())).await;
        assert_eq!(r.status, 204, "PATCH at {offset}: {}", r.describe());
        assert_eq!(r.header("upload-offset"), Some((offset + piece.len()).to_string().as_str()), "PATCH at {offset}");
    }
    // The final PATCH answered after the commit: the dataset is there.
    let record = fx.record("tus/data.bin").await.expect("the committed dataset's record");
    assert_eq!(record["size"], body.len() as u64, "{record}");
    assert_eq!(record["blake3"], b3(&body), "{record}");
    assert_eq!(record["name"], "Resumed", "{record}");
    fx.assert_serves("tus/data.bin", &body).await;
    let expected: BTreeMap<String, u64> = [("datasets/tus/data.bin".into(), body.len() as u64)].into();
    assert_eq!(fx.stored().await, expected);
    fx.settle("after a tus upload");
    fx.assert_no_500();
}

/// Datasets put before a restart (kill -9) are all readable after it, with
/// the same records.
async fn restart_keeps_everything(kind: Kind) {
    let mut fx = Fx::start(kind, &[]);
    let datasets =
        [("rs/empty", Vec::new()), ("rs/small.csv", generated(64 * KIB, 81)), ("rs/big.bin", generated(10 * MIB, 82))];
    for (key, body) in &datasets {
        fx.put_ok(key, body, Framing::Chunked, &[("Content-Type", "text/csv")]).await;
    }
    let before = fx.list("").await;
    fx.node.restart();
    assert_eq!(fx.list("").await, before, "the catalog after a restart");
    for (key, body) in &datasets {
        fx.assert_serves(key, body).await;
    }
    let more = generated(3 * MIB, 83);
    fx.put_ok("rs/after", &more, Framing::Sized, &[]).await;
    fx.assert_serves("rs/after", &more).await;
    fx.settle("after the restart");
    fx.assert_no_500();
}

/// `spillway reindex` on a stopped node whose index is gone rebuilds the
/// same catalog (keys, sizes, blake3) from the store alone.
async fn reindex_rebuilds_the_catalog(kind: Kind) {
    let mut fx = Fx::start(kind, &[]);
    let datasets = [
        ("ri/empty", Vec::new(), Framing::Sized),
        ("ri/small.csv", generated(64 * KIB, 91), Framing::Sized),
        ("ri/deep/sized.bin", generated(10 * MIB, 92), Framing::Sized),
        ("ri/deep/chunked.bin", generated(10 * MIB + 1, 93), Framing::Chunked),
    ];
    for (key, body, framing) in &datasets {
        fx.put_ok(key, body, *framing, &[("Content-Type", "text/csv")]).await;
    }
    let catalog = |records: &[Value]| -> BTreeMap<String, (u64, String)> {
        records
            .iter()
            .map(|r| {
                let key = r["key"].as_str().unwrap().to_string();
                (key, (r["size"].as_u64().unwrap(), r["blake3"].as_str().unwrap().to_string()))
            })
            .collect()
    };
    let before = catalog(&fx.list("").await);
    assert_eq!(before.len(), datasets.len());

    fx.node.kill9();
    for name in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let path = fx.node.data_dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let out = fx.node.cli(&["reindex"]);
    assert_eq!(out.code, Some(0), "reindex on {kind:?}: {out:?}");
    fx.node.launch();
    let after = fx.list("").await;
    assert_eq!(catalog(&after), before, "the catalog rebuilt by reindex on {kind:?}: {after:#?}");
    for (key, body, _) in &datasets {
        fx.assert_serves(key, body).await;
    }
    fx.assert_no_500();
}

/// Keys with characters an object store path encodes or a URL escapes
/// (space, `+`, `%`, `~`, `;`, `=`, `&`, `#`, non-ASCII) round-trip: PUT,
/// GET, Range, list, and a reindex that must map the stored names back to
/// the same keys.
async fn unusual_keys_round_trip(kind: Kind) {
    let mut fx = Fx::start(kind, &[]);
    let keys = [
        "odd/with space.csv",
        "odd/plus+sign",
        "odd/pct%41",
        "odd/pct%2F",
        "odd/tilde~x",
        "odd/semi;colon=eq&amp",
        "odd/hash#frag",
        "odd/brackets[1]{2}",
        "odd/ünïcödé/日本.txt",
        "odd/x/.../y",
    ];
    let mut expected = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        let body = generated(1000 + i, 160 + i as u64);
        fx.put_ok(key, &body, Framing::Sized, &[]).await;
        fx.assert_serves(key, &body).await;
        let r = fx.get(&data_path(key), &[("Range", "bytes=10-19")]).await;
        assert_eq!(r.status, 206, "Range of {key:?}: {}", r.describe());
        assert!(r.body[..] == body[10..20], "Range of {key:?}");
        expected.insert(key.to_string(), (body.len() as u64, b3(&body)));
    }
    let catalog = |records: Vec<Value>| -> BTreeMap<String, (u64, String)> {
        records
            .iter()
            .map(|r| {
                let key = r["key"].as_str().unwrap().to_string();
                (key, (r["size"].as_u64().unwrap(), r["blake3"].as_str().unwrap().to_string()))
            })
            .collect()
    };
    assert_eq!(catalog(fx.list("odd/").await), expected, "listed");
    assert_eq!(fx.stored().await.len(), keys.len(), "{:?}", fx.stored().await);

    fx.node.kill9();
    for name in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(fx.node.data_dir.join(name));
    }
    let out = fx.node.cli(&["reindex"]);
    assert_eq!(out.code, Some(0), "reindex: {out:?}");
    fx.node.launch();
    assert_eq!(catalog(fx.list("odd/").await), expected, "after reindex on {kind:?}");
    for (i, key) in keys.iter().enumerate() {
        fx.assert_serves(key, &generated(1000 + i, 160 + i as u64)).await;
        let r = fx.call("DELETE", &record_path(key), &[], None).await;
        assert_eq!(r.status, 204, "DELETE {key:?}: {}", r.describe());
    }
    assert_eq!(fx.stored().await, BTreeMap::new(), "every unusual key deleted");
    fx.assert_no_500();
}

/// A browser form (`POST /datasets`, multipart/form-data) commits like a
/// PUT, small or past the memory spool.
async fn form_upload_commits(kind: Kind) {
    let fx = Fx::start(kind, &[]);
    for (key, size) in [("form/small.csv", 30 * KIB), ("form/big.csv", 10 * MIB + 7)] {
        let body = generated(size, 170 + size as u64);
        let boundary = "spillway-form-boundary-7d1f";
        let mut form = Vec::new();
        for (name, value) in [("key", key), ("name", "From a form")] {
            write!(form, "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").unwrap();
        }
        write!(
            form,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.csv\"\r\n\
             Content-Type: text/csv\r\n\r\n"
        )
        .unwrap();
        form.extend_from_slice(&body);
        write!(form, "\r\n--{boundary}--\r\n").unwrap();
        let content_type = format!("multipart/form-data; boundary={boundary}");
        let r = fx.call("POST", "/datasets", &[("Content-Type", &content_type)], Some(form.into())).await;
        assert_eq!(r.status, 201, "form upload of {key}: {}", r.describe());
        let record = r.json();
        assert_eq!(record["key"], key, "{record}");
        assert_eq!(record["size"], size as u64, "{record}");
        assert_eq!(record["blake3"], b3(&body), "{record}");
        assert_eq!(record["name"], "From a form", "{record}");
        assert_eq!(record["content_type"], "text/csv", "{record}");
        fx.assert_serves(key, &body).await;
    }
    assert_eq!(fx.stored().await.len(), 2);
    fx.settle("after form uploads");
    fx.assert_no_500();
}

// ---------------------------------------------------------------------------
// What only the object store does.
// ---------------------------------------------------------------------------

/// `POST .../upload-url` mints a presigned PUT to Garage (`incoming/{key}`).
async fn mint_upload_url(fx: &Fx, key: &str, request: Value) -> String {
    let r = fx.post_json(&format!("{}/upload-url", record_path(key)), &request).await;
    assert_eq!(r.status, 200, "upload-url for {key}: {}", r.describe());
    let minted = r.json();
    assert_eq!(minted["method"], "PUT", "{minted}");
    assert!(minted["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{minted}");
    let url = minted["url"].as_str().expect("a url").to_string();
    assert!(url.starts_with(&format!("{}/", fx.garage().endpoint())), "not a URL of the store: {url}");
    assert!(url.contains(&format!("/{}/incoming/", fx.garage().bucket)), "not an incoming object: {url}");
    if let Some(expires_in) = request["expires_in"].as_u64() {
        assert!(url.contains(&format!("X-Amz-Expires={expires_in}")), "expires_in {expires_in} not in {url}");
    }
    url
}

/// PUTs `body` to a presigned URL with a plain client (no token).
async fn direct_put(url: &str, body: &[u8], content_type: &str) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let r = send(client.put(url).header("Content-Type", content_type).body(body.to_vec()), "presigned PUT").await;
    assert_eq!(r.status, 200, "presigned PUT to the store: {} {}", r.status, String::from_utf8_lossy(&r.body));
}

/// A direct upload: presigned PUT straight to Garage, then acknowledge;
/// the node verifies and installs it, lists it, serves it, and a reindex
/// (which must hash it: it has no blake3 in its metadata) finds it, while a
/// direct upload never acknowledged is not a dataset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_direct_upload_then_acknowledge() {
    let Some(mut fx) = Fx::on_garage(Kind::S3, &[]) else {
        return;
    };
    let body = generated(3 * MIB + 11, 101);
    let url = mint_upload_url(&fx, "direct/data.csv", json!({"expires_in": 600})).await;
    direct_put(&url, &body, "text/csv").await;
    // Not a dataset until acknowledged.
    assert!(fx.record("direct/data.csv").await.is_none());
    assert_eq!(fx.list("direct/").await, Vec::<Value>::new());
    assert_eq!(fx.get("/data/direct/data.csv", &[]).await.status, 404);

    let ack = json!({"name": "Direct", "description": "straight to the store", "tags": ["d"], "blake3": b3(&body)});
    let r = fx.post_json("/datasets/direct/data.csv/action/acknowledge", &ack).await;
    assert_eq!(r.status, 200, "acknowledge: {}", r.describe());
    let record = r.json();
    assert_eq!(record["key"], "direct/data.csv", "{record}");
    assert_eq!(record["size"], body.len() as u64, "{record}");
    assert_eq!(record["blake3"], b3(&body), "{record}");
    assert_eq!(record["name"], "Direct", "{record}");
    assert_eq!(record["description"], "straight to the store", "{record}");
    assert_eq!(record["tags"], json!(["d"]), "{record}");
    assert_eq!(record["content_type"], "text/csv", "{record}");
    let listed = fx.list("direct/").await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["blake3"], b3(&body));
    fx.assert_serves("direct/data.csv", &body).await;
    let r = fx.get("/data/direct/data.csv", &[("Range", "bytes=100-199")]).await;
    assert_eq!(r.status, 206);
    assert!(r.body[..] == body[100..200]);
    // Installed at the key; nothing left in incoming.
    let expected: BTreeMap<String, u64> = [("datasets/direct/data.csv".into(), body.len() as u64)].into();
    assert_eq!(fx.stored().await, expected);

    // Acknowledged again with nothing waiting: metadata only, as before.
    let r = fx.post_json("/datasets/direct/data.csv/action/acknowledge", &json!({"description": "again"})).await;
    assert_eq!(r.status, 200, "second acknowledge: {}", r.describe());
    assert_eq!(r.json()["description"], "again");
    assert_eq!(r.json()["blake3"], b3(&body));
    // A second direct upload to the key replaces the dataset.
    let newer = generated(2 * MIB, 103);
    let url = mint_upload_url(&fx, "direct/data.csv", json!({})).await;
    direct_put(&url, &newer, "text/csv").await;
    fx.assert_serves("direct/data.csv", &body).await;
    let r = fx.post_json("/datasets/direct/data.csv/action/acknowledge", &json!({"blake3": b3(&newer)})).await;
    assert_eq!(r.status, 200, "acknowledge of a replacing direct upload: {}", r.describe());
    assert_eq!(r.json()["blake3"], b3(&newer));
    assert_eq!(r.json()["description"], "again", "metadata kept over a replace");
    fx.assert_serves("direct/data.csv", &newer).await;
    let body = newer;
    let expected: BTreeMap<String, u64> = [("datasets/direct/data.csv".into(), body.len() as u64)].into();
    assert_eq!(fx.stored().await, expected);
    // Nothing waiting and no dataset: 404.
    let r = fx.post_json("/datasets/direct/none/action/acknowledge", &json!({})).await;
    assert_problem(&r, 404, "not-found", "acknowledge with nothing uploaded");

    // A direct upload never acknowledged stays out of the catalog, reindex included.
    let pending = generated(1000, 102);
    let url = mint_upload_url(&fx, "direct/pending.bin", json!({})).await;
    direct_put(&url, &pending, "application/octet-stream").await;
    fx.node.kill9();
    for name in ["index.sqlite", "index.sqlite-wal", "index.sqlite-shm"] {
        let _ = std::fs::remove_file(fx.node.data_dir.join(name));
    }
    let out = fx.node.cli(&["reindex"]);
    assert_eq!(out.code, Some(0), "reindex: {out:?}");
    fx.node.launch();
    let listed = fx.list("").await;
    assert_eq!(listed.len(), 1, "after reindex: {listed:#?}");
    assert_eq!(listed[0]["key"], "direct/data.csv");
    assert_eq!(listed[0]["size"], body.len() as u64);
    assert_eq!(listed[0]["blake3"], b3(&body), "reindex must hash an object without a blake3");
    fx.assert_serves("direct/data.csv", &body).await;
    fx.assert_no_500();
}

/// Acknowledging with a blake3 the object does not have: digest-mismatch,
/// no dataset, and the incoming object and its private copy are gone by
/// the time the refusal is answered (the copy's removal is slowed by a
/// failpoint, so one left to the background would be seen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_acknowledge_with_wrong_blake3_is_refused() {
    let Some(fx) = Fx::on_garage(Kind::S3, &[("FAILPOINTS", "s3.staged.discard=sleep(1500)")]) else {
        return;
    };
    let body = generated(200 * KIB, 111);
    let url = mint_upload_url(&fx, "wrong/data.bin", json!({})).await;
    direct_put(&url, &body, "application/octet-stream").await;
    assert_eq!(fx.stored().await.keys().collect::<Vec<_>>(), ["incoming/wrong/data.bin"]);
    let ack = json!({"blake3": b3(b"other bytes")});
    let r = fx.post_json("/datasets/wrong/data.bin/action/acknowledge", &ack).await;
    assert!(r.status == 400 || r.status == 409, "acknowledge with a wrong blake3: {}", r.describe());
    assert_eq!(r.code().as_deref(), Some("digest-mismatch"), "{}", r.describe());
    assert!(fx.record("wrong/data.bin").await.is_none());
    assert_eq!(fx.get("/data/wrong/data.bin", &[]).await.status, 404);
    assert_eq!(fx.stored().await, BTreeMap::new(), "the refused incoming object is deleted");
    // Nothing is waiting any more.
    let r = fx.post_json("/datasets/wrong/data.bin/action/acknowledge", &json!({})).await;
    assert_problem(&r, 404, "not-found", "acknowledge after the refusal");
    fx.assert_no_500();
}

/// An upload URL's `max_size`, and the node's `max_dataset_size`, hold
/// at acknowledge: a bigger object is 413 `too-large` and is not
/// installed; one within both is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_direct_upload_size_limits_hold_at_acknowledge() {
    let Some(fx) = Fx::on_garage(Kind::S3, &[("SPILLWAY_MAX_DATASET_SIZE", "64 KiB")]) else {
        return;
    };
    // (max_size of the URL, bytes uploaded, acknowledged?)
    let cases = [
        (Some(1000), 2000, false),
        (None, 100 * KIB, false),
        (Some(MIB), 100 * KIB, false),
        (Some(1000), 1000, true),
        (None, 64 * KIB, true),
    ];
    for (i, (max_size, size, fits)) in cases.into_iter().enumerate() {
        let key = format!("cap/{i}");
        let what = format!("acknowledge of {size} bytes, URL max_size {max_size:?}, max_dataset_size 64 KiB");
        let request = max_size.map_or_else(|| json!({}), |m| json!({"max_size": m}));
        let url = mint_upload_url(&fx, &key, request).await;
        let body = generated(size, 120 + i as u64);
        direct_put(&url, &body, "application/octet-stream").await;
        let r = fx.post_json(&format!("/datasets/{key}/action/acknowledge"), &json!({})).await;
        if fits {
            assert_eq!(r.status, 200, "{what}: {}", r.describe());
            fx.assert_serves(&key, &body).await;
        } else {
            assert_problem(&r, 413, "too-large", &what);
            assert!(fx.record(&key).await.is_none(), "{what}");
            assert!(!fx.stored().await.contains_key(&format!("datasets/{key}")), "{what}");
        }
    }
    let installed: Vec<String> = fx.stored().await.into_keys().filter(|k| k.starts_with("datasets/")).collect();
    assert_eq!(installed, ["datasets/cap/3", "datasets/cap/4"]);
    fx.assert_no_500();
}

/// Direct uploads to keys that need escaping (in the presigned URL and in
/// the object's name) land, acknowledge and serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_direct_upload_of_unusual_keys() {
    let Some(fx) = Fx::on_garage(Kind::S3, &[]) else {
        return;
    };
    let keys = ["odd dir/with space+plus.csv", "odd/tilde~x", "odd/ünï/日本.txt", "odd/pct%41", "odd/semi;eq=amp&"];
    for (i, key) in keys.iter().enumerate() {
        let body = generated(5000 + i, 180 + i as u64);
        let url = mint_upload_url(&fx, key, json!({})).await;
        direct_put(&url, &body, "text/plain").await;
        let r = fx.post_json(&format!("{}/action/acknowledge", record_path(key)), &json!({"blake3": b3(&body)})).await;
        assert_eq!(r.status, 200, "acknowledge of {key:?}: {}\n{:?}", r.describe(), fx.stored().await);
        assert_eq!(r.json()["key"], *key);
        fx.assert_serves(key, &body).await;
    }
    let stored = fx.stored().await;
    assert_eq!(stored.len(), keys.len(), "{stored:?}");
    assert!(stored.keys().all(|k| k.starts_with("datasets/")), "{stored:?}");
    fx.assert_no_500();
}

/// `downloads = "redirect"`: GET answers 307 to a presigned GET on the
/// store, which gives the bytes; an unknown key is still a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_redirect_downloads() {
    let Some(fx) = Fx::on_garage(Kind::S3, &[("SPILLWAY_S3__DOWNLOADS", "redirect")]) else {
        return;
    };
    let body = generated(12 * MIB + 1, 131);
    fx.put_ok("redir/data.bin", &body, Framing::Chunked, &[]).await;
    let plain = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = send(plain.get(fx.node.url("/data/redir/data.bin")), "GET (no redirects followed)").await;
    assert_eq!(r.status, 307, "{}", r.describe());
    let location = r.header("location").expect("a Location").to_string();
    assert!(location.starts_with(&format!("{}/", fx.garage().endpoint())), "Location {location}");
    let direct = send(plain.get(&location), "GET Location").await;
    assert_eq!(direct.status, 200, "GET of the presigned Location: {}", String::from_utf8_lossy(&direct.body));
    assert!(direct.body[..] == body[..], "the presigned GET gave {} other bytes", direct.body.len());
    // A client that follows redirects just gets the bytes.
    let followed = fx.get("/data/redir/data.bin", &[]).await;
    assert_eq!(followed.status, 200);
    assert!(followed.body[..] == body[..]);
    let r = send(plain.get(fx.node.url("/data/redir/none")), "GET unknown key").await;
    assert_problem(&r, 404, "not-found", "redirect mode, unknown key");
    fx.assert_no_500();
}

/// Garage killed: what needs the store answers 503 `unavailable` with
/// `Retry-After: 5` (never 500), `/ready` is 503, the catalog (served from
/// the index) still answers; after Garage is back everything works and the
/// data is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_garage_down_is_503_then_recovers() {
    let Some(mut fx) = Fx::on_garage(Kind::S3, &[]) else {
        return;
    };
    let small = generated(10 * KIB, 141);
    let big = generated(10 * MIB, 142);
    fx.put_ok("live/small", &small, Framing::Sized, &[]).await;
    fx.put_ok("live/big", &big, Framing::Chunked, &[]).await;
    assert_eq!(fx.get("/ready", &[]).await.status, 200);
    let before = fx.list("").await;

    fx.garage.as_mut().unwrap().kill_node(0);
    let started = Instant::now();
    let r = fx.put("down/small", generated(KIB, 143), &[]).await;
    assert_unavailable(&r, "small PUT with Garage down");
    let r = fx.put("down/big-sized", generated(12 * MIB, 144), &[]).await;
    assert_unavailable(&r, "multipart PUT (Content-Length) with Garage down");
    let r = fx.put("down/big-chunked", framed(&generated(12 * MIB, 145), Framing::Chunked), &[]).await;
    assert_unavailable(&r, "multipart PUT (chunked) with Garage down");
    let r = fx.put("live/small", generated(KIB, 146), &[]).await;
    assert_unavailable(&r, "replacing PUT with Garage down");
    assert_unavailable(&fx.get("/data/live/small", &[]).await, "GET with Garage down");
    assert_unavailable(&fx.get("/data/live/big", &[("Range", "bytes=0-99")]).await, "Range GET with Garage down");
    let head = fx.call("HEAD", "/data/live/big", &[], None).await;
    assert_eq!(head.status, 503, "HEAD with Garage down: {}", head.describe());
    assert_eq!(head.header("retry-after"), Some("5"), "HEAD with Garage down");
    let r = fx.call("DELETE", "/datasets/live/small", &[], None).await;
    assert_unavailable(&r, "DELETE with Garage down");
    let r = fx.post_json("/datasets/live/small/action/acknowledge", &json!({})).await;
    assert_unavailable(&r, "acknowledge with Garage down");
    // A tus upload's bytes go to the node's disk; its commit needs the store.
    let r = fx
        .call(
            "POST",
            "/uploads",
            &[
                ("Tus-Resumable", "1.0.0"),
                ("Upload-Length", "1000"),
                ("Upload-Metadata", &format!("key {}", base64::engine::general_purpose::STANDARD.encode("down/tus"))),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 201, "tus creation with Garage down: {}", r.describe());
    let location = r.header("location").unwrap().to_string();
    let path = location[location.find("/uploads/").unwrap()..].to_string();
    let headers =
        [("Tus-Resumable", "1.0.0"), ("Content-Type", "application/offset+octet-stream"), ("Upload-Offset", "0")];
    let r = fx.call("PATCH", &path, &headers, Some(generated(1000, 147).into())).await;
    assert_unavailable(&r, "the final tus PATCH with Garage down");
    // The catalog is the index's: it still answers.
    assert_eq!(fx.list("").await, before, "the catalog with Garage down");
    assert_eq!(fx.record("live/small").await.as_ref(), Some(&before[1]));
    let r = fx.get("/ready", &[]).await;
    assert_eq!(r.status, 503, "/ready with Garage down: {}", r.describe());
    assert!(r.code().is_some(), "/ready with Garage down: {}", r.describe());
    eprintln!("requests with Garage down took {:?}", started.elapsed());
    fx.assert_no_500();

    fx.garage.as_mut().unwrap().restart_node(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = fx.get("/ready", &[]).await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "/ready after Garage came back: {}", r.describe());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fx.assert_serves("live/small", &small).await;
    fx.assert_serves("live/big", &big).await;
    assert_eq!(fx.list("").await, before, "the catalog after Garage came back");
    let again = generated(9 * MIB, 148);
    fx.put_ok("down/big-chunked", &again, Framing::Chunked, &[]).await;
    fx.assert_serves("down/big-chunked", &again).await;
    let expected: BTreeMap<String, u64> = [
        ("datasets/down/big-chunked".into(), again.len() as u64),
        ("datasets/live/big".into(), big.len() as u64),
        ("datasets/live/small".into(), small.len() as u64),
    ]
    .into();
    assert_eq!(fx.stored().await, expected);
    fx.settle("after Garage came back");
    fx.assert_no_500();
}

/// A body streaming into a multipart upload whose client goes away (either
/// framing) or stalls: the upload is aborted, no part or object is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_client_gone_midway_leaves_no_multipart_upload() {
    let Some(fx) = Fx::on_garage(Kind::S3, &[("SPILLWAY_STALL_TIMEOUT", "2")]) else {
        return;
    };
    let sent = generated(20 * MIB, 151);
    // (framing, bytes sent: 20 MiB is two full parts and more; 1 MiB is a
    // multipart upload without a part yet)
    let cases = [
        ("Content-Length: 41943040", 20 * MIB, End::Drop),
        ("Transfer-Encoding: chunked", 20 * MIB, End::Drop),
        ("Content-Length: 41943040", MIB, End::Drop),
        ("Content-Length: 41943040", 20 * MIB, End::Stall),
        ("Transfer-Encoding: chunked", 9 * MIB, End::Stall),
    ];
    for (i, (framing, len, end)) in cases.into_iter().enumerate() {
        let sent = &sent[..len];
        let what = format!("PUT cut/{i} ({framing}, {len} bytes sent, {end:?})");
        let garage = fx.garage();
        let node = &fx.node;
        let key = format!("cut/{i}");
        // The client runs on its own thread while we watch the bucket.
        let answer = std::thread::scope(|scope| {
            let client = scope.spawn(|| raw_put(node, &key, framing, sent, end));
            wait_multipart_started(garage, &what);
            client.join().unwrap()
        });
        if let Some(resp) = answer {
            assert_eq!(resp.status, 408, "{what}: {}", resp.text());
            assert_eq!(resp.code().as_deref(), Some("upload-stalled"), "{what}");
        }
        fx.settle(&what);
        assert_eq!(fx.stored().await, BTreeMap::new(), "{what}");
        assert!(fx.record(&key).await.is_none(), "{what}");
    }
    fx.assert_no_500();
}

/// Acknowledging a key whose ancestor is a dataset is a 409 key-conflict;
/// the dataset stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_acknowledge_of_a_conflicting_key_is_409() {
    let Some(fx) = Fx::on_garage(Kind::S3, &[]) else {
        return;
    };
    fx.put_ok("a", b"file a", Framing::Sized, &[]).await;
    let url = mint_upload_url(&fx, "a/b", json!({})).await;
    direct_put(&url, b"below a file", "application/octet-stream").await;
    let r = fx.post_json("/datasets/a/b/action/acknowledge", &json!({})).await;
    assert_problem(&r, 409, "key-conflict", "acknowledge of a/b with `a` stored");
    assert!(fx.record("a/b").await.is_none());
    fx.assert_serves("a", b"file a").await;
    assert!(!fx.stored().await.contains_key("datasets/a/b"));
    fx.assert_no_500();
}

/// The client PUTs to its presigned URL again while the node acknowledges
/// the first upload (reading it through to hash it). Whatever the node
/// then installs, the record must describe those bytes: the same size and
/// blake3 as what GET serves. (Found: the node hashes one object and then
/// copies whatever is at `incoming/` by then.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_acknowledge_racing_a_second_direct_put_stays_consistent() {
    let Some(fx) = Fx::on_garage(Kind::S3, &[]) else {
        return;
    };
    let first = generated(64 * MIB, 201);
    let mut raced = false;
    for round in 0..3 {
        let key = format!("race/{round}");
        let second = generated(1024, 202 + round);
        let url = mint_upload_url(&fx, &key, json!({})).await;
        direct_put(&url, &first, "application/octet-stream").await;
        let started = Instant::now();
        let empty = json!({});
        let ack = async {
            let r = fx.post_json(&format!("/datasets/{key}/action/acknowledge"), &empty).await;
            (r, started.elapsed())
        };
        let again = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            direct_put(&url, &second, "application/octet-stream").await;
            started.elapsed()
        };
        let ((r, acked_at), put_at) = tokio::join!(ack, again);
        let what = format!(
            "round {round}: acknowledge of {} bytes (answered after {acked_at:?}), a second direct PUT of {} bytes \
             (done after {put_at:?})",
            first.len(),
            second.len()
        );
        assert_ne!(r.status, 500, "{what}: {}", r.describe());
        if let Some(record) = fx.record(&key).await {
            let g = fx.get(&data_path(&key), &[]).await;
            assert_eq!(
                g.status,
                200,
                "{what}: acknowledge answered {}, the record says {} bytes, blake3 {}; GET answers {}; \
                 the bucket holds {:?}",
                r.status,
                record["size"],
                record["blake3"],
                g.describe(),
                fx.stored().await
            );
            assert_eq!(record["size"], g.body.len() as u64, "{what}: record vs served bytes");
            assert_eq!(record["blake3"], b3(&g.body), "{what}: record vs served bytes");
            assert_eq!(g.header("etag"), Some(etag_of(&g.body).as_str()), "{what}: ETag vs served bytes");
        }
        if put_at < acked_at {
            raced = true;
            break;
        }
    }
    if !raced {
        eprintln!("note: the second PUT never landed while an acknowledge ran; the race was not exercised");
    }
    fx.assert_no_500();
}

/// Two acknowledges of the same direct upload at once (a client retrying):
/// one installs it; the other then finds nothing waiting and, as the
/// contract says for that case, answers with the existing record, never a
/// 404 for a dataset that exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_concurrent_acknowledges_do_not_answer_404() {
    let Some(fx) = Fx::on_garage(Kind::S3, &[]) else {
        return;
    };
    let body = generated(32 * MIB, 221);
    let url = mint_upload_url(&fx, "twice/data", json!({})).await;
    direct_put(&url, &body, "application/octet-stream").await;
    let empty = json!({});
    let path = "/datasets/twice/data/action/acknowledge";
    let (a, b) = tokio::join!(fx.post_json(path, &empty), fx.post_json(path, &empty));
    fx.assert_serves("twice/data", &body).await;
    for r in [&a, &b] {
        assert!(r.status < 500, "a concurrent acknowledge: {}", r.describe());
        assert_ne!(r.status, 404, "a concurrent acknowledge of an existing dataset: {}", r.describe());
    }
    assert!(a.status == 200 || b.status == 200, "A: {}\nB: {}", a.describe(), b.describe());
    fx.assert_no_500();
}

/// Garage goes away while a body streams into a multipart upload: the PUT
/// is a 503, and once Garage is back the upload the node could not abort
/// during the outage is aborted too (within a bounded wait): no unfinished
/// multipart upload is left in the bucket. (Found: it is left for good.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_garage_outage_midway_leaves_no_multipart_upload() {
    let Some(mut fx) = Fx::on_garage(Kind::S3, &[]) else {
        return;
    };
    let body = generated(30 * MIB, 211);
    let mut s = fx.node.raw();
    write!(
        s,
        "PUT /data/mid/data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body[..20 * MIB]).unwrap();
    wait_multipart_started(fx.garage(), "PUT mid/data");
    fx.garage.as_mut().unwrap().kill_node(0);
    let _ = s.write_all(&body[20 * MIB..]);
    let resp = read_response(&mut s, Duration::from_secs(40)).expect("an answer to the PUT");
    assert_eq!(resp.status, 503, "PUT with Garage gone midway: {}", resp.text());
    assert_eq!(resp.code().as_deref(), Some("unavailable"), "{}", resp.text());
    // Down for longer than the node's retries.
    std::thread::sleep(Duration::from_secs(3));
    fx.garage.as_mut().unwrap().restart_node(0);
    fx.settle_within("Garage back after the PUT failed during its outage", Duration::from_secs(20));
    assert_eq!(fx.stored().await, BTreeMap::new());
    assert!(fx.record("mid/data").await.is_none());
    fx.assert_no_500();
}

/// The node is killed (-9) while a body streams into a multipart upload.
/// As the filesystem store sweeps a crashed upload's spool file at start,
/// the restarted node leaves no unfinished multipart upload (within a
/// bounded wait) and no object. (Found: nothing aborts it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_node_crash_midway_leaves_no_multipart_upload() {
    let Some(mut fx) = Fx::on_garage(Kind::S3, &[]) else {
        return;
    };
    let body = generated(20 * MIB, 231);
    let mut s = fx.node.raw();
    write!(s, "PUT /data/crash/data HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n", 2 * body.len())
        .unwrap();
    s.write_all(&body).unwrap();
    wait_multipart_started(fx.garage(), "PUT crash/data");
    fx.node.kill9();
    drop(s);
    fx.node.launch();
    fx.settle("the node restarted after a crash interrupted an upload");
    assert_eq!(fx.stored().await, BTreeMap::new());
    assert!(fx.record("crash/data").await.is_none());
    fx.assert_no_500();
}

/// With `stage_uploads = false` a streaming PUT's multipart upload is open
/// at its key, and Garage drops it when another write to that key lands
/// first. The dropped PUT says why: `412` when it was conditional (its
/// precondition no longer holds), else `409 upload-superseded` (or `200`
/// on a store that keeps the upload: last writer wins). Never a 404 or a
/// 500, and nothing left behind in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_unstaged_upload_dropped_by_a_landing_write_says_why() {
    let Some(fx) = Fx::on_garage(Kind::S3Unstaged, &[("SPILLWAY_SPOOL_MEMORY", "1 MiB")]) else {
        return;
    };
    let cases = [("race/create-only", Some(("If-None-Match", "*"))), ("race/plain", None)];
    let mut expected = BTreeMap::new();
    for (i, (key, condition)) in cases.into_iter().enumerate() {
        let what = format!("a 10 MiB PUT of `{key}` ({condition:?}) while a small PUT lands");
        let big = generated(10 * MIB, 400 + i as u64);
        let small = generated(64 * KIB, 410 + i as u64);
        let (tx, body) = fed_body();
        let mut req = fx.node.client.put(fx.node.url(&data_path(key))).body(body);
        if let Some((name, value)) = condition {
            req = req.header(name, value);
        }
        let streaming = tokio::spawn(send(req, "the streaming PUT"));
        // 9 MiB: past the 1 MiB spool and one 8 MiB part, so the multipart
        // upload at the key is open and holds a part.
        for chunk in big[..9 * MIB].chunks(MIB) {
            tx.send(chunk.to_vec()).await.unwrap();
        }
        wait_multipart_started(fx.garage(), &what);
        fx.put_ok(key, &small, Framing::Sized, &[]).await;
        tx.send(big[9 * MIB..].to_vec()).await.unwrap();
        drop(tx);
        let r = streaming.await.expect("the streaming PUT's task");
        let kept = match (condition, r.status) {
            (Some(_), _) => {
                assert_problem(&r, 412, "precondition-failed", &what);
                &small
            }
            (None, 200) => &big,
            (None, _) => {
                assert_problem(&r, 409, "upload-superseded", &what);
                &small
            }
        };
        fx.settle(&what);
        fx.assert_serves(key, kept).await;
        expected.insert(format!("datasets/{key}"), kept.len() as u64);
    }
    assert_eq!(fx.stored().await, expected);
    fx.assert_no_500();
}

/// Every way into the bucket leaves the object carrying its blake3 and
/// size as metadata, and its content type, so that `reindex` reads them
/// instead of hashing: a small PUT (one PutObject), a streamed multi-part
/// PUT and a direct upload (both copied into place with the metadata
/// replaced), and a resumable upload's file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_objects_carry_blake3_size_and_type() {
    let Some(fx) = Fx::on_garage(Kind::S3, &[]) else {
        return;
    };
    let small = generated(1000, 301);
    let big = generated(20 * MIB + 7, 302);
    let direct = generated(3 * MIB, 303);
    fx.put_ok("meta/small.bin", &small, Framing::Sized, &[("Content-Type", "text/x-small")]).await;
    fx.put_ok("meta/big.bin", &big, Framing::Chunked, &[("Content-Type", "application/x-big")]).await;
    let url = mint_upload_url(&fx, "meta/direct.bin", json!({})).await;
    direct_put(&url, &direct, "application/x-direct").await;
    let r = fx.post_json("/datasets/meta/direct.bin/action/acknowledge", &json!({})).await;
    assert_eq!(r.status, 200, "acknowledge: {}", r.describe());

    let client = bucket_client(fx.garage());
    for (key, body, content_type) in [
        ("meta/small.bin", &small, "text/x-small"),
        ("meta/big.bin", &big, "application/x-big"),
        ("meta/direct.bin", &direct, "application/x-direct"),
    ] {
        let path = object_store::path::Path::from(format!("datasets/{key}"));
        let options = object_store::GetOptions { head: true, ..Default::default() };
        let head = tokio::time::timeout(CALL, client.get_opts(&path, options))
            .await
            .expect("HEAD timed out")
            .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
        let attribute = |a: object_store::Attribute| head.attributes.get(&a).map(|v| v.to_string());
        assert_eq!(attribute(object_store::Attribute::Metadata("blake3".into())), Some(b3(body)), "{key}: blake3");
        assert_eq!(attribute(object_store::Attribute::Metadata("size".into())), Some(body.len().to_string()), "{key}");
        assert_eq!(attribute(object_store::Attribute::ContentType).as_deref(), Some(content_type), "{key}: type");
        assert_eq!(head.meta.size, body.len() as u64, "{key}: object size");
    }
    let staged: Vec<String> =
        bucket_objects(fx.garage()).await.into_keys().filter(|k| !k.starts_with("datasets/")).collect();
    assert!(staged.is_empty(), "nothing but datasets is left in the bucket: {staged:?}");
    fx.assert_no_500();
}

// ---------------------------------------------------------------------------
// Server-side copies in parts (UploadPartCopy) past `s3.copy_part_threshold`.
// ---------------------------------------------------------------------------

/// Settings that make every server-side copy of more than 5 MiB go in
/// parts (of 5 MiB, Garage's smallest part but the last).
const COPY_IN_PARTS: [(&str, &str); 1] = [("SPILLWAY_S3__COPY_PART_THRESHOLD", "5 MiB")];

/// The S3 ETag of `body` uploaded (or copied) in parts of `part` bytes:
/// the md5 of the parts' md5s, `-{parts}`.
fn multipart_etag(body: &[u8], part: usize) -> String {
    let mut md5s = md5::Md5::new();
    for chunk in body.chunks(part) {
        md5s.update(md5::Md5::digest(chunk));
    }
    format!("{:x}-{}", md5s.finalize(), body.chunks(part).count())
}

/// The object at `path` holds `body` with its blake3 and size as metadata
/// and `content_type`; returns its ETag.
async fn assert_object_carries(garage: &Garage, path: &str, body: &[u8], content_type: &str) -> String {
    let client = bucket_client(garage);
    let options = object_store::GetOptions { head: true, ..Default::default() };
    let head = tokio::time::timeout(CALL, client.get_opts(&object_store::path::Path::from(path), options))
        .await
        .expect("HEAD timed out")
        .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
    let attribute = |a: object_store::Attribute| head.attributes.get(&a).map(|v| v.to_string());
    assert_eq!(attribute(object_store::Attribute::Metadata("blake3".into())), Some(b3(body)), "{path}: blake3");
    assert_eq!(attribute(object_store::Attribute::Metadata("size".into())), Some(body.len().to_string()), "{path}");
    assert_eq!(attribute(object_store::Attribute::ContentType).as_deref(), Some(content_type), "{path}: type");
    assert_eq!(head.meta.size, body.len() as u64, "{path}: object size");
    head.meta.e_tag.unwrap_or_default().trim_matches('"').to_string()
}

/// The node's log says it copied `from` to `to` (both may be prefixes) in
/// `parts`.
fn assert_copied_in_parts(fx: &Fx, from: &str, to: &str, parts: u64) {
    let log = fx.node.log();
    let (from_, to_, parts_) = (format!("copied {from}"), format!(" to {to}"), format!(" in {parts} parts"));
    let copied = log.lines().any(|l| l.contains(&from_) && l.contains(&to_) && l.contains(&parts_));
    assert!(copied, "no copy of {from}… to {to}… in {parts} parts\n{}", fx.node.log_tail(40));
}

/// With the threshold at 5 MiB, a 12 MiB upload is copied in three parts
/// (staged: from its staging object to the key, then to its blob;
/// unstaged: to its blob), a restore of it copies the blob back to the key
/// in three parts, and each copy serves byte-exact with its blake3, size
/// and content type, leaving no multipart upload and no staging object.
async fn copies_past_the_threshold_go_in_parts(kind: Kind) {
    let Some(fx) = Fx::on_garage(kind, &COPY_IN_PARTS) else {
        return;
    };
    let big = generated(12 * MIB, 501);
    let small = generated(10 * KIB, 502);
    let (key, object) = ("parts/big.bin", "datasets/parts/big.bin");
    let blob = format!("blobs/{}.{}", b3(&big), big.len());
    fx.put_ok(key, &big, Framing::Chunked, &[("Content-Type", "application/x-big")]).await;
    fx.settle("a 12 MiB PUT copied in parts");
    fx.assert_serves(key, &big).await;
    let blob_etag = assert_object_carries(fx.garage(), &blob, &big, "application/x-big").await;
    // Uploaded in parts of 8 MiB, copied in parts of 5 MiB.
    assert_eq!(blob_etag, multipart_etag(&big, 5 * MIB), "the blob is a copy in parts");
    assert_copied_in_parts(&fx, object, &blob, 3);
    if kind == Kind::S3 {
        let etag = assert_object_carries(fx.garage(), object, &big, "application/x-big").await;
        assert_eq!(etag, multipart_etag(&big, 5 * MIB), "the key's object is a copy in parts");
        assert_copied_in_parts(&fx, "staging/", object, 3);
    } else {
        // The upload itself, completed at the key: opened before its blake3
        // was known, it carries none (README, S3 limits).
        let etag = object_etag(fx.garage(), object).await;
        assert_eq!(etag, multipart_etag(&big, 8 * MIB), "the key's object is the upload itself");
    }

    fx.put_ok(key, &small, Framing::Sized, &[("Content-Type", "text/x-small")]).await;
    fx.assert_serves(key, &small).await;
    let restored = fx.post_json(&format!("{}/action/restore", record_path(key)), &json!({"version": 1})).await;
    assert_eq!(restored.status, 200, "restore: {}", restored.describe());
    assert_eq!(restored.json()["blake3"], b3(&big), "{}", restored.describe());
    fx.settle("a restore of 12 MiB copied in parts");
    fx.assert_serves(key, &big).await;
    let etag = assert_object_carries(fx.garage(), object, &big, "application/x-big").await;
    assert_eq!(etag, multipart_etag(&big, 5 * MIB));
    assert_copied_in_parts(&fx, &blob, object, 3);
    assert_eq!(fx.versions(key).await, [3, 2, 1]);
    let old = fx.get(&format!("{}?version=1", data_path(key)), &[]).await;
    assert_eq!(old.status, 200, "GET version 1: {}", old.describe());
    assert_same_bytes(&old.body, &big, "version 1");

    let expected: BTreeMap<String, u64> = [(object.to_string(), big.len() as u64)].into();
    assert_eq!(fx.stored().await, expected, "no staging object left");
    fx.assert_no_500();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_copies_past_the_threshold_go_in_parts() {
    copies_past_the_threshold_go_in_parts(Kind::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_unstaged_copies_past_the_threshold_go_in_parts() {
    copies_past_the_threshold_go_in_parts(Kind::S3Unstaged).await;
}

/// A 12 MiB direct upload (one PUT, so its ETag is a plain md5) is staged,
/// installed and kept as a blob by copies in parts: the key's object and
/// its blob are copies in three parts, with blake3, size and the content
/// type the client sent; nothing is left in `incoming/` or `staging/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_direct_upload_past_the_threshold_copies_in_parts() {
    let Some(fx) = Fx::on_garage(Kind::S3, &COPY_IN_PARTS) else {
        return;
    };
    let body = generated(12 * MIB + 5, 511);
    let (key, object) = ("parts/direct.bin", "datasets/parts/direct.bin");
    let url = mint_upload_url(&fx, key, json!({})).await;
    direct_put(&url, &body, "application/x-direct").await;
    let r = fx.post_json(&format!("{}/action/acknowledge", record_path(key)), &json!({"blake3": b3(&body)})).await;
    assert_eq!(r.status, 200, "acknowledge: {}", r.describe());
    assert_eq!(r.json()["content_type"], "application/x-direct", "{}", r.describe());
    fx.settle("an acknowledge of 12 MiB copied in parts");
    fx.assert_serves(key, &body).await;
    let etag = assert_object_carries(fx.garage(), object, &body, "application/x-direct").await;
    assert_eq!(etag, multipart_etag(&body, 5 * MIB), "the key's object is a copy in parts");
    let blob = format!("blobs/{}.{}", b3(&body), body.len());
    let blob_etag = assert_object_carries(fx.garage(), &blob, &body, "application/x-direct").await;
    assert_eq!(blob_etag, multipart_etag(&body, 5 * MIB));
    assert_copied_in_parts(&fx, "incoming/parts/direct.bin", "staging/", 3);
    assert_copied_in_parts(&fx, "staging/", object, 3);
    let expected: BTreeMap<String, u64> = [(object.to_string(), body.len() as u64)].into();
    assert_eq!(fx.stored().await, expected, "nothing left in incoming/ or staging/");
    fx.assert_no_500();
}
