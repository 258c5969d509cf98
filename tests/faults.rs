//! Fault injection on the real binary: full disks (a real tmpfs), size
//! limits, stalled and slowloris clients, admission control, concurrent
//! writers to one key, and a table of hostile requests.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// A tmpfs mounted on a fresh directory; unmounted on drop (also on panic).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount").arg(self.dir.path()).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

/// A node whose data and spool directories live on a 64 MiB tmpfs. Fields
/// drop in order: the node is killed before the tmpfs is unmounted.
struct FullDiskNode {
    node: TestNode,
    _fs: Tmpfs,
}

/// `None` (with the reason printed) only when a tmpfs cannot be mounted.
fn full_disk_node(settings: &[(&str, &str)]) -> Option<FullDiskNode> {
    let fs = match Tmpfs::mount("64m") {
        Ok(fs) => fs,
        Err(reason) => {
            eprintln!("SKIPPED: this test needs a tmpfs mount (run as root): {reason}");
            return None;
        }
    };
    let data_dir = fs.path().join("data");
    let spool_dir = fs.path().join("spool");
    let (data, spool) = (data_dir.display().to_string(), spool_dir.display().to_string());
    let mut all: Vec<(&str, &str)> =
        vec![("SPILLWAY_DATA_DIR", &data), ("SPILLWAY_SPOOL_DIR", &spool), ("SPILLWAY_SPOOL_MEMORY", "1MiB")];
    all.extend_from_slice(settings);
    let mut node = TestNode::start_with(&all);
    node.data_dir = data_dir;
    node.spool_dir = spool_dir;
    Some(FullDiskNode { node, _fs: fs })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// How a raw upload frames its body.
#[derive(Clone, Copy, Debug)]
enum Framing {
    Length(u64),
    Chunked,
}

fn request_head(key: &str, framing: Framing) -> String {
    let framing = match framing {
        Framing::Length(n) => format!("Content-Length: {n}"),
        Framing::Chunked => "Transfer-Encoding: chunked".into(),
    };
    format!("PUT /data/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\n{framing}\r\n\r\n")
}

fn write_body(s: &mut TcpStream, framing: Framing, bytes: &[u8]) -> std::io::Result<()> {
    match framing {
        Framing::Length(_) => s.write_all(bytes),
        Framing::Chunked => {
            write!(s, "{:x}\r\n", bytes.len())?;
            s.write_all(bytes)?;
            s.write_all(b"\r\n")
        }
    }
}

/// A raw upload that sends its head and `sent` body bytes, then nothing.
fn stalled_upload(node: &TestNode, key: &str, framing: Framing, sent: usize) -> TcpStream {
    let mut s = node.raw();
    s.write_all(request_head(key, framing).as_bytes()).unwrap();
    if sent > 0 {
        write_body(&mut s, framing, &generated(sent, sent as u64)).unwrap();
    }
    s.flush().unwrap();
    s
}

/// Streams `total` generated body bytes in the background until done, the
/// peer stops reading (write timeout) or breaks the connection, or `stop`.
struct BackgroundBody {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(u64, Option<std::io::ErrorKind>)>,
}

impl BackgroundBody {
    fn start(s: &TcpStream, framing: Framing, total: u64) -> BackgroundBody {
        let mut w = s.try_clone().unwrap();
        w.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let block = generated(256 * 1024, 77);
            let mut sent = 0u64;
            while sent < total && !flag.load(Ordering::Relaxed) {
                let n = (total - sent).min(block.len() as u64) as usize;
                if let Err(e) = write_body(&mut w, framing, &block[..n]) {
                    return (sent, Some(e.kind()));
                }
                sent += n as u64;
            }
            if matches!(framing, Framing::Chunked) && sent == total {
                if let Err(e) = w.write_all(b"0\r\n\r\n") {
                    return (sent, Some(e.kind()));
                }
            }
            (sent, None)
        });
        BackgroundBody { stop, handle }
    }

    /// Stops the writer; returns bytes sent and the error that ended it.
    fn finish(self, within: Duration) -> Option<(u64, Option<std::io::ErrorKind>)> {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + within;
        while !self.handle.is_finished() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(self.handle.join().unwrap())
    }
}

/// Asserts an error response is problem+json with the given code.
fn assert_problem(resp: &RawResponse, status: u16, code: &str, what: &str) {
    assert_eq!(resp.status, status, "{what}: expected {status} {code}, got {} {}", resp.status, resp.text());
    assert!(resp.is_problem(), "{what}: not problem+json: {:?}", resp.headers);
    assert_eq!(resp.code().as_deref(), Some(code), "{what}: {}", resp.text());
}

/// Keys of the catalog, in order.
async fn listed_keys(node: &TestNode) -> Vec<String> {
    node.list_all().await.iter().map(|r| r["key"].as_str().unwrap().to_string()).collect()
}

/// Paths below `datasets/` as keys.
fn dataset_keys(node: &TestNode) -> BTreeSet<String> {
    let root = node.datasets_dir();
    node.dataset_files().iter().map(|p| p.strip_prefix(&root).unwrap().to_string_lossy().into_owned()).collect()
}

/// Nothing of a failed upload remains: no spool or staging file, no file
/// and no row beyond `expected` keys.
async fn assert_nothing_left(node: &TestNode, expected: &[&str], what: &str) {
    let left = node.wait_spool_empty(Duration::from_secs(10));
    assert_eq!(left, Vec::<PathBuf>::new(), "{what}: spool/staging files left");
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(dataset_keys(node), expected, "{what}: files below datasets/");
    let listed: BTreeSet<String> = listed_keys(node).await.into_iter().collect();
    assert_eq!(listed, expected, "{what}: catalog rows");
}

async fn put_ok(node: &TestNode, key: &str, body: Vec<u8>) -> serde_json::Value {
    let hash = b3(&body);
    let len = body.len();
    let resp = node.put(key, body).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert!(status == 201 || status == 200, "PUT {key}: {status} {text}");
    let record: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["blake3"], hash.as_str(), "PUT {key}");
    assert_eq!(record["size"], len as u64, "PUT {key}");
    record
}

// ---------------------------------------------------------------------------
// Disk full (a real 64 MiB tmpfs as data and spool volume)
// ---------------------------------------------------------------------------

/// Datasets stored before a fault, to be byte-compared after it.
async fn store_before(node: &TestNode) -> Vec<(&'static str, Vec<u8>)> {
    let before = vec![("before/spilled.bin", generated(3 * MIB, 11)), ("before/small.txt", generated(100 * 1024, 12))];
    for (key, body) in &before {
        put_ok(node, key, body.clone()).await;
    }
    before
}

/// After a 507: nothing left, earlier datasets intact, a small upload works.
async fn after_disk_full(node: &TestNode, before: &[(&'static str, Vec<u8>)], what: &str) {
    let keys: Vec<&str> = before.iter().map(|(k, _)| *k).collect();
    assert_nothing_left(node, &keys, what).await;
    for (key, body) in before {
        assert_serves(node, key, body).await;
    }
    let small = generated(MIB, 13);
    put_ok(node, "after/small.bin", small.clone()).await;
    assert_serves(node, "after/small.bin", &small).await;
    assert_eq!(node.get("/datasets").await.status(), 200, "{what}: reads");
    assert!(node.spool_files().is_empty(), "{what}: spool after the small upload");
}

/// (a) Content-Length 100 MiB on a 64 MiB volume: 507 before the body is read.
#[test]
fn disk_full_known_size_is_refused_before_the_body() {
    let Some(fixture) = full_disk_node(&[]) else {
        return;
    };
    let node = &fixture.node;
    let rt = runtime();
    let before = rt.block_on(store_before(node));

    let mut s = node.raw();
    s.write_all(request_head("full/known.bin", Framing::Length(100 * MIB as u64)).as_bytes()).unwrap();
    // 1 KiB of the body is sent, the other 99.99 MiB never are, so the answer
    // must come without them (tests/wire.rs sends no body byte at all).
    s.write_all(&generated(1024, 1)).unwrap();
    let started = Instant::now();
    let resp = read_response(&mut s, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("no answer to a 100 MiB Content-Length: {e}"));
    assert_problem(&resp, 507, "insufficient-storage", "Content-Length 100 MiB");
    eprintln!("507 after {:?} with 1 KiB of 100 MiB sent", started.elapsed());
    drop(s);

    rt.block_on(after_disk_full(node, &before, "known size"));
}

/// (b) A chunked 100 MiB body with no reserve: the real ENOSPC ends it with 507.
#[test]
fn disk_full_chunked_enospc_is_a_clean_507() {
    let Some(fixture) = full_disk_node(&[("SPILLWAY_DISK_RESERVE", "0")]) else {
        return;
    };
    let node = &fixture.node;
    let rt = runtime();
    let before = rt.block_on(store_before(node));

    let mut s = node.raw();
    s.write_all(request_head("full/chunked.bin", Framing::Chunked).as_bytes()).unwrap();
    let body = BackgroundBody::start(&s, Framing::Chunked, 100 * MIB as u64);
    let resp = read_response(&mut s, Duration::from_secs(60));
    let sent = body.finish(Duration::from_secs(10));
    let resp = resp.unwrap_or_else(|e| panic!("chunked 100 MiB on a full disk: {e}"));
    eprintln!("chunked upload on a full disk: {} after {sent:?}", resp.status);
    assert_ne!(resp.status, 500, "ENOSPC became a 500: {}", resp.text());
    assert_problem(&resp, 507, "insufficient-storage", "chunked 100 MiB, ENOSPC");
    drop(s);
    assert!(!node.log().contains("panicked"), "the node panicked:\n{}", node.log());

    rt.block_on(after_disk_full(node, &before, "chunked ENOSPC"));
}

/// (c) Reserve 40 MiB on a 64 MiB volume: a chunked 30 MiB body crosses it.
#[test]
fn disk_full_reserve_crossing_while_streaming() {
    let Some(fixture) = full_disk_node(&[("SPILLWAY_DISK_RESERVE", "40MiB")]) else {
        return;
    };
    let node = &fixture.node;
    let rt = runtime();
    let before = rt.block_on(store_before(node));

    let mut s = node.raw();
    s.write_all(request_head("full/reserve.bin", Framing::Chunked).as_bytes()).unwrap();
    let body = BackgroundBody::start(&s, Framing::Chunked, 30 * MIB as u64);
    let resp = read_response(&mut s, Duration::from_secs(60));
    let sent = body.finish(Duration::from_secs(10));
    let resp = resp.unwrap_or_else(|e| panic!("chunked 30 MiB past the reserve: {e}"));
    eprintln!("reserve crossing: {} after {sent:?}", resp.status);
    assert_problem(&resp, 507, "insufficient-storage", "chunked 30 MiB, reserve");
    drop(s);

    rt.block_on(after_disk_full(node, &before, "reserve crossing"));
}

/// `spillway_disk_free_bytes{volume="data"}`, as the node sees it.
async fn data_volume_free(node: &TestNode) -> u64 {
    let text = node.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("spillway_disk_free_bytes{volume=\"data\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no data volume in /metrics:\n{text}"))
}

/// (d) Reserve 40 MiB on a 64 MiB volume: a resumable upload of deferred
/// length gets a chunked 30 MiB PATCH. It is stopped with 507 while it
/// streams, as a PUT is, before the volume passes the reserve; the bytes
/// taken are kept, and a HEAD reports exactly what is on disk.
#[test]
fn disk_full_reserve_crossing_by_a_deferred_length_patch() {
    let reserve = 40 * MIB as u64;
    let Some(fixture) = full_disk_node(&[("SPILLWAY_DISK_RESERVE", "40MiB")]) else {
        return;
    };
    let node = &fixture.node;
    let rt = runtime();
    let before = rt.block_on(store_before(node));
    let tus = |req: reqwest::RequestBuilder| req.header("Tus-Resumable", "1.0.0");
    let created = rt.block_on(async {
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "full/deferred.bin");
        let req = tus(node.client.post(node.url("/uploads")))
            .header("Upload-Defer-Length", "1")
            .header("Upload-Metadata", format!("key {key}"));
        reply::send(req, "POST /uploads").await
    });
    assert_eq!(created.status, 201, "creation: {}", created.describe());
    let loc = created.header("location").expect("a Location").to_string();

    let mut s = node.raw();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let body = BackgroundBody::start(&s, Framing::Chunked, 30 * MIB as u64);
    let resp = read_response(&mut s, Duration::from_secs(60));
    let sent = body.finish(Duration::from_secs(10));
    let resp = resp.unwrap_or_else(|e| panic!("a chunked 30 MiB PATCH past the reserve: {e}"));
    eprintln!("deferred-length PATCH past the reserve: {} after {sent:?}", resp.status);
    assert_problem(&resp, 507, "insufficient-storage", "a chunked 30 MiB PATCH, reserve");
    drop(s);

    let file = node.data_dir.join("uploads").join(loc.rsplit('/').next().unwrap());
    rt.block_on(async {
        let head = reply::send(tus(node.client.head(node.url(&loc))), "HEAD").await;
        assert_eq!(head.status, 200, "HEAD after the 507: {}", head.describe());
        let offset = head.offset().expect("an Upload-Offset");
        let on_disk = std::fs::metadata(&file).unwrap().len();
        assert_eq!(offset, on_disk, "HEAD's offset is not what is on disk");
        let sent = sent.map_or(u64::MAX, |(n, _)| n);
        assert!(offset > 0 && offset <= sent, "offset {offset} with {sent} bytes sent");
        let free = data_volume_free(node).await;
        eprintln!("kept {offset} bytes; {free} bytes free");
        assert!(free >= reserve, "{free} bytes free for a reserve of {reserve}");
        assert_eq!(node.get("/ready").await.status(), 200, "/ready after the 507");

        let r = reply::send(tus(node.client.delete(node.url(&loc))), "DELETE").await;
        assert_eq!(r.status, 204, "terminating: {}", r.describe());
        assert!(!file.exists(), "the upload's bytes are left");
    });
    rt.block_on(after_disk_full(node, &before, "deferred-length PATCH"));
}

// ---------------------------------------------------------------------------
// Too large
// ---------------------------------------------------------------------------

/// Content-Length over the limit: 413 from the headers alone, without the
/// client sending a body byte; with `Expect: 100-continue`, a 413 instead of
/// an invitation to send the body.
#[test]
fn too_large_content_length_is_refused_from_the_headers() {
    // Refuse from Content-Length without waiting for the 20 MiB, even when
    // some body bytes are already on their way, and do not leave the
    // connection hanging (tests/wire.rs: the same with no body byte sent).
    let node = TestNode::start_with(&[("SPILLWAY_MAX_DATASET_SIZE", "10MiB")]);
    let rt = runtime();
    for expect_continue in [false, true] {
        let what =
            if expect_continue { "Content-Length 20 MiB with Expect: 100-continue" } else { "Content-Length 20 MiB" };
        let mut s = node.raw();
        let mut head = request_head("big/known.bin", Framing::Length(20 * MIB as u64));
        if expect_continue {
            head = head.replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
        }
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&generated(1024, 2)).unwrap();
        let started = Instant::now();
        let resp = read_response(&mut s, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("{what}: no answer after 1 KiB of a 20 MiB body: {e}"));
        assert_problem(&resp, 413, "too-large", what);
        assert!(started.elapsed() < Duration::from_secs(2), "{what}: the 413 took {:?}", started.elapsed());
        assert!(
            closed_within(&mut s, Duration::from_secs(5)) || {
                // Kept alive: it must then serve the next request at once.
                s.write_all(b"GET /datasets HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").is_ok()
                    && read_response(&mut s, Duration::from_secs(5)).is_ok_and(|r| r.status == 200)
            },
            "{what}: the connection hangs after the 413"
        );
    }
    rt.block_on(assert_nothing_left(&node, &[], "413 by Content-Length"));
}

/// A chunked body passing the limit: 413 while streaming, and the
/// connection is not left hanging: closed, or (the node read and dropped the
/// rest of the body) kept alive and serving the next request at once.
#[test]
fn too_large_chunked_is_refused_while_streaming() {
    let node = TestNode::start_with(&[("SPILLWAY_MAX_DATASET_SIZE", "10MiB")]);
    let rt = runtime();
    let mut s = node.raw();
    s.write_all(request_head("big/chunked.bin", Framing::Chunked).as_bytes()).unwrap();
    let started = Instant::now();
    let body = BackgroundBody::start(&s, Framing::Chunked, 20 * MIB as u64);
    let resp = read_response(&mut s, Duration::from_secs(10));
    let answered = started.elapsed();
    let resp = resp.unwrap_or_else(|e| panic!("chunked 20 MiB over a 10 MiB limit: {e}"));
    assert_problem(&resp, 413, "too-large", "chunked 20 MiB");
    let closed = closed_within(&mut s, Duration::from_secs(5));
    let sent = body.finish(Duration::from_secs(10));
    eprintln!("413 after {answered:?}; writer: {sent:?}; closed: {closed}");
    assert!(sent.is_some(), "the client's body writer is still blocked 10 s after the 413");
    assert!(
        closed || {
            s.write_all(b"GET /datasets HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").is_ok()
                && read_response(&mut s, Duration::from_secs(5)).is_ok_and(|r| r.status == 200)
        },
        "the connection hangs after the 413 (writer: {sent:?})"
    );
    drop(s);
    rt.block_on(assert_nothing_left(&node, &[], "413 while streaming"));
}

// ---------------------------------------------------------------------------
// Stalled clients
// ---------------------------------------------------------------------------

/// Half a body, then silence: 408 `upload-stalled` within the stall timeout
/// plus slack, and the spool is cleaned.
#[test]
fn stalled_body_is_aborted_with_408() {
    let node = TestNode::start_with(&[("SPILLWAY_STALL_TIMEOUT", "2"), ("SPILLWAY_SPOOL_MEMORY", "1MiB")]);
    let rt = runtime();
    for (i, (framing, sent)) in
        [(Framing::Length(16 * MIB as u64), MIB), (Framing::Chunked, 2 * MIB)].into_iter().enumerate()
    {
        let what = format!("{framing:?} stalled after {sent} bytes");
        let started = Instant::now();
        let mut s = stalled_upload(&node, &format!("stall/{i}"), framing, sent);
        // The upload is in flight: its spool file exists until the abort.
        let mut spooling = false;
        while started.elapsed() < Duration::from_millis(1500) && !spooling {
            spooling = !node.spool_files().is_empty();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(spooling, "{what}: the upload never reached the spool");
        let resp = read_response(&mut s, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{what}: {e}"));
        let elapsed = started.elapsed();
        assert_problem(&resp, 408, "upload-stalled", &what);
        assert!(
            elapsed >= Duration::from_millis(1500),
            "{what}: aborted after {elapsed:?}, before the 2 s stall timeout"
        );
        eprintln!("{what}: 408 after {elapsed:?}");
        let left = node.wait_spool_empty(Duration::from_secs(2));
        assert!(left.is_empty(), "{what}: spool not cleaned: {left:?}");
        drop(s);
    }
    rt.block_on(assert_nothing_left(&node, &[], "stalls"));
}

/// 100 stalled uploads open at once do not stop a healthy 64 MiB upload.
#[test]
fn slowloris_uploads_do_not_block_a_healthy_one() {
    let node = TestNode::start_with(&[("SPILLWAY_STALL_TIMEOUT", "30"), ("SPILLWAY_MAX_UPLOADS", "200")]);
    let rt = runtime();
    let mut stalled: Vec<TcpStream> =
        (0..100).map(|i| stalled_upload(&node, &format!("loris/{i}"), Framing::Length(MIB as u64), 4096)).collect();
    // Let the node route them all into their uploads.
    std::thread::sleep(Duration::from_millis(500));

    let body = generated(64 * MIB, 64);
    let started = Instant::now();
    let record = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(25), put_ok(&node, "healthy.bin", body.clone()))
            .await
            .expect("the healthy 64 MiB upload did not finish in 25 s")
    });
    let took = started.elapsed();
    eprintln!("64 MiB upload beside 100 stalled ones: {took:?}");
    assert_eq!(record["size"], 64 * MIB as u64);
    rt.block_on(assert_serves(&node, "healthy.bin", &body));

    // The stalled uploads were still open (no answer yet) the whole time.
    let mut still_open = 0;
    for s in &mut stalled {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        if matches!(std::io::Read::read(s, &mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
            still_open += 1;
        }
    }
    assert_eq!(still_open, 100, "stalled uploads were answered or closed during the healthy upload");
    drop(stalled);
    rt.block_on(assert_nothing_left(&node, &["healthy.bin"], "slowloris"));
}

/// 200 sockets stuck in their request line (and 50 stuck in the first body
/// bytes, which Rocket reads before routing) do not stop the node serving.
/// Rocket 0.5 has no header-read timeout, so the node cannot close them.
#[test]
fn stalled_headers_do_not_stop_the_node() {
    let node = TestNode::start();
    let rt = runtime();
    let mut stuck: Vec<TcpStream> = Vec::new();
    for i in 0..250 {
        let mut s = node.raw();
        if i < 200 {
            s.write_all(b"PUT /data/x HT").unwrap();
        } else {
            s.write_all(request_head(&format!("peek/{i}"), Framing::Length(1000)).as_bytes()).unwrap();
            s.write_all(b"abc").unwrap();
        }
        stuck.push(s);
    }
    std::thread::sleep(Duration::from_millis(300));
    rt.block_on(async {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
        let r = client.get(node.url("/datasets")).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET /datasets beside 250 stuck sockets");
        let body = generated(MIB, 5);
        let r = client.put(node.url("/data/served.bin")).body(body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 201, "PUT beside 250 stuck sockets");
        assert_serves(&node, "served.bin", &body).await;
    });
    for s in &stuck {
        let _ = s.shutdown(Shutdown::Both);
    }
    drop(stuck);
    rt.block_on(assert_nothing_left(&node, &["served.bin"], "stuck headers"));
}

// ---------------------------------------------------------------------------
// Admission
// ---------------------------------------------------------------------------

#[test]
fn admission_answers_503_with_retry_after() {
    let node = TestNode::start_with(&[
        ("SPILLWAY_MAX_UPLOADS", "2"),
        ("SPILLWAY_STALL_TIMEOUT", "30"),
        ("SPILLWAY_SPOOL_MEMORY", "1MiB"),
    ]);
    let rt = runtime();
    let held: Vec<TcpStream> =
        (0..2).map(|i| stalled_upload(&node, &format!("held/{i}"), Framing::Length(16 * MIB as u64), MIB)).collect();
    // Both are in their uploads once both spool files exist.
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.spool_files().len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(node.spool_files().len(), 2, "the two held uploads are not in flight");

    rt.block_on(async {
        let resp = node.put("third.bin", generated(1000, 3)).await;
        assert_eq!(resp.status(), 503, "a third upload beside max_uploads = 2");
        let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
        let problem: serde_json::Value = resp.json().await.unwrap();
        assert!(retry.as_deref().is_some_and(|r| r.trim().parse::<u64>().is_ok()), "Retry-After: {retry:?}");
        assert!(ct.as_deref().is_some_and(|c| c.starts_with("application/problem+json")), "content-type {ct:?}");
        let code = problem["code"].as_str().unwrap_or_default();
        assert!(!code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "problem code {problem}");
        assert_eq!(problem["status"], 503);
    });

    drop(held);
    let left = node.wait_spool_empty(Duration::from_secs(10));
    assert!(left.is_empty(), "the closed uploads left {left:?}");
    rt.block_on(async {
        // The permits come back as the aborted handlers return: bounded wait.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let resp = node.put("after.bin", generated(1000, 4)).await;
            let status = resp.status();
            if status == 201 {
                break;
            }
            assert!(
                status == 503 && Instant::now() < deadline,
                "PUT after the held uploads closed: {status} {}",
                resp.text().await.unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_nothing_left(&node, &["after.bin"], "admission").await;
    });
}

// ---------------------------------------------------------------------------
// Concurrent writers to one key
// ---------------------------------------------------------------------------

#[test]
fn concurrent_writers_to_one_key_leave_one_whole_version() {
    let node = TestNode::start_with(&[("SPILLWAY_SPOOL_MEMORY", "2MiB")]);
    let rt = runtime();
    let key = "contended/one.bin";
    rt.block_on(async {
        for round in 0..20u64 {
            let bodies: Vec<Arc<Vec<u8>>> = (0..8).map(|i| Arc::new(generated(4 * MIB, round * 8 + i + 1))).collect();
            let hashes: Vec<String> = bodies.iter().map(|b| b3(b)).collect();
            let tasks: Vec<_> = bodies
                .iter()
                .enumerate()
                .map(|(i, body)| {
                    let client = node.client.clone();
                    let url = node.url(&format!("/data/{key}"));
                    let body = body.clone();
                    tokio::spawn(async move {
                        // Half send a length, half stream chunked.
                        let req = client.put(url);
                        let req = if i % 2 == 0 {
                            req.body(body.to_vec())
                        } else {
                            let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
                                body.chunks(MIB / 2).map(|c| Ok(c.to_vec())).collect();
                            req.body(reqwest::Body::wrap_stream(futures_util::stream::iter(pieces)))
                        };
                        let resp = req.send().await.unwrap();
                        let status = resp.status().as_u16();
                        let etag = resp.headers().get("etag").map(|v| v.to_str().unwrap().to_string());
                        (status, etag)
                    })
                })
                .collect();
            for (i, task) in tasks.into_iter().enumerate() {
                let (status, etag) =
                    tokio::time::timeout(Duration::from_secs(30), task).await.expect("a writer hung").unwrap();
                assert!(status == 200 || status == 201, "round {round} writer {i}: {status}");
                assert_eq!(etag, Some(format!("\"{}\"", hashes[i])), "round {round} writer {i}: ETag");
            }
            let resp = node.get(&format!("/data/{key}")).await;
            assert_eq!(resp.status(), 200);
            let etag = resp.headers()["etag"].to_str().unwrap().to_string();
            let got = resp.bytes().await.unwrap();
            let got_hash = b3(&got);
            let winner = hashes.iter().position(|h| *h == got_hash);
            assert!(
                winner.is_some(),
                "round {round}: the content ({} bytes, {got_hash}) is none of the 8 bodies",
                got.len()
            );
            assert_eq!(etag, format!("\"{got_hash}\""), "round {round}: ETag");
            let record = node.json(&format!("/datasets/{key}")).await;
            assert_eq!(record["blake3"], got_hash.as_str(), "round {round}: record");
            assert_eq!(record["size"], got.len() as u64, "round {round}: size");
            let left = node.wait_spool_empty(Duration::from_secs(5));
            assert!(left.is_empty(), "round {round}: {left:?}");
        }
        assert_nothing_left(&node, &[key], "concurrent writers").await;
    });
}

// ---------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------

struct Case {
    name: &'static str,
    request: Vec<u8>,
    /// Half-close the sending side after the request.
    half_close: bool,
    statuses: &'static [u16],
    /// Acceptable problem codes for an error answer with a body.
    codes: &'static [&'static str],
}

fn case(name: &'static str, request: Vec<u8>, statuses: &'static [u16], codes: &'static [&'static str]) -> Case {
    Case { name, request, half_close: false, statuses, codes }
}

fn with_body(head: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{head} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn multipart(body: &[u8]) -> Vec<u8> {
    with_body("POST /datasets", "multipart/form-data; boundary=XYZ", body)
}

fn json_patch(body: &[u8]) -> Vec<u8> {
    with_body("PATCH /datasets/target.txt", "application/json", body)
}

#[test]
fn hostile_requests_get_clear_4xx_problems() {
    let node = TestNode::start();
    let rt = runtime();
    let target = b"the target of ranges and patches".to_vec();
    rt.block_on(put_ok(&node, "target.txt", target.clone()));

    let huge = |n: usize| {
        format!("GET /datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Huge: {}\r\nConnection: close\r\n\r\n", "h".repeat(n))
            .into_bytes()
    };
    let mut big_json = b"{\"name\": \"".to_vec();
    big_json.extend(std::iter::repeat_n(b'n', 70 * 1024));
    big_json.extend_from_slice(b"\"}");
    let cases = vec![
        case(
            "multipart: boundary not in the body",
            multipart(b"--ABC\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello\r\n--ABC--\r\n"),
            &[400],
            &["bad-request"],
        ),
        case(
            "multipart: no boundary parameter",
            with_body("POST /datasets", "multipart/form-data", b"--XYZ\r\n\r\n"),
            &[400],
            &["bad-request"],
        ),
        case(
            "multipart: truncated file part",
            multipart(b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n\r\nhello wor"),
            &[400],
            &["bad-request", "truncated-body"],
        ),
        case(
            "multipart: truncated part headers",
            multipart(b"--XYZ\r\nContent-Disposition: form-da"),
            &[400],
            &["bad-request", "truncated-body"],
        ),
        case(
            "multipart: no file part",
            multipart(b"--XYZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nk.txt\r\n--XYZ--\r\n"),
            &[400],
            &["bad-request"],
        ),
        case(
            "Content-Length not a number",
            b"PUT /data/cl.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: abc\r\nConnection: close\r\n\r\nhello".to_vec(),
            &[400],
            &["bad-request"],
        ),
        Case {
            half_close: true,
            ..case(
                "Content-Length larger than the body, then half-close",
                b"PUT /data/short.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nforty bytes of the hundred promised ....".to_vec(),
                &[400],
                &["truncated-body"],
            )
        },
        case(
            "Range: bytes=zz",
            b"GET /data/target.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nRange: bytes=zz\r\nConnection: close\r\n\r\n".to_vec(),
            &[416, 200],
            &["range-not-satisfiable"],
        ),
        case("512 KiB header value", huge(512 * 1024), &[431, 400], &["bad-request", "header-too-large", "request-header-fields-too-large"]),
        case("1 MiB header value", huge(1024 * 1024), &[431, 400], &["bad-request", "header-too-large", "request-header-fields-too-large"]),
        case(
            "invalid UTF-8 in a key (PUT /data/%ff)",
            with_body("PUT /data/%ff", "text/plain", b"hello"),
            &[400],
            &["invalid-key"],
        ),
        case(
            "invalid UTF-8 in a key (GET /datasets/a/%ff%fe)",
            b"GET /datasets/a/%ff%fe HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".to_vec(),
            &[400],
            &["invalid-key"],
        ),
        case(
            "invalid UTF-8 in a JSON PATCH body",
            json_patch(b"{\"name\": \"\xff\xfe\"}"),
            &[400],
            &["invalid-body"],
        ),
        case("JSON PATCH body over 64 KiB", json_patch(&big_json), &[413], &["too-large"]),
        case("JSON of the wrong shape (number for name)", json_patch(b"{\"name\": 5}"), &[400], &["invalid-body"]),
        case("JSON of the wrong shape (array)", json_patch(b"[1, 2]"), &[400], &["invalid-body"]),
        case("JSON with an unknown field", json_patch(b"{\"colour\": \"red\"}"), &[400], &["invalid-body"]),
        case("JSON cut off", json_patch(b"{\"name\": \"x"), &[400], &["invalid-body"]),
        case(
            "acknowledge with a bad blake3 type",
            with_body("POST /datasets/target.txt/action/acknowledge", "application/json", b"{\"blake3\": 1}"),
            &[400],
            &["invalid-body"],
        ),
        case(
            "X-Blake3 that is not hex",
            b"PUT /data/xb.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Blake3: zz\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec(),
            &[400],
            &["bad-request"],
        ),
    ];

    let mut failures = Vec::new();
    let mut before_our_code = Vec::new();
    for c in &cases {
        let mut s = node.raw();
        if let Err(e) = s.write_all(&c.request) {
            // The node may answer and close before a huge request is all sent.
            eprintln!("{}: write stopped early: {e}", c.name);
        }
        if c.half_close {
            s.shutdown(Shutdown::Write).unwrap();
        }
        let resp = match read_response(&mut s, Duration::from_secs(10)) {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: {e}", c.name));
                continue;
            }
        };
        let summary = format!(
            "{}: {} {:?} {}",
            c.name,
            resp.status,
            resp.header("content-type"),
            resp.text().chars().take(160).collect::<String>()
        );
        eprintln!("{summary}");
        if resp.status >= 500 {
            failures.push(format!("{summary} (a 5xx)"));
            continue;
        }
        if !c.statuses.contains(&resp.status) {
            failures.push(format!("{summary} (expected one of {:?})", c.statuses));
            continue;
        }
        if resp.status >= 400 {
            if resp.body.is_empty() {
                before_our_code.push(format!("{}: {} with an empty body", c.name, resp.status));
            } else if !resp.is_problem() {
                failures.push(format!("{summary} (a body that is not problem+json)"));
            } else if !resp.code().is_some_and(|code| c.codes.contains(&code.as_str())) {
                failures.push(format!("{summary} (expected a code in {:?})", c.codes));
            }
        }
    }
    eprintln!("answered before Spillway's code (no problem+json): {before_our_code:#?}");
    rt.block_on(async {
        assert_nothing_left(&node, &["target.txt"], "hostile input").await;
        assert_serves(&node, "target.txt", &target).await;
        let record = node.json("/datasets/target.txt").await;
        assert_eq!(record["name"], "target.txt", "a hostile PATCH changed the record");
    });
    assert!(failures.is_empty(), "{} hostile case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// A spool on its own volume: a spilled upload is copied to a staging file
/// on the data volume and renamed from there (never a cross-device rename),
/// and a small one never touches the spool at all.
#[test]
fn a_spool_on_another_volume_is_copied_before_the_rename() {
    let spool = match Tmpfs::mount("64m") {
        Ok(fs) => fs,
        Err(reason) => {
            eprintln!("SKIPPED: this test needs a tmpfs mount (run as root): {reason}");
            return;
        }
    };
    let spool_dir = spool.path().join("spool");
    let node =
        TestNode::start_with(&[("SPILLWAY_SPOOL_DIR", spool_dir.to_str().unwrap()), ("SPILLWAY_SPOOL_MEMORY", "1MiB")]);
    let rt = runtime();
    let big = generated(20 * MIB, 71);
    let small = generated(100 * 1024, 72);
    for (key, body) in [("xvol/big.bin", &big), ("xvol/small.bin", &small)] {
        let resp = rt.block_on(node.put(key, body.clone()));
        assert_eq!(resp.status(), 201, "{key}");
        let record: serde_json::Value = rt.block_on(resp.json()).unwrap();
        assert_eq!(record["blake3"], blake3::hash(body).to_hex().to_string(), "{key}");
        let got = rt.block_on(async { node.get(&format!("/data/{key}")).await.bytes().await.unwrap() });
        assert_eq!(&got[..], &body[..], "{key}");
    }
    assert!(files_below(&spool_dir).is_empty(), "spool left: {:?}", files_below(&spool_dir));
    assert!(node.spool_files().is_empty(), "staging left: {:?}", node.spool_files());
    // The datasets live on the data volume, not the spool's.
    use std::os::unix::fs::MetadataExt;
    let data_dev = std::fs::metadata(node.datasets_dir()).unwrap().dev();
    assert_ne!(data_dev, std::fs::metadata(&spool_dir).unwrap().dev(), "the spool was meant to be another volume");
    for file in node.dataset_files() {
        assert_eq!(std::fs::metadata(&file).unwrap().dev(), data_dev, "{}", file.display());
    }
    drop(node);
}
