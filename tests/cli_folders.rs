//! The command-line client with folders and many files, against a live
//! node: several paths need a prefix (the glob case refused before anything
//! is sent), a 500-file tree SIGKILLed halfway and re-run (only what is
//! missing is sent, by the node's counters), `get -r` byte-exact, `rm -r`,
//! `--no-clobber`, standard input, `--json`, and the order in which the
//! client finds its node (flag, environment, config file, Rocket.toml).

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::client::*;
use common::*;
use serde_json::Value;

const COMMITTED: &str = "spillway_uploads_total{outcome=\"committed\"}";

fn json(outcome: &Outcome) -> Value {
    serde_json::from_str(&outcome.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {outcome:#?}"))
}

/// `count` small files in nested folders below `root`, with distinct bytes.
fn write_tree(root: &Path, count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let relative = format!("d{}/e{}/f{i}.bin", i % 7, i % 3);
            let bytes = generated(100 + (i * 37) % 3000, i as u64);
            let path = root.join(&relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, &bytes).unwrap();
            (relative, bytes)
        })
        .collect()
}

/// Waits (bounded) until the node has no upload in flight, so that its
/// counters say everything the killed client's requests did.
async fn until_no_upload_in_flight(node: &TestNode) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(node, "spillway_uploads_in_flight").await > 0.0 {
        assert!(Instant::now() < deadline, "uploads stayed in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `spillway upload two/*.csv` (two or three matches) and any other list of
/// paths whose last is not a prefix: refused, and not one request made.
#[tokio::test]
async fn several_paths_without_a_prefix_are_refused_before_any_request() {
    let node = TestNode::start();
    let client = Client::new(&node);
    let two = client.work_dir().join("two");
    fs::create_dir_all(&two).unwrap();
    for name in ["part1.csv", "part2.csv", "part3.csv"] {
        fs::write(two.join(name), name).unwrap();
    }
    let line =
        client.run(&["upload", "two/part1.csv", "two/part2.csv", "two/part3.csv"]).failed_with_one_line().to_string();
    assert!(line.contains("two/part3.csv") && line.contains("local file") && line.contains("ending in `/`"), "{line}");
    let line =
        client.run(&["upload", "two/part1.csv", "two/part2.csv", "raw/x.csv"]).failed_with_one_line().to_string();
    assert!(line.contains("ending in `/`"), "{line}");
    let line = client.run(&["upload", "two", "raw/"]).failed_with_one_line().to_string();
    assert!(line.contains("-r"), "{line}");
    let line = client.run(&["upload", "-r", "two", "raw"]).failed_with_one_line().to_string();
    assert!(line.contains("ending in `/`"), "{line}");
    let metrics = node.get("/metrics").await.text().await.unwrap();
    let requests: Vec<&str> = metrics.lines().filter(|l| l.starts_with("spillway_http_requests_total{")).collect();
    assert!(
        requests.iter().all(|l| !l.contains("/datasets") && !l.contains("/data/") && !l.contains("/uploads")),
        "{requests:#?}"
    );

    // With a prefix, each file goes to prefix + its name.
    let out = client.run(&["upload", "two/part1.csv", "two/part2.csv", "raw/", "--json"]);
    let report = json(out.ok());
    assert_eq!(report["created"], 2, "{report}");
    assert_eq!(node.json("/datasets/raw/part2.csv").await["blake3"], b3(b"part2.csv").as_str());
    assert_eq!(node.json("/datasets/raw/part2.csv").await["content_type"], "text/csv");
}

/// A 500-file tree, the client SIGKILLed halfway, the same command again:
/// only the files the node did not commit are sent (its upload counter
/// grows by exactly their number), the rest are skipped as the same bytes.
#[tokio::test]
async fn a_tree_killed_halfway_sends_only_what_is_missing_on_a_rerun() {
    let node = TestNode::start();
    let client = Client::new(&node);
    let tree = client.work_dir().join("tree");
    let files = write_tree(&tree, 500);

    let mut child = client.spawn("first", &["upload", "-r", "tree", "data/", "--parallel", "2"]);
    until_killable(&mut child, "250 files committed", async || metric(&node, COMMITTED).await >= 250.0).await;
    kill9(child);
    until_no_upload_in_flight(&node).await;
    let committed_before = metric(&node, COMMITTED).await;
    let stored = node.list_all().await.len();
    assert!((250..500).contains(&stored), "{stored} stored");
    eprintln!("killed with {stored} of 500 files stored");
    assert_eq!(committed_before as usize, stored);

    let rerun = client.run(&["upload", "-r", "tree", "data/", "--parallel", "4", "--json"]);
    let report = json(rerun.ok());
    assert_eq!(report["skipped"], stored, "{}", rerun.stdout);
    assert_eq!(report["created"], 500 - stored);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["files"].as_array().unwrap().len(), 500);
    let committed_after = metric(&node, COMMITTED).await;
    assert_eq!(committed_after - committed_before, (500 - stored) as f64, "only the missing files are sent");

    let listed = node.list_all().await;
    assert_eq!(listed.len(), 500);
    for (relative, bytes) in files.iter().step_by(37) {
        assert_eq!(node.json(&format!("/datasets/data/{relative}")).await["blake3"], b3(bytes).as_str());
    }
    // A third run sends nothing, and its summary says so.
    let third = client.run(&["upload", "-r", "tree", "data/"]);
    assert!(third.ok().stderr.contains("uploaded 0 (0 created, 0 replaced), skipped 500"), "{third:#?}");
    assert_eq!(metric(&node, COMMITTED).await, committed_after);
}

/// `get -r` brings a tree back byte for byte (a file bigger than a chunk
/// through tus, the rest by PUT), a second run skips it all, and `rm -r`
/// wants --yes when nobody can be asked, then says each removal.
#[tokio::test]
async fn get_r_round_trip_is_byte_exact_and_rm_r_confirms() {
    let node = TestNode::start();
    let client = Client::new(&node);
    let tree = client.work_dir().join("src");
    let mut files = write_tree(&tree, 40);
    let big = generated(3 * MIB as usize + 123, 99);
    fs::write(tree.join("big.bin"), &big).unwrap();
    files.push(("big.bin".into(), big));
    client.run(&["upload", "-r", "src", "set/", "--chunk-size", "1 MiB", "--parallel", "3"]).ok();

    let got = client.run(&["get", "-r", "set/", "back", "--json"]);
    let report = json(got.ok());
    assert_eq!(report["failed"], 0, "{report}");
    for (relative, bytes) in &files {
        let back = fs::read(client.work_dir().join("back").join(relative)).unwrap();
        assert_same_bytes(&back, bytes, relative);
    }
    let again = client.run(&["get", "-r", "set/", "back"]);
    assert_eq!(again.ok().stdout.lines().filter(|l| l.starts_with("skipped")).count(), files.len(), "{again:#?}");

    let line = client.run(&["rm", "-r", "set/"]).failed_with_one_line().to_string();
    assert!(line.contains("--yes") && line.contains("not a terminal"), "{line}");
    assert_eq!(node.list_all().await.len(), files.len());
    let removed = client.run(&["rm", "-r", "set/", "--yes"]);
    let lines: Vec<&str> = removed.ok().stdout.lines().collect();
    assert_eq!(lines.len(), files.len(), "{removed:#?}");
    assert!(lines.iter().all(|l| l.starts_with("removed set/")), "{lines:?}");
    assert!(node.list_all().await.is_empty());
    let empty = client.run(&["ls"]);
    assert!(empty.ok().stdout.contains("no datasets"), "{empty:#?}");
}

/// Same bytes are skipped, other bytes replace, and --no-clobber leaves
/// a taken key alone (reported as skipped, exit 0).
#[tokio::test]
async fn same_bytes_skip_and_no_clobber_keeps_the_key() {
    let node = TestNode::start();
    let client = Client::new(&node);
    let file = client.work_dir().join("a.csv");
    fs::write(&file, "x,y\n1,2\n").unwrap();
    let first = json(client.run(&["upload", "a.csv", "k/a.csv", "--json"]).ok());
    assert_eq!(first["files"][0]["outcome"], "created", "{first}");
    let same = json(client.run(&["upload", "a.csv", "k/a.csv", "--json"]).ok());
    assert_eq!(same["files"][0]["outcome"], "skipped", "{same}");

    fs::write(&file, "x,y\n3,4\n").unwrap();
    let kept = client.run(&["upload", "a.csv", "k/a.csv", "--no-clobber"]);
    assert!(kept.ok().stdout.contains("exists (--no-clobber)"), "{kept:#?}");
    assert_eq!(node.json("/datasets/k/a.csv").await["blake3"], b3(b"x,y\n1,2\n").as_str());
    let replaced = json(client.run(&["upload", "a.csv", "k/a.csv", "--json"]).ok());
    assert_eq!(replaced["files"][0]["outcome"], "replaced", "{replaced}");
    assert_eq!(node.json("/datasets/k/a.csv").await["blake3"], b3(b"x,y\n3,4\n").as_str());

    // The node's own 412 to If-None-Match: * is a skip too (standard input
    // has no listing to consult first).
    let mut piped = Client::new(&node);
    piped.stdin = Some(b"other".to_vec());
    let out = json(piped.run(&["upload", "-", "k/a.csv", "--no-clobber", "--json"]).ok());
    assert_eq!(out["outcome"], "skipped-exists", "{out}");
    assert_eq!(node.json("/datasets/k/a.csv").await["blake3"], b3(b"x,y\n3,4\n").as_str());
}

/// `upload - KEY` streams standard input; the content type comes from the
/// key's extension; `get` and `url` speak JSON too.
#[tokio::test]
async fn stdin_and_json_output() {
    let node = TestNode::start();
    let mut client = Client::new(&node);
    let bytes = generated(3 * MIB as usize + 5, 3);
    client.stdin = Some(bytes.clone());
    let out = json(client.run(&["upload", "-", "pipe/table.csv", "--json"]).ok());
    assert_eq!((out["outcome"].as_str(), out["size"].as_u64()), (Some("created"), Some(bytes.len() as u64)));
    assert_eq!(out["blake3"], b3(&bytes).as_str());
    let record = node.json("/datasets/pipe/table.csv").await;
    assert_eq!(
        (record["content_type"].as_str(), record["blake3"].as_str()),
        (Some("text/csv"), Some(b3(&bytes).as_str()))
    );
    client.stdin = None;

    let got = json(client.run(&["get", "pipe/table.csv", "t.csv", "--json"]).ok());
    assert_eq!((got["key"].as_str(), got["path"].as_str()), (Some("pipe/table.csv"), Some("t.csv")));
    assert_eq!(got["blake3"], b3(&bytes).as_str());
    assert_same_bytes(&fs::read(client.work_dir().join("t.csv")).unwrap(), &bytes, "t.csv");

    let url = json(client.run(&["url", "pipe/table.csv", "--download", "--json"]).ok());
    let href = url["url"].as_str().unwrap();
    assert!(href.starts_with(&node.base) && url["method"] == "GET", "{url}");
    assert!(
        time::OffsetDateTime::parse(
            url["expires_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok(),
        "{url}"
    );
    let fetched = node.client.get(href).send().await.unwrap();
    assert_eq!(fetched.status(), 200);

    let line = client.run(&["rm", "pipe/table.csv"]);
    assert_eq!(line.ok().stdout, "removed pipe/table.csv\n");
}

/// Where the client finds its node: SPILLWAY_URL beats the config file's
/// profile, which beats the Rocket.toml of the working directory, which
/// beats the default; a wrong URL is named with how to give another.
#[tokio::test]
async fn the_node_is_found_by_flag_then_env_then_config_then_rocket_toml() {
    let node = TestNode::start_with(&[("SPILLWAY_TOKENS", r#"[{name="w",token="w-secret",scopes=["write"]}]"#)]);
    let mut client = Client::new(&node);
    let config = client.dir.path().join("config.toml");
    client.env = vec![("SPILLWAY_URL".into(), None), ("SPILLWAY_CONFIG".into(), Some(config.display().to_string()))];
    fs::write(client.work_dir().join("Rocket.toml"), format!("[default]\nport = {}\n", node.port)).unwrap();
    // Rocket.toml alone: found, and the 401 says how to give a token.
    let line = client.run(&["ls"]).failed_with_one_line().to_string();
    assert!(line.contains("401") && line.contains("SPILLWAY_TOKEN") && line.contains("config.toml"), "{line}");

    // The config file's profile beats Rocket.toml (here: a wrong port).
    fs::write(
        &config,
        "[default]\nurl = \"127.0.0.1:1\"\ntoken = \"w-secret\"\n\n[good]\nurl = \"NODE\"\ntoken = \"w-secret\"\n"
            .replace("NODE", &node.base),
    )
    .unwrap();
    let line = client.run(&["ls"]).failed_with_one_line().to_string();
    assert!(
        line.contains("http://127.0.0.1:1")
            && line.contains("--url")
            && line.contains("SPILLWAY_URL")
            && line.contains("profile `default`"),
        "{line}"
    );
    // Another profile, by flag.
    client.run(&["ls", "--profile", "good"]).ok();

    // The environment beats the config file; host:port is a URL. The
    // default profile's token is not sent to another node than its own.
    let host_port = node.base.trim_start_matches("http://").to_string();
    client.env.push(("SPILLWAY_URL".into(), Some(host_port)));
    let line = client.run(&["ls"]).failed_with_one_line().to_string();
    assert!(line.contains("401"), "{line}");
    client.token = Some("w-secret".into());
    client.run(&["ls"]).ok();
    // --url https:// against this plain node: said in plain words.
    let https = node.base.replace("http://", "https://");
    let line = client.run(&["ls", "--url", &https]).failed_with_one_line().to_string();
    assert!(line.contains("plain HTTP") && line.contains("http://"), "{line}");
}

/// A node whose port is taken says which port and which settings choose
/// it, not Rocket's "binding failed".
#[tokio::test]
async fn a_port_in_use_is_named_with_its_setting() {
    let node = TestNode::start();
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_spillway"))
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SPILLWAY_DATA_DIR", dir.path().join("data"))
        .env("SPILLWAY_DISK_RESERVE", "0")
        .env("SPILLWAY_PORT", node.port.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(dir.path().join("out")).unwrap())
        .stderr(fs::File::create(dir.path().join("err")).unwrap())
        .spawn()
        .unwrap();
    let status = wait_bounded(child, RUN_TIMEOUT, "a second node on a taken port");
    assert!(!status.success());
    let err = fs::read_to_string(dir.path().join("err")).unwrap();
    let line = err.lines().last().unwrap_or_default();
    assert!(line.contains(&format!("port {}", node.port)) && line.contains("SPILLWAY_PORT"), "{err}");
    assert!(!line.contains("binding failed"), "{err}");
}

/// A file the node refuses fails alone: the others are stored, the run
/// exits non-zero and names it.
#[tokio::test]
async fn a_failed_file_is_named_and_the_exit_code_says_so() {
    let node = TestNode::start_with(&[("SPILLWAY_MAX_DATASET_SIZE", "1000")]);
    let client = Client::new(&node);
    let dir = client.work_dir().join("mixed");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("small-1.txt"), "one").unwrap();
    fs::write(dir.join("small-2.txt"), "two").unwrap();
    fs::write(dir.join("too-big.bin"), generated(5000, 1)).unwrap();
    let out = client.run(&["upload", "-r", "mixed", "m/"]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let last = out.stderr.lines().last().unwrap();
    assert!(last.starts_with("spillway: 1 of 3 files failed: mixed/too-big.bin"), "{out:#?}");
    assert!(out.stderr.contains("failed 1"), "the summary counts it: {out:#?}");
    assert_eq!(node.list_all().await.len(), 2);
}
