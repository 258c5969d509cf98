//! Commits under concurrency, on the real binary built with the
//! `failpoints` feature (scripts/test.sh builds it so): one key's install
//! held for seconds does not hold up commits of other keys, while the same
//! key, a key below it and its folder wait their turn (and the conflict
//! rule still holds); a kill -9 while a batch of index writes is open
//! (group commit), or while a new blob has a temporary second name, leaves
//! every key whole or absent and nothing for fsck to find.
#![cfg(feature = "failpoints")]

mod common;

use std::time::Duration;

use common::*;

const KIB: usize = 1024;
/// How long the slow key's install is held: far longer than the other
/// commits take even on a loaded machine (nothing is asserted on time).
const HOLD_MS: u64 = 12_000;

/// Waits (bounded) until the node's log has `line`.
async fn log_shows(node: &TestNode, line: &str) {
    let seen = eventually(Duration::from_secs(60), async || node.log().contains(line)).await;
    assert!(seen, "the node never logged `{line}`:\n{}", node.log());
}

/// PUTs `body` at `key`; the status.
async fn status_of_put(node: &TestNode, key: &str, body: Vec<u8>) -> u16 {
    let resp = node.put(key, body).await;
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_install_holds_up_only_its_own_key_and_its_folder() {
    let slow = format!("return(slow/one@{HOLD_MS})");
    let node = TestNode::start_with(&[("FAILPOINTS", &format!("commit.install={slow}"))]);
    let client = std::sync::Arc::new(node);
    let first = generated(20 * KIB, 1);
    let held = {
        let (node, body) = (client.clone(), first.clone());
        tokio::spawn(async move { status_of_put(&node, "slow/one", body).await })
    };
    log_shows(&client, "failpoint commit.install: `slow/one` waits").await;

    // Waiting their turn behind it: the same key, a key below it, its folder.
    let waiting: Vec<_> = [("slow/one", 2u64), ("slow/one/below", 3), ("slow", 4)]
        .into_iter()
        .map(|(key, seed)| {
            let node = client.clone();
            tokio::spawn(async move { (key, status_of_put(&node, key, generated(10 * KIB, seed)).await) })
        })
        .collect();

    // Meanwhile, other keys (a sibling, another tree) commit at once.
    for i in 0..20u64 {
        let key = if i % 2 == 0 { format!("slow/sibling{i}") } else { format!("other/k{i}") };
        let body = generated(16 * KIB, 100 + i);
        let resp = client.put(&key, body.clone()).await;
        assert_eq!(resp.status().as_u16(), 201, "PUT {key} while `slow/one` is held");
        assert!(!held.is_finished(), "`{key}` was committed only after the held install ended");
        assert_serves(&client, &key, &body).await;
    }

    assert_eq!(held.await.unwrap(), 201, "the held PUT");
    // Their answers say they committed after it (the order of the answers
    // on the wire would not: its locks go just before its answer does).
    for task in waiting {
        let (key, status) = task.await.unwrap();
        match key {
            // The second write of the key replaced the first.
            "slow/one" => assert_eq!(status, 200, "the second PUT of slow/one"),
            // `slow/one` is a dataset: nothing can sit below it, nor can
            // its folder `slow` (holding siblings) become a dataset.
            _ => assert_eq!(status, 409, "PUT {key}"),
        }
    }
    let listed: Vec<String> = client.list_all().await.iter().map(|r| r["key"].as_str().unwrap().to_string()).collect();
    assert!(listed.contains(&"slow/one".to_string()), "{listed:?}");
    assert!(!listed.iter().any(|k| k == "slow" || k == "slow/one/below"), "{listed:?}");
    assert_eq!(listed.len(), 21, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_inside_an_open_batch_leaves_every_key_whole_or_absent() {
    // Every batch of index writes waits before its commit: the kill lands
    // with writes in it (the intents of some uploads, the rows of others).
    let mut node = TestNode::start_with(&[("FAILPOINTS", "index.batch.before_commit=sleep(1500)")]);
    let bodies: Vec<Vec<u8>> = (0..8u64).map(|i| generated(24 * KIB, 200 + i)).collect();
    let client = node.client.clone();
    let uploads: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let (client, url, body) = (client.clone(), node.url(&format!("/data/batch/k{i}")), body.clone());
            tokio::spawn(async move { client.put(url).body(body).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    log_shows(&node, "failpoint index.batch.before_commit: reached").await;
    node.kill9();
    let mut acknowledged = Vec::new();
    for (i, upload) in uploads.into_iter().enumerate() {
        if let Ok(Ok(status)) = upload.await {
            if status == 201 {
                acknowledged.push(format!("batch/k{i}"));
            }
        }
    }

    node.set_setting("FAILPOINTS", None);
    node.launch();
    let listed = node.list_all().await;
    for (i, body) in bodies.iter().enumerate() {
        let key = format!("batch/k{i}");
        match listed.iter().find(|r| r["key"] == key.as_str()) {
            Some(record) => {
                assert_eq!(record["blake3"], b3(body), "{key}");
                assert_serves(&node, &key, body).await;
            }
            None => {
                assert!(!acknowledged.contains(&key), "`{key}` was acknowledged, then lost");
                let get = node.get(&format!("/data/{key}")).await;
                assert_eq!(get.status().as_u16(), 404, "{key} has no row but is served");
            }
        }
    }
    let files = node.dataset_files();
    assert_eq!(files.len(), listed.len(), "a file for each row, no more: {files:?}\n{listed:?}");
    node.terminate();
    let fsck = node.cli(&["fsck"]);
    assert_eq!(fsck.code, Some(0), "fsck after the kill:\n{}{}", fsck.stdout, fsck.stderr);
}

/// Starts a node whose `failpoint` holds for a minute, PUTs fresh bytes
/// at `key`, kills the node -9 once the PUT is held there, and checks the
/// restart: no 201 was sent, no row is left, the same bytes go in again,
/// and fsck finds nothing (no stray blob, no leftover file).
async fn killed_in(failpoint: &str, key: &str, seed: u64) {
    let mut node = TestNode::start_with(&[("FAILPOINTS", &format!("{failpoint}=sleep(60000)"))]);
    let body = generated(40 * KIB, seed);
    let (client, url, sent) = (node.client.clone(), node.url(&format!("/data/{key}")), body.clone());
    let upload = tokio::spawn(async move { client.put(url).body(sent).send().await.map(|r| r.status().as_u16()) });
    log_shows(&node, &format!("failpoint {failpoint}: reached")).await;
    node.kill9();
    let answered = upload.await.unwrap();
    assert!(!matches!(answered, Ok(201)), "acknowledged before its bytes were in place: {answered:?}");

    node.set_setting("FAILPOINTS", None);
    node.launch();
    assert!(node.list_all().await.is_empty(), "a row for an upload killed before its commit");
    let put = status_of_put(&node, key, body.clone()).await;
    assert_eq!(put, 201, "the same bytes again, after the restart");
    assert_serves(&node, key, &body).await;
    node.terminate();
    let fsck = node.cli(&["fsck"]);
    assert_eq!(fsck.code, Some(0), "fsck after the kill:\n{}{}", fsck.stdout, fsck.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_between_a_blobs_link_and_its_rename_leaves_no_stray_blob() {
    // A new blob gets a temporary second name, then is renamed into
    // blobs/. Killed between the two, the temporary name must be where the
    // start-up sweep removes it: once it was made in the blob's folder,
    // and fsck then reported a stray blob.
    killed_in("blobs.link.before_rename", "linked/one", 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_the_staged_file_is_fsynced_beside_the_intent_rolls_back() {
    // The spool file's fsync runs while the index commits the intent:
    // killed there, the intent may be recorded with nothing installed,
    // and the restart rolls it back.
    killed_in("store.settle", "settled/one", 301).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_of_the_staged_file_refuses_the_upload_and_keeps_the_stored_dataset() {
    // The staged file's fsync fails once (a failing disk) while the index
    // records the intent beside it: the upload is refused, the intent is
    // dropped again, and the version already stored stays whole.
    let mut node = TestNode::start_with(&[("FAILPOINTS", "store.settle=1*off->1*return->off")]);
    let (v1, v2) = (generated(40 * KIB, 310), generated(40 * KIB, 311));
    assert_eq!(status_of_put(&node, "fsynced/one", v1.clone()).await, 201);

    let refused = node.put("fsynced/one", v2.clone()).await;
    assert_eq!(refused.status().as_u16(), 500, "an fsync that failed");
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["code"], "internal", "{problem}");
    log_shows(&node, "failpoint store.settle: reached").await;
    assert_serves(&node, "fsynced/one", &v1).await;
    let db = rusqlite::Connection::open(node.data_dir.join("index.sqlite")).unwrap();
    let intents: i64 = db.query_row("SELECT count(*) FROM intents", [], |row| row.get(0)).unwrap();
    assert_eq!(intents, 0, "the intent recorded beside the failed fsync is still there");
    drop(db);
    let left = eventually(Duration::from_secs(30), async || node.spool_files().is_empty()).await;
    assert!(left, "the refused upload's spool file stays: {:?}", node.spool_files());

    // The key takes the same bytes once the disk behaves.
    assert_eq!(status_of_put(&node, "fsynced/one", v2.clone()).await, 200);
    assert_serves(&node, "fsynced/one", &v2).await;
    node.terminate();
    let fsck = node.cli(&["fsck"]);
    assert_eq!(fsck.code, Some(0), "fsck after the refusal:\n{}{}", fsck.stdout, fsck.stderr);
}

/// How long the racing PUT is held before its rename (each time it gets
/// there): the DELETE must end within it, also on a loaded machine.
const RACE_HOLD_MS: u64 = 6_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_new_folder_a_delete_prunes_meanwhile_still_lands() {
    // A DELETE of the last dataset in a folder removes the folder; a PUT
    // of another key in that folder shares only a shared lock on it. The
    // PUT held after opening the folder and before renaming its file into
    // it found the folder gone: a 500, and the blob it had already linked
    // stayed behind (fsck: a stray blob). It now opens the folder again.
    let slow = "pruned/f/new";
    let mut node =
        TestNode::start_with(&[("FAILPOINTS", &format!("place.before_rename=return({slow}@{RACE_HOLD_MS})"))]);
    assert_eq!(status_of_put(&node, "pruned/f/last", b"last".to_vec()).await, 201);
    let body = generated(40 * KIB, 320);
    let put = {
        let (client, url, body) = (node.client.clone(), node.url(&format!("/data/{slow}")), body.clone());
        tokio::spawn(async move { client.put(url).body(body).send().await.unwrap().status().as_u16() })
    };
    log_shows(&node, &format!("failpoint place.before_rename: `{slow}` waits")).await;
    let deleted = node.client.delete(node.url("/datasets/pruned/f/last")).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    assert!(!node.datasets_dir().join("pruned/f").exists(), "the DELETE left the emptied folder: nothing raced");
    assert_eq!(put.await.unwrap(), 201, "the PUT whose folder was pruned meanwhile:\n{}", node.log_tail(20));
    assert_serves(&node, slow, &body).await;
    node.terminate();
    let fsck = node.cli(&["fsck"]);
    assert_eq!(fsck.code, Some(0), "fsck after the race:\n{}{}", fsck.stdout, fsck.stderr);
}
