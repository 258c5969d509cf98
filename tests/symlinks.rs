//! Symlinks planted below `data_dir/datasets` (by hand, by another program)
//! are never followed: no request creates, replaces, reads or deletes
//! anything through one. Each test points a symlink at a temp dir outside
//! the node's tree and checks that nothing there appears, changes or goes,
//! and that the answer is `409 symlink-refused` problem+json.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::*;
use tempfile::TempDir;

/// Every entry below `dir`, with its bytes (symlinks not followed).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = walk(dir)
        .into_iter()
        .map(|p| (p.strip_prefix(dir).unwrap().display().to_string(), fs::read(&p).unwrap_or_default()))
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        out.push(entry.path());
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&entry.path()));
        }
    }
    out
}

async fn assert_refused(resp: reqwest::Response, what: &str) {
    let status = resp.status();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 409, "{what}: {text}");
    assert!(ct.starts_with("application/problem+json"), "{what}: {ct}");
    let problem: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["code"], "symlink-refused", "{what}: {problem}");
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// A folder of the key is a symlink to a folder outside: PUT (at any depth
/// below it) creates nothing there.
#[tokio::test]
async fn put_below_a_symlinked_folder_writes_nothing_outside() {
    let node = TestNode::start();
    let outside = TempDir::new().unwrap();
    fs::write(outside.path().join("kept.txt"), b"outside").unwrap();
    let planted = node.datasets_dir().join("planted");
    symlink(outside.path(), &planted).unwrap();
    let before = snapshot(outside.path());

    for key in ["planted/evil.txt", "planted/kept.txt", "planted/deeper/evil.txt"] {
        assert_refused(node.put(key, "evil").await, &format!("PUT {key}")).await;
    }
    assert_eq!(snapshot(outside.path()), before, "the folder outside changed");
    assert!(is_symlink(&planted), "the planted symlink was replaced");
    assert!(node.list_all().await.is_empty());
    assert!(node.wait_spool_empty(std::time::Duration::from_secs(5)).is_empty());
    // The refused install had already kept the bytes as a blob: that goes
    // with it (fsck found it a stray blob).
    let blobs = files_below(&node.data_dir.join("blobs"));
    assert!(blobs.is_empty(), "refused PUTs left blobs: {blobs:?}");
}

/// The dataset's own path is a symlink to a file outside: PUT does not
/// replace or write through it, GET and HEAD do not serve it, DELETE does
/// not remove its target.
#[tokio::test]
async fn a_symlink_at_the_key_is_never_written_read_or_deleted_through() {
    let node = TestNode::start();
    let outside = TempDir::new().unwrap();
    let target = outside.path().join("passwd");
    fs::write(&target, b"root:x:0:0").unwrap();

    // No record: a plain symlink put there by hand.
    let planted = node.datasets_dir().join("a.csv");
    symlink(&target, &planted).unwrap();
    assert_refused(node.put("a.csv", "evil").await, "PUT over a symlink").await;

    // A dataset whose file was swapped for a symlink afterwards.
    assert_eq!(node.put("b.csv", "mine").await.status(), 201);
    let swapped = node.datasets_dir().join("b.csv");
    fs::remove_file(&swapped).unwrap();
    symlink(&target, &swapped).unwrap();
    assert_refused(node.get("/data/b.csv").await, "GET through a symlink").await;
    let head = node.client.head(node.url("/data/b.csv")).send().await.unwrap();
    assert_eq!(head.status(), 409, "HEAD through a symlink");
    assert_refused(node.put("b.csv", "evil").await, "PUT over a swapped symlink").await;
    let delete = node.client.delete(node.url("/datasets/b.csv")).send().await.unwrap();
    assert_refused(delete, "DELETE of a symlink").await;

    assert_eq!(fs::read(&target).unwrap(), b"root:x:0:0", "the file outside changed");
    assert!(is_symlink(&planted) && is_symlink(&swapped), "a planted symlink was replaced or removed");
    assert_eq!(snapshot(outside.path()).len(), 1);
}

/// A dataset's folder was swapped for a symlink to a folder holding a file
/// of the same name: GET does not serve it and DELETE does not remove it.
#[tokio::test]
async fn a_symlinked_folder_is_never_read_or_deleted_through() {
    let node = TestNode::start();
    assert_eq!(node.put("dir/x.txt", "mine").await.status(), 201);
    let outside = TempDir::new().unwrap();
    fs::write(outside.path().join("x.txt"), b"precious").unwrap();
    let dir = node.datasets_dir().join("dir");
    fs::remove_dir_all(&dir).unwrap();
    symlink(outside.path(), &dir).unwrap();

    assert_refused(node.get("/data/dir/x.txt").await, "GET through a symlinked folder").await;
    let delete = node.client.delete(node.url("/datasets/dir/x.txt")).send().await.unwrap();
    assert_refused(delete, "DELETE through a symlinked folder").await;
    assert_refused(node.put("dir/x.txt", "evil").await, "PUT through a symlinked folder").await;

    assert_eq!(snapshot(outside.path()), vec![("x.txt".to_string(), b"precious".to_vec())]);
    assert!(is_symlink(&dir));
}

/// A resumable upload's file (below `data_dir/uploads`) swapped for a
/// symlink to a file outside: HEAD does not report its size, and a PATCH at
/// that offset neither appends to it nor commits it as the dataset.
#[tokio::test]
async fn a_symlinked_upload_file_is_never_written_through() {
    use base64::Engine;
    let node = TestNode::start();
    let key = base64::engine::general_purpose::STANDARD.encode("tus/evil.txt");
    let tus = |req: reqwest::RequestBuilder| req.header("Tus-Resumable", "1.0.0");
    let create = tus(node.client.post(node.url("/uploads")))
        .header("Upload-Length", "12")
        .header("Upload-Metadata", format!("key {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);
    let location = create.headers()["location"].to_str().unwrap().to_string();
    let id = location.rsplit('/').next().unwrap();
    let outside = TempDir::new().unwrap();
    let target = outside.path().join("precious");
    fs::write(&target, b"precious").unwrap();
    let file = node.data_dir.join("uploads").join(id);
    fs::remove_file(&file).unwrap();
    symlink(&target, &file).unwrap();

    let head = tus(node.client.head(node.url(&location))).send().await.unwrap();
    let offset = head.headers().get("upload-offset").map(|v| v.to_str().unwrap().to_string());
    assert_ne!(offset.as_deref(), Some("8"), "HEAD reports the size of the file outside");
    let patch = tus(node.client.patch(node.url(&location)))
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "8")
        .body("evil")
        .send()
        .await
        .unwrap();
    assert_refused(patch, "PATCH of a symlinked upload").await;
    assert_eq!(fs::read(&target).unwrap(), b"precious", "the file outside changed");
    assert!(node.list_all().await.is_empty());
    assert!(node.dataset_files().is_empty(), "{:?}", node.dataset_files());
}

/// F10: a key's folder swapped for a symlink, or moved away, while PUTs
/// create it (between the node's `mkdirat` and its `openat`) never panics
/// the node or answers 500: each PUT is installed or refused with 409.
/// Bounded: at most 1500 PUTs over 4 connections or 40 s, stopping at the
/// first 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_folder_swapped_while_a_put_creates_it_is_refused_not_a_panic() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    let node = Arc::new(TestNode::start());
    let outside = TempDir::new().unwrap();
    let datasets = node.datasets_dir();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, datasets, outside) = (stop.clone(), datasets.clone(), outside.path().to_path_buf());
        std::thread::spawn(move || {
            let folder = datasets.join("r");
            let mut n = 0u32;
            // Moves `r` away the moment it appears, then plants a symlink
            // there for a moment: the window between mkdirat and openat.
            while !stop.load(Ordering::Relaxed) && n < 200_000 {
                if fs::rename(&folder, datasets.join(format!("moved{}", n % 64))).is_ok() {
                    let _ = fs::remove_dir_all(datasets.join(format!("moved{}", (n + 32) % 64)));
                }
                if n.is_multiple_of(2) && symlink(&outside, &folder).is_ok() {
                    let _ = fs::remove_file(&folder);
                }
                n += 1;
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut workers = Vec::new();
    for w in 0..4 {
        let (node, stop) = (node.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut seen = std::collections::BTreeMap::new();
            for i in 0..375 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let status = node.put(&format!("r/s/f{w}-{i}"), "x").await.status().as_u16();
                *seen.entry(status).or_insert(0u32) += 1;
                if status == 500 {
                    stop.store(true, Ordering::Relaxed);
                }
            }
            seen
        }));
    }
    let mut seen = std::collections::BTreeMap::new();
    for w in workers {
        for (status, n) in w.await.unwrap() {
            *seen.entry(status).or_insert(0u32) += n;
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    let log = node.log();
    assert!(!log.contains("panicked"), "the node panicked ({seen:?}):\n{log}");
    assert!(seen.keys().all(|s| *s == 201 || *s == 409), "statuses {seen:?}");
    assert!(walk(outside.path()).is_empty(), "something landed outside: {:?}", walk(outside.path()));
}

/// F9: `data_dir/spool` (the default spool) planted as a symlink stops the
/// start, as `datasets/`, `staging/` and `uploads/` do.
#[tokio::test]
async fn a_symlinked_default_spool_stops_the_start() {
    let mut node = TestNode::start();
    node.kill9();
    node.set_setting("SPILLWAY_SPOOL_DIR", None);
    let outside = TempDir::new().unwrap();
    symlink(outside.path(), node.data_dir.join("spool")).unwrap();
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| node.launch()));
    assert!(started.is_err(), "the node started with data_dir/spool a symlink to {}", outside.path().display());
    let log = node.log();
    assert!(log.contains("spool is a symlink"), "the refusal does not name the spool:\n{log}");
    assert!(walk(outside.path()).is_empty());
}

/// F9: `spool/`, `staging/` and `uploads/` swapped for symlinks after
/// start (each real folder moved aside, a symlink to a folder on another
/// volume put in its place) are never followed: spilled PUTs, small PUTs,
/// DELETE's trash and resumable uploads all keep working in the folders
/// opened at start, and nothing is ever created outside. (On another
/// volume a rename through the symlink would fail with EXDEV, and an
/// upload's file would stay there: both show.)
#[tokio::test]
async fn folders_swapped_for_symlinks_after_start_are_never_followed() {
    let mut node = TestNode::start_with(&[("SPILLWAY_SPOOL_MEMORY", "1 KiB")]);
    node.kill9();
    node.set_setting("SPILLWAY_SPOOL_DIR", None);
    node.launch();
    let outside = TempDir::new_in("/dev/shm").or_else(|_| TempDir::new()).unwrap();
    for name in ["spool", "staging", "uploads"] {
        let dir = node.data_dir.join(name);
        fs::rename(&dir, node.data_dir.join(format!("{name}.moved"))).unwrap();
        fs::create_dir(outside.path().join(name)).unwrap();
        symlink(outside.path().join(name), &dir).unwrap();
    }

    let big = generated(50_000, 9);
    let r = node.put("sw/big.bin", big.clone()).await;
    assert_eq!(r.status(), 201, "a spilled PUT: {}", r.text().await.unwrap());
    assert_serves(&node, "sw/big.bin", &big).await;
    let r = node.put("sw/small.txt", "small").await;
    assert_eq!(r.status(), 201, "a small PUT: {}", r.text().await.unwrap());
    assert_serves(&node, "sw/small.txt", b"small").await;
    let r = node.client.delete(node.url("/datasets/sw/small.txt")).send().await.unwrap();
    assert_eq!(r.status(), 204, "DELETE: {}", r.text().await.unwrap());
    assert_eq!(node.get("/data/sw/small.txt").await.status(), 404);

    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode("sw/tus.bin");
    let create = node
        .client
        .post(node.url("/uploads"))
        .header("Tus-Resumable", "1.0.0")
        .header("Upload-Length", "10")
        .header("Upload-Metadata", format!("key {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);
    let location = create.headers()["location"].to_str().unwrap().to_string();
    let id = location.rsplit('/').next().unwrap().to_string();
    assert!(walk(&outside.path().join("uploads")).is_empty(), "an upload file was created outside");
    assert!(node.data_dir.join("uploads.moved").join(&id).is_file(), "the upload file is not in the real uploads/");
    let patch = node
        .client
        .patch(node.url(&location))
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", "application/offset+octet-stream")
        .header("Upload-Offset", "0")
        .body("0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(patch.status(), 204, "PATCH: {}", patch.text().await.unwrap());
    assert_serves(&node, "sw/tus.bin", b"0123456789").await;

    let files: Vec<_> = walk(outside.path()).into_iter().filter(|p| !p.is_dir()).collect();
    assert!(files.is_empty(), "files were created outside data_dir: {files:?}");
    for name in ["spool", "staging", "uploads"] {
        assert!(is_symlink(&node.data_dir.join(name)), "{name} symlink replaced");
    }
}
