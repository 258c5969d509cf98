//! Resumable uploads kept in the object store (a real Garage), on one node:
//! bytes go to the store as they arrive (whole parts, and a tail object for
//! the bytes after the last part), the offset and the parts' blake3 state
//! live in the index, and what the store holds of an upload goes when it
//! completes, is terminated or expires. What several nodes add (any node
//! continues any upload) is in `cluster_tus.rs`.
//!
//! Each test skips (with a line on stderr) when Garage is not installed,
//! unless `SPILLWAY_REQUIRE_CLUSTER=1`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use common::cluster::{self, Garage};
use common::reply::Reply;
use common::*;
use futures_util::stream::TryStreamExt;
use object_store::ObjectStore;

const MIB: usize = 1024 * 1024;
const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
const OCTET: (&str, &str) = ("Content-Type", "application/offset+octet-stream");
/// Bound on one HTTP call, and on what must happen in the background.
const CALL: Duration = Duration::from_secs(60);

/// A node on a Garage of its own, with 8 MiB parts; `None` (the test
/// skips) where Garage is not installed.
fn on_garage(extra: &[(&str, &str)]) -> Option<(TestNode, Garage)> {
    if cluster::skip_without_garage() {
        return None;
    }
    let garage = Garage::single();
    let mut settings = garage.settings();
    settings.push(("SPILLWAY_MAX_DATASET_SIZE".into(), "1 GiB".into()));
    settings.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Some((TestNode::start_with(&pairs), garage))
}

/// Every object under `tus/` (what uploads in progress keep) → size.
async fn upload_objects(garage: &Garage) -> BTreeMap<String, u64> {
    let objects: Vec<object_store::ObjectMeta> = tokio::time::timeout(CALL, garage.s3().list(None).try_collect())
        .await
        .expect("listing the bucket timed out")
        .expect("listing the bucket");
    objects
        .into_iter()
        .filter(|o| o.location.as_ref().starts_with("tus/"))
        .map(|o| (o.location.to_string(), o.size))
        .collect()
}

/// Unfinished multipart uploads in the bucket (Garage's admin API).
fn unfinished(garage: &Garage) -> u64 {
    let info = garage.bucket_info().unwrap_or_else(|e| panic!("GetBucketInfo: {e}"));
    info["unfinishedMultipartUploads"].as_u64().expect("unfinishedMultipartUploads")
}

/// Nothing of any upload is left in the bucket (waiting, bounded, for
/// removals the node makes in the background).
async fn assert_nothing_left(garage: &Garage, what: &str) {
    let clean = eventually(CALL, async || upload_objects(garage).await.is_empty() && unfinished(garage) == 0).await;
    assert!(
        clean,
        "{what}: left {:?} and {} unfinished multipart uploads",
        upload_objects(garage).await,
        unfinished(garage)
    );
}

async fn call(node: &TestNode, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Reply {
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), node.url(path)).timeout(CALL);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    common::reply::send(req, &format!("{method} {path}")).await
}

fn meta(pairs: &[(&str, &str)]) -> String {
    use base64::Engine;
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    pairs.iter().map(|(k, v)| format!("{k} {}", b64(v))).collect::<Vec<_>>().join(",")
}

async fn create(node: &TestNode, key: &str, length: usize) -> String {
    let (len, metadata) = (length.to_string(), meta(&[("key", key)]));
    let r = call(node, "POST", "/uploads", &[TUS, ("Upload-Length", &len), ("Upload-Metadata", &metadata)], None).await;
    assert_eq!(r.status, 201, "POST /uploads: {}", r.describe());
    let loc = r.header("location").expect("Location").to_string();
    loc.find("/uploads/").map(|at| loc[at..].to_string()).expect("a /uploads/ Location")
}

async fn patch(node: &TestNode, loc: &str, offset: usize, bytes: &[u8], extra: &[(&str, &str)]) -> Reply {
    let offset = offset.to_string();
    let mut headers = vec![TUS, OCTET, ("Upload-Offset", offset.as_str())];
    headers.extend_from_slice(extra);
    call(node, "PATCH", loc, &headers, Some(bytes.to_vec())).await
}

async fn offset_of(node: &TestNode, loc: &str) -> usize {
    let r = call(node, "HEAD", loc, &[TUS], None).await;
    assert_eq!(r.status, 200, "HEAD {loc}: {}", r.describe());
    r.header("upload-offset").expect("Upload-Offset").parse().expect("a number")
}

/// A PATCH whose body is `sent`, of a declared `declared` bytes, left open.
fn raw_patch(node: &TestNode, loc: &str, offset: usize, declared: usize, sent: &[u8]) -> std::net::TcpStream {
    let mut s = node.raw();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\nContent-Length: {declared}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(sent).unwrap();
    s.flush().unwrap();
    s
}

/// PATCHes of every size around a part (8 MiB): below, across one and two
/// part boundaries, a single byte; the dataset is byte-exact, its blake3
/// (merged from the parts' chaining values) is the bytes' own, and nothing
/// of the upload stays in the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_every_size_complete_in_the_store() {
    let Some((node, garage)) = on_garage(&[]) else { return };
    let data = generated(20 * MIB + 333, 7);
    let loc = create(&node, "stored/round.bin", data.len()).await;
    let mut at = 0;
    for size in [3 * MIB, 5 * MIB, 9 * MIB, 1, 2 * MIB] {
        let r = patch(&node, &loc, at, &data[at..at + size], &[]).await;
        assert_eq!(r.status, 204, "PATCH at {at}: {}", r.describe());
        at += size;
        assert_eq!(offset_of(&node, &loc).await, at, "after a PATCH of {size}");
    }
    assert!(!upload_objects(&garage).await.is_empty(), "the bytes so far are in the store");
    let r = patch(&node, &loc, at, &data[at..], &[]).await;
    assert_eq!(r.status, 204, "last PATCH: {}", r.describe());
    let record = node.json("/datasets/stored/round.bin").await;
    assert_eq!(record["blake3"], b3(&data), "{record}");
    assert_serves(&node, "stored/round.bin", &data).await;
    assert_nothing_left(&garage, "after the upload completed").await;

    // One PATCH of everything, and an upload smaller than a part.
    for (key, len) in [("stored/one.bin", 17 * MIB + 5), ("stored/small.bin", 1000)] {
        let data = generated(len, len as u64);
        let loc = create(&node, key, data.len()).await;
        let r = patch(&node, &loc, 0, &data, &[]).await;
        assert_eq!(r.status, 204, "PATCH {key}: {}", r.describe());
        assert_serves(&node, key, &data).await;
        // Past the end of the completed upload: any byte is past its length.
        let r = patch(&node, &loc, len, b"more", &[]).await;
        assert_eq!(r.status, 413, "4 bytes at the end of completed {key}: {}", r.describe());
        assert_eq!(patch(&node, &loc, len, b"", &[]).await.status, 204, "an empty PATCH at the end of {key}");
        assert_serves(&node, key, &data).await;
    }
    assert_nothing_left(&garage, "after two more uploads").await;
}

/// A PATCH that breaks off keeps every byte that arrived, in the store: a
/// node restarted from scratch (kill -9) reports the same offset, and the
/// upload resumes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_off_patch_keeps_its_bytes_across_a_restart() {
    let Some((mut node, garage)) = on_garage(&[]) else { return };
    let data = generated(19 * MIB, 9);
    let loc = create(&node, "stored/broken.bin", data.len()).await;
    let sent = 10 * MIB + 77;
    let s = raw_patch(&node, &loc, 0, data.len(), &data[..sent]);
    s.shutdown(Shutdown::Both).unwrap();
    let settled = eventually(CALL, async || offset_of(&node, &loc).await == sent).await;
    assert!(settled, "the offset after a broken-off PATCH is {}, not {sent}", offset_of(&node, &loc).await);
    node.kill9();
    node.restart();
    assert_eq!(offset_of(&node, &loc).await, sent, "after a restart");
    let r = patch(&node, &loc, sent, &data[sent..], &[]).await;
    assert_eq!(r.status, 204, "resuming PATCH: {}", r.describe());
    assert_serves(&node, "stored/broken.bin", &data).await;
    assert_nothing_left(&garage, "after the resumed upload").await;
}

/// A chunk whose checksum does not match is not kept, even past a part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_failing_its_checksum_is_not_kept() {
    let Some((node, _garage)) = on_garage(&[]) else { return };
    let data = generated(12 * MIB, 3);
    let loc = create(&node, "stored/checked.bin", data.len()).await;
    let r = patch(&node, &loc, 0, &data[..MIB], &[]).await;
    assert_eq!(r.status, 204, "{}", r.describe());
    let wrong = "sha1 AAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let r = patch(&node, &loc, MIB, &data[MIB..], &[("Upload-Checksum", wrong)]).await;
    assert_eq!(r.status, 460, "a wrong checksum: {}", r.describe());
    assert_eq!(offset_of(&node, &loc).await, MIB);
    let r = patch(&node, &loc, MIB, &data[MIB..], &[]).await;
    assert_eq!(r.status, 204, "{}", r.describe());
    assert_serves(&node, "stored/checked.bin", &data).await;
}

/// A second PATCH while one is writing is 409 `upload-in-use` at once; a
/// HEAD takes the upload over from a stalled writer and reports the bytes
/// it kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_writer_at_a_time_and_head_takes_over() {
    let Some((node, garage)) = on_garage(&[("SPILLWAY_STALL_TIMEOUT", "300")]) else { return };
    let data = generated(10 * MIB, 4);
    let loc = create(&node, "stored/race.bin", data.len()).await;
    let first = 3 * MIB;
    let _stalled = raw_patch(&node, &loc, 0, data.len(), &data[..first]);
    // A takeover keeps what the writer read, not what waits in its socket.
    let read = eventually(CALL, async || {
        node.metric("spillway_resumable_upload_bytes_total").await.unwrap_or(0.0) >= first as f64
    })
    .await;
    assert!(read, "the node did not read the stalled PATCH's {first} bytes");
    let busy = eventually(CALL, async || {
        let r = patch(&node, &loc, 0, &data[..10], &[]).await;
        r.status == 409 && r.code().as_deref() == Some("upload-in-use")
    })
    .await;
    assert!(busy, "a second PATCH while one writes is not 409 upload-in-use");
    // The stalled writer lets go for the HEAD, keeping what it received.
    assert_eq!(offset_of(&node, &loc).await, first, "HEAD after taking over");
    let r = patch(&node, &loc, first, &data[first..], &[]).await;
    assert_eq!(r.status, 204, "{}", r.describe());
    assert_serves(&node, "stored/race.bin", &data).await;
    assert_nothing_left(&garage, "after the race").await;
}

/// Termination and expiry remove what the store held of an upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn termination_and_expiry_leave_nothing_in_the_store() {
    let Some((node, garage)) = on_garage(&[("SPILLWAY_UPLOAD_EXPIRY", "3")]) else { return };
    let data = generated(9 * MIB + 1, 5);
    for key in ["stored/terminated.bin", "stored/expired.bin"] {
        let loc = create(&node, key, 20 * MIB).await;
        let r = patch(&node, &loc, 0, &data, &[]).await;
        assert_eq!(r.status, 204, "{}", r.describe());
        assert!(unfinished(&garage) > 0 || !upload_objects(&garage).await.is_empty());
        if key.contains("terminated") {
            let r = call(&node, "DELETE", &loc, &[TUS], None).await;
            assert_eq!(r.status, 204, "DELETE: {}", r.describe());
        } else {
            let gone = eventually(CALL, async || {
                let r = call(&node, "HEAD", &loc, &[TUS], None).await;
                r.status == 404 || r.status == 410
            })
            .await;
            assert!(gone, "the expired upload was not swept");
        }
        assert_nothing_left(&garage, key).await;
    }
}

/// Partial uploads live in the store too, and a final upload joins them:
/// the dataset is byte-exact and the partials' objects go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_uploads_concatenate_from_the_store() {
    let Some((node, garage)) = on_garage(&[]) else { return };
    let data = generated(11 * MIB + 3, 8);
    let split = 9 * MIB + 1;
    let mut locs = Vec::new();
    for piece in [&data[..split], &data[split..]] {
        let len = piece.len().to_string();
        let r =
            call(&node, "POST", "/uploads", &[TUS, ("Upload-Length", &len), ("Upload-Concat", "partial")], None).await;
        assert_eq!(r.status, 201, "POST partial: {}", r.describe());
        let loc = r.header("location").expect("Location").to_string();
        let loc = loc[loc.find("/uploads/").expect("a /uploads/ Location")..].to_string();
        let r = patch(&node, &loc, 0, piece, &[]).await;
        assert_eq!(r.status, 204, "PATCH partial: {}", r.describe());
        locs.push(loc);
    }
    assert!(!upload_objects(&garage).await.is_empty(), "the partials are in the store");
    let (concat, metadata) = (format!("final;{}", locs.join(" ")), meta(&[("key", "stored/joined.bin")]));
    let r =
        call(&node, "POST", "/uploads", &[TUS, ("Upload-Concat", &concat), ("Upload-Metadata", &metadata)], None).await;
    assert_eq!(r.status, 201, "POST final: {}", r.describe());
    assert_serves(&node, "stored/joined.bin", &data).await;
    assert_nothing_left(&garage, "after the concatenation").await;
}

/// A deferred length (`Upload-Defer-Length: 1`) is settled by the last
/// PATCH; parts are sent meanwhile, each once a byte follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_length_is_settled_in_the_store() {
    let Some((node, garage)) = on_garage(&[]) else { return };
    let data = generated(17 * MIB + 9, 6);
    let metadata = meta(&[("key", "stored/deferred.bin")]);
    let r = call(&node, "POST", "/uploads", &[TUS, ("Upload-Defer-Length", "1"), ("Upload-Metadata", &metadata)], None)
        .await;
    assert_eq!(r.status, 201, "POST /uploads: {}", r.describe());
    let loc = r.header("location").expect("Location").to_string();
    let loc = loc[loc.find("/uploads/").expect("a /uploads/ Location")..].to_string();
    let first = 9 * MIB;
    let r = patch(&node, &loc, 0, &data[..first], &[]).await;
    assert_eq!(r.status, 204, "{}", r.describe());
    assert_eq!(offset_of(&node, &loc).await, first);
    let length = data.len().to_string();
    let r = patch(&node, &loc, first, &data[first..], &[("Upload-Length", &length)]).await;
    assert_eq!(r.status, 204, "{}", r.describe());
    assert_serves(&node, "stored/deferred.bin", &data).await;
    assert_nothing_left(&garage, "after a deferred length").await;
}

/// The whole upload's blake3 on its last PATCH (`X-Blake3`, as the CLI
/// sends it) is checked against the blake3 merged from the parts: a wrong
/// one commits nothing and leaves nothing in the bucket; the right one
/// commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_patch_names_the_whole_blake3() {
    let Some((node, garage)) = on_garage(&[]) else { return };
    let data = generated(20 * MIB, 4);
    let cases =
        [("stored/wrong.bin", b3(b"other"), 400, Some("digest-mismatch")), ("stored/right.bin", b3(&data), 204, None)];
    for (key, sent, status, code) in cases {
        let loc = create(&node, key, data.len()).await;
        let r = patch(&node, &loc, 0, &data[..16 * MIB], &[]).await;
        assert_eq!(r.status, 204, "{key}: {}", r.describe());
        let r = patch(&node, &loc, 16 * MIB, &data[16 * MIB..], &[("X-Blake3", &sent)]).await;
        assert_eq!((r.status, r.code().as_deref()), (status, code), "{key}: {}", r.describe());
    }
    assert_eq!(node.get("/datasets/stored/wrong.bin").await.status(), 404, "a wrong blake3 commits nothing");
    assert_serves(&node, "stored/right.bin", &data).await;
    assert_nothing_left(&garage, "after both uploads").await;
}
