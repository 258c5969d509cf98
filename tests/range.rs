//! Downloads: `GET`/`HEAD /data/{key}` with `Range`, `If-Range` and
//! `If-None-Match`, on a body that is not a multiple of any buffer size.

mod common;

use std::io::{Read, Write};

use common::*;
use reqwest::header::HeaderMap;

const LEN: usize = 1024 * 1024 + 17;
const CONTENT_TYPE: &str = "text/csv; charset=utf-8";

/// Uploads `body` at `key` as CSV (the type every read here checks).
async fn put_csv(node: &TestNode, key: &str, body: &[u8]) -> reqwest::Response {
    let put = node.client.put(node.url(&format!("/data/{key}"))).header("Content-Type", CONTENT_TYPE);
    put.body(body.to_vec()).send().await.unwrap()
}

/// A node holding the generated body at `big.bin`; returns it and its ETag.
async fn node_with_body() -> (TestNode, Vec<u8>, String) {
    let node = TestNode::start();
    let body = generated(LEN, 42);
    let resp = put_csv(&node, "big.bin", &body).await;
    assert_eq!(resp.status(), 201);
    let etag = format!("\"{}\"", blake3::hash(&body).to_hex());
    assert_eq!(header(resp.headers(), "etag"), etag);
    (node, body, etag)
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
}

async fn get_with(node: &TestNode, key: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = node.client.get(node.url(&format!("/data/{key}")));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// A full `200` with the whole body and the download headers.
async fn assert_full(resp: reqwest::Response, body: &[u8], etag: &str, what: &str) {
    assert_eq!(resp.status(), 200, "{what}");
    let h = resp.headers().clone();
    assert!(h.get("content-range").is_none(), "{what}: {h:?}");
    assert_eq!(header(&h, "content-length"), body.len().to_string(), "{what}");
    assert_eq!(header(&h, "etag"), etag, "{what}");
    assert_eq!(header(&h, "accept-ranges"), "bytes", "{what}");
    let got = resp.bytes().await.unwrap();
    assert!(got == body, "{what}: full body differs ({} bytes)", got.len());
}

/// A `206` for bytes `start..=end`.
async fn assert_part(resp: reqwest::Response, body: &[u8], etag: &str, start: usize, end: usize, what: &str) {
    assert_eq!(resp.status(), 206, "{what}");
    let h = resp.headers().clone();
    assert_eq!(header(&h, "content-range"), format!("bytes {start}-{end}/{}", body.len()), "{what}");
    assert_eq!(header(&h, "content-length"), (end - start + 1).to_string(), "{what}");
    assert_eq!(header(&h, "etag"), etag, "{what}");
    assert_eq!(header(&h, "content-type"), CONTENT_TYPE, "{what}");
    assert_eq!(header(&h, "accept-ranges"), "bytes", "{what}");
    let got = resp.bytes().await.unwrap();
    assert!(got == body[start..=end], "{what}: {} bytes, not bytes {start}-{end}", got.len());
}

/// A `416` problem with `Content-Range: bytes */size`.
async fn assert_unsatisfiable(resp: reqwest::Response, size: usize, what: &str) {
    assert_eq!(resp.status(), 416, "{what}");
    let h = resp.headers().clone();
    assert_eq!(header(&h, "content-range"), format!("bytes */{size}"), "{what}");
    assert!(header(&h, "content-type").starts_with("application/problem+json"), "{what}");
    let problem: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(problem["status"], 416, "{what}: {problem}");
    let code = problem["code"].as_str().unwrap_or_default();
    assert!(!code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{what}: code {code:?}");
    assert!(problem["detail"].is_string() && problem["title"].is_string() && problem["type"].is_string());
}

#[tokio::test]
async fn single_ranges_are_exact_slices() {
    let (node, body, etag) = node_with_body().await;
    let last = LEN - 1;
    let mid = LEN / 2 - 50;
    let cases: Vec<(String, usize, usize, &str)> = vec![
        ("bytes=0-0".into(), 0, 0, "first byte"),
        ("bytes=0-99".into(), 0, 99, "first 100"),
        (format!("bytes={mid}-{}", mid + 99), mid, mid + 99, "middle"),
        (format!("bytes={last}-{last}"), last, last, "last byte"),
        ("bytes=-500".into(), LEN - 500, last, "suffix"),
        ("bytes=-1".into(), last, last, "one-byte suffix"),
        ("bytes=1000-".into(), 1000, last, "open-ended"),
        (format!("bytes=-{}", LEN + 1000), 0, last, "suffix longer than the file"),
        ("bytes=0-".into(), 0, last, "everything"),
        (format!("bytes={}-{}", LEN - 10, LEN + 100), LEN - 10, last, "end past the end"),
        // Straddles the 256 KiB chunks the node reads in.
        ("bytes=262140-262150".into(), 262_140, 262_150, "across a chunk edge"),
    ];
    for (range, start, end, what) in cases {
        let resp = get_with(&node, "big.bin", &[("Range", &range)]).await;
        assert_part(resp, &body, &etag, start, end, &format!("{what} ({range})")).await;
    }
}

#[tokio::test]
async fn pseudo_random_ranges_are_exact_slices() {
    let (node, body, etag) = node_with_body().await;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..40 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let start = (x % LEN as u64) as usize;
        let end = (start + (x >> 32) as usize % 70_000).min(LEN - 1);
        let range = format!("bytes={start}-{end}");
        let resp = get_with(&node, "big.bin", &[("Range", &range)]).await;
        assert_part(resp, &body, &etag, start, end, &range).await;
    }
}

#[tokio::test]
async fn several_ranges_answer_the_whole_body() {
    let (node, body, etag) = node_with_body().await;
    for range in ["bytes=0-1,5-9", "bytes=0-1, 100-200, -5"] {
        let resp = get_with(&node, "big.bin", &[("Range", range)]).await;
        assert_full(resp, &body, &etag, range).await;
    }
}

#[tokio::test]
async fn unsatisfiable_and_malformed_ranges_are_416() {
    let (node, _body, _etag) = node_with_body().await;
    let at_end = format!("bytes={LEN}-");
    for range in ["bytes=99999999-", at_end.as_str(), "bytes=abc", "bytes=-0"] {
        let resp = get_with(&node, "big.bin", &[("Range", range)]).await;
        assert_unsatisfiable(resp, LEN, range).await;
    }
}

#[tokio::test]
async fn unknown_range_unit_is_ignored() {
    let (node, body, etag) = node_with_body().await;
    let resp = get_with(&node, "big.bin", &[("Range", "items=0-1")]).await;
    assert_full(resp, &body, &etag, "items=0-1").await;
}

#[tokio::test]
async fn if_none_match_answers_304() {
    let (node, body, etag) = node_with_body().await;
    let listed = format!("\"0000\", {etag}, \"ffff\"");
    for tags in [etag.as_str(), listed.as_str(), "*"] {
        let resp = get_with(&node, "big.bin", &[("If-None-Match", tags)]).await;
        assert_eq!(resp.status(), 304, "If-None-Match: {tags}");
        assert_eq!(header(resp.headers(), "etag"), etag, "If-None-Match: {tags}");
        assert!(resp.bytes().await.unwrap().is_empty(), "a 304 with a body");
        // HEAD too.
        let resp = node.client.head(node.url("/data/big.bin")).header("If-None-Match", tags).send().await.unwrap();
        assert_eq!(resp.status(), 304, "HEAD If-None-Match: {tags}");
    }
    // Ranges do not matter when the client already has the representation.
    let resp = get_with(&node, "big.bin", &[("If-None-Match", &etag), ("Range", "bytes=0-9")]).await;
    assert_eq!(resp.status(), 304);

    let other = format!("\"{}\"", blake3::hash(b"something else").to_hex());
    for tags in [other.as_str(), "\"abc\", \"def\""] {
        let resp = get_with(&node, "big.bin", &[("If-None-Match", tags)]).await;
        assert_full(resp, &body, &etag, &format!("If-None-Match: {tags}")).await;
    }
}

/// RFC 9110 § 5.3: field lines of one name are one comma-separated list,
/// so an ETag on a second `If-None-Match` line counts as much as on the
/// first.
#[tokio::test]
async fn if_none_match_on_several_lines_is_one_list() {
    let (node, body, etag) = node_with_body().await;
    let other = "\"0000\"";
    for lines in [[other, etag.as_str()], [etag.as_str(), other]] {
        let headers = [("If-None-Match", lines[0]), ("If-None-Match", lines[1])];
        let resp = get_with(&node, "big.bin", &headers).await;
        assert_eq!(resp.status(), 304, "If-None-Match lines {lines:?}");
    }
    let resp = get_with(&node, "big.bin", &[("If-None-Match", other), ("If-None-Match", "\"ffff\"")]).await;
    assert_full(resp, &body, &etag, "two If-None-Match lines, neither matching").await;
}

/// RFC 9110 § 13.1.2: If-None-Match uses the weak comparison, so the weak
/// form of the current ETag (what caches and some proxies send) is a match.
#[tokio::test]
async fn if_none_match_uses_weak_comparison() {
    let (node, _body, etag) = node_with_body().await;
    let weak = format!("W/{etag}");
    let resp = get_with(&node, "big.bin", &[("If-None-Match", &weak)]).await;
    assert_eq!(resp.status(), 304, "If-None-Match: {weak}");
}

#[tokio::test]
async fn if_range_guards_the_range() {
    let (node, body, etag) = node_with_body().await;
    let resp = get_with(&node, "big.bin", &[("Range", "bytes=10-19"), ("If-Range", &etag)]).await;
    assert_part(resp, &body, &etag, 10, 19, "If-Range matching").await;

    let other = format!("\"{}\"", blake3::hash(b"older version").to_hex());
    let weak = format!("W/{etag}");
    // A different tag, a weak tag (If-Range needs a strong match) and a date
    // (there is no Last-Modified to compare it with): the whole body.
    for validator in [other.as_str(), weak.as_str(), "Sat, 28 Nov 2026 08:00:00 GMT"] {
        let resp = get_with(&node, "big.bin", &[("Range", "bytes=10-19"), ("If-Range", validator)]).await;
        assert_full(resp, &body, &etag, &format!("If-Range: {validator}")).await;
    }
}

/// HEAD over a raw socket, to see that no body bytes follow the headers.
fn raw_head(node: &TestNode, path: &str, extra: &str) -> (String, Vec<u8>) {
    let mut s = node.raw();
    write!(s, "HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n").unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let end = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    (String::from_utf8(out[..end].to_vec()).unwrap().to_ascii_lowercase(), out[end + 4..].to_vec())
}

#[tokio::test]
async fn head_has_the_headers_and_no_body() {
    let (node, _body, etag) = node_with_body().await;
    let resp = node.client.head(node.url("/data/big.bin")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(header(h, "content-length"), LEN.to_string());
    assert_eq!(header(h, "etag"), etag);
    assert_eq!(header(h, "accept-ranges"), "bytes");
    assert_eq!(header(h, "content-type"), CONTENT_TYPE);

    let (head, rest) = raw_head(&node, "/data/big.bin", "");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {LEN}")), "{head}");
    assert!(rest.is_empty(), "HEAD sent {} body bytes", rest.len());

    // A ranged HEAD describes the part, still without a body.
    let (head, rest) = raw_head(&node, "/data/big.bin", "Range: bytes=0-99\r\n");
    assert!(head.starts_with("http/1.1 206"), "{head}");
    assert!(head.contains(&format!("content-range: bytes 0-99/{LEN}")), "{head}");
    assert!(head.contains("content-length: 100"), "{head}");
    assert!(rest.is_empty(), "HEAD sent {} body bytes", rest.len());
}

#[tokio::test]
async fn content_type_is_kept_as_sent() {
    let node = TestNode::start();
    for (key, ct) in [
        ("a.json", "application/json"),
        ("b.ndjson", "application/x-ndjson"),
        ("c.parquet", "application/vnd.apache.parquet"),
    ] {
        let resp = node
            .client
            .put(node.url(&format!("/data/{key}")))
            .header("Content-Type", ct)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let resp = get_with(&node, key, &[]).await;
        assert_eq!(header(resp.headers(), "content-type"), ct, "{key}");
        let resp = get_with(&node, key, &[("Range", "bytes=0-0")]).await;
        assert_eq!(header(resp.headers(), "content-type"), ct, "{key} ranged");
    }
    // No Content-Type on the PUT: served as bytes.
    let resp = node.client.put(node.url("/data/plain")).body("x").send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let resp = get_with(&node, "plain", &[]).await;
    assert_eq!(header(resp.headers(), "content-type"), "application/octet-stream");
}

#[tokio::test]
async fn zero_byte_dataset() {
    let node = TestNode::start();
    let resp = node.put("empty", Vec::<u8>::new()).await;
    assert_eq!(resp.status(), 201);
    let etag = format!("\"{}\"", blake3::hash(b"").to_hex());

    let resp = get_with(&node, "empty", &[]).await;
    assert_full(resp, b"", &etag, "GET empty").await;
    let (head, rest) = raw_head(&node, "/data/empty", "");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 0"), "{head}");
    assert!(rest.is_empty());

    for range in ["bytes=0-", "bytes=0-0", "bytes=5-10", "bytes=0-1,3-4"] {
        let resp = get_with(&node, "empty", &[("Range", range)]).await;
        if range.contains(',') && resp.status() == 200 {
            // Several ranges may be answered with the whole (empty) body.
            assert_full(resp, b"", &etag, range).await;
        } else {
            assert_unsatisfiable(resp, 0, range).await;
        }
    }
    // RFC 9110 § 14.1.1: on a zero-length representation a suffix range is
    // the one satisfiable form, and a 206 cannot express it: the node may
    // answer 416 or ignore the range (200, empty). Never a 206 or a 5xx.
    let resp = get_with(&node, "empty", &[("Range", "bytes=-1")]).await;
    match resp.status().as_u16() {
        200 => assert_full(resp, b"", &etag, "bytes=-1").await,
        416 => assert_unsatisfiable(resp, 0, "bytes=-1").await,
        other => panic!("bytes=-1 on an empty dataset: {other}"),
    }
}

#[tokio::test]
async fn missing_key_is_a_404_problem() {
    let node = TestNode::start();
    for headers in [&[][..], &[("Range", "bytes=0-9")][..], &[("If-None-Match", "*")][..]] {
        let resp = get_with(&node, "no/such.bin", headers).await;
        assert_eq!(resp.status(), 404, "{headers:?}");
        assert!(header(resp.headers(), "content-type").starts_with("application/problem+json"));
        let problem: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(problem["code"], "not-found");
        assert_eq!(problem["status"], 404);
    }
    let resp = node.client.head(node.url("/data/no/such.bin")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
}

/// A replaced dataset serves the new bytes, ETag and ranges at once.
#[tokio::test]
async fn ranges_follow_a_replace() {
    let (node, _body, old_etag) = node_with_body().await;
    let new = generated(5000, 7);
    let new_etag = format!("\"{}\"", blake3::hash(&new).to_hex());
    let resp = put_csv(&node, "big.bin", &new).await;
    assert_eq!(resp.status(), 200);
    let resp = get_with(&node, "big.bin", &[("Range", "bytes=-10")]).await;
    assert_part(resp, &new, &new_etag, 4990, 4999, "suffix after replace").await;
    // The old ETag no longer matches either validator.
    let resp = get_with(&node, "big.bin", &[("If-None-Match", &old_etag)]).await;
    assert_full(resp, &new, &new_etag, "If-None-Match: old").await;
    let resp = get_with(&node, "big.bin", &[("Range", "bytes=0-9"), ("If-Range", &old_etag)]).await;
    assert_full(resp, &new, &new_etag, "If-Range: old").await;
}

/// The node keeps the rows and open files of recent reads: a read that
/// follows a write's answer must never be served from what it kept before.
/// Each write here comes right after two reads of the same key (the second
/// served from what the first kept), and each read right after the write.
#[tokio::test]
async fn reads_follow_every_change_at_once() {
    let node = TestNode::start();
    let key = "r/cached.bin";
    let record_path = format!("/datasets/{key}");
    for round in 0..3u64 {
        let body = generated(200_000 + round as usize, round);
        let etag = format!("\"{}\"", blake3::hash(&body).to_hex());
        assert_eq!(put_csv(&node, key, &body).await.status(), 201, "round {round}: upload");
        for read in 0..2 {
            let resp = get_with(&node, key, &[("Range", "bytes=1000-66535")]).await;
            assert_part(resp, &body, &etag, 1000, 66535, &format!("round {round}, read {read}")).await;
            assert_eq!(node.json(&record_path).await["blake3"], b3(&body), "round {round}: record");
        }

        let description = format!("round {round}");
        let resp = node
            .client
            .patch(node.url(&record_path))
            .json(&serde_json::json!({ "description": description }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "round {round}: metadata");
        assert_eq!(node.json(&record_path).await["description"], description, "round {round}: after PATCH");

        let new = generated(70_000, round + 100);
        let new_etag = format!("\"{}\"", blake3::hash(&new).to_hex());
        assert_eq!(put_csv(&node, key, &new).await.status(), 200, "round {round}: replace");
        let resp = get_with(&node, key, &[("Range", "bytes=1000-66535")]).await;
        assert_part(resp, &new, &new_etag, 1000, 66535, &format!("round {round}: after the replace")).await;
        assert_eq!(node.json(&record_path).await["blake3"], b3(&new), "round {round}: record after the replace");

        let resp = node.client.delete(node.url(&record_path)).send().await.unwrap();
        assert_eq!(resp.status(), 204, "round {round}: delete");
        let resp = get_with(&node, key, &[("Range", "bytes=1000-66535")]).await;
        assert_eq!(resp.status(), 404, "round {round}: bytes after the delete");
        assert_eq!(node.get(&record_path).await.status(), 404, "round {round}: record after the delete");
    }
}

/// Files of the data directory the node holds open and that are gone from
/// it (replaced or deleted): their space is not freed while they are held.
fn held_deleted_files(node: &TestNode) -> Vec<String> {
    let data_dir = node.data_dir.display().to_string();
    node.open_files()
        .into_iter()
        .map(|(_, target)| target.display().to_string())
        .filter(|target| target.starts_with(&data_dir) && target.ends_with(" (deleted)"))
        .collect()
}

/// A file kept open for reads is let go when its dataset is replaced or
/// deleted, before the write is answered: with versions off, its space is
/// free at once.
#[tokio::test]
async fn replaced_and_deleted_files_are_not_held_open() {
    let node = TestNode::start_with(&[("SPILLWAY_KEEP_VERSIONS", "0")]);
    let key = "held.bin";
    for (i, status) in [(0u64, 201), (1, 200)] {
        let body = generated(300_000, i);
        assert_eq!(node.put(key, body.clone()).await.status(), status, "upload {i}");
        assert!(held_deleted_files(&node).is_empty(), "after upload {i}: {:?}", held_deleted_files(&node));
        for _ in 0..2 {
            let resp = get_with(&node, key, &[("Range", "bytes=0-65535")]).await;
            assert_eq!(resp.status(), 206);
            assert!(resp.bytes().await.unwrap() == body[..65536]);
        }
    }
    let resp = node.client.delete(node.url(&format!("/datasets/{key}"))).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(held_deleted_files(&node).is_empty(), "after the delete: {:?}", held_deleted_files(&node));
}
