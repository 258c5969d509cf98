//! Two Spillway nodes over one Garage and one PostgreSQL, and the requests
//! the cluster suites (tests/cluster.rs, tests/cluster_tus.rs) send them.

use super::cluster::{self, Garage, Postgres};
use super::reply::{send, Reply};
use super::{assert_same_bytes, b3, TestNode};

/// Small enough that multipart parts are 8 MiB (the minimum).
pub const MAX_SIZE: &str = "1 GiB";
/// The multipart part size under [`MAX_SIZE`].
pub const PART: usize = 8 * 1024 * 1024;

/// `SPILLWAY_*` settings for a node on this Garage (if any) and this
/// PostgreSQL (if any; else the node's own SQLite), plus `extra`.
pub fn settings(garage: Option<&Garage>, pg: Option<&Postgres>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vec![("SPILLWAY_MAX_DATASET_SIZE".into(), MAX_SIZE.into())];
    if let Some(garage) = garage {
        out.extend(garage.settings());
    }
    if let Some(pg) = pg {
        out.extend(pg.settings());
    }
    for (k, v) in extra {
        out.retain(|(key, _)| key != k);
        out.push((k.to_string(), v.to_string()));
    }
    out
}

pub fn start(settings: &[(String, String)]) -> TestNode {
    let borrowed: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestNode::start_with(&borrowed)
}

/// Nodes A and B on one Garage and one PostgreSQL. Dropped, the nodes stop
/// before the services they use.
pub struct Pair {
    pub a: TestNode,
    pub b: TestNode,
    pub garage: Garage,
    pub pg: Postgres,
}

/// [`Pair`] with `extra` settings; `None` (the test skips) where Garage or
/// PostgreSQL is not installed.
pub fn two_nodes(extra: &[(&str, &str)]) -> Option<Pair> {
    if cluster::skip_without_garage() || cluster::skip_without_postgres() {
        return None;
    }
    let garage = Garage::single();
    let pg = Postgres::start();
    let s = settings(Some(&garage), Some(&pg), extra);
    Some(Pair { a: start(&s), b: start(&s), garage, pg })
}

/// A request to `path` on `node`, with `headers`.
pub fn request(node: &TestNode, method: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::RequestBuilder {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = node.client.request(method, node.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req
}

pub async fn call(node: &TestNode, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Reply {
    let mut req = request(node, method, path, headers);
    if let Some(body) = body {
        req = req.body(body);
    }
    send(req, &format!("{method} {path} on {}", node.base)).await
}

pub async fn put(node: &TestNode, key: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    call(node, "PUT", &format!("/data/{key}"), headers, Some(body.to_vec())).await
}

/// PUT expecting `201`/`200` with the body's blake3 as ETag.
pub async fn put_ok(node: &TestNode, key: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
    let r = put(node, key, body, headers).await;
    assert!(r.status == 201 || r.status == 200, "PUT /data/{key} on {}: {}", node.base, r.describe());
    assert_eq!(r.etag().as_deref(), Some(b3(body).as_str()), "PUT /data/{key}: ETag");
    r
}

pub async fn record(node: &TestNode, key: &str, headers: &[(&str, &str)]) -> Reply {
    call(node, "GET", &format!("/datasets/{key}"), headers, None).await
}

pub async fn list(node: &TestNode, prefix: &str, headers: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let r = call(node, "GET", &format!("/datasets?prefix={prefix}&limit=10000"), headers, None).await;
    assert_eq!(r.status, 200, "GET /datasets?prefix={prefix} on {}: {}", node.base, r.describe());
    r.json().as_array().expect("a JSON array").clone()
}

pub fn keys_of(records: &[serde_json::Value]) -> Vec<String> {
    records.iter().map(|r| r["key"].as_str().unwrap().to_string()).collect()
}

/// `GET /data/{key}` is 200 with exactly `expected`, and its ETag and the
/// record's blake3 are the bytes' blake3.
pub async fn assert_downloads(node: &TestNode, key: &str, expected: &[u8], headers: &[(&str, &str)]) {
    let r = call(node, "GET", &format!("/data/{key}"), headers, None).await;
    assert_eq!(r.status, 200, "GET /data/{key} on {}: {}", node.base, r.describe());
    assert_same_bytes(&r.body, expected, &format!("GET /data/{key} on {}", node.base));
    assert_eq!(r.etag().as_deref(), Some(b3(expected).as_str()), "GET /data/{key} on {}: ETag", node.base);
    let rec = record(node, key, headers).await;
    assert_eq!(rec.status, 200, "GET /datasets/{key} on {}: {}", node.base, rec.describe());
    assert_eq!(rec.json()["blake3"], b3(expected), "GET /datasets/{key} on {}", node.base);
    assert_eq!(rec.json()["size"], expected.len() as u64, "GET /datasets/{key} on {}", node.base);
}

/// The node logged no panic.
pub fn assert_no_panic(node: &TestNode, name: &str) {
    let log = node.log();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked")).collect();
    assert!(panics.is_empty(), "node {name} logged a panic:\n{}", panics.join("\n"));
}

/// The log lines of `node` that mention any of `words`, for messages.
pub fn log_lines(node: &TestNode, words: &[&str]) -> String {
    node.log().lines().filter(|l| words.iter().any(|w| l.contains(w))).collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------
// tus
// ---------------------------------------------------------------------------

pub const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
pub const OCTET: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

pub fn tus_metadata(pairs: &[(&str, &str)]) -> String {
    use base64::Engine;
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v.as_bytes());
    pairs.iter().map(|(k, v)| format!("{k} {}", b64(v))).collect::<Vec<_>>().join(",")
}

/// The path (`/uploads/<id>`) of a `Location`, relative or absolute.
pub fn location_path(reply: &Reply) -> String {
    let loc = reply.header("location").unwrap_or_else(|| panic!("no Location: {}", reply.describe()));
    let path = match loc.strip_prefix("http://") {
        Some(rest) => &rest[rest.find('/').unwrap()..],
        None => loc,
    };
    assert!(path.starts_with("/uploads/"), "Location {loc}");
    path.to_string()
}

// ---------------------------------------------------------------------------
// What the bucket holds
// ---------------------------------------------------------------------------

/// How long the bucket may take to settle after the last answer: Garage
/// updates its bucket counters asynchronously, and a node may remove what
/// an upload left behind just after it answers.
pub const BUCKET_SETTLES: std::time::Duration = std::time::Duration::from_secs(15);

/// What is wrong with the bucket if it should hold exactly `datasets`
/// (key, bytes) below `prefix` (`""`: none) and nothing else: for each, its
/// object `datasets/<key>` and its blob `blobs/<blake3>.<size>`. Reported:
/// objects left over (under `tus/`, `staging/` or anywhere else), objects
/// missing, and unfinished uploads as Garage counts them (multipart or
/// not). Empty when the bucket is clean.
pub async fn bucket_problems(garage: &Garage, prefix: &str, datasets: &[(&str, &[u8])]) -> Vec<String> {
    let under = |rest: String| if prefix.is_empty() { rest } else { format!("{prefix}/{rest}") };
    let mut expected = std::collections::BTreeSet::new();
    for (key, bytes) in datasets {
        expected.insert(under(format!("datasets/{key}")));
        expected.insert(under(format!("blobs/{}.{}", b3(bytes), bytes.len())));
    }
    let listed = garage.list_objects("").await;
    let mut problems: Vec<String> = listed
        .iter()
        .filter(|k| !expected.contains(*k))
        .map(|k| {
            let area = ["tus/", "staging/"].into_iter().find(|a| k.starts_with(&under(a.to_string())));
            format!("object `{k}` left in the bucket{}", area.map_or(String::new(), |a| format!(" (under {a})")))
        })
        .collect();
    problems.extend(expected.iter().filter(|k| !listed.contains(*k)).map(|k| format!("object `{k}` is missing")));
    match garage.bucket_info() {
        Ok(info) => {
            for field in ["unfinishedUploads", "unfinishedMultipartUploads"] {
                if info[field].as_u64() != Some(0) {
                    problems.push(format!("Garage counts {field} = {}", info[field]));
                }
            }
        }
        Err(e) => problems.push(format!("cannot read the bucket's counters: {e}")),
    }
    problems
}

/// The bucket holds exactly `datasets` below `prefix` and no unfinished
/// upload, within [`BUCKET_SETTLES`] (see [`bucket_problems`]).
pub async fn assert_bucket_holds_only(garage: &Garage, prefix: &str, datasets: &[(&str, &[u8])], when: &str) {
    let mut problems = Vec::new();
    let settled = super::eventually(BUCKET_SETTLES, async || {
        problems = bucket_problems(garage, prefix, datasets).await;
        problems.is_empty()
    })
    .await;
    assert!(
        settled,
        "{when}: the bucket is not clean after {BUCKET_SETTLES:?}:\n  {}\nobjects: {:?}\ncounters: {:?}",
        problems.join("\n  "),
        garage.list_objects("").await,
        garage.bucket_info()
    );
}
