//! The command-line client (`spillway upload`, `get`, `ls`, `rm`, `url`,
//! `versions`, `restore`) against a live node: an upload (whole, and in
//! parallel parts) and a download each SIGKILLed midway and resumed by
//! running the same command again, paging in
//! `ls`, auth errors, signed URLs, and a key's versions (listed, paged,
//! downloaded and resumed, restored, deleted).
//!
//! The client runs as the real binary with a clean environment
//! (`common::client`); folders and many files are in `cli_folders.rs`.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::client::*;
use common::*;
use serde_json::Value;

#[tokio::test]
async fn upload_killed_midway_resumes_and_verifies() {
    let node = TestNode::start();
    let client = Client::new(&node);
    let size = 300 * MIB;
    let file = client.dir.path().join("big.bin");
    let expected = write_generated(&file, size, 7);
    let file_arg = file.to_str().unwrap();
    let args = ["upload", file_arg, "raw/big.bin", "--name", "Big", "--description", "generated", "--parts", "1"];

    let started = Instant::now();
    let mut child = client.spawn("first", &args);
    until_killable(&mut child, "the node had 48 MiB", async || metric(&node, TUS_BYTES).await >= (48 * MIB) as f64)
        .await;
    kill9(child);

    // The state file remembers the upload; the node holds part of it.
    let state = client.state();
    let uploads = state["uploads"].as_array().expect("an uploads array");
    assert_eq!(uploads.len(), 1, "{state}");
    let entry = &uploads[0];
    assert_eq!(entry["size"], size);
    assert_eq!(entry["key"], "raw/big.bin");
    assert_eq!(entry["path"], fs::canonicalize(&file).unwrap().to_str().unwrap());
    let upload_url = entry["upload_url"].as_str().unwrap();
    assert!(upload_url.starts_with(&format!("{}/uploads/", node.base)), "{upload_url}");
    let head = node.client.head(upload_url).header("Tus-Resumable", "1.0.0").send().await.unwrap();
    assert_eq!(head.status(), 200);
    let offset: u64 = head.headers()["upload-offset"].to_str().unwrap().parse().unwrap();
    assert!(offset > 0 && offset < size, "offset {offset}");

    // The same command again resumes from the node's offset and finishes.
    let second = client.run(&args);
    second.ok();
    assert!(second.stderr.contains("resuming at"), "{second:#?}");
    assert!(second.stdout.contains("uploaded") && second.stdout.contains(&expected), "{second:#?}");

    let record = node.json("/datasets/raw/big.bin").await;
    assert_eq!(record["size"], size);
    assert_eq!(record["blake3"], expected.as_str());
    assert_eq!(record["name"], "Big");
    assert_eq!(record["description"], "generated");
    let received = metric(&node, TUS_BYTES).await;
    assert!(received >= size as f64, "received {received}");
    assert!(received < 1.1 * size as f64, "the node received {received} bytes for {size}: the resume re-sent too much");
    // Done: the state file forgot the upload.
    assert_eq!(client.state()["uploads"], serde_json::json!([]));
    eprintln!("upload test: {:?}", started.elapsed());
}

/// The client hashes the file as it sends it and names the whole blake3
/// on its last PATCH. A resumed run hashes what the node already holds
/// from the file as it is now: bytes changed there since the first run
/// (size and modification time kept, so the state file still matches)
/// make the node refuse the commit, and the command fails naming the
/// mismatch; nothing is stored at the key.
#[tokio::test]
async fn a_resume_over_changed_bytes_is_refused_by_the_node() {
    let node = TestNode::start();
    let client = Client::new(&node);
    let size = 200 * MIB;
    let file = client.dir.path().join("moving.bin");
    write_generated(&file, size, 8);
    let file_arg = file.to_str().unwrap();
    let args = ["upload", file_arg, "raw/moving.bin", "--parts", "1"];
    let mut child = client.spawn("first", &args);
    until_killable(&mut child, "the node had 48 MiB", async || metric(&node, TUS_BYTES).await >= (48 * MIB) as f64)
        .await;
    kill9(child);

    let mtime = fs::metadata(&file).unwrap().modified().unwrap();
    let mut changed = fs::OpenOptions::new().write(true).open(&file).unwrap();
    std::io::Write::write_all(&mut changed, b"bytes the node already holds, changed").unwrap();
    changed.set_modified(mtime).unwrap();
    drop(changed);

    let second = client.run(&args);
    assert!(second.stderr.contains("resuming at"), "the state file still matched: {second:#?}");
    assert_eq!(second.code, Some(1), "{second:#?}");
    let line = second.stderr.lines().last().unwrap_or_default();
    assert!(line.starts_with("spillway: ") && line.contains("digest-mismatch"), "the failure names it: {second:#?}");
    assert_eq!(node.get("/datasets/raw/moving.bin").await.status(), 404, "nothing is stored at the key");
}

#[tokio::test]
async fn get_killed_midway_resumes_with_range() {
    let node = TestNode::start();
    let client = Client::new(&node);
    let size = 300 * MIB;
    let (body, hashes) = generated_stream(size, 11, 4 * MIB as usize);
    let put = node.put("exports/big.bin", body).await;
    assert_eq!(put.status(), 201);
    let expected = hashes.lock().unwrap().0.finalize().to_hex().to_string();

    let out = client.work_dir().join("big.out");
    let part = client.work_dir().join("big.out.part");
    let mut child = client.spawn("first", &["get", "exports/big.bin", "big.out"]);
    let part_len = || fs::metadata(&part).map_or(0, |m| m.len());
    until_killable(&mut child, "32 MiB in big.out.part", async || part_len() >= 32 * MIB).await;
    kill9(child);
    let had = part_len();
    assert!(had > 0 && had < size, "big.out.part holds {had}");
    assert!(!out.exists());
    let state = client.state();
    assert_eq!(state["downloads"][0]["etag"], expected.as_str(), "{state}");

    let second = client.run(&["get", "exports/big.bin", "big.out"]);
    second.ok();
    assert!(second.stderr.contains("resuming at"), "{second:#?}");
    assert!(!part.exists(), "the .part file is renamed at the end");
    assert_eq!(fs::metadata(&out).unwrap().len(), size);
    assert_eq!(file_b3(&out), expected);
    assert!(node.log().contains("status=206"), "the second run asked for a range");
    assert_eq!(client.state()["downloads"], serde_json::json!([]));

    // OUT exists now: no silent overwrite.
    let again = client.run(&["get", "exports/big.bin", "big.out"]);
    assert!(again.failed_with_one_line().contains("--force"));
}

#[tokio::test]
async fn ls_follows_link_pages_as_table_and_json() {
    let node = TestNode::start();
    let client = Client::new(&node);
    for i in 0..25 {
        let body = vec![b'x'; if i == 3 { 1536 } else { 10 + i }];
        assert_eq!(node.put(&format!("p/k{i:02}"), body).await.status(), 201);
    }
    assert_eq!(node.put("other/x", "x").await.status(), 201);

    let json = client.run(&["ls", "p/", "--json", "--page-size", "7"]);
    json.ok();
    let records: Value = serde_json::from_str(&json.stdout).unwrap();
    let keys: Vec<&str> = records.as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap()).collect();
    let expected: Vec<String> = (0..25).map(|i| format!("p/k{i:02}")).collect();
    assert_eq!(keys, expected);
    assert_eq!(records[3]["size"], 1536);
    assert!(records[0]["blake3"].as_str().unwrap().len() == 64 && records[0]["updated_at"].is_string());
    // Four pages of at most seven.
    let pages = || node.log().lines().filter(|l| l.contains("method=GET") && l.contains("route=/datasets ")).count();
    assert_eq!(pages(), 4);

    let table = client.run(&["ls", "--page-size", "4"]);
    table.ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 27, "a header and 26 rows:\n{}", table.stdout);
    assert!(lines[0].contains("SIZE") && lines[0].contains("KEY") && lines[0].contains("BLAKE3"));
    let row = lines.iter().find(|l| l.ends_with("p/k03")).unwrap();
    assert!(row.contains("1.5 KiB"), "{row}");
    let short = &records[3]["blake3"].as_str().unwrap()[..12];
    assert!(row.contains(short), "{row}");
    // Key order, bytewise: `other/x` before `p/...`.
    assert!(lines[1].ends_with("other/x") && lines[26].ends_with("p/k24"), "{}", table.stdout);

    let empty = client.run(&["ls", "nothing/", "--json"]);
    empty.ok();
    assert_eq!(serde_json::from_str::<Value>(&empty.stdout).unwrap(), serde_json::json!([]));
}

#[tokio::test]
async fn small_round_trip_and_clear_failures() {
    let node = TestNode::start();
    let client = Client::new(&node);
    let file = client.work_dir().join("notes.txt");
    fs::write(&file, "hello, spillway\n").unwrap();
    let key = "dir/naïve notes.txt";
    client.run(&["upload", "notes.txt", key, "--content-type", "text/plain", "--chunk-size", "4KiB"]).ok();
    let record = node.json("/datasets/dir/na%C3%AFve%20notes.txt").await;
    assert_eq!(record["content_type"], "text/plain");
    assert_eq!(record["blake3"], b3(b"hello, spillway\n").as_str());

    let stdout = client.run(&["get", key, "-"]);
    stdout.ok();
    assert_eq!(stdout.stdout, "hello, spillway\n");
    client.run(&["get", key]).ok();
    assert_eq!(fs::read_to_string(client.work_dir().join("naïve notes.txt")).unwrap(), "hello, spillway\n");

    // An empty file is a dataset too.
    fs::write(client.work_dir().join("empty"), "").unwrap();
    client.run(&["upload", "empty"]).ok();
    assert_eq!(node.json("/datasets/empty").await["size"], 0);

    client.run(&["rm", key]).ok();
    let gone = client.run(&["get", key, "x"]);
    let line = gone.failed_with_one_line();
    assert!(line.contains("404") && line.contains(key), "{line}");
    let line = client.run(&["rm", key]).failed_with_one_line().to_string();
    assert!(line.contains("404"), "{line}");
    let line = client.run(&["upload", "missing.bin"]).failed_with_one_line().to_string();
    assert!(line.contains("missing.bin"), "{line}");
    let line = client.run(&["upload", "notes.txt", "a//b"]).failed_with_one_line().to_string();
    assert!(line.contains("not a valid key"), "{line}");
    // A node that is not there: said at once, not after a minute of retries.
    let started = Instant::now();
    let line = client.run(&["upload", "notes.txt", "--url", "http://127.0.0.1:1"]).failed_with_one_line().to_string();
    assert!(line.contains("cannot connect"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

const TOKENS: &str = r#"[{name="reader",token="read-secret-1",scopes=["read"]},{name="writer",token="write-secret-1",scopes=["write"]}]"#;

#[tokio::test]
async fn auth_errors_are_one_clear_line() {
    let node = TestNode::start_with(&[("SPILLWAY_TOKENS", TOKENS)]);
    let file_client = Client::with_token(&node, "wrong-token-123");
    fs::write(file_client.work_dir().join("a.csv"), "a,b\n1,2\n").unwrap();

    let line = file_client.run(&["ls"]).failed_with_one_line().to_string();
    assert!(line.contains("401") && line.contains("refused the token"), "{line}");
    let line = file_client.run(&["upload", "a.csv"]).failed_with_one_line().to_string();
    assert!(line.contains("401"), "{line}");

    let anonymous = Client::new(&node);
    let line = anonymous.run(&["ls"]).failed_with_one_line().to_string();
    assert!(line.contains("401") && line.contains("SPILLWAY_TOKEN"), "{line}");

    let reader = Client { dir: file_client.dir, ..Client::with_token(&node, "read-secret-1") };
    let line = reader.run(&["upload", "a.csv"]).failed_with_one_line().to_string();
    assert!(line.contains("403"), "{line}");
    reader.run(&["ls"]).ok();
    // --token wins over SPILLWAY_TOKEN.
    reader.run(&["upload", "a.csv", "--token", "write-secret-1"]).ok();
    let line = reader.run(&["rm", "a.csv", "--token", "write-secret-1"]).failed_with_one_line().to_string();
    assert!(line.contains("403"), "{line}");
}

#[tokio::test]
async fn signed_urls_work_without_a_token() {
    let node = TestNode::start_with(&[("SPILLWAY_TOKENS", TOKENS)]);
    let writer = Client::with_token(&node, "write-secret-1");
    fs::write(writer.work_dir().join("a.csv"), "a,b\n1,2\n").unwrap();
    writer.run(&["upload", "a.csv", "shared/a.csv"]).ok();

    let reader = Client::with_token(&node, "read-secret-1");
    let minted = reader.run(&["url", "shared/a.csv", "--download", "--expires", "300"]);
    minted.ok();
    let url = minted.stdout.trim();
    assert!(url.starts_with(&format!("{}/data/shared/a.csv?", node.base)), "{url}");
    // A plain GET, no token.
    let got = node.client.get(url).send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "a,b\n1,2\n");
    assert_eq!(node.client.get(node.url("/data/shared/a.csv")).send().await.unwrap().status(), 401);

    // An upload URL: a read token may not mint one; a write token may.
    let line = reader.run(&["url", "shared/b.csv", "--upload"]).failed_with_one_line().to_string();
    assert!(line.contains("403"), "{line}");
    let minted = writer.run(&["url", "shared/b.csv", "--upload", "--max-size", "1 KiB"]);
    minted.ok();
    let url = minted.stdout.trim();
    assert!(url.contains("max_size=1024"), "{url}");
    assert_eq!(node.client.put(url).body("x,y\n").send().await.unwrap().status(), 201);
    assert_eq!(node.client.put(url).body(vec![0u8; 2048]).send().await.unwrap().status(), 413);
}

const VERSION_TOKENS: &str = r#"[{name="reader",token="read-secret-1",scopes=["read"]},{name="writer",token="write-secret-1",scopes=["write"]},{name="boss",token="admin-secret-1",scopes=["admin"]}]"#;

#[tokio::test]
async fn versions_listed_downloaded_restored_and_removed() {
    let node = TestNode::start_with(&[("SPILLWAY_TOKENS", VERSION_TOKENS)]);
    let writer = Client::with_token(&node, "write-secret-1");
    let key = "runs/model output.bin";
    let (one, two) = (generated(3 * MIB as usize + 17, 21), generated(2 * MIB as usize + 5, 22));
    let (b3_one, b3_two) = (b3(&one), b3(&two));
    fs::write(writer.work_dir().join("one.bin"), &one).unwrap();
    fs::write(writer.work_dir().join("two.bin"), &two).unwrap();
    writer.run(&["upload", "one.bin", key]).ok();
    writer.run(&["upload", "two.bin", key]).ok();

    // The table: newest first, the current one marked, who uploaded it.
    let reader = Client::with_token(&node, "read-secret-1");
    let table = reader.run(&["versions", key]);
    table.ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two versions:\n{}", table.stdout);
    for column in ["VERSION", "CURRENT", "SIZE", "CREATED", "BLAKE3", "UPLOADED BY"] {
        assert!(lines[0].contains(column), "{column} in {}", lines[0]);
    }
    let fields = |line: &str| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    let newest = fields(lines[1]);
    assert_eq!(newest[0], "2", "{}", table.stdout);
    assert_eq!(newest[1], "*", "version 2 is current: {}", table.stdout);
    assert!(lines[1].contains("2.0 MiB") && lines[1].contains(&b3_two[..12]), "{}", lines[1]);
    assert!(lines[1].ends_with(" writer"), "{}", lines[1]);
    let oldest = fields(lines[2]);
    assert_eq!(oldest[0], "1");
    assert!(!lines[2].contains('*'), "version 1 is not current: {}", lines[2]);
    assert!(lines[2].contains("3.0 MiB") && lines[2].contains(&b3_one[..12]), "{}", lines[2]);
    assert!(oldest.iter().any(|f| f.len() == 20 && f.ends_with('Z')), "a created_at: {}", lines[2]);

    // JSON, one version per page: every page is fetched.
    let pages_before = node.log().matches("route=/versions/").count();
    let json = reader.run(&["versions", key, "--json", "--page-size", "1"]);
    json.ok();
    let listed: Value = serde_json::from_str(&json.stdout).unwrap();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2, "{}", json.stdout);
    assert_eq!((listed[0]["version"].as_i64(), listed[0]["current"].as_bool()), (Some(2), Some(true)));
    assert_eq!((listed[1]["version"].as_i64(), listed[1]["current"].as_bool()), (Some(1), Some(false)));
    assert_eq!(listed[1]["blake3"], b3_one.as_str());
    assert_eq!(listed[1]["uploaded_by"], "writer");
    assert!(node.log().matches("route=/versions/").count() - pages_before >= 2, "paged through Link");

    // An older version, byte for byte, to a file and to stdout.
    let got = reader.run(&["get", key, "--version", "1", "v1.bin"]);
    got.ok();
    assert!(got.stdout.contains("version 1") && got.stdout.contains(&b3_one), "{got:#?}");
    assert_same_bytes(&fs::read(reader.work_dir().join("v1.bin")).unwrap(), &one, "get --version 1");
    let child = reader.spawn("piped", &["get", key, "--version", "2", "-"]);
    reader.wait("piped", child).ok();
    assert_same_bytes(&fs::read(reader.dir.path().join("piped.out")).unwrap(), &two, "get --version 2 -");
    let line = reader.run(&["get", key, "--version", "9", "v9.bin"]).failed_with_one_line().to_string();
    assert!(line.contains("no version 9"), "{line}");
    assert!(!reader.work_dir().join("v9.bin.part").exists());

    // A version's `.part` file resumes with a Range, though the key's
    // current bytes are others: a version never changes.
    let part = reader.work_dir().join("resumed.bin.part");
    let half = one.len() / 2;
    fs::write(&part, &one[..half]).unwrap();
    let state = serde_json::json!({"version": 1, "uploads": [], "downloads": [{
        "part": part.to_str().unwrap(), "server": node.base, "key": key,
        "etag": b3_one, "created_at": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
    }]});
    fs::create_dir_all(reader.state_dir()).unwrap();
    fs::write(reader.state_dir().join("uploads.json"), state.to_string()).unwrap();
    let ranged_before = node.log().matches("status=206").count();
    let resumed = reader.run(&["get", key, "--version", "1", "resumed.bin"]);
    resumed.ok();
    assert!(resumed.stderr.contains("resuming at"), "{resumed:#?}");
    assert_eq!(node.log().matches("status=206").count(), ranged_before + 1, "the rest came as a range");
    assert_same_bytes(&fs::read(reader.work_dir().join("resumed.bin")).unwrap(), &one, "resumed version 1");
    assert_eq!(reader.state()["downloads"], serde_json::json!([]));

    // A signed download URL for a version works without a token.
    let minted = reader.run(&["url", key, "--download", "--version", "1"]);
    minted.ok();
    let url = minted.stdout.trim();
    assert!(url.contains("version=1"), "{url}");
    let signed = node.client.get(url).send().await.unwrap();
    assert_eq!(signed.status(), 200);
    assert_same_bytes(&signed.bytes().await.unwrap(), &one, "signed URL of version 1");

    // Restore: a reader may not; a writer makes version 1 current as version 3.
    let line = reader.run(&["restore", key, "1"]).failed_with_one_line().to_string();
    assert!(line.contains("403"), "{line}");
    let restored = writer.run(&["restore", key, "1"]);
    restored.ok();
    assert_eq!(restored.stdout, format!("restored {key} version 1 as version 3\n"));
    let current = reader.run(&["get", key, "current.bin"]);
    current.ok();
    assert_same_bytes(&fs::read(reader.work_dir().join("current.bin")).unwrap(), &one, "current after restore");
    let listed: Value = serde_json::from_str(&reader.run(&["versions", key, "--json"]).stdout).unwrap();
    assert_eq!(listed[0]["version"], 3);
    assert_eq!(listed[0]["current"], true);
    assert_eq!(listed[0]["blake3"], b3_one.as_str());
    let line = writer.run(&["restore", key, "7"]).failed_with_one_line().to_string();
    assert!(line.contains("404") && line.contains("no version 7"), "{line}");

    // rm keeps the versions (restorable, downloadable); --all-versions does not.
    let admin = Client::with_token(&node, "admin-secret-1");
    admin.run(&["rm", key]).ok();
    let listed: Value = serde_json::from_str(&admin.run(&["versions", key, "--json"]).stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert!(listed.as_array().unwrap().iter().all(|v| v["current"] == false), "{listed}");
    admin.run(&["get", key, "--version", "2", "after-rm.bin"]).ok();
    assert_same_bytes(&fs::read(admin.work_dir().join("after-rm.bin")).unwrap(), &two, "a deleted key's version");
    admin.run(&["rm", key, "--all-versions"]).ok();
    let line = admin.run(&["versions", key]).failed_with_one_line().to_string();
    assert!(line.contains("404") && line.contains("no versions"), "{line}");
    let gone = node.client.get(node.url("/versions/runs/model%20output.bin")).bearer_auth("admin-secret-1");
    assert_eq!(gone.send().await.unwrap().status(), 404);
    let line = admin.run(&["get", key, "--version", "1", "late.bin"]).failed_with_one_line().to_string();
    assert!(line.contains("no version 1"), "{line}");
}

/// `spillway upload two/*.csv` with two matches must not store the first
/// file's bytes under the second's name: a KEY that names a local file is
/// refused before anything is sent.
#[tokio::test]
async fn a_key_that_names_a_local_file_is_refused() {
    let node = TestNode::start();
    let client = Client::new(&node);
    fs::create_dir_all(client.work_dir().join("two")).unwrap();
    fs::write(client.work_dir().join("two/part1.csv"), "a,b\n1,2\n").unwrap();
    fs::write(client.work_dir().join("two/part2.csv"), "a,b\n3,4\n").unwrap();
    let line = client.run(&["upload", "two/part1.csv", "two/part2.csv"]).failed_with_one_line().to_string();
    assert!(line.contains("two/part2.csv") && line.contains("local file"), "{line}");
    let listed = node.json("/datasets").await;
    assert_eq!(listed, serde_json::json!([]), "nothing may be stored");
    // A key that is no local path still works.
    client.run(&["upload", "two/part1.csv", "parts/one.csv"]).ok();
    assert_eq!(node.json("/datasets/parts/one.csv").await["blake3"], b3(b"a,b\n1,2\n").as_str());
}

/// A big file goes as parallel tus parts joined on the node: killed midway,
/// each part resumes from the state file where the node is, and the
/// dataset is the whole file (the node's blake3 against the local one).
#[tokio::test]
async fn a_big_file_in_parallel_parts_resumes_and_verifies() {
    let node = TestNode::start();
    let client = Client::new(&node);
    let size = 192 * MIB + 12345;
    let file = client.dir.path().join("parts.bin");
    let expected = write_generated(&file, size, 11);
    let file_arg = file.to_str().unwrap();
    let args = ["upload", file_arg, "raw/parts.bin", "--parts", "3", "--chunk-size", "4 MiB"];

    let mut child = client.spawn("first", &args);
    let remembered =
        || client.state()["uploads"].as_array().map_or(0, |u| u.iter().filter(|e| e["part"].is_string()).count());
    until_killable(&mut child, "24 MiB at the node and every part remembered", async || {
        metric(&node, TUS_BYTES).await >= (24 * MIB) as f64 && remembered() == 3
    })
    .await;
    kill9(child);
    let state = client.state();
    let parts: Vec<&str> = state["uploads"].as_array().unwrap().iter().filter_map(|e| e["part"].as_str()).collect();
    assert_eq!(parts.len(), 3, "{state}");

    let mut json_args = args.to_vec();
    json_args.push("--json");
    let second = client.run(&json_args);
    let report: Value = serde_json::from_str(&second.ok().stdout).unwrap();
    assert_eq!(report["files"][0]["outcome"], "created", "{report}");
    assert_eq!(report["files"][0]["blake3"], expected.as_str());
    assert!(report["bytes"].as_u64().unwrap() < size, "the resumed bytes are not counted again: {report}");
    let record = node.json("/datasets/raw/parts.bin").await;
    assert_eq!((record["size"].as_u64(), record["blake3"].as_str()), (Some(size), Some(expected.as_str())));
    let received = metric(&node, TUS_BYTES).await;
    assert!(received < 1.1 * size as f64, "the node received {received} bytes for {size}: the resume re-sent too much");
    assert_eq!(client.state()["uploads"], serde_json::json!([]));
    let created = metric(&node, "spillway_resumable_uploads_total{event=\"created\"}").await;
    assert_eq!(created, 3.0, "one partial upload per part, each created once (the kill did not lose one)");
}
