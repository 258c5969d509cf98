//! Key validation over real HTTP. Hostile keys go out as raw request paths
//! on raw sockets (`Connection: close`), so that no client library
//! normalises them first. Rejected keys must be `400 invalid-key` on every
//! route that takes a key. Accepted keys must land as files strictly inside
//! `<data_dir>/datasets`. No key may ever make the node create a file
//! anywhere else.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

// ---------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------

/// A response read off a raw socket.
#[derive(Debug)]
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request with the exact bytes of `target` as its request
/// target and reads the whole response (the node closes the connection).
fn send(node: &TestNode, method: &str, target: &[u8], headers: &[(&str, &str)], body: &[u8]) -> Raw {
    let mut request = Vec::new();
    request.extend_from_slice(method.as_bytes());
    request.push(b' ');
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        write!(request, "{name}: {value}\r\n").unwrap();
    }
    write!(request, "Content-Length: {}\r\n\r\n", body.len()).unwrap();
    request.extend_from_slice(body);

    let mut socket = node.raw();
    socket.write_all(&request).unwrap();
    let mut out = Vec::new();
    // A node that answers before reading the body may reset the connection
    // after its response; what arrived before that is what counts.
    let _ = socket.read_to_end(&mut out);
    parse_response(&out, method == "HEAD").unwrap_or_else(|| {
        panic!(
            "no HTTP response to {method} {:?}: {:?}",
            String::from_utf8_lossy(target),
            String::from_utf8_lossy(&out)
        )
    })
}

fn parse_response(out: &[u8], head: bool) -> Option<Raw> {
    let end = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head_text = std::str::from_utf8(&out[..end]).ok()?;
    let mut lines = head_text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut body = out[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"));
    if chunked && !head {
        body = dechunk(&body)?;
    }
    Some(Raw { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------

/// The rules of API.md § Keys; a rejection's `detail` must name one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Empty,
    Dot,
    Edge,
    EmptySegment,
    Backslash,
    Control,
    NotUtf8,
    TooLong,
    SegmentTooLong,
}

impl Rule {
    /// Words (lower case) of which the `detail` must contain at least one.
    fn words(self) -> &'static [&'static str] {
        match self {
            Rule::Empty => &["empty"],
            Rule::Dot => &["`..`", "`.`", "dot"],
            Rule::Edge => &["start or end", "leading", "trailing", "starts with", "ends with"],
            Rule::EmptySegment => &["empty segment", "empty path segment", "`//`"],
            Rule::Backslash => &["`\\`", "backslash"],
            Rule::Control => &["control"],
            Rule::NotUtf8 => &["utf-8", "utf8"],
            Rule::TooLong => &["1024"],
            Rule::SegmentTooLong => &["255"],
        }
    }
}

#[derive(Debug, Clone)]
enum Expect {
    /// `400 invalid-key`, the detail naming one of these rules.
    Reject(&'static [Rule]),
    /// `201`, stored at exactly this (decoded) key.
    Accept(String),
    /// Malformed percent-escapes the contract leaves open: either
    /// `400 invalid-key`, or stored literally at exactly this key.
    LiteralOrReject(String),
}

#[derive(Debug, Clone)]
struct Case {
    /// The key part of the request target, exactly as sent.
    raw: Vec<u8>,
    expect: Expect,
}

fn reject(raw: impl Into<Vec<u8>>, rules: &'static [Rule]) -> Case {
    Case { raw: raw.into(), expect: Expect::Reject(rules) }
}

fn accept(raw: impl Into<Vec<u8>>, key: impl Into<String>) -> Case {
    Case { raw: raw.into(), expect: Expect::Accept(key.into()) }
}

fn literal_or_reject(raw: impl Into<Vec<u8>>, key: impl Into<String>) -> Case {
    Case { raw: raw.into(), expect: Expect::LiteralOrReject(key.into()) }
}

/// Percent-encodes every byte.
fn encode_all(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// A name no other test run uses, for traversals that would leave the temp
/// root, so that their target can be checked for afterwards.
fn escape_marker() -> String {
    format!("spillway-escape-{}", std::process::id())
}

const DOT: &[Rule] = &[Rule::Dot];
const EDGE: &[Rule] = &[Rule::Edge];
const EMPTY_SEG: &[Rule] = &[Rule::EmptySegment];
const BACKSLASH: &[Rule] = &[Rule::Backslash];
const CONTROL: &[Rule] = &[Rule::Control];
const NOT_UTF8: &[Rule] = &[Rule::NotUtf8];

fn corpus() -> Vec<Case> {
    let m = escape_marker();
    let seg255 = "s".repeat(255);
    let cjk85 = "日".repeat(85); // 255 bytes, 85 characters
    let cjk86 = "月".repeat(86); // 258 bytes, 86 characters
    let key1024 = ["k".repeat(255), "l".repeat(255), "m".repeat(255), "n".repeat(254), "o".into()].join("/");
    let key1025 = ["u".repeat(255), "v".repeat(255), "w".repeat(255), "x".repeat(255), "y".into()].join("/");
    // 1024 bytes once decoded, ~3 KiB as sent.
    let e127 = "é".repeat(127);
    let key1024_encoded = [e127.as_str(), e127.as_str(), e127.as_str(), e127.as_str(), "abcd"].join("/");
    assert_eq!(key1024.len(), 1024);
    assert_eq!(key1025.len(), 1025);
    assert_eq!(key1024_encoded.len(), 1024);

    vec![
        // --- dot segments, plain and encoded ---
        reject("..", DOT),
        reject(".", DOT),
        reject("%2e%2e", DOT),
        reject("%2E%2e/x", DOT),
        reject("%2e", DOT),
        reject(".%2e", DOT),
        reject("%2E.", DOT),
        reject("a/../b", DOT),
        reject("a/./b", DOT),
        reject("./a", DOT),
        reject("a/..", DOT),
        reject("x/%2E", DOT),
        reject("../../etc/passwd", DOT),
        reject("%2e%2e%2f%2e%2e%2fetc%2fpasswd", DOT),
        reject("%2e%2e/%2e%2e", DOT),
        reject("a%2f..%2fb", DOT),
        reject(format!("%2E%2E%2F%2E%2E%2F%2E%2E%2F{m}"), DOT),
        reject(format!("nested/..%2f..%2f..%2f{m}"), DOT),
        // --- leading / trailing slash, absolute paths ---
        reject("/etc/passwd", EDGE),
        reject("%2fetc%2fpasswd", EDGE),
        reject("%2Fa", EDGE),
        reject("a/", EDGE),
        reject("a%2f", EDGE),
        reject("%2e%2e%2f", &[Rule::Edge, Rule::Dot]),
        // --- empty segments ---
        reject("a//b", EMPTY_SEG),
        reject("a///b", EMPTY_SEG),
        reject("a%2f%2fb", EMPTY_SEG),
        reject("a/%2fb", EMPTY_SEG),
        // --- backslashes ---
        reject("a%5cb", BACKSLASH),
        reject("a%5Cb", BACKSLASH),
        reject(r"a\b", BACKSLASH),
        reject("..%5c..%5cwindows", BACKSLASH),
        reject(format!("%5c..%5c..%5c{m}"), BACKSLASH),
        reject(format!(r"..\..\..\{m}"), BACKSLASH),
        // --- control characters: C0 (NUL included), DEL, C1 ---
        reject("a%00b", CONTROL),
        reject("%00", CONTROL),
        reject(format!("a%00/../../../{m}"), &[Rule::Control, Rule::Dot]),
        reject("%01", CONTROL),
        reject("a%09b", CONTROL),
        reject("a%0a", CONTROL),
        reject("a%0d%0aX-Injected:%201", CONTROL),
        reject("%1f", CONTROL),
        reject("%7f", CONTROL),
        reject("%c2%85", CONTROL),
        reject("%C2%80", CONTROL),
        reject("%c2%9f", CONTROL),
        reject(b"raw-nel-\xc2\x85".to_vec(), CONTROL),
        // --- not UTF-8 once decoded ---
        reject("%c0%ae%c0%ae", NOT_UTF8),
        reject("%c0%af", NOT_UTF8),
        reject("%e0%80%ae", NOT_UTF8),
        reject("%ff", NOT_UTF8),
        reject("%c3", NOT_UTF8),
        reject("%ed%a0%80", NOT_UTF8),
        reject("%f8%88%80%80%80", NOT_UTF8),
        // --- lengths, in bytes not characters ---
        reject(key1025, &[Rule::TooLong]),
        reject("t".repeat(256), &[Rule::SegmentTooLong]),
        reject(encode_all(&cjk86), &[Rule::SegmentTooLong]),
        // --- valid: decoded exactly once, kept as sent ---
        accept("%252e%252e", "%2e%2e"),
        accept("%252e%252e%252fetc%252fpasswd", "%2e%2e%2fetc%2fpasswd"),
        accept("%2525", "%25"),
        accept("%25", "%"),
        accept("...", "..."),
        accept("nested/%2e%2e%2e/x", "nested/.../x"),
        accept("..a", "..a"),
        accept("a..", "a.."),
        accept(".hidden", ".hidden"),
        accept("%20..", " .."),
        accept("..%20", ".. "),
        accept("a%20b", "a b"),
        accept("a%3Fb", "a?b"),
        accept("a%23b", "a#b"),
        accept("q%3Fx%3D1%26y%3D2", "q?x=1&y=2"),
        accept("semi;colon,comma=eq+plus", "semi;colon,comma=eq+plus"),
        accept("tilde~!$'()*@", "tilde~!$'()*@"),
        // --- unicode look-alikes: literal names, never separators or dots ---
        accept("%EF%BC%85%EF%BC%92%EF%BD%85", "％２ｅ"),
        accept("%EF%BC%8E%EF%BC%8E", "．．"),
        accept("uni/．．/．．/etc".as_bytes().to_vec(), "uni/．．/．．/etc"),
        accept("%E3%80%82%E3%80%82", "。。"),
        accept("a%E2%88%95..%E2%88%95b", "a∕..∕b"),
        accept("%E2%88%95etc%E2%88%95passwd", "∕etc∕passwd"),
        accept("%E2%80%A4%E2%80%A4", "․․"),
        accept("%E2%80%A4/%E2%80%A4%E2%80%A4/x", "․/․․/x"),
        accept("%E2%80%AEtxt.exe", "\u{202E}txt.exe"),
        accept("%E2%80%AE..", "\u{202E}.."),
        accept("%EF%BC%8F..%EF%BC%8F", "／..／"),
        accept("%EF%BC%BC..%EF%BC%BCwindows", "＼..＼windows"),
        accept("%EF%B9%A8..", "﹨.."),
        accept("%E2%80%8B..", "\u{200B}.."),
        accept("%EF%BB%BF..", "\u{FEFF}.."),
        accept(".%CC%81", ".\u{301}"),
        accept("%C2%A0..", "\u{A0}.."),
        accept("%F0%9F%98%80.csv", "😀.csv"),
        accept("%EF%BF%BF", "\u{FFFF}"),
        accept("%F4%8F%BF%BF", "\u{10FFFF}"),
        accept("caf\u{e9}-raw".as_bytes().to_vec(), "caf\u{e9}-raw"),
        // --- lengths at the limit ---
        accept(seg255.clone(), seg255),
        accept(encode_all(&cjk85), cjk85),
        accept(key1024.clone(), key1024),
        accept(encode_all(&key1024_encoded).replace("%2F", "/"), key1024_encoded),
        // --- malformed escapes: open in the contract, never a traversal ---
        literal_or_reject("%zz", "%zz"),
        literal_or_reject("%2", "%2"),
        literal_or_reject("100%", "100%"),
        literal_or_reject("%%32%65", "%2e"),
        literal_or_reject("%%2e%2e", "%.."),
    ]
}

/// The corpus must not contradict itself: distinct keys, none the folder
/// of another (which would be a legitimate `409`).
fn check_corpus(cases: &[Case]) {
    let mut keys = BTreeSet::new();
    for case in cases {
        if let Expect::Accept(k) | Expect::LiteralOrReject(k) = &case.expect {
            assert!(keys.insert(k.clone()), "corpus has key {k:?} twice");
        }
    }
    for k in &keys {
        for other in &keys {
            assert!(!other.starts_with(&format!("{k}/")), "corpus key {k:?} is a folder of {other:?}");
        }
    }
    let raws: BTreeSet<&Vec<u8>> = cases.iter().map(|c| &c.raw).collect();
    assert_eq!(raws.len(), cases.len(), "corpus has a raw path twice");
}

// ---------------------------------------------------------------------------
// The file system around the node
// ---------------------------------------------------------------------------

/// Every non-directory entry below `dir` (symlinks are listed, not followed).
fn entries_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(entries_below(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Every directory below `dir` (not following symlinks).
fn dirs_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            out.push(path.clone());
            out.extend(dirs_below(&path));
        }
    }
    out
}

/// Asserts that everything in the temp root is where the node may write:
/// `<data_dir>/datasets/**`, `<data_dir>/blobs/**` (named by content, never
/// by key), `<data_dir>/index.sqlite*`, the spool and staging directories,
/// the node's log, or was there before the test.
fn assert_nothing_outside_data_dir(node: &TestNode, baseline: &BTreeSet<PathBuf>) {
    let root = node.root.path();
    let datasets = node.datasets_dir();
    let allowed = |p: &Path| {
        p.starts_with(&datasets)
            || blob_file(&node.data_dir, p)
            || (p.parent() == Some(node.data_dir.as_path())
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("index.sqlite")))
            || p.starts_with(&node.spool_dir)
            || p.starts_with(node.data_dir.join("staging"))
            || p.starts_with(node.data_dir.join("spool"))
            || p == root.join("node.log")
            || baseline.contains(p)
    };
    let stray: Vec<PathBuf> = entries_below(root).into_iter().filter(|p| !allowed(p)).collect();
    assert!(stray.is_empty(), "files outside the data directory: {stray:?}");
    // Nothing below datasets/ may be a symlink or anything but a file.
    for p in entries_below(&datasets) {
        let meta = fs::symlink_metadata(&p).unwrap();
        assert!(meta.is_file(), "{} is not a regular file", p.display());
    }
    // Traversals aimed past the temp root.
    let marker = escape_marker();
    for dir in [root.parent().unwrap(), root, node.data_dir.as_path()] {
        assert!(!dir.join(&marker).exists(), "a traversal wrote {}", dir.join(&marker).display());
    }
}

/// A blob's file or folder: `blobs/HH/<64 hex>.<size>` with HH its first
/// two digits, whatever key the bytes came with.
fn blob_file(data_dir: &Path, p: &Path) -> bool {
    let Ok(rel) = p.strip_prefix(data_dir.join("blobs")) else { return false };
    let parts: Vec<&str> = rel.iter().filter_map(|s| s.to_str()).collect();
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    match parts.as_slice() {
        [] => true,
        [folder] => folder.len() == 2 && hex(folder),
        [folder, name] => name.split_once('.').is_some_and(|(digest, size)| {
            digest.len() == 64 && hex(digest) && digest.starts_with(folder) && size.parse::<u64>().is_ok()
        }),
        _ => false,
    }
}

fn baseline(node: &TestNode) -> BTreeSet<PathBuf> {
    entries_below(node.root.path()).into_iter().collect()
}

/// `/etc/passwd`'s length and mtime, to show the absolute-path keys did not
/// touch it.
fn passwd_stamp() -> Option<(u64, std::time::SystemTime)> {
    let meta = fs::metadata("/etc/passwd").ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

// ---------------------------------------------------------------------------
// Assertions on responses
// ---------------------------------------------------------------------------

fn target(prefix: &str, raw: &[u8], suffix: &str) -> Vec<u8> {
    let mut t = prefix.as_bytes().to_vec();
    t.extend_from_slice(raw);
    t.extend_from_slice(suffix.as_bytes());
    t
}

fn show(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    if s.chars().count() > 80 {
        let head: String = s.chars().take(60).collect();
        format!("{head:?}…({} bytes)", raw.len())
    } else {
        format!("{s:?}")
    }
}

/// A `400 invalid-key` problem; the detail names one of `rules` (any rule
/// when `rules` is empty).
fn assert_invalid_key(resp: &Raw, rules: &[Rule], what: &str) {
    assert_eq!(resp.status, 400, "{what}: {resp:?} {}", resp.text());
    if resp.body.is_empty() {
        // HEAD: the status and the type are all there is.
        return;
    }
    let ct = resp.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/problem+json"), "{what}: content type {ct:?}");
    let problem = resp.json();
    assert_eq!(problem["code"], "invalid-key", "{what}: {problem}");
    assert_eq!(problem["status"], 400, "{what}: {problem}");
    assert!(problem["type"].is_string() && problem["title"].is_string(), "{what}: {problem}");
    let detail = problem["detail"].as_str().unwrap_or_default().to_lowercase();
    if !rules.is_empty() {
        assert!(
            rules.iter().flat_map(|r| r.words()).any(|w| detail.contains(w)),
            "{what}: detail {detail:?} does not name the rule {rules:?}"
        );
    }
}

/// Every route that takes a key refuses it.
fn assert_rejected_everywhere(node: &TestNode, raw: &[u8], rules: &[Rule], body: &[u8]) {
    let what = show(raw);
    let put = send(node, "PUT", &target("/data/", raw, ""), &[], body);
    assert_invalid_key(&put, rules, &format!("PUT {what}"));
    let get = send(node, "GET", &target("/data/", raw, ""), &[], b"");
    assert_invalid_key(&get, rules, &format!("GET /data/{what}"));
    let head = send(node, "HEAD", &target("/data/", raw, ""), &[], b"");
    assert_eq!(head.status, 400, "HEAD /data/{what}");
    assert!(head.body.is_empty(), "HEAD /data/{what} has a body");
    let record = send(node, "GET", &target("/datasets/", raw, ""), &[], b"");
    assert_invalid_key(&record, rules, &format!("GET /datasets/{what}"));
    let delete = send(node, "DELETE", &target("/datasets/", raw, ""), &[], b"");
    assert_invalid_key(&delete, rules, &format!("DELETE /datasets/{what}"));
    let json = [("Content-Type", "application/json")];
    let patch = send(node, "PATCH", &target("/datasets/", raw, ""), &json, br#"{"name":"x"}"#);
    assert_invalid_key(&patch, rules, &format!("PATCH /datasets/{what}"));
    let ack = send(node, "POST", &target("/datasets/", raw, "/action/acknowledge"), &json, b"{}");
    assert_invalid_key(&ack, rules, &format!("POST /datasets/{what}/action/acknowledge"));
}

/// The path of a key's file; every key segment is one path component.
fn file_of(node: &TestNode, key: &str) -> PathBuf {
    let mut p = node.datasets_dir();
    for segment in key.split('/') {
        p.push(segment);
    }
    p
}

/// An accepted key was stored, strictly inside `datasets/`, and every route
/// reaches it.
fn assert_stored(node: &TestNode, raw: &[u8], key: &str, body: &[u8], put: &Raw) {
    let what = show(raw);
    assert_eq!(put.status, 201, "PUT {what}: {}", put.text());
    let record = put.json();
    assert_eq!(record["key"], key, "PUT {what}");
    assert_eq!(record["name"], key.rsplit('/').next().unwrap(), "PUT {what}");
    assert_eq!(record["size"], body.len(), "PUT {what}");

    let file = file_of(node, key);
    let meta = fs::symlink_metadata(&file).unwrap_or_else(|e| panic!("{what}: no file at {}: {e}", file.display()));
    assert!(meta.is_file(), "{what}: {} is not a file", file.display());
    let canonical = fs::canonicalize(&file).unwrap();
    let datasets = fs::canonicalize(node.datasets_dir()).unwrap();
    assert!(canonical.starts_with(&datasets) && canonical != datasets, "{what}: stored at {}", canonical.display());
    assert_eq!(fs::read(&file).unwrap(), body, "{what}: file content");

    let get = send(node, "GET", &target("/data/", raw, ""), &[], b"");
    assert_eq!(get.status, 200, "GET /data/{what}: {}", get.text());
    assert_eq!(get.body, body, "GET /data/{what}");
    let by_record = send(node, "GET", &target("/datasets/", raw, ""), &[], b"");
    assert_eq!(by_record.status, 200, "GET /datasets/{what}: {}", by_record.text());
    assert_eq!(by_record.json()["key"], key, "GET /datasets/{what}");
    // The record's `path` is a URL that serves the same bytes.
    let path = record["path"].as_str().unwrap();
    assert!(path.starts_with("/data/"), "{what}: path {path:?}");
    let via_path = send(node, "GET", path.as_bytes(), &[], b"");
    assert_eq!(via_path.status, 200, "GET {path} (record path of {what})");
    assert_eq!(via_path.body, body, "GET {path} (record path of {what})");
}

async fn listed_keys(node: &TestNode) -> BTreeSet<String> {
    let listed = node.json("/datasets?limit=10000").await;
    listed.as_array().unwrap().iter().map(|r| r["key"].as_str().unwrap().to_string()).collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[tokio::test]
async fn hostile_key_corpus() {
    let node = TestNode::start();
    let cases = corpus();
    assert!(cases.len() >= 45, "corpus has only {} keys", cases.len());
    check_corpus(&cases);
    let before = baseline(&node);
    let passwd = passwd_stamp();

    // Phase 1: every key, every route. Accepted datasets stay in place, so
    // that a key that escaped cannot be cleaned up by its own DELETE.
    let mut stored: Vec<(Vec<u8>, String)> = Vec::new();
    let (mut rejected, mut literal) = (0, 0);
    for (i, case) in cases.iter().enumerate() {
        let body = format!("body of case {i}").into_bytes();
        match &case.expect {
            Expect::Reject(rules) => {
                assert_rejected_everywhere(&node, &case.raw, rules, &body);
                rejected += 1;
            }
            Expect::Accept(key) => {
                let put = send(&node, "PUT", &target("/data/", &case.raw, ""), &[], &body);
                assert_stored(&node, &case.raw, key, &body, &put);
                stored.push((case.raw.clone(), key.clone()));
            }
            Expect::LiteralOrReject(key) => {
                let put = send(&node, "PUT", &target("/data/", &case.raw, ""), &[], &body);
                if put.status == 400 {
                    assert_rejected_everywhere(&node, &case.raw, &[], &body);
                    rejected += 1;
                } else {
                    assert_stored(&node, &case.raw, key, &body, &put);
                    stored.push((case.raw.clone(), key.clone()));
                    literal += 1;
                }
            }
        }
    }
    eprintln!(
        "{} keys: {rejected} rejected, {} stored ({literal} malformed escapes kept literally)",
        cases.len(),
        stored.len()
    );

    // Phase 2: exactly the accepted keys exist, as files and as records,
    // and nothing exists outside the data directory.
    let expected_files: BTreeSet<PathBuf> = stored.iter().map(|(_, k)| file_of(&node, k)).collect();
    let actual_files: BTreeSet<PathBuf> = entries_below(&node.datasets_dir()).into_iter().collect();
    assert_eq!(actual_files, expected_files, "files below datasets/");
    let expected_keys: BTreeSet<String> = stored.iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(listed_keys(&node).await, expected_keys, "catalog keys");
    assert_nothing_outside_data_dir(&node, &before);
    assert!(node.wait_spool_empty(Duration::from_secs(5)).is_empty());

    // Phase 3: delete each through its raw key; the bytes and the folders go.
    for (raw, key) in &stored {
        let what = show(raw);
        let delete = send(&node, "DELETE", &target("/datasets/", raw, ""), &[], b"");
        assert_eq!(delete.status, 204, "DELETE /datasets/{what}: {}", delete.text());
        let get = send(&node, "GET", &target("/data/", raw, ""), &[], b"");
        assert_eq!(get.status, 404, "GET /data/{what} after DELETE");
        assert_eq!(get.json()["code"], "not-found");
        assert!(!file_of(&node, key).exists(), "{what}: file left after DELETE");
    }
    assert_eq!(entries_below(&node.datasets_dir()), Vec::<PathBuf>::new());
    assert_eq!(dirs_below(&node.datasets_dir()), Vec::<PathBuf>::new(), "folders not pruned");
    assert!(listed_keys(&node).await.is_empty());
    assert_nothing_outside_data_dir(&node, &before);
    assert_eq!(passwd_stamp(), passwd, "/etc/passwd changed");
}

/// `/data/` and `/datasets/` with nothing after them: no key.
#[tokio::test]
async fn empty_key_is_invalid() {
    let node = TestNode::start();
    let put = send(&node, "PUT", b"/data/", &[], b"x");
    assert_invalid_key(&put, &[Rule::Empty], "PUT /data/");
    let get = send(&node, "GET", b"/data/", &[], b"");
    assert_invalid_key(&get, &[Rule::Empty], "GET /data/");
    let delete = send(&node, "DELETE", b"/datasets/", &[], b"");
    assert_invalid_key(&delete, &[Rule::Empty], "DELETE /datasets/");
    let ack = send(&node, "POST", b"/datasets//action/acknowledge", &[], b"{}");
    assert_invalid_key(&ack, &[Rule::Empty, Rule::Edge], "acknowledge of an empty key");
    assert!(node.dataset_files().is_empty());
}

/// Bytes the HTTP layer refuses in a request line before any route runs
/// (raw controls, space, invalid UTF-8, characters hyper forbids): the
/// answer is a 400 and nothing is created.
#[tokio::test]
async fn raw_bytes_refused_before_routing() {
    let node = TestNode::start();
    let before = baseline(&node);
    let cases: &[&[u8]] = &[
        b"a b",
        b"a\tb",
        b"a\x00b",
        b"a\x01b",
        b"a\x1bb",
        b"a\x7fb",
        b"a\rb",
        b"a`b",
        b"a<b>",
        b"a\xffb",
        b"a\x85b",
        b"\xc0\xae\xc0\xae",
        b"\xed\xa0\x80",
    ];
    for raw in cases {
        let what = show(raw);
        for (method, prefix) in [("PUT", "/data/"), ("GET", "/data/"), ("DELETE", "/datasets/")] {
            let resp = send(&node, method, &target(prefix, raw, ""), &[], b"payload");
            assert_eq!(resp.status, 400, "{method} {prefix}{what}: {resp:?}");
            if !resp.body.is_empty() {
                let ct = resp.header("content-type").unwrap_or_default();
                assert!(
                    ct.starts_with("application/problem+json"),
                    "{method} {prefix}{what}: an error body that is not problem+json: {ct:?} {}",
                    resp.text()
                );
            }
        }
    }
    assert!(node.dataset_files().is_empty(), "{:?}", node.dataset_files());
    assert!(listed_keys(&node).await.is_empty());
    assert_nothing_outside_data_dir(&node, &before);
}

/// A raw `#` cannot be in a request target; hyper treats it as the start of
/// a fragment and drops the rest. Whatever the node makes of it, nothing
/// after the `#` is part of the key and nothing escapes.
#[tokio::test]
async fn raw_fragment_never_reaches_the_key() {
    let node = TestNode::start();
    let before = baseline(&node);
    let m = escape_marker();
    let cases = [(format!("frag#/../../../{m}"), "frag"), ("x#y".to_string(), "x"), (format!("#/../../{m}"), "")];
    for (raw, before_hash) in &cases {
        let put = send(&node, "PUT", &target("/data/", raw.as_bytes(), ""), &[], b"f");
        match put.status {
            400 => assert_eq!(put.json()["code"], "invalid-key", "{raw}"),
            200 | 201 => assert_eq!(put.json()["key"], *before_hash, "{raw}"),
            other => panic!("PUT /data/{raw}: {other} {}", put.text()),
        }
    }
    let keys = listed_keys(&node).await;
    assert!(keys.iter().all(|k| !k.contains('#') && !k.contains(&m)), "{keys:?}");
    assert_nothing_outside_data_dir(&node, &before);
}

/// `%2F` means `/` (the chosen behaviour): `a%2Fb` is the dataset `a/b`.
#[tokio::test]
async fn encoded_slash_is_a_separator() {
    let node = TestNode::start();
    let put = send(&node, "PUT", b"/data/a%2Fb", &[], b"first");
    assert_eq!(put.status, 201, "{}", put.text());
    let record = put.json();
    assert_eq!(record["key"], "a/b");
    assert_eq!(record["name"], "b");
    assert_eq!(record["path"], "/data/a/b");
    assert_eq!(fs::read(node.datasets_dir().join("a").join("b")).unwrap(), b"first");

    let get = send(&node, "GET", b"/data/a/b", &[], b"");
    assert_eq!((get.status, get.body.as_slice()), (200, &b"first"[..]));
    // Lower-case escape, and the other way round: the same dataset.
    let replace = send(&node, "PUT", b"/data/a/b", &[], b"second");
    assert_eq!(replace.status, 200, "{}", replace.text());
    let get = send(&node, "GET", b"/data/a%2fb", &[], b"");
    assert_eq!((get.status, get.body.as_slice()), (200, &b"second"[..]));
    let by_record = send(&node, "GET", b"/datasets/a%2Fb", &[], b"");
    assert_eq!(by_record.status, 200);
    assert_eq!(by_record.json()["key"], "a/b");
    let patch = send(
        &node,
        "PATCH",
        b"/datasets/a%2Fb",
        &[("Content-Type", "application/json")],
        br#"{"description":"via %2F"}"#,
    );
    assert_eq!(patch.status, 200, "{}", patch.text());
    assert_eq!(patch.json()["key"], "a/b");
    let ack = send(&node, "POST", b"/datasets/a%2Fb/action/acknowledge", &[], b"{}");
    assert_eq!(ack.status, 200, "{}", ack.text());
    assert_eq!(ack.json()["description"], "via %2F");

    assert_eq!(listed_keys(&node).await, BTreeSet::from(["a/b".to_string()]));
    assert_eq!(node.dataset_files(), vec![node.datasets_dir().join("a").join("b")]);

    let delete = send(&node, "DELETE", b"/datasets/a%2Fb", &[], b"");
    assert_eq!(delete.status, 204);
    assert_eq!(send(&node, "GET", b"/data/a/b", &[], b"").status, 404);
    assert!(dirs_below(&node.datasets_dir()).is_empty());
}

/// Keys are case-sensitive and Unicode is kept as sent (no normalisation):
/// `Case`/`case` and NFC/NFD `é` are four datasets.
#[tokio::test]
async fn keys_are_case_sensitive_and_not_normalised() {
    let node = TestNode::start();
    let cases: [(&[u8], &str); 4] =
        [(b"Case", "Case"), (b"case", "case"), (b"caf%C3%A9", "caf\u{e9}"), (b"cafe%CC%81", "cafe\u{301}")];
    for (i, (raw, key)) in cases.iter().enumerate() {
        let put = send(&node, "PUT", &target("/data/", raw, ""), &[], format!("v{i}").as_bytes());
        assert_eq!(put.status, 201, "{key:?}: {}", put.text());
        assert_eq!(put.json()["key"], *key);
    }
    for (i, (raw, key)) in cases.iter().enumerate() {
        let get = send(&node, "GET", &target("/data/", raw, ""), &[], b"");
        assert_eq!(get.body, format!("v{i}").as_bytes(), "{key:?}");
        assert_eq!(fs::read(file_of(&node, key)).unwrap(), format!("v{i}").as_bytes());
    }
    assert_eq!(node.dataset_files().len(), 4);
    assert_eq!(listed_keys(&node).await.len(), 4);
}

fn assert_conflict(resp: &Raw, what: &str) {
    assert_eq!(resp.status, 409, "{what}: {}", resp.text());
    assert!(resp.header("content-type").unwrap_or_default().starts_with("application/problem+json"));
    assert_eq!(resp.json()["code"], "key-conflict", "{what}");
}

/// `a` and `a/b` cannot both exist, in either order, at any depth; a
/// refused upload leaves nothing; deleting the last dataset below a folder
/// prunes the folder so that the folder's name becomes free.
#[tokio::test]
async fn prefix_conflicts_both_ways() {
    let node = TestNode::start();

    // File first, then something below it.
    assert_eq!(send(&node, "PUT", b"/data/a", &[], b"file a").status, 201);
    assert_conflict(&send(&node, "PUT", b"/data/a/b", &[], b"below a"), "PUT a/b over a");
    assert_conflict(&send(&node, "PUT", b"/data/a/b/c", &[], b"deep"), "PUT a/b/c over a");
    assert_conflict(&send(&node, "PUT", b"/data/a%2Fb", &[], b"enc"), "PUT a%2Fb over a");
    assert_eq!(send(&node, "GET", b"/datasets/a/b", &[], b"").status, 404);
    assert_eq!(fs::read(node.datasets_dir().join("a")).unwrap(), b"file a");

    // Folder first, then a file at the folder's name (and at a middle level).
    assert_eq!(send(&node, "PUT", b"/data/p/q/r", &[], b"deep").status, 201);
    assert_conflict(&send(&node, "PUT", b"/data/p", &[], b"over folder"), "PUT p over p/q/r");
    assert_conflict(&send(&node, "PUT", b"/data/p/q", &[], b"over folder"), "PUT p/q over p/q/r");
    assert_eq!(send(&node, "GET", b"/datasets/p", &[], b"").status, 404);
    assert_eq!(send(&node, "GET", b"/datasets/p/q", &[], b"").status, 404);
    assert_eq!(fs::read(node.datasets_dir().join("p/q/r")).unwrap(), b"deep");
    // A sibling that only shares a prefix of characters is no conflict.
    assert_eq!(send(&node, "PUT", b"/data/p-q", &[], b"sibling").status, 201);
    assert_eq!(send(&node, "PUT", b"/data/ab", &[], b"sibling").status, 201);

    // Nothing of the refused uploads is left.
    assert!(node.wait_spool_empty(Duration::from_secs(5)).is_empty());
    assert_eq!(listed_keys(&node).await, ["a", "ab", "p-q", "p/q/r"].map(String::from).into_iter().collect());

    // Deleting the only dataset below a folder frees the folder's name.
    assert_eq!(send(&node, "DELETE", b"/datasets/p/q/r", &[], b"").status, 204);
    assert!(!node.datasets_dir().join("p").exists(), "empty folders not pruned");
    let put = send(&node, "PUT", b"/data/p", &[], b"now a file");
    assert_eq!(put.status, 201, "{}", put.text());
    assert_eq!(fs::read(node.datasets_dir().join("p")).unwrap(), b"now a file");

    // And the first case the other way round.
    assert_eq!(send(&node, "DELETE", b"/datasets/a", &[], b"").status, 204);
    assert_eq!(send(&node, "PUT", b"/data/a/b", &[], b"now below").status, 201);
    assert_conflict(&send(&node, "PUT", b"/data/a", &[], b"x"), "PUT a over a/b");
    assert_eq!(send(&node, "DELETE", b"/datasets/a/b", &[], b"").status, 204);
    let put = send(&node, "PUT", b"/data/a", &[], b"a again");
    assert_eq!(put.status, 201, "{}", put.text());
    assert!(node.datasets_dir().join("a").is_file());
    assert!(node.wait_spool_empty(Duration::from_secs(5)).is_empty());
}

/// A multipart form whose `key` field or file name is hostile.
fn form(key: Option<&str>, filename: &str) -> (String, Vec<u8>) {
    let boundary = "keys-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    if let Some(key) = key {
        write!(body, "--{boundary}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n{key}\r\n").unwrap();
    }
    write!(
        body,
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: text/plain\r\n\r\nhostile\r\n--{boundary}--\r\n"
    )
    .unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The multipart form's `key` field (not percent-encoded: taken as is) and
/// its file-name fallback follow the same rules.
#[tokio::test]
async fn multipart_keys_follow_the_same_rules() {
    let node = TestNode::start();
    let before = baseline(&node);
    let m = escape_marker();
    let bad_keys = [
        ("..".to_string(), DOT),
        (format!("../../../{m}"), DOT),
        ("a/./b".into(), DOT),
        ("/etc/passwd".into(), EDGE),
        ("a/".into(), EDGE),
        ("a//b".into(), EMPTY_SEG),
        (format!(r"..\..\{m}"), BACKSLASH),
        ("a\u{1}b".into(), CONTROL),
        ("a\u{85}b".into(), CONTROL),
        ("x".repeat(256), &[Rule::SegmentTooLong][..]),
    ];
    for (key, rules) in &bad_keys {
        let (ct, body) = form(Some(key), "fine.txt");
        let resp = node.client.post(node.url("/datasets")).header("Content-Type", ct).body(body).send().await.unwrap();
        let raw = Raw {
            status: resp.status().as_u16(),
            headers: vec![(
                "content-type".into(),
                resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default(),
            )],
            body: resp.bytes().await.unwrap().to_vec(),
        };
        assert_invalid_key(&raw, rules, &format!("multipart key {key:?}"));
    }
    // No key field: the file name is the key, and it is checked too.
    for filename in [format!("../../{m}"), "..".into(), format!(r"..\{m}")] {
        let (ct, body) = form(None, &filename);
        let resp = node.client.post(node.url("/datasets")).header("Content-Type", ct).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "file name {filename:?}");
        let problem: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(problem["code"], "invalid-key", "file name {filename:?}");
    }
    // A look-alike is a literal name.
    let (ct, body) = form(Some("．．/．．/etc"), "fine.txt");
    let resp = node.client.post(node.url("/datasets")).header("Content-Type", ct).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(fs::read(file_of(&node, "．．/．．/etc")).unwrap(), b"hostile");

    assert!(node.wait_spool_empty(Duration::from_secs(5)).is_empty());
    assert_eq!(node.dataset_files().len(), 1);
    assert_nothing_outside_data_dir(&node, &before);
}

/// Paths that Rocket routes after normalising them (`//data/K` is routed as
/// `/data/K`): a request acts on the key its route matched (`secret`) or is
/// refused, and never on a key cut from another part of the path
/// (`data/secret`, `datasets/secret`).
#[tokio::test]
async fn a_request_acts_only_on_the_key_its_route_matched() {
    let node = TestNode::start();
    let keys = ["secret", "data/secret", "datasets/secret"];
    for key in keys {
        let put = send(&node, "PUT", format!("/data/{key}").as_bytes(), &[], format!("bytes of {key}").as_bytes());
        assert_eq!(put.status, 201, "PUT {key}: {}", put.text());
    }
    let json = [("Content-Type", "application/json")];
    let data_tricks = ["//data/", "///data/", "//data//", "/dat%61/", "/%64ata/", "//dat%61/", "/./data/", "/%2Fdata/"];
    let record_tricks =
        ["//datasets/", "///datasets/", "//datasets//", "/dataset%73/", "/%2Fdatasets/", "/./datasets/"];
    let mut sent = Vec::new();
    for prefix in data_tricks {
        let target = format!("{prefix}secret");
        sent.push(("GET /data", target.clone(), send(&node, "GET", target.as_bytes(), &[], b"")));
        sent.push(("HEAD", target.clone(), send(&node, "HEAD", target.as_bytes(), &[], b"")));
        sent.push(("PUT", target.clone(), send(&node, "PUT", target.as_bytes(), &[], b"overwritten")));
    }
    for prefix in record_tricks {
        let target = format!("{prefix}secret");
        let ack = format!("{target}/action/acknowledge");
        sent.push(("GET", target.clone(), send(&node, "GET", target.as_bytes(), &[], b"")));
        let patch = br#"{"description":"patched"}"#;
        sent.push(("PATCH", target.clone(), send(&node, "PATCH", target.as_bytes(), &json, patch)));
        sent.push(("POST", ack.clone(), send(&node, "POST", ack.as_bytes(), &json, br#"{"name":"acked"}"#)));
        sent.push(("DELETE", target.clone(), send(&node, "DELETE", target.as_bytes(), &[], b"")));
    }
    for (method, target, resp) in &sent {
        let what = format!("{method} {target}");
        match resp.status {
            200..=299 if resp.body.is_empty() => assert!(matches!(*method, "HEAD" | "DELETE"), "{what}: no body"),
            200..=299 if *method == "GET /data" => assert_eq!(resp.text(), "bytes of secret", "{what}"),
            200..=299 => assert_eq!(resp.json()["key"], "secret", "{what}: {}", resp.text()),
            400 | 404 if resp.body.is_empty() => assert_eq!(*method, "HEAD", "{what}: no problem body"),
            400 => assert_eq!(resp.json()["code"], "invalid-key", "{what}"),
            404 => assert_eq!(resp.json()["code"], "not-found", "{what}"),
            other => panic!("{what}: {other} {}", resp.text()),
        }
    }
    // The other keys are exactly as they were: bytes, name, description.
    for key in ["data/secret", "datasets/secret"] {
        let get = send(&node, "GET", format!("/data/{key}").as_bytes(), &[], b"");
        assert_eq!((get.status, get.text()), (200, format!("bytes of {key}")), "{key}");
        let record = send(&node, "GET", format!("/datasets/{key}").as_bytes(), &[], b"").json();
        assert_eq!(record["name"], "secret", "{key}: {record}");
        assert!(record["description"].is_null(), "{key}: {record}");
    }
}
