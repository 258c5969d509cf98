//! The catalog: record shape, listing order and paging, prefix filters,
//! per-dataset GET/PATCH/DELETE/acknowledge, multipart uploads, conditional
//! PUTs, and a replace racing readers.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

const MIB: usize = 1024 * 1024;

/// Everything but unreserved characters, escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A key as a URL path below `/data/` or `/datasets/`.
fn key_path(key: &str) -> String {
    key.split('/').map(|s| utf8_percent_encode(s, SEGMENT).to_string()).collect::<Vec<_>>().join("/")
}

fn query_value(v: &str) -> String {
    utf8_percent_encode(v, NON_ALPHANUMERIC).to_string()
}

fn b3(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

async fn put(node: &TestNode, key: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    node.client.put(node.url(&format!("/data/{}", key_path(key)))).body(body).send().await.unwrap()
}

async fn put_ok(node: &TestNode, key: &str, body: &[u8]) -> Value {
    let resp = put(node, key, body.to_vec()).await;
    assert!(resp.status() == 201 || resp.status() == 200, "PUT {key}: {}", resp.status());
    resp.json().await.unwrap()
}

async fn record(node: &TestNode, key: &str) -> reqwest::Response {
    node.get(&format!("/datasets/{}", key_path(key))).await
}

async fn record_ok(node: &TestNode, key: &str) -> Value {
    let resp = record(node, key).await;
    assert_eq!(resp.status(), 200, "GET /datasets/{key}");
    resp.json().await.unwrap()
}

/// Asserts an RFC 9457 problem with this status and code; returns it.
async fn problem(resp: reqwest::Response, status: u16, code: &str, what: &str) -> Value {
    let got = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let text = resp.text().await.unwrap();
    assert_eq!(got, status, "{what}: {text}");
    assert!(ct.starts_with("application/problem+json"), "{what}: content type {ct:?}: {text}");
    let p: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(p["status"], status, "{what}: {p}");
    assert_eq!(p["code"], code, "{what}: {p}");
    for field in ["type", "title", "detail"] {
        assert!(p[field].is_string(), "{what}: no {field} in {p}");
    }
    p
}

/// A 400 problem of any (kebab-case) code.
async fn bad_request(resp: reqwest::Response, what: &str) -> Value {
    let got = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let text = resp.text().await.unwrap();
    assert_eq!(got, 400, "{what}: {text}");
    assert!(ct.starts_with("application/problem+json"), "{what}: {ct:?}");
    let p: Value = serde_json::from_str(&text).unwrap();
    let code = p["code"].as_str().unwrap_or_default();
    assert!(!code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{what}: code {code:?}");
    p
}

fn keys_of(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"))
        .iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect()
}

fn assert_timestamp(v: &Value, what: &str) -> time::OffsetDateTime {
    let s = v.as_str().unwrap_or_else(|| panic!("{what}: {v} is not a string"));
    assert!(s.ends_with('Z'), "{what}: {s} is not UTC");
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{what}: {s} is not RFC 3339: {e}"));
    let skew = (time::OffsetDateTime::now_utc() - t).abs();
    assert!(skew < time::Duration::minutes(10), "{what}: {s} is not now");
    t
}

/// The record shape of API.md, field by field and nothing else.
fn assert_record(r: &Value, key: &str, body: &[u8], content_type: &str) {
    let fields: BTreeSet<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    let expected: BTreeSet<&str> =
        ["name", "path", "key", "size", "blake3", "content_type", "created_at", "updated_at", "description", "tags"]
            .into();
    assert_eq!(fields, expected, "record fields: {r}");
    assert_eq!(r["key"], key);
    assert_eq!(r["path"], format!("/data/{key}"));
    assert_eq!(r["size"].as_u64(), Some(body.len() as u64));
    assert_eq!(r["blake3"], b3(body));
    assert_eq!(r["content_type"], content_type);
    let created = assert_timestamp(&r["created_at"], "created_at");
    let updated = assert_timestamp(&r["updated_at"], "updated_at");
    assert!(updated >= created);
    assert!(r["name"].is_string());
    assert!(r["description"].is_null() || r["description"].is_string());
    assert!(r["tags"].is_array());
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

#[tokio::test]
async fn record_has_the_documented_shape() {
    let node = TestNode::start();
    let body = b"id,name\n1,Ada\n2,Grace\n";
    let resp = node
        .client
        .put(node.url("/data/employees.csv"))
        .header("Content-Type", "text/csv")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["location"], "/data/employees.csv");
    assert_eq!(resp.headers()["etag"], format!("\"{}\"", b3(body)).as_str());
    let put: Value = resp.json().await.unwrap();
    assert_record(&put, "employees.csv", body, "text/csv");
    assert_eq!(put["name"], "employees.csv");
    assert_eq!(put["description"], Value::Null);
    assert_eq!(put["tags"], json!([]));
    assert_eq!(put["created_at"], put["updated_at"]);

    let got = record_ok(&node, "employees.csv").await;
    assert_eq!(got, put);
    let listed = node.json("/datasets").await;
    assert_eq!(listed, json!([put]));
}

#[tokio::test]
async fn name_defaults_to_the_last_segment_or_the_query() {
    let node = TestNode::start();
    let r = put_ok(&node, "sales/2024/q1.csv", b"q1").await;
    assert_eq!(r["name"], "q1.csv");
    assert_eq!(r["path"], "/data/sales/2024/q1.csv");
    assert_eq!(r["key"], "sales/2024/q1.csv");

    let resp = node
        .client
        .put(node.url("/data/sales/2024/q2.csv?name=Q2%20%C3%A9t%C3%A9%20%26%20more"))
        .body("q2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["name"], "Q2 été & more");
    assert_eq!(record_ok(&node, "sales/2024/q2.csv").await["name"], "Q2 été & more");

    let resp = node.client.put(node.url("/data/Employees?name=Employees")).body("e").send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.json::<Value>().await.unwrap()["name"], "Employees");

    // A key with characters that must be escaped in a URL: the record's
    // path serves it.
    let key = "odd dir/a?b#c%d;e.csv";
    let r = put_ok(&node, key, b"odd").await;
    assert_eq!(r["name"], "a?b#c%d;e.csv");
    let path = r["path"].as_str().unwrap();
    let resp = node.get(path).await;
    assert_eq!(resp.status(), 200, "GET {path}");
    assert_eq!(resp.bytes().await.unwrap(), &b"odd"[..]);
}

#[tokio::test]
async fn get_record_200_and_404() {
    let node = TestNode::start();
    put_ok(&node, "dir/file.txt", b"x").await;
    assert_eq!(record_ok(&node, "dir/file.txt").await["key"], "dir/file.txt");
    for missing in ["nope", "dir", "dir/file.tx", "dir/file.txt/more", "DIR/file.txt"] {
        let resp = record(&node, missing).await;
        problem(resp, 404, "not-found", &format!("GET /datasets/{missing}")).await;
    }
}

// ---------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn listing_is_ordered_bytewise() {
    let node = TestNode::start();
    // Tell bytewise order from path-component order (`x/1` vs `x-1`),
    // case-insensitive order (`Z` vs `a`) and UTF-16 order (U+FFFD vs U+1F600).
    let keys =
        ["é", "x0", "Z", "x/1", "a", "\u{1F600}", "x-1", "B", "~", "\u{FFFD}", "aa", "x/1a", "Zz", "0", "x/0", "ñ"];
    for k in keys {
        put_ok(&node, k, k.as_bytes()).await;
    }
    let mut expected: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let listed = keys_of(&node.json("/datasets").await);
    assert_eq!(listed, expected);
    let pos = |k: &str| listed.iter().position(|x| x == k).unwrap();
    assert!(pos("x-1") < pos("x/1") && pos("x/1") < pos("x0"));
    assert!(pos("Z") < pos("a"));
    assert!(pos("~") < pos("é"));
    assert!(pos("\u{FFFD}") < pos("\u{1F600}"));
}

/// The `rel="next"` target of a `Link` header, if any.
fn next_link(resp: &reqwest::Response) -> Option<String> {
    let link = resp.headers().get("link")?.to_str().unwrap().to_string();
    let (target, params) =
        link.strip_prefix('<').and_then(|l| l.split_once('>')).unwrap_or_else(|| panic!("malformed Link: {link}"));
    assert!(params.contains("rel=\"next\""), "Link without rel=next: {link}");
    assert!(target.starts_with("/datasets?"), "Link target: {target}");
    Some(target.to_string())
}

/// Follows `Link: rel="next"` from `first`; returns the keys and page sizes.
async fn walk_pages(node: &TestNode, first: &str, limit: usize) -> (Vec<String>, Vec<usize>) {
    let (mut keys, mut sizes) = (Vec::new(), Vec::new());
    let mut url = Some(first.to_string());
    for _ in 0..100 {
        let Some(u) = url.take() else {
            return (keys, sizes);
        };
        let resp = node.get(&u).await;
        assert_eq!(resp.status(), 200, "GET {u}");
        url = next_link(&resp);
        let page = keys_of(&resp.json().await.unwrap());
        assert!(page.len() <= limit, "GET {u}: {} records", page.len());
        if url.is_some() {
            assert!(!page.is_empty(), "GET {u}: an empty page with a next link");
        }
        sizes.push(page.len());
        keys.extend(page);
    }
    panic!("more than 100 pages");
}

#[tokio::test]
async fn pagination_follows_link_until_done() {
    let node = TestNode::start();
    // Keys whose `after=` needs escaping in the next link.
    let mut all: Vec<String> = [
        "a b",
        "a&b",
        "a+b",
        "a=b",
        "a%b",
        "a#b",
        "a?b",
        "a;b",
        "é/1",
        "é/2",
        "\u{1F600}",
        "Z",
        "x-1",
        "x/1",
        "x0",
        "B",
        "a",
        "~",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    all.extend((0..7).map(|i| format!("k/{i:02}")));
    assert_eq!(all.len(), 25);
    for k in &all {
        put_ok(&node, k, k.as_bytes()).await;
    }
    all.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));

    let (keys, sizes) = walk_pages(&node, "/datasets?limit=7", 7).await;
    assert_eq!(keys, all, "pages: {sizes:?}");
    assert!(sizes.len() >= 4, "25 records in pages of 7: {sizes:?}");
    assert_eq!(&sizes[..3], &[7, 7, 7]);
    let unique: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "duplicates across pages");

    // A limit that divides the count: the walk still ends, with no record twice.
    let (keys, sizes) = walk_pages(&node, "/datasets?limit=5", 5).await;
    assert_eq!(keys, all, "pages: {sizes:?}");
    // limit=1: every record its own page.
    let (keys, _) = walk_pages(&node, "/datasets?limit=1", 1).await;
    assert_eq!(keys, all);

    // Paging within a prefix keeps the prefix.
    let (keys, sizes) = walk_pages(&node, "/datasets?prefix=k%2F&limit=2", 2).await;
    let expected: Vec<String> = all.iter().filter(|k| k.starts_with("k/")).cloned().collect();
    assert_eq!(keys, expected, "pages: {sizes:?}");

    // `after` on its own: strictly after, in order.
    let url = format!("/datasets?after={}", query_value("a+b"));
    let after = keys_of(&node.json(&url).await);
    let expected: Vec<String> = all.iter().filter(|k| k.as_bytes() > "a+b".as_bytes()).cloned().collect();
    assert_eq!(after, expected);
}

#[tokio::test]
async fn prefix_filters_by_bytes_not_segments() {
    let node = TestNode::start();
    let keys = [
        "sales/2023/q4.csv",
        "sales/2024/q1.csv",
        "sales/2024/q2.csv",
        "sales-old.csv",
        "salesman",
        "sal",
        "other/sales/x",
        "é/x",
        "éa",
    ];
    for k in keys {
        put_ok(&node, k, b"x").await;
    }
    let list = |prefix: &str| {
        let url = format!("/datasets?prefix={}", query_value(prefix));
        let node = &node;
        async move { keys_of(&node.json(&url).await) }
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(list("sales/202").await, s(&["sales/2023/q4.csv", "sales/2024/q1.csv", "sales/2024/q2.csv"]));
    assert_eq!(list("sales/2024/").await, s(&["sales/2024/q1.csv", "sales/2024/q2.csv"]));
    assert_eq!(list("sales/2024/q1").await, s(&["sales/2024/q1.csv"]));
    assert_eq!(
        list("sales").await,
        s(&["sales-old.csv", "sales/2023/q4.csv", "sales/2024/q1.csv", "sales/2024/q2.csv", "salesman"])
    );
    assert_eq!(list("sales/").await.len(), 3);
    assert_eq!(list("sal").await.len(), 6);
    assert_eq!(list("salesman").await, s(&["salesman"]));
    assert_eq!(list("é").await, s(&["é/x", "éa"]));
    assert_eq!(list("zzz").await, Vec::<String>::new());
    assert_eq!(list("").await.len(), keys.len());
    // A prefix and an `after` together.
    let url = format!("/datasets?prefix=sal&after={}", query_value("sales-old.csv"));
    assert_eq!(
        keys_of(&node.json(&url).await),
        s(&["sales/2023/q4.csv", "sales/2024/q1.csv", "sales/2024/q2.csv", "salesman"])
    );
}

#[tokio::test]
async fn bad_limits_are_400_and_big_ones_clamp() {
    let node = TestNode::start();
    put_ok(&node, "one", b"1").await;
    put_ok(&node, "two", b"2").await;
    for limit in ["0", "abc", "-1", "1.5"] {
        let resp = node.get(&format!("/datasets?limit={limit}")).await;
        bad_request(resp, &format!("limit={limit}")).await;
    }
    for limit in ["10000", "10001", "123456789"] {
        let resp = node.get(&format!("/datasets?limit={limit}")).await;
        assert_eq!(resp.status(), 200, "limit={limit}");
        assert!(next_link(&resp).is_none(), "limit={limit}");
        assert_eq!(keys_of(&resp.json().await.unwrap()), ["one", "two"]);
    }
    let resp = node.get("/datasets?limit=1").await;
    assert_eq!(resp.status(), 200);
    assert!(next_link(&resp).is_some());
    assert_eq!(keys_of(&resp.json().await.unwrap()), ["one"]);
}

/// A query field given twice is a 400, whatever the route.
/// Rocket hands an optional field that repeats to the handler as absent:
/// `?version=1&version=1` served the current bytes, `?limit=1&limit=1` and
/// `?prefix=a&prefix=a` the whole catalog, `?name=` twice stored the
/// default name.
#[tokio::test]
async fn a_query_field_given_twice_is_refused() {
    let node = TestNode::start();
    put_ok(&node, "dup/k", b"one").await;
    put_ok(&node, "dup/k", b"two").await;
    put_ok(&node, "other", b"3").await;
    for path in [
        "/data/dup/k?version=1&version=1",
        "/data/dup/k?version=1&version=2",
        "/data/dup/k?version=1&%76ersion=1",
        "/datasets?limit=1&limit=1",
        "/datasets?prefix=dup&prefix=dup",
        "/datasets?after=a&after=b",
        "/versions/dup/k?limit=1&limit=1",
        // A route that reads no query: refused before routing all the same.
        "/datasets/dup/k?x=1&x=2",
    ] {
        bad_request(node.get(path).await, &format!("GET {path}")).await;
    }
    let resp = node.client.put(node.url("/data/dup/named?name=a&name=b")).body("x").send().await.unwrap();
    bad_request(resp, "PUT ?name twice").await;
    let resp = node.client.delete(node.url("/datasets/dup/k?versions=all&versions=all")).send().await.unwrap();
    bad_request(resp, "DELETE ?versions twice").await;
    assert_eq!(record(&node, "dup/named").await.status(), 404, "the refused PUT stored its dataset");
    assert_serves(&node, "dup/k", b"two").await;
    // Distinct fields, and one field once, still work.
    let resp = node.get("/data/dup/k?version=1").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"one");
    let resp = node.get("/datasets?prefix=dup&limit=5").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(keys_of(&resp.json().await.unwrap()), ["dup/k"]);
}

/// "larger values are clamped to 10000": a limit too big for a machine word
/// is still a larger value.
#[tokio::test]
async fn a_limit_beyond_64_bits_is_clamped_too() {
    let node = TestNode::start();
    let resp = node.get("/datasets?limit=99999999999999999999").await;
    assert_eq!(resp.status(), 200);
}

// ---------------------------------------------------------------------------
// PATCH, acknowledge, DELETE
// ---------------------------------------------------------------------------

async fn patch(node: &TestNode, key: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
    node.client
        .patch(node.url(&format!("/datasets/{}", key_path(key))))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn patch_merges_metadata() {
    let node = TestNode::start();
    let original = put_ok(&node, "m/data.csv", b"a,b\n").await;

    let resp = patch(&node, "m/data.csv", r#"{"name":"Data"}"#).await;
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_eq!((&r["name"], &r["description"], &r["tags"]), (&json!("Data"), &Value::Null, &json!([])));

    let resp = patch(&node, "m/data.csv", r#"{"description":"Quarterly — ünïcode"}"#).await;
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["name"], "Data", "name kept");
    assert_eq!(r["description"], "Quarterly — ünïcode");

    let resp = patch(&node, "m/data.csv", r#"{"tags":["finance","2024"]}"#).await;
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["name"], "Data");
    assert_eq!(r["description"], "Quarterly — ünïcode");
    assert_eq!(r["tags"], json!(["finance", "2024"]));

    // Everything at once, and an empty patch that changes nothing.
    let resp = patch(&node, "m/data.csv", r#"{"name":"D2","description":"d2","tags":["x"]}"#).await;
    assert_eq!(resp.status(), 200);
    let resp = patch(&node, "m/data.csv", "{}").await;
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_eq!((&r["name"], &r["description"], &r["tags"]), (&json!("D2"), &json!("d2"), &json!(["x"])));
    // Tags can be emptied.
    let r: Value = patch(&node, "m/data.csv", r#"{"tags":[]}"#).await.json().await.unwrap();
    assert_eq!(r["tags"], json!([]));
    assert_eq!(r["name"], "D2");

    // The bytes' fields never change; the record is what GET and the list say.
    for field in ["key", "path", "size", "blake3", "content_type", "created_at"] {
        assert_eq!(r[field], original[field], "{field}");
    }
    assert_record(&r, "m/data.csv", b"a,b\n", "application/octet-stream");
    assert_eq!(record_ok(&node, "m/data.csv").await, r);
    assert_eq!(node.json("/datasets").await, json!([r]));
}

#[tokio::test]
async fn patch_rejects_bad_bodies() {
    let node = TestNode::start();
    put_ok(&node, "p.csv", b"x").await;
    let before = record_ok(&node, "p.csv").await;

    let cases = [
        (r#"{"name":"x","colour":"red"}"#.to_string(), "unknown field"),
        (r#"{"name":"x""#.to_string(), "truncated JSON"),
        ("not json".to_string(), "not JSON"),
        (r#"{"tags":"not-a-list"}"#.to_string(), "wrong type"),
        (r#"{"name":42}"#.to_string(), "wrong type"),
        ("[1,2]".to_string(), "not an object"),
    ];
    for (body, what) in cases {
        let resp = patch(&node, "p.csv", body.clone()).await;
        bad_request(resp, &format!("{what}: {body}")).await;
    }
    let resp = patch(&node, "p.csv", vec![0xffu8, 0xfe, b'{']).await;
    bad_request(resp, "not UTF-8").await;

    // Larger than the 64 KiB a metadata body may have.
    let big = json!({ "description": "d".repeat(70 * 1024) }).to_string();
    let resp = patch(&node, "p.csv", big).await;
    problem(resp, 413, "too-large", "70 KiB PATCH").await;

    assert_eq!(record_ok(&node, "p.csv").await, before, "a refused PATCH changed the record");

    let resp = patch(&node, "missing.csv", r#"{"name":"x"}"#).await;
    problem(resp, 404, "not-found", "PATCH of a missing key").await;
    assert_eq!(record(&node, "missing.csv").await.status(), 404);
}

async fn acknowledge(node: &TestNode, key: &str, body: Value) -> reqwest::Response {
    node.client
        .post(node.url(&format!("/datasets/{}/action/acknowledge", key_path(key))))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn acknowledge_records_metadata_and_checks_the_digest() {
    let node = TestNode::start();
    let body = generated(100_000, 5);
    put_ok(&node, "ack/data.bin", &body).await;

    let resp = acknowledge(
        &node,
        "ack/data.bin",
        json!({"name": "Data", "description": "uploaded by a signed URL", "tags": ["a"]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_record(&r, "ack/data.bin", &body, "application/octet-stream");
    assert_eq!(r["name"], "Data");
    assert_eq!(r["description"], "uploaded by a signed URL");
    assert_eq!(r["tags"], json!(["a"]));

    let resp = acknowledge(&node, "ack/data.bin", json!({"blake3": b3(&body), "tags": ["b"]})).await;
    assert_eq!(resp.status(), 200);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["tags"], json!(["b"]));
    assert_eq!(r["name"], "Data", "metadata not sent is kept");
    let resp = acknowledge(&node, "ack/data.bin", json!({})).await;
    assert_eq!(resp.status(), 200);

    // A wrong digest: 409, and the metadata of that request is not recorded.
    let resp = acknowledge(&node, "ack/data.bin", json!({"blake3": b3(b"other bytes"), "name": "Wrong"})).await;
    problem(resp, 409, "digest-mismatch", "wrong blake3").await;
    assert_eq!(record_ok(&node, "ack/data.bin").await["name"], "Data");

    let resp = acknowledge(&node, "ack/missing.bin", json!({"name": "x"})).await;
    problem(resp, 404, "not-found", "acknowledge of a missing key").await;
    let resp = acknowledge(&node, "ack/missing.bin", json!({"blake3": b3(&body)})).await;
    problem(resp, 404, "not-found", "acknowledge of a missing key").await;

    let resp = acknowledge(&node, "ack/data.bin", json!({"colour": "red"})).await;
    bad_request(resp, "unknown field").await;
}

#[tokio::test]
async fn delete_removes_bytes_and_record() {
    let node = TestNode::start();
    put_ok(&node, "del/me.csv", b"bye").await;
    put_ok(&node, "keep.csv", b"stay").await;
    let file = node.datasets_dir().join("del").join("me.csv");
    assert!(file.is_file());

    let resp = node.client.delete(node.url("/datasets/del/me.csv")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.bytes().await.unwrap().is_empty(), "a 204 with a body");

    problem(record(&node, "del/me.csv").await, 404, "not-found", "GET record after DELETE").await;
    problem(node.get("/data/del/me.csv").await, 404, "not-found", "GET data after DELETE").await;
    assert!(!file.exists(), "the file is still on disk");
    assert!(!node.datasets_dir().join("del").exists(), "the empty folder is still on disk");
    assert_eq!(keys_of(&node.json("/datasets").await), ["keep.csv"]);

    let resp = node.client.delete(node.url("/datasets/del/me.csv")).send().await.unwrap();
    problem(resp, 404, "not-found", "second DELETE").await;
    assert_eq!(node.get("/data/keep.csv").await.bytes().await.unwrap(), &b"stay"[..]);
}

// ---------------------------------------------------------------------------
// Multipart
// ---------------------------------------------------------------------------

const BOUNDARY: &str = "----spillway-test-BoUnDaRy-3c1f9a";

struct Part<'a> {
    name: &'a str,
    filename: Option<&'a str>,
    content_type: Option<&'a str>,
    data: &'a [u8],
}

fn field<'a>(name: &'a str, value: &'a str) -> Part<'a> {
    Part { name, filename: None, content_type: None, data: value.as_bytes() }
}

fn file_part<'a>(filename: &'a str, data: &'a [u8]) -> Part<'a> {
    Part { name: "file", filename: Some(filename), content_type: Some("text/csv"), data }
}

fn part_head(p: &Part<'_>) -> Vec<u8> {
    let mut head = format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{}\"", p.name);
    if let Some(f) = p.filename {
        head.push_str(&format!("; filename=\"{f}\""));
    }
    head.push_str("\r\n");
    if let Some(ct) = p.content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend(part_head(p));
        body.extend_from_slice(p.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn form_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

async fn post_form(node: &TestNode, content_type: Option<&str>, body: impl Into<reqwest::Body>) -> reqwest::Response {
    let mut req = node.client.post(node.url("/datasets"));
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    req.body(body).send().await.unwrap()
}

#[tokio::test]
async fn multipart_upload_with_all_fields() {
    let node = TestNode::start();
    let data = b"region,total\nnorth,10\nsouth,20\n";
    let body = form(&[
        field("key", "reports/2024/report.csv"),
        field("name", "Annual report"),
        field("description", "Totals — by region"),
        file_part("report.csv", data),
    ]);
    let resp = post_form(&node, Some(&form_type()), body).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["location"], "/data/reports/2024/report.csv");
    assert_eq!(resp.headers()["etag"], format!("\"{}\"", b3(data)).as_str());
    let r: Value = resp.json().await.unwrap();
    assert_record(&r, "reports/2024/report.csv", data, "text/csv");
    assert_eq!(r["name"], "Annual report");
    assert_eq!(r["description"], "Totals — by region");
    assert_eq!(r["tags"], json!([]));

    let got = node.get("/data/reports/2024/report.csv").await;
    assert_eq!(got.headers()["content-type"], "text/csv");
    assert_eq!(got.bytes().await.unwrap(), &data[..]);
    assert_eq!(record_ok(&node, "reports/2024/report.csv").await, r);

    // Fields after the file part count as well; a second POST replaces (200).
    let body = form(&[file_part("report.csv", b"v2"), field("key", "reports/2024/report.csv")]);
    let resp = post_form(&node, Some(&form_type()), body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(node.get("/data/reports/2024/report.csv").await.bytes().await.unwrap(), &b"v2"[..]);
}

#[tokio::test]
async fn multipart_key_defaults_to_the_file_name() {
    let node = TestNode::start();
    let data = b"a,b\n1,2\n";
    let resp = post_form(&node, Some(&form_type()), form(&[file_part("report.csv", data)])).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["location"], "/data/report.csv");
    let r: Value = resp.json().await.unwrap();
    assert_record(&r, "report.csv", data, "text/csv");
    assert_eq!(r["name"], "report.csv");
    assert_eq!(node.get("/data/report.csv").await.bytes().await.unwrap(), &data[..]);
    // An empty key field also falls back to the file name.
    let resp = post_form(&node, Some(&form_type()), form(&[field("key", ""), file_part("second.csv", data)])).await;
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.json::<Value>().await.unwrap()["key"], "second.csv");
}

/// A file part with no type of its own is stored as
/// `application/octet-stream`, whatever the case of the form's own media
/// type (media types are case-insensitive): never as the form's type.
#[tokio::test]
async fn an_untyped_file_part_is_octet_stream_whatever_the_forms_case() {
    let node = TestNode::start();
    for (i, form_ct) in ["multipart/form-data", "Multipart/Form-Data", "MULTIPART/FORM-DATA"].iter().enumerate() {
        let key = format!("untyped-{i}.bin");
        let part = Part { name: "file", filename: Some(&key), content_type: None, data: b"a,b" };
        let resp = post_form(&node, Some(&format!("{form_ct}; boundary={BOUNDARY}")), form(&[part])).await;
        assert_eq!(resp.status(), 201, "{form_ct}");
        let r: Value = resp.json().await.unwrap();
        assert_eq!(r["content_type"], "application/octet-stream", "form type {form_ct}: {r}");
        let got = node.get(&format!("/data/{key}")).await;
        assert_eq!(got.headers()["content-type"], "application/octet-stream", "form type {form_ct}");
    }
}

/// A 20 MiB file part, streamed in 1 MiB pieces, downloads back identical.
#[tokio::test]
async fn multipart_big_file_streams_through() {
    let node = TestNode::start();
    const PIECES: u64 = 20;
    let piece = |i: u64| generated(MIB, 1000 + i);
    let mut hasher = blake3::Hasher::new();
    for i in 0..PIECES {
        hasher.update(&piece(i));
    }
    let expected = hasher.finalize().to_hex().to_string();

    let head = [
        form(&[field("key", "big/upload.bin"), field("name", "Big")]),
        part_head(&Part {
            name: "file",
            filename: Some("upload.bin"),
            content_type: Some("application/octet-stream"),
            data: b"",
        }),
    ];
    // `form` ends with the closing boundary; drop it from the first chunk.
    let mut first = head[0].clone();
    first.truncate(first.len() - format!("--{BOUNDARY}--\r\n").len());
    first.extend_from_slice(&head[1]);
    let tail = format!("\r\n--{BOUNDARY}--\r\n").into_bytes();
    let chunks = std::iter::once(first)
        .chain((0..PIECES).map(piece))
        .chain(std::iter::once(tail))
        .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::from(c)));
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));

    let resp = post_form(&node, Some(&form_type()), body).await;
    assert_eq!(resp.status(), 201);
    let r: Value = resp.json().await.unwrap();
    assert_eq!(r["size"].as_u64(), Some(PIECES * MIB as u64));
    assert_eq!(r["blake3"], expected);
    assert_eq!(r["name"], "Big");
    assert_eq!(r["content_type"], "application/octet-stream");

    let mut resp = node.get("/data/big/upload.bin").await;
    assert_eq!(resp.status(), 200);
    let (mut h, mut n) = (blake3::Hasher::new(), 0u64);
    while let Some(chunk) = resp.chunk().await.unwrap() {
        h.update(&chunk);
        n += chunk.len() as u64;
    }
    assert_eq!(n, PIECES * MIB as u64);
    assert_eq!(h.finalize().to_hex().to_string(), expected);
    assert!(node.wait_spool_empty(Duration::from_secs(5)).is_empty());
}

#[tokio::test]
async fn multipart_errors_are_400_never_500() {
    let node = TestNode::start();
    let ft = form_type();
    let no_file = form(&[field("key", "x.csv"), field("name", "X")]);
    let two_files = form(&[file_part("a.csv", b"a"), file_part("b.csv", b"b")]);
    let mut truncated = part_head(&file_part("t.csv", b""));
    truncated.extend_from_slice(b"half of a file and then nothing");
    let other_boundary = form(&[file_part("o.csv", b"o")]);
    let no_disposition = format!("--{BOUNDARY}\r\nContent-Type: text/csv\r\n\r\nx\r\n--{BOUNDARY}--\r\n");
    let good = form(&[file_part("g.csv", b"g")]);

    let cases: Vec<(Option<String>, Vec<u8>, &str)> = vec![
        (Some(ft.clone()), no_file, "no file part"),
        (Some(ft.clone()), two_files, "two file parts"),
        (Some(ft.clone()), truncated, "truncated: no closing boundary"),
        (
            Some("multipart/form-data; boundary=not-the-one-in-the-body".into()),
            other_boundary,
            "boundary differs from the body's",
        ),
        (Some(ft.clone()), no_disposition.into_bytes(), "part without Content-Disposition"),
        (Some(ft.clone()), b"this is not multipart at all".to_vec(), "garbage body"),
        (Some(ft.clone()), Vec::new(), "empty body"),
        (Some("multipart/form-data".into()), good.clone(), "no boundary parameter"),
        (Some(format!("multipart/mixed; boundary={BOUNDARY}")), good.clone(), "multipart/mixed"),
        (Some("application/json".into()), br#"{"key":"x"}"#.to_vec(), "JSON"),
        (Some("text/csv".into()), b"a,b\n".to_vec(), "a bare CSV"),
        (None, good, "no Content-Type"),
    ];
    for (ct, body, what) in cases {
        let resp = post_form(&node, ct.as_deref(), body).await;
        assert!(resp.status().as_u16() < 500, "{what}: {}", resp.status());
        bad_request(resp, what).await;
    }
    assert_eq!(node.json("/datasets").await, json!([]), "a refused form stored something");
    assert!(node.dataset_files().is_empty());
    assert!(node.wait_spool_empty(Duration::from_secs(5)).is_empty());
}

// ---------------------------------------------------------------------------
// Conditional PUT
// ---------------------------------------------------------------------------

async fn put_if(node: &TestNode, key: &str, header: &str, value: &str, body: &[u8]) -> reqwest::Response {
    node.client
        .put(node.url(&format!("/data/{}", key_path(key))))
        .header(header, value)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

async fn content(node: &TestNode, key: &str) -> Vec<u8> {
    let resp = node.get(&format!("/data/{}", key_path(key))).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn if_none_match_star_creates_only() {
    let node = TestNode::start();
    let resp = put_if(&node, "c/new.csv", "If-None-Match", "*", b"first").await;
    assert_eq!(resp.status(), 201);
    let before = record_ok(&node, "c/new.csv").await;

    let resp = put_if(&node, "c/new.csv", "If-None-Match", "*", b"second").await;
    problem(resp, 412, "precondition-failed", "If-None-Match: * on an existing key").await;
    assert_eq!(content(&node, "c/new.csv").await, b"first");
    assert_eq!(record_ok(&node, "c/new.csv").await, before);
    // The current ETag listed: the same.
    let etag = format!("\"{}\"", b3(b"first"));
    let resp = put_if(&node, "c/new.csv", "If-None-Match", &etag, b"third").await;
    problem(resp, 412, "precondition-failed", "If-None-Match: current").await;
    assert_eq!(content(&node, "c/new.csv").await, b"first");
    assert!(node.wait_spool_empty(Duration::from_secs(5)).is_empty());
}

/// `If-Match` and `If-None-Match` on several lines are one list each
/// (RFC 9110 § 5.3): the current tag on a second line matches.
#[tokio::test]
async fn conditions_on_several_lines_are_one_list() {
    let node = TestNode::start();
    put_ok(&node, "c/lines.csv", b"v1").await;
    let v1 = format!("\"{}\"", b3(b"v1"));
    let put_lines = |name: &'static str, lines: [String; 2], body: &'static [u8]| {
        let req = node.client.put(node.url("/data/c/lines.csv"));
        req.header(name, &lines[0]).header(name, &lines[1]).body(body).send()
    };
    let resp = put_lines("If-Match", ["\"0000\"".into(), v1.clone()], b"v2").await.unwrap();
    assert_eq!(resp.status(), 200, "If-Match with the current tag on the second line");
    assert_eq!(content(&node, "c/lines.csv").await, b"v2");
    let v2 = format!("\"{}\"", b3(b"v2"));
    let resp = put_lines("If-None-Match", ["\"0000\"".into(), v2], b"v3").await.unwrap();
    problem(resp, 412, "precondition-failed", "If-None-Match with the current tag on the second line").await;
    assert_eq!(content(&node, "c/lines.csv").await, b"v2");
}

#[tokio::test]
async fn if_match_replaces_only_the_current_version() {
    let node = TestNode::start();
    put_ok(&node, "c/doc.csv", b"v1").await;
    let v1 = format!("\"{}\"", b3(b"v1"));

    let resp = put_if(&node, "c/doc.csv", "If-Match", &v1, b"v2").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], format!("\"{}\"", b3(b"v2")).as_str());
    assert_eq!(content(&node, "c/doc.csv").await, b"v2");

    // v1 is stale now.
    let resp = put_if(&node, "c/doc.csv", "If-Match", &v1, b"v3").await;
    problem(resp, 412, "precondition-failed", "If-Match with a stale tag").await;
    assert_eq!(content(&node, "c/doc.csv").await, b"v2");

    let resp = put_if(&node, "c/doc.csv", "If-Match", "*", b"v4").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(content(&node, "c/doc.csv").await, b"v4");

    for tag in [v1.as_str(), "*"] {
        let resp = put_if(&node, "c/missing.csv", "If-Match", tag, b"x").await;
        problem(resp, 412, "precondition-failed", &format!("If-Match: {tag} on a missing key")).await;
        assert_eq!(record(&node, "c/missing.csv").await.status(), 404);
    }
    assert!(!node.datasets_dir().join("c/missing.csv").exists());
    assert!(node.wait_spool_empty(Duration::from_secs(5)).is_empty());
}

// ---------------------------------------------------------------------------
// A replace racing readers
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replace_is_atomic_for_readers() {
    let node = Arc::new(TestNode::start());
    let a = Arc::new(generated(8 * MIB, 0xA));
    let b = Arc::new(generated(8 * MIB, 0xB));
    let (ha, hb) = (b3(&a), b3(&b));
    assert_ne!(ha, hb);
    put_ok(&node, "race.bin", &a).await;

    let done = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (node, a, b, done) = (node.clone(), a.clone(), b.clone(), done.clone());
        let (ha, hb) = (ha.clone(), hb.clone());
        readers.push(tokio::spawn(async move {
            let mut seen = (0u32, 0u32);
            // Bounded: stops when the writer is done, or after 500 reads.
            for _ in 0..500 {
                let resp = node.get("/data/race.bin").await;
                assert_eq!(resp.status(), 200);
                let etag = resp.headers()["etag"].to_str().unwrap().to_string();
                let bytes = resp.bytes().await.unwrap();
                let got = b3(&bytes);
                assert_eq!(etag, format!("\"{got}\""), "ETag does not describe the bytes sent");
                if got == ha {
                    assert!(bytes == a[..]);
                    seen.0 += 1;
                } else {
                    assert_eq!(got, hb, "a read that is neither version ({} bytes)", bytes.len());
                    assert!(bytes == b[..]);
                    seen.1 += 1;
                }
                if done.load(Ordering::Acquire) {
                    break;
                }
            }
            seen
        }));
    }

    let writer = {
        let (node, a, b) = (node.clone(), a.clone(), b.clone());
        let (ha, hb) = (ha.clone(), hb.clone());
        tokio::spawn(async move {
            for i in 0..10 {
                let (body, hash) = if i % 2 == 0 { (&b, &hb) } else { (&a, &ha) };
                let resp = node.put("race.bin", body.to_vec()).await;
                assert_eq!(resp.status(), 200, "replace {i}");
                assert_eq!(resp.headers()["etag"], format!("\"{hash}\"").as_str());
            }
        })
    };
    let written = writer.await;
    done.store(true, Ordering::Release);
    let mut total = (0, 0);
    for r in readers {
        let (x, y) = r.await.expect("a reader failed");
        assert!(x + y > 0);
        total = (total.0 + x, total.1 + y);
    }
    written.expect("the writer failed");
    eprintln!("reads: {} of A, {} of B", total.0, total.1);
    // The last replace wrote A.
    assert_eq!(b3(&content(&node, "race.bin").await), ha);
    assert!(node.wait_spool_empty(Duration::from_secs(5)).is_empty());
}
