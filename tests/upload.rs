//! Uploads through PUT: big streamed bodies both ways, digests, truncation,
//! disconnects, and the in-memory spool cap.

mod common;

use std::io::Write;
use std::time::Duration;

use base64::Engine;
use common::*;
use sha2::{Digest, Sha256};

const MIB: u64 = 1024 * 1024;

async fn download_hashes(node: &TestNode, key: &str) -> (u64, String, String) {
    let mut resp = node.get(&format!("/data/{key}")).await;
    assert_eq!(resp.status(), 200);
    let (mut b3, mut sha, mut len) = (blake3::Hasher::new(), Sha256::new(), 0u64);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        b3.update(&chunk);
        sha.update(&chunk);
        len += chunk.len() as u64;
    }
    (len, b3.finalize().to_hex().to_string(), hex(&sha.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn big_chunked_upload_round_trips() {
    let node = TestNode::start();
    let len = 256 * MIB;
    let (body, hashes) = generated_stream(len, 1, 1 << 20);
    let resp = node.put("big/chunked.bin", body).await;
    assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let record: serde_json::Value = resp.json().await.unwrap();
    let (b3, sha) = {
        let h = hashes.lock().unwrap();
        (h.0.finalize().to_hex().to_string(), hex(&h.1.clone().finalize()))
    };
    assert_eq!(record["size"], len);
    assert_eq!(record["blake3"], b3);
    assert_eq!(etag, format!("\"{b3}\""));

    let listed = node.json("/datasets?prefix=big/").await;
    assert_eq!(listed[0]["key"], "big/chunked.bin");
    assert_eq!(listed[0]["blake3"], b3);

    assert_eq!(download_hashes(&node, "big/chunked.bin").await, (len, b3, sha));
    assert!(node.spool_files().is_empty());
}

#[tokio::test]
async fn big_sized_upload_round_trips() {
    let node = TestNode::start();
    let body = generated((256 * MIB) as usize, 2);
    let b3 = blake3::hash(&body).to_hex().to_string();
    let sha = hex(&Sha256::digest(&body));
    // A Vec body is sent with Content-Length.
    let resp = node.put("big/sized.bin", body).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(download_hashes(&node, "big/sized.bin").await, (256 * MIB, b3, sha));
}

#[tokio::test]
async fn replace_answers_200_and_keeps_created_at() {
    let node = TestNode::start();
    let first: serde_json::Value = node.put("r.txt", "one").await.json().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let resp = node.put("r.txt", "two").await;
    assert_eq!(resp.status(), 200);
    let second: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(second["created_at"], first["created_at"]);
    assert_ne!(second["updated_at"], first["updated_at"]);
    assert_eq!(node.get("/data/r.txt").await.text().await.unwrap(), "two");
}

#[tokio::test]
async fn digests_are_verified_before_commit() {
    let node = TestNode::start();
    let body = generated(3 * MIB as usize, 3);
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let good_sha256 = format!("sha-256=:{}:", b64(&Sha256::digest(&body)));
    let good_sha512 = format!("sha-512=:{}:", b64(&sha2::Sha512::digest(&body)));
    let bad_sha256 = format!("sha-256=:{}:", b64(&Sha256::digest(b"other")));
    let b3 = blake3::hash(&body).to_hex().to_string();

    let cases: Vec<(&str, String, u16)> = vec![
        ("Content-Digest", good_sha256.clone(), 201),
        ("Repr-Digest", good_sha512, 201),
        ("X-Blake3", b3.clone(), 201),
        ("Content-Digest", bad_sha256, 400),
        ("X-Blake3", blake3::hash(b"other").to_hex().to_string(), 400),
        ("Content-Digest", "sha-256=:not base64!:".into(), 400),
    ];
    for (i, (header, value, status)) in cases.into_iter().enumerate() {
        let key = format!("digest/{i}");
        // A malformed header is refused before the body is read, and the
        // node then closes the connection: a big body could meet a broken
        // pipe before the client reads the answer. A small one cannot.
        let sent = if value.contains("not base64") { b"tiny".to_vec() } else { body.clone() };
        let resp = node
            .client
            .put(node.url(&format!("/data/{key}")))
            .header(header, value.clone())
            .body(sent)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{header}: {value}");
        if status == 400 {
            let problem: serde_json::Value = resp.json().await.unwrap();
            assert!(["digest-mismatch", "bad-request"].contains(&problem["code"].as_str().unwrap()));
            assert_eq!(node.get(&format!("/datasets/{key}")).await.status(), 404);
        }
    }
    // A mismatch never harms the dataset already stored at the key.
    let resp =
        node.client.put(node.url("/data/digest/0")).header("X-Blake3", b3).body("different").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let problem: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(problem["code"], "digest-mismatch");
    assert_eq!(node.get("/data/digest/0").await.bytes().await.unwrap(), body);
    assert!(node.wait_spool_empty(Duration::from_secs(5)).is_empty());
    assert_eq!(node.dataset_files().len(), 3);
}

/// A client that sends half its body and disconnects leaves nothing behind.
#[test]
fn disconnect_midway_leaves_nothing() {
    let node = TestNode::start();
    for (i, framing) in ["Content-Length: 33554432", "Transfer-Encoding: chunked"].iter().enumerate() {
        let mut s = node.raw();
        write!(s, "PUT /data/cut/{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n{framing}\r\n\r\n").unwrap();
        let half = generated(16 * MIB as usize, 4);
        if framing.starts_with("Transfer") {
            write!(s, "{:x}\r\n", half.len()).unwrap();
            s.write_all(&half).unwrap();
            s.write_all(b"\r\n").unwrap();
        } else {
            s.write_all(&half).unwrap();
        }
        s.flush().unwrap();
        // Give the node time to spill the bytes it got, then cut the line.
        std::thread::sleep(Duration::from_millis(300));
        drop(s);
    }
    assert_eq!(node.wait_spool_empty(Duration::from_secs(10)), Vec::<std::path::PathBuf>::new());
    assert!(node.dataset_files().is_empty());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listed = rt.block_on(node.json("/datasets"));
    assert_eq!(listed, serde_json::json!([]));
}

/// A body shorter than its Content-Length is never a dataset, even when the
/// client half-closes cleanly.
#[test]
fn short_body_is_not_committed() {
    let node = TestNode::start();
    let mut s = node.raw();
    s.write_all(
        b"PUT /data/short HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nonly forty bytes of the hundred promised",
    )
    .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
    assert!(!out.starts_with("HTTP/1.1 20"), "{out}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(node.get("/datasets/short")).status(), 404);
    assert!(node.wait_spool_empty(Duration::from_secs(5)).is_empty());
}

/// An upload within `spool_memory` never touches the spool directory; a
/// larger one spills to it.
#[tokio::test]
async fn small_uploads_stay_in_memory_big_ones_spill() {
    let node = TestNode::start_with(&[("SPILLWAY_SPOOL_MEMORY", "4 MiB")]);
    // Watch the spool directory while uploads run.
    let spool = node.spool_dir.clone();
    let watcher = std::thread::spawn(move || {
        let mut seen = 0usize;
        for _ in 0..400 {
            seen = seen.max(files_below(&spool).len());
            std::thread::sleep(Duration::from_millis(5));
        }
        seen
    });
    // Small: a slow chunked stream (so a spill would be visible for a while).
    let pieces = futures_util::stream::iter(
        (0..8).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(generated(256 * 1024, i)))),
    )
    .then(|piece| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        piece
    });
    let resp = node.put("small", reqwest::Body::wrap_stream(pieces)).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(watcher.join().unwrap(), 0, "a 2 MiB upload touched the spool");

    let spool = node.spool_dir.clone();
    let watcher = std::thread::spawn(move || {
        let mut seen = 0usize;
        for _ in 0..2000 {
            seen = seen.max(files_below(&spool).len());
            if seen > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        seen
    });
    let pieces = futures_util::stream::iter(
        (0..24).map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(generated(512 * 1024, i)))),
    )
    .then(|piece| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        piece
    });
    let resp = node.put("large", reqwest::Body::wrap_stream(pieces)).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(watcher.join().unwrap(), 1, "a 12 MiB upload did not spill");
    assert!(node.spool_files().is_empty());
}

use futures_util::StreamExt;

/// The open-file flags of the node's descriptor for a file below `dir`
/// (from `/proc/PID/fdinfo`), once that file holds at least 4 MiB (written
/// to, so past its set-up).
fn open_flags_below(node: &TestNode, dir: &std::path::Path) -> Option<u32> {
    let (fd, _) = node
        .open_files()
        .into_iter()
        .find(|(_, target)| target.starts_with(dir) && std::fs::metadata(target).map_or(0, |m| m.len()) >= 4 * MIB)?;
    let info = std::fs::read_to_string(format!("/proc/{}/fdinfo/{fd}", node.pid())).ok()?;
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?.trim();
    u32::from_str_radix(flags, 8).ok()
}

/// Whether files in `dir` can be switched to direct I/O at all.
fn direct_io_allowed(dir: &std::path::Path) -> bool {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    let file = tempfile::tempfile_in(dir).unwrap();
    let flags = fcntl_getfl(&file).unwrap();
    fcntl_setfl(&file, flags | OFlags::DIRECT).is_ok()
}

/// A spilled upload is written with O_DIRECT (unless `direct_writes` is
/// off), seen on the node's own descriptor while the body is half sent,
/// and its bytes, whose length is no multiple of a block, come back whole.
#[tokio::test]
async fn a_spilled_upload_is_written_around_the_page_cache() {
    for direct in [true, false] {
        let node = TestNode::start_with(&[("SPILLWAY_DIRECT_WRITES", if direct { "true" } else { "false" })]);
        let expect_direct = direct && direct_io_allowed(&node.spool_dir);
        let body = generated((24 * MIB + 12_345) as usize, 7);
        let half = 16 * MIB as usize;
        let mut s = node.raw();
        let head = format!("PUT /data/d/direct HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n", body.len());
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body[..half]).unwrap();
        let spool = node.spool_dir.clone();
        let mut flags = None;
        let seen = eventually(Duration::from_secs(20), async || {
            flags = open_flags_below(&node, &spool);
            flags.is_some()
        })
        .await;
        assert!(seen, "no spool file open while the body is half sent");
        let o_direct = rustix::fs::OFlags::DIRECT.bits();
        assert_eq!(
            flags.unwrap() & o_direct != 0,
            expect_direct,
            "O_DIRECT on the spool file (direct_writes {direct})"
        );
        s.write_all(&body[half..]).unwrap();
        let reply = read_response(&mut s, Duration::from_secs(30)).unwrap();
        assert_eq!(reply.status, 201, "{}", reply.text());
        assert_serves(&node, "d/direct", &body).await;
        assert!(node.wait_spool_empty(Duration::from_secs(10)).is_empty());
    }
}

/// With the spool on another filesystem (here tmpfs), a spilled upload is
/// copied onto the data volume at its commit, and a small one is written
/// there from memory: both are served whole, and fsck finds nothing amiss.
#[tokio::test]
async fn uploads_spooled_on_another_volume_are_copied_in() {
    use std::os::unix::fs::MetadataExt;
    let spool = tempfile::tempdir_in("/dev/shm").expect("a temp dir in /dev/shm (tmpfs)");
    let spool_dir = spool.path().display().to_string();
    let mut node = TestNode::start_with(&[("SPILLWAY_SPOOL_MEMORY", "1 MiB"), ("SPILLWAY_SPOOL_DIR", &spool_dir)]);
    let (spool_dev, data_dev) =
        (std::fs::metadata(spool.path()).unwrap().dev(), std::fs::metadata(&node.data_dir).unwrap().dev());
    assert_ne!(spool_dev, data_dev, "the spool must be on another filesystem for this test to mean anything");
    let big = generated(3 * MIB as usize + 5, 71);
    let small = generated(100_000, 72);
    assert_eq!(node.put("elsewhere/big", big.clone()).await.status(), 201);
    assert_eq!(node.put("elsewhere/small", small.clone()).await.status(), 201);
    assert_serves(&node, "elsewhere/big", &big).await;
    assert_serves(&node, "elsewhere/small", &small).await;
    assert!(files_below(spool.path()).is_empty(), "the spool keeps a copy");
    node.terminate();
    let fsck = node.cli(&["fsck"]);
    assert_eq!(fsck.code, Some(0), "fsck:\n{}{}", fsck.stdout, fsck.stderr);
}
