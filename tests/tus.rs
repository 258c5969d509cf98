//! Resumable uploads (tus 1.0.0) on the real binary: a table of requests →
//! status + headers in tusd's style, then scenarios for each extension, the
//! limits, stalls, broken-off bodies, takeover, a kill -9 mid-upload, and a
//! conflict found only at completion.
//!
//! Every response under `/uploads` must carry `Tus-Resumable: 1.0.0`; the
//! helpers check that on every call.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use common::reply::Reply;
use common::*;
use digest::Digest;

const OCTET: &str = "application/offset+octet-stream";
const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;
const EXTENSIONS: [&str; 7] = [
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "checksum",
    "expiration",
    "concatenation",
];
/// A well-formed upload id that no upload has.
const UNKNOWN: &str = "/uploads/0123456789abcdef0123456789abcdef";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// An `Upload-Metadata` value: `name base64(value)` pairs.
fn meta(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k} {}", b64(v.as_bytes()))).collect::<Vec<_>>().join(",")
}

fn checksum<D: Digest>(name: &str, data: &[u8]) -> String {
    format!("{name} {}", b64(&D::digest(data)))
}

fn under_uploads(path: &str) -> bool {
    let path = path.strip_prefix("http://").and_then(|p| p.find('/').map(|i| &p[i..])).unwrap_or(path);
    path == "/uploads" || path.starts_with("/uploads/")
}

/// Sends one request (bounded) and reads the whole answer; no checks.
async fn call_raw(node: &TestNode, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Reply {
    let url = if path.starts_with("http://") { path.to_string() } else { node.url(path) };
    let method_ = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = node.client.request(method_, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = tokio::time::timeout(Duration::from_secs(30), req.send())
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer in 30 s"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(30), resp.bytes())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| b.to_vec())
        .unwrap_or_default();
    Reply { status, headers, body }
}

/// [`call_raw`], and every answer under `/uploads` must say `Tus-Resumable: 1.0.0`.
async fn call(node: &TestNode, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Reply {
    let reply = call_raw(node, method, path, headers, body).await;
    if under_uploads(path) {
        assert_eq!(
            reply.header("tus-resumable"),
            Some("1.0.0"),
            "{method} {path} → {}: Tus-Resumable missing",
            reply.describe()
        );
    }
    reply
}

/// The path (`/uploads/<id>`) of a `Location`, relative or absolute.
fn location(reply: &Reply) -> String {
    let loc = reply.header("location").unwrap_or_else(|| panic!("no Location: {}", reply.describe()));
    let path = match loc.strip_prefix("http://") {
        Some(rest) => &rest[rest.find('/').expect("a path in Location")..],
        None => loc,
    };
    let id = path.strip_prefix("/uploads/").unwrap_or_else(|| panic!("Location `{loc}` is not below /uploads/"));
    assert!(!id.is_empty() && !id.contains('/'), "Location `{loc}`: not one upload id");
    path.to_string()
}

fn id_of(loc: &str) -> &str {
    loc.rsplit('/').next().unwrap()
}

/// The upload's data file under `data_dir/uploads/`.
fn upload_file(node: &TestNode, loc: &str) -> PathBuf {
    node.data_dir.join("uploads").join(id_of(loc))
}

fn upload_files(node: &TestNode) -> Vec<PathBuf> {
    files_below(&node.data_dir.join("uploads"))
}

/// `POST /uploads` with `Upload-Length`, expecting 201; returns the path.
async fn create(node: &TestNode, length: u64, metadata: &str) -> String {
    let length = length.to_string();
    let mut headers = vec![("Tus-Resumable", "1.0.0"), ("Upload-Length", &length)];
    if !metadata.is_empty() {
        headers.push(("Upload-Metadata", metadata));
    }
    let r = call(node, "POST", "/uploads", &headers, None).await;
    assert_eq!(r.status, 201, "POST /uploads: {}", r.describe());
    location(&r)
}

async fn patch(node: &TestNode, loc: &str, offset: u64, bytes: &[u8], extra: &[(&str, &str)]) -> Reply {
    let offset = offset.to_string();
    let mut headers = vec![("Tus-Resumable", "1.0.0"), ("Content-Type", OCTET), ("Upload-Offset", offset.as_str())];
    headers.extend_from_slice(extra);
    call(node, "PATCH", loc, &headers, Some(bytes.to_vec())).await
}

async fn head(node: &TestNode, loc: &str) -> Reply {
    call(node, "HEAD", loc, &[("Tus-Resumable", "1.0.0")], None).await
}

/// HEAD, expecting 200 with an `Upload-Offset`.
async fn offset_of(node: &TestNode, loc: &str) -> u64 {
    let r = head(node, loc).await;
    assert_eq!(r.status, 200, "HEAD {loc}: {}", r.describe());
    r.offset().unwrap_or_else(|| panic!("HEAD {loc}: no Upload-Offset: {}", r.describe()))
}

/// PATCHes `data[from..]` in `chunk`-sized pieces; every one must be 204
/// with the new offset. Returns the last answer.
async fn patch_all(node: &TestNode, loc: &str, data: &[u8], from: usize, chunk: usize) -> Reply {
    let mut at = from;
    loop {
        let end = (at + chunk).min(data.len());
        let r = patch(node, loc, at as u64, &data[at..end], &[]).await;
        assert_eq!(r.status, 204, "PATCH {loc} at {at}: {}", r.describe());
        assert_eq!(r.offset(), Some(end as u64), "PATCH {loc} at {at}");
        at = end;
        if at >= data.len() {
            return r;
        }
    }
}

/// The dataset at `key` holds exactly `expected`; returns its record.
async fn assert_dataset(node: &TestNode, key: &str, expected: &[u8]) -> serde_json::Value {
    assert_serves(node, key, expected).await;
    let record = node.json(&format!("/datasets/{key}")).await;
    assert_eq!(record["size"], expected.len() as u64, "record of {key}");
    assert_eq!(record["blake3"], b3(expected).as_str(), "record of {key}");
    record
}

/// Polls HEAD (bounded) until `done` holds for its status and offset.
async fn poll_head(node: &TestNode, loc: &str, within: Duration, done: impl Fn(u16, Option<u64>) -> bool) -> Reply {
    let deadline = Instant::now() + within;
    loop {
        let r = head(node, loc).await;
        if done(r.status, r.offset()) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Seconds since the epoch of an RFC 9110 IMF-fixdate.
fn http_date(s: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(s, &format).ok().map(|t| t.assume_utc().unix_timestamp())
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A raw PATCH that sends its head and `sent`, then nothing more (the
/// caller decides: stall, close, or keep it open).
fn raw_patch(node: &TestNode, loc: &str, offset: u64, content_length: u64, sent: &[u8]) -> TcpStream {
    let mut s = node.raw();
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: {OCTET}\r\nUpload-Offset: {offset}\r\nContent-Length: {content_length}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(sent).unwrap();
    s.flush().unwrap();
    s
}

// ---------------------------------------------------------------------------
// The table: method + request headers → status + response headers
// ---------------------------------------------------------------------------

#[derive(Debug)]
enum Want {
    /// Exactly this value.
    Is(String),
    /// A comma-separated list holding this token.
    Lists(&'static str),
    Present,
    Absent,
}

#[derive(Debug, Default)]
enum After {
    #[default]
    Nothing,
    /// HEAD on the case's upload shows this offset.
    Offset(u64),
    /// HEAD on the case's upload shows an offset no higher than this.
    OffsetAtMost(u64),
    /// HEAD on the case's upload is 404 or 410.
    Gone,
    /// HEAD on the created upload (`Location`) shows this offset.
    Created(u64),
}

#[derive(Debug, Default)]
struct Case {
    name: &'static str,
    method: &'static str,
    /// `{id}` stands for a fresh upload of 100 bytes (nothing sent yet).
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Option<Vec<u8>>,
    status: &'static [u16],
    /// The problem `code`, when the contract names one.
    code: Option<&'static str>,
    want: Vec<(&'static str, Want)>,
    after: After,
}

fn hs(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

fn is(v: &str) -> Want {
    Want::Is(v.to_string())
}

const V: (&str, &str) = ("Tus-Resumable", "1.0.0");
const CT: (&str, &str) = ("Content-Type", OCTET);
const O0: (&str, &str) = ("Upload-Offset", "0");
const BODY10: &[u8] = b"0123456789";
const MAX: u64 = 16 * MIB as u64;

fn table(fresh_meta: &str) -> Vec<Case> {
    let full_meta = meta(&[
        ("key", "table/created.csv"),
        ("name", "Created"),
        ("description", "made by the table"),
        ("filetype", "text/csv"),
    ]);
    let sha1_right = checksum::<sha1::Sha1>("sha1", BODY10);
    let sha1_wrong = checksum::<sha1::Sha1>("sha1", b"something else");
    let over_max = (MAX + 1).to_string();
    let mut discovery = vec![
        ("Tus-Version", Want::Lists("1.0.0")),
        ("Tus-Max-Size", is(&MAX.to_string())),
        ("Tus-Checksum-Algorithm", Want::Lists("sha1")),
        ("Tus-Checksum-Algorithm", Want::Lists("md5")),
        ("Tus-Checksum-Algorithm", Want::Lists("sha256")),
    ];
    discovery.extend(EXTENSIONS.iter().map(|e| ("Tus-Extension", Want::Lists(e))));
    let tus_version = || vec![("Tus-Version", Want::Lists("1.0.0"))];

    vec![
        // Discovery.
        Case {
            name: "OPTIONS discovers version, extensions, max size, checksums",
            method: "OPTIONS",
            path: "/uploads",
            status: &[204, 200],
            want: discovery,
            ..Case::default()
        },
        // Tus-Resumable is required (412 + Tus-Version) and nothing happens.
        Case {
            name: "POST without Tus-Resumable",
            method: "POST",
            path: "/uploads",
            headers: hs(&[("Upload-Length", "100"), ("Upload-Metadata", fresh_meta)]),
            status: &[412],
            want: tus_version(),
            ..Case::default()
        },
        Case {
            name: "POST with Tus-Resumable 0.2.2",
            method: "POST",
            path: "/uploads",
            headers: hs(&[("Tus-Resumable", "0.2.2"), ("Upload-Length", "100"), ("Upload-Metadata", fresh_meta)]),
            status: &[412],
            want: tus_version(),
            ..Case::default()
        },
        Case {
            name: "HEAD without Tus-Resumable",
            method: "HEAD",
            path: "{id}",
            status: &[412],
            want: tus_version(),
            ..Case::default()
        },
        Case {
            name: "HEAD with Tus-Resumable 1.0",
            method: "HEAD",
            path: "{id}",
            headers: hs(&[("Tus-Resumable", "1.0")]),
            status: &[412],
            want: tus_version(),
            ..Case::default()
        },
        Case {
            name: "PATCH without Tus-Resumable",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[CT, O0]),
            body: Some(BODY10.to_vec()),
            status: &[412],
            want: tus_version(),
            after: After::Offset(0),
            ..Case::default()
        },
        Case {
            name: "PATCH with Tus-Resumable 0.2.2",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[("Tus-Resumable", "0.2.2"), CT, O0]),
            body: Some(BODY10.to_vec()),
            status: &[412],
            want: tus_version(),
            after: After::Offset(0),
            ..Case::default()
        },
        Case {
            name: "DELETE without Tus-Resumable",
            method: "DELETE",
            path: "{id}",
            status: &[412],
            want: tus_version(),
            after: After::Offset(0),
            ..Case::default()
        },
        Case {
            name: "DELETE with Tus-Resumable 2.0.0",
            method: "DELETE",
            path: "{id}",
            headers: hs(&[("Tus-Resumable", "2.0.0")]),
            status: &[412],
            want: tus_version(),
            after: After::Offset(0),
            ..Case::default()
        },
        // Creation.
        Case {
            name: "POST with Upload-Length and full metadata",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Length", "100"), ("Upload-Metadata", &full_meta)]),
            status: &[201],
            want: vec![("Location", Want::Present), ("Upload-Expires", Want::Present)],
            after: After::Created(0),
            ..Case::default()
        },
        Case {
            name: "POST with filename only",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Length", "100"), ("Upload-Metadata", &meta(&[("filename", "table-file.bin")]))]),
            status: &[201],
            want: vec![("Location", Want::Present)],
            after: After::Created(0),
            ..Case::default()
        },
        Case {
            name: "POST without key or filename",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Length", "100"), ("Upload-Metadata", &meta(&[("name", "no key")]))]),
            status: &[400],
            ..Case::default()
        },
        Case {
            name: "POST without Upload-Metadata",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Length", "100")]),
            status: &[400],
            ..Case::default()
        },
        Case {
            name: "POST with key ../x",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Length", "100"), ("Upload-Metadata", &meta(&[("key", "../x")]))]),
            status: &[400],
            code: Some("invalid-key"),
            ..Case::default()
        },
        Case {
            name: "POST with key a//b",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Length", "100"), ("Upload-Metadata", &meta(&[("key", "a//b")]))]),
            status: &[400],
            code: Some("invalid-key"),
            ..Case::default()
        },
        Case {
            name: "POST with filename ../x and no key",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Length", "100"), ("Upload-Metadata", &meta(&[("filename", "../x")]))]),
            status: &[400],
            code: Some("invalid-key"),
            ..Case::default()
        },
        Case {
            name: "POST with Upload-Length over the maximum",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Length", &over_max), ("Upload-Metadata", fresh_meta)]),
            status: &[413],
            code: Some("too-large"),
            ..Case::default()
        },
        Case {
            name: "POST with Upload-Length exactly the maximum",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Length", &MAX.to_string()), ("Upload-Metadata", fresh_meta)]),
            status: &[201],
            after: After::Created(0),
            ..Case::default()
        },
        Case {
            name: "POST with Upload-Length and Upload-Defer-Length",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Length", "100"), ("Upload-Defer-Length", "1"), ("Upload-Metadata", fresh_meta)]),
            status: &[400],
            ..Case::default()
        },
        Case {
            name: "POST with neither Upload-Length nor Upload-Defer-Length",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Metadata", fresh_meta)]),
            status: &[400],
            ..Case::default()
        },
        Case {
            name: "POST with Upload-Length abc",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Length", "abc"), ("Upload-Metadata", fresh_meta)]),
            status: &[400],
            ..Case::default()
        },
        Case {
            name: "POST with Upload-Length +100 (digits only)",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Length", "+100"), ("Upload-Metadata", fresh_meta)]),
            status: &[400],
            ..Case::default()
        },
        Case {
            name: "POST with metadata that is not base64",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Length", "100"), ("Upload-Metadata", "key !!not*base64!!")]),
            status: &[400],
            ..Case::default()
        },
        Case {
            name: "POST with Upload-Defer-Length: 1",
            method: "POST",
            path: "/uploads",
            headers: hs(&[V, ("Upload-Defer-Length", "1"), ("Upload-Metadata", fresh_meta)]),
            status: &[201],
            want: vec![("Location", Want::Present)],
            after: After::Created(0),
            ..Case::default()
        },
        // HEAD.
        Case {
            name: "HEAD a fresh upload",
            method: "HEAD",
            path: "{id}",
            headers: hs(&[V]),
            status: &[200],
            want: vec![
                ("Upload-Offset", is("0")),
                ("Upload-Length", is("100")),
                ("Upload-Defer-Length", Want::Absent),
                ("Upload-Metadata", is(fresh_meta)),
                ("Cache-Control", Want::Lists("no-store")),
            ],
            ..Case::default()
        },
        Case {
            name: "HEAD an unknown upload",
            method: "HEAD",
            path: UNKNOWN,
            headers: hs(&[V]),
            status: &[404],
            want: vec![("Upload-Offset", Want::Absent)],
            ..Case::default()
        },
        Case {
            name: "HEAD a malformed id",
            method: "HEAD",
            path: "/uploads/not-an-upload-id",
            headers: hs(&[V]),
            status: &[404],
            want: vec![("Upload-Offset", Want::Absent)],
            ..Case::default()
        },
        Case {
            name: "GET an upload (no such route)",
            method: "GET",
            path: "{id}",
            headers: hs(&[V]),
            status: &[404, 405],
            ..Case::default()
        },
        // PATCH.
        Case {
            name: "PATCH without Content-Type",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[V, O0]),
            body: Some(BODY10.to_vec()),
            status: &[415],
            after: After::Offset(0),
            ..Case::default()
        },
        Case {
            name: "PATCH with Content-Type application/octet-stream",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[V, O0, ("Content-Type", "application/octet-stream")]),
            body: Some(BODY10.to_vec()),
            status: &[415],
            after: After::Offset(0),
            ..Case::default()
        },
        Case {
            name: "PATCH without Upload-Offset",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[V, CT]),
            body: Some(BODY10.to_vec()),
            status: &[400],
            after: After::Offset(0),
            ..Case::default()
        },
        Case {
            name: "PATCH with Upload-Offset abc",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[V, CT, ("Upload-Offset", "abc")]),
            body: Some(BODY10.to_vec()),
            status: &[400],
            after: After::Offset(0),
            ..Case::default()
        },
        Case {
            name: "PATCH with Upload-Offset +0 (digits only)",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[V, CT, ("Upload-Offset", "+0")]),
            body: Some(BODY10.to_vec()),
            status: &[400],
            after: After::Offset(0),
            ..Case::default()
        },
        Case {
            name: "PATCH at the wrong offset",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[V, CT, ("Upload-Offset", "5")]),
            body: Some(BODY10.to_vec()),
            status: &[409],
            want: vec![("Upload-Offset", is("0"))],
            after: After::Offset(0),
            ..Case::default()
        },
        Case {
            name: "PATCH 10 bytes at 0",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[V, CT, O0]),
            body: Some(BODY10.to_vec()),
            status: &[204],
            want: vec![("Upload-Offset", is("10")), ("Upload-Expires", Want::Present)],
            after: After::Offset(10),
            ..Case::default()
        },
        Case {
            name: "PATCH more than the upload's length",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[V, CT, O0]),
            body: Some(vec![b'x'; 101]),
            status: &[413],
            after: After::OffsetAtMost(100),
            ..Case::default()
        },
        Case {
            name: "PATCH with a different Upload-Length",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[V, CT, O0, ("Upload-Length", "99")]),
            body: Some(BODY10.to_vec()),
            status: &[400],
            after: After::Offset(0),
            ..Case::default()
        },
        Case {
            name: "PATCH with an unknown checksum algorithm",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[V, CT, O0, ("Upload-Checksum", "crc32 AAAAAA==")]),
            body: Some(BODY10.to_vec()),
            status: &[400],
            after: After::Offset(0),
            ..Case::default()
        },
        Case {
            name: "PATCH with a wrong sha1",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[V, CT, O0, ("Upload-Checksum", &sha1_wrong)]),
            body: Some(BODY10.to_vec()),
            status: &[460],
            after: After::Offset(0),
            ..Case::default()
        },
        Case {
            name: "PATCH with the right sha1",
            method: "PATCH",
            path: "{id}",
            headers: hs(&[V, CT, O0, ("Upload-Checksum", &sha1_right)]),
            body: Some(BODY10.to_vec()),
            status: &[204],
            want: vec![("Upload-Offset", is("10"))],
            after: After::Offset(10),
            ..Case::default()
        },
        Case {
            name: "PATCH an unknown upload",
            method: "PATCH",
            path: UNKNOWN,
            headers: hs(&[V, CT, O0]),
            body: Some(BODY10.to_vec()),
            status: &[404],
            ..Case::default()
        },
        // Termination.
        Case {
            name: "DELETE an upload",
            method: "DELETE",
            path: "{id}",
            headers: hs(&[V]),
            status: &[204],
            after: After::Gone,
            ..Case::default()
        },
        Case {
            name: "DELETE an unknown upload",
            method: "DELETE",
            path: UNKNOWN,
            headers: hs(&[V]),
            status: &[404],
            ..Case::default()
        },
        // X-HTTP-Method-Override.
        Case {
            name: "POST with X-HTTP-Method-Override: PATCH",
            method: "POST",
            path: "{id}",
            headers: hs(&[V, CT, O0, ("X-HTTP-Method-Override", "PATCH")]),
            body: Some(BODY10.to_vec()),
            status: &[204],
            want: vec![("Upload-Offset", is("10"))],
            after: After::Offset(10),
            ..Case::default()
        },
        Case {
            name: "POST with X-HTTP-Method-Override: DELETE",
            method: "POST",
            path: "{id}",
            headers: hs(&[V, ("X-HTTP-Method-Override", "DELETE")]),
            status: &[204],
            after: After::Gone,
            ..Case::default()
        },
        Case {
            name: "POST to an upload without an override",
            method: "POST",
            path: "{id}",
            headers: hs(&[V, CT, O0]),
            body: Some(BODY10.to_vec()),
            status: &[404, 405],
            after: After::Offset(0),
            ..Case::default()
        },
    ]
}

fn check_want(reply: &Reply, name: &str, want: &Want) -> Option<String> {
    let got = reply.header(name);
    let ok = match want {
        Want::Is(v) => got == Some(v.as_str()),
        Want::Lists(token) => got.is_some_and(|g| g.split(',').any(|t| t.trim() == *token)),
        Want::Present => got.is_some(),
        Want::Absent => got.is_none(),
    };
    (!ok).then(|| format!("{name}: want {want:?}, got {got:?}"))
}

#[tokio::test]
async fn protocol_table() {
    let node = TestNode::start_with(&[("SPILLWAY_MAX_DATASET_SIZE", "16 MiB")]);
    let fresh_meta = meta(&[("key", "table/fresh.bin"), ("filetype", "application/x-test")]);
    let mut failures: Vec<String> = Vec::new();
    for case in table(&fresh_meta) {
        let upload = if case.path == "{id}" { Some(create(&node, 100, &fresh_meta).await) } else { None };
        let path = upload.clone().unwrap_or_else(|| case.path.to_string());
        let headers: Vec<(&str, &str)> = case.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = call_raw(&node, case.method, &path, &headers, case.body.clone()).await;
        let mut problems = Vec::new();
        if !case.status.contains(&reply.status) {
            problems.push(format!("status {} (want {:?})", reply.status, case.status));
        }
        if reply.header("tus-resumable") != Some("1.0.0") {
            problems.push(format!("Tus-Resumable: {:?} (want 1.0.0)", reply.header("tus-resumable")));
        }
        for (name, want) in &case.want {
            problems.extend(check_want(&reply, name, want));
        }
        if reply.status >= 400 && case.method != "HEAD" {
            // Every error with a body is an RFC 9457 problem detail.
            let problem: Option<serde_json::Value> = reply
                .header("content-type")
                .filter(|ct| ct.starts_with("application/problem+json"))
                .and_then(|_| serde_json::from_slice(&reply.body).ok());
            match problem {
                None => problems.push(format!("error body is not problem+json: {}", reply.text())),
                Some(p) => {
                    if p["status"] != reply.status {
                        problems.push(format!("problem status {} ≠ {}", p["status"], reply.status));
                    }
                    if let Some(code) = case.code {
                        if p["code"] != code {
                            problems.push(format!("problem code {} (want {code})", p["code"]));
                        }
                    }
                }
            }
        }
        if reply.status == 201 {
            if let Some(expires) = reply.header("upload-expires") {
                match http_date(expires) {
                    Some(t) if t > unix_now() - 5 => {}
                    other => problems.push(format!("Upload-Expires `{expires}` ({other:?}) is not a future HTTP-date")),
                }
            }
        }
        let after_loc = match (&case.after, &upload) {
            (After::Created(_), _) if reply.status == 201 => reply.header("location").map(|_| location(&reply)),
            (_, Some(loc)) => Some(loc.clone()),
            _ => None,
        };
        if let Some(loc) = after_loc {
            let h = head(&node, &loc).await;
            match case.after {
                After::Nothing => {}
                After::Offset(want) | After::Created(want) => {
                    if h.status != 200 || h.offset() != Some(want) {
                        problems.push(format!("then HEAD: {} offset {:?} (want 200, {want})", h.status, h.offset()));
                    }
                }
                After::OffsetAtMost(most) => {
                    if h.status != 200 || h.offset().is_none_or(|o| o > most) {
                        problems.push(format!("then HEAD: {} offset {:?} (want 200, ≤ {most})", h.status, h.offset()));
                    }
                }
                After::Gone => {
                    if h.status != 404 && h.status != 410 {
                        problems.push(format!("then HEAD: {} (want 404 or 410)", h.status));
                    }
                }
            }
        }
        if !problems.is_empty() {
            failures.push(format!("{} ({} {path}):\n    {}", case.name, case.method, problems.join("\n    ")));
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Creation
// ---------------------------------------------------------------------------

#[tokio::test]
async fn creation_picks_the_key_and_checks_conflicts() {
    let node = TestNode::start();

    // `filename` is the key when `key` is missing.
    let loc = create(&node, 5, &meta(&[("filename", "from-filename.txt")])).await;
    patch_all(&node, &loc, b"hello", 0, 5).await;
    assert_dataset(&node, "from-filename.txt", b"hello").await;

    // `key` wins over `filename`.
    let loc = create(&node, 5, &meta(&[("filename", "loser.txt"), ("key", "winner/k.txt")])).await;
    patch_all(&node, &loc, b"world", 0, 5).await;
    assert_dataset(&node, "winner/k.txt", b"world").await;
    assert_eq!(node.get("/datasets/loser.txt").await.status(), 404);

    // The response of a creation: Location, and a future Upload-Expires.
    let r = call(
        &node,
        "POST",
        "/uploads",
        &[("Tus-Resumable", "1.0.0"), ("Upload-Length", "10"), ("Upload-Metadata", &meta(&[("key", "expiring.bin")]))],
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.describe());
    location(&r);
    let expires = r.header("upload-expires").expect("Upload-Expires on 201");
    let at = http_date(expires).unwrap_or_else(|| panic!("Upload-Expires `{expires}` is not an HTTP-date"));
    assert!(at > unix_now(), "Upload-Expires `{expires}` is in the past");

    // A key whose folder holds datasets cannot be a dataset: 409.
    assert_eq!(node.put("a/b", b"inside".to_vec()).await.status(), 201);
    let r = call(
        &node,
        "POST",
        "/uploads",
        &[("Tus-Resumable", "1.0.0"), ("Upload-Length", "10"), ("Upload-Metadata", &meta(&[("key", "a")]))],
        None,
    )
    .await;
    assert_eq!(r.status, 409, "create with key `a` beside a/b: {}", r.describe());
    assert_eq!(r.code().as_deref(), Some("key-conflict"), "{}", r.describe());
    // ...and neither can a key below a dataset.
    let r = call(
        &node,
        "POST",
        "/uploads",
        &[("Tus-Resumable", "1.0.0"), ("Upload-Length", "10"), ("Upload-Metadata", &meta(&[("key", "a/b/c")]))],
        None,
    )
    .await;
    assert_eq!(r.status, 409, "create with key `a/b/c` below a/b: {}", r.describe());
}

#[tokio::test]
async fn malformed_ids_are_404_and_touch_nothing() {
    let node = TestNode::start();
    let outside = node.root.path().join("x");
    std::fs::write(&outside, b"keep me").unwrap();
    let beside = node.data_dir.join("x");
    std::fs::write(&beside, b"keep me too").unwrap();
    let loc = create(&node, 10, &meta(&[("key", "real.bin")])).await;

    for (method, path) in [
        ("HEAD", "/uploads/..%2F..%2Fx"),
        ("HEAD", "/uploads/../../x"),
        ("HEAD", "/uploads/%2e%2e"),
        ("PATCH", "/uploads/..%2F..%2Fx"),
        ("PATCH", "/uploads/..%2Fx"),
        ("DELETE", "/uploads/..%2F..%2Fx"),
        ("DELETE", "/uploads/..%2Fx"),
        ("DELETE", "/uploads/../../x"),
    ] {
        let body = if method == "PATCH" { "abc" } else { "" };
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n\
             Content-Type: {OCTET}\r\nUpload-Offset: 0\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        let mut s = node.raw();
        s.write_all(request.as_bytes()).unwrap();
        let resp = read_response(&mut s, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert_eq!(resp.status, 404, "{method} {path}: {resp:?}");
        assert_eq!(resp.header("tus-resumable"), Some("1.0.0"), "{method} {path}: {resp:?}");
        assert!(resp.header("upload-offset").is_none(), "{method} {path}: {resp:?}");
    }
    assert_eq!(std::fs::read(&outside).unwrap(), b"keep me");
    assert_eq!(std::fs::read(&beside).unwrap(), b"keep me too");
    assert_eq!(upload_files(&node), vec![upload_file(&node, &loc)]);
    assert_eq!(offset_of(&node, &loc).await, 0);
}

// ---------------------------------------------------------------------------
// PATCH to completion
// ---------------------------------------------------------------------------

#[tokio::test]
async fn chunks_complete_into_the_dataset() {
    let node = TestNode::start();
    let data = generated(800_001, 41);
    let key = "tus/complete.csv";
    let metadata = meta(&[
        ("key", key),
        ("name", "Complete"),
        ("description", "sent in pieces, with commas, and spaces"),
        ("filetype", "text/csv"),
    ]);
    let loc = create(&node, data.len() as u64, &metadata).await;

    // Uneven chunks, one above the node's 256 KiB write chunk.
    let cuts = [0usize, 1, 300_001, 300_002, 500_000, data.len()];
    let mut last = None;
    for w in cuts.windows(2) {
        let r = patch(&node, &loc, w[0] as u64, &data[w[0]..w[1]], &[]).await;
        assert_eq!(r.status, 204, "PATCH at {}: {}", w[0], r.describe());
        assert_eq!(r.offset(), Some(w[1] as u64), "PATCH at {}", w[0]);
        assert!(r.header("upload-expires").is_some(), "Upload-Expires on PATCH");
        if w[1] < data.len() {
            // Not a dataset yet.
            assert_eq!(node.get(&format!("/datasets/{key}")).await.status(), 404);
            let h = head(&node, &loc).await;
            assert_eq!(h.offset(), Some(w[1] as u64));
        }
        last = Some(r);
    }
    let last = last.unwrap();
    let hash = b3(&data);
    assert_eq!(last.header("etag"), Some(format!("\"{hash}\"").as_str()), "ETag on the final PATCH");
    assert_eq!(
        last.header("content-location"),
        Some(format!("/data/{key}").as_str()),
        "Content-Location on the final PATCH"
    );

    let record = assert_dataset(&node, key, &data).await;
    assert_eq!(record["key"], key);
    assert_eq!(record["path"], format!("/data/{key}"));
    assert_eq!(record["name"], "Complete");
    assert_eq!(record["description"], "sent in pieces, with commas, and spaces");
    assert_eq!(record["content_type"], "text/csv");
    let served = node.get(&format!("/data/{key}")).await;
    assert_eq!(served.headers()["content-type"].to_str().unwrap(), "text/csv", "the served Content-Type");

    // Later HEADs say the upload is whole.
    let h = head(&node, &loc).await;
    assert_eq!(h.status, 200, "HEAD after completion: {}", h.describe());
    assert_eq!(h.offset(), Some(data.len() as u64));
    assert_eq!(h.header("upload-length"), Some(data.len().to_string().as_str()));
    assert_eq!(h.header("cache-control"), Some("no-store"));
    assert_eq!(h.header("upload-metadata"), Some(metadata.as_str()));

    // No bytes left behind in the spool or staging.
    let left = node.wait_spool_empty(Duration::from_secs(2));
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test]
async fn creation_with_upload_takes_the_first_bytes() {
    let node = TestNode::start();
    let data = generated(300_000, 42);
    let metadata = meta(&[("key", "tus/with-upload.bin")]);
    let len = data.len().to_string();
    let r = call(
        &node,
        "POST",
        "/uploads",
        &[("Tus-Resumable", "1.0.0"), ("Upload-Length", &len), ("Upload-Metadata", &metadata), ("Content-Type", OCTET)],
        Some(data[..100_000].to_vec()),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.describe());
    assert_eq!(r.offset(), Some(100_000), "Upload-Offset of the creation");
    let loc = location(&r);
    assert_eq!(offset_of(&node, &loc).await, 100_000);
    let last = patch_all(&node, &loc, &data, 100_000, 150_000).await;
    assert_eq!(last.header("etag"), Some(format!("\"{}\"", b3(&data)).as_str()));
    assert_dataset(&node, "tus/with-upload.bin", &data).await;
}

#[tokio::test]
async fn deferred_length_is_settled_by_a_later_patch() {
    let node = TestNode::start();
    let data = generated(1500, 43);
    let r = call(
        &node,
        "POST",
        "/uploads",
        &[
            ("Tus-Resumable", "1.0.0"),
            ("Upload-Defer-Length", "1"),
            ("Upload-Metadata", &meta(&[("key", "tus/deferred.bin")])),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.describe());
    let loc = location(&r);
    let h = head(&node, &loc).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.header("upload-defer-length"), Some("1"));
    assert_eq!(h.header("upload-length"), None);
    assert_eq!(h.offset(), Some(0));

    let r = patch(&node, &loc, 0, &data[..1000], &[]).await;
    assert_eq!(r.status, 204, "{}", r.describe());
    assert_eq!(r.offset(), Some(1000));
    let h = head(&node, &loc).await;
    assert_eq!(h.header("upload-defer-length"), Some("1"), "still deferred");
    assert_eq!(h.offset(), Some(1000));
    assert_eq!(node.get("/datasets/tus/deferred.bin").await.status(), 404);

    let r = patch(&node, &loc, 1000, &data[1000..], &[("Upload-Length", "1500")]).await;
    assert_eq!(r.status, 204, "{}", r.describe());
    assert_eq!(r.offset(), Some(1500));
    assert_eq!(r.header("etag"), Some(format!("\"{}\"", b3(&data)).as_str()));
    let h = head(&node, &loc).await;
    assert_eq!(h.header("upload-length"), Some("1500"));
    assert_eq!(h.header("upload-defer-length"), None);
    assert_eq!(h.offset(), Some(1500));
    assert_dataset(&node, "tus/deferred.bin", &data).await;
}

// ---------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------

#[tokio::test]
async fn checksums_are_verified_per_chunk() {
    let node = TestNode::start();
    let data = generated(800 * KIB, 44);
    let loc = create(&node, data.len() as u64, &meta(&[("key", "tus/checked.bin")])).await;
    let (a, b, c) = (&data[..100 * KIB], &data[100 * KIB..200 * KIB], &data[200 * KIB..]);

    let r = patch(&node, &loc, 0, a, &[("Upload-Checksum", &checksum::<sha1::Sha1>("sha1", a))]).await;
    assert_eq!(r.status, 204, "sha1: {}", r.describe());
    let r = patch(&node, &loc, 100 * KIB as u64, b, &[("Upload-Checksum", &checksum::<md5::Md5>("md5", b))]).await;
    assert_eq!(r.status, 204, "md5: {}", r.describe());

    // A wrong sha256 over a chunk bigger than the node's write chunk: 460,
    // the chunk is discarded, the offset unchanged.
    let wrong = checksum::<sha2::Sha256>("sha256", &c[1..]);
    let r = patch(&node, &loc, 200 * KIB as u64, c, &[("Upload-Checksum", &wrong)]).await;
    assert_eq!(r.status, 460, "wrong sha256: {}", r.describe());
    assert_eq!(offset_of(&node, &loc).await, 200 * KIB as u64, "offset after 460");
    assert_eq!(
        std::fs::metadata(upload_file(&node, &loc)).unwrap().len(),
        200 * KIB as u64,
        "the upload's file after 460"
    );

    // An unknown algorithm: 400, nothing taken.
    let r = patch(&node, &loc, 200 * KIB as u64, c, &[("Upload-Checksum", "crc32 AAAAAA==")]).await;
    assert_eq!(r.status, 400, "unknown algorithm: {}", r.describe());
    assert_eq!(offset_of(&node, &loc).await, 200 * KIB as u64);

    let right = checksum::<sha2::Sha256>("sha256", c);
    let r = patch(&node, &loc, 200 * KIB as u64, c, &[("Upload-Checksum", &right)]).await;
    assert_eq!(r.status, 204, "right sha256: {}", r.describe());
    assert_eq!(r.offset(), Some(data.len() as u64));
    assert_dataset(&node, "tus/checked.bin", &data).await;
}

// ---------------------------------------------------------------------------
// Termination and expiration
// ---------------------------------------------------------------------------

#[tokio::test]
async fn termination_removes_the_upload_and_its_bytes() {
    let node = TestNode::start();
    let loc = create(&node, 1000, &meta(&[("key", "tus/terminated.bin")])).await;
    let r = patch(&node, &loc, 0, &generated(400, 45), &[]).await;
    assert_eq!(r.status, 204);
    let file = upload_file(&node, &loc);
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 400);

    let r = call(&node, "DELETE", &loc, &[("Tus-Resumable", "1.0.0")], None).await;
    assert_eq!(r.status, 204, "{}", r.describe());
    let h = head(&node, &loc).await;
    assert!(h.status == 404 || h.status == 410, "HEAD after DELETE: {}", h.describe());
    assert!(!file.exists(), "{} still exists", file.display());
    let r = patch(&node, &loc, 400, b"more", &[]).await;
    assert!(r.status == 404 || r.status == 410, "PATCH after DELETE: {}", r.describe());
    assert_eq!(node.get("/datasets/tus/terminated.bin").await.status(), 404);
}

#[tokio::test]
async fn expired_uploads_are_swept() {
    let node = TestNode::start_with(&[("SPILLWAY_UPLOAD_EXPIRY", "2")]);
    let loc = create(&node, 1000, &meta(&[("key", "tus/expiring.bin")])).await;
    let r = patch(&node, &loc, 0, &generated(300, 46), &[]).await;
    assert_eq!(r.status, 204, "{}", r.describe());
    let expires = r.header("upload-expires").expect("Upload-Expires on PATCH");
    let at = http_date(expires).expect("an HTTP-date");
    assert!(at <= unix_now() + 3, "Upload-Expires `{expires}` with a 2 s expiry");
    let file = upload_file(&node, &loc);
    assert!(file.exists());

    let h = poll_head(&node, &loc, Duration::from_secs(6), |s, _| s == 404 || s == 410).await;
    assert!(h.status == 404 || h.status == 410, "HEAD of an expired upload: {}", h.describe());
    assert!(h.offset().is_none(), "an expired upload reports an offset");

    let deadline = Instant::now() + Duration::from_secs(6);
    while file.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!file.exists(), "the sweeper left {}", file.display());
    let r = patch(&node, &loc, 300, b"late", &[]).await;
    assert!(r.status == 404 || r.status == 410, "PATCH after expiry: {}", r.describe());
}

// ---------------------------------------------------------------------------
// Concatenation
// ---------------------------------------------------------------------------

async fn partial(node: &TestNode, data: &[u8]) -> String {
    let len = data.len().to_string();
    let r = call(
        node,
        "POST",
        "/uploads",
        &[("Tus-Resumable", "1.0.0"), ("Upload-Length", &len), ("Upload-Concat", "partial")],
        None,
    )
    .await;
    assert_eq!(r.status, 201, "partial: {}", r.describe());
    let loc = location(&r);
    if !data.is_empty() {
        patch_all(node, &loc, data, 0, 200_000).await;
    }
    loc
}

async fn final_upload(node: &TestNode, parts: &str, key: &str) -> Reply {
    call(
        node,
        "POST",
        "/uploads",
        &[
            ("Tus-Resumable", "1.0.0"),
            ("Upload-Concat", &format!("final;{parts}")),
            ("Upload-Metadata", &meta(&[("key", key), ("filetype", "text/plain")])),
        ],
        None,
    )
    .await
}

/// A partial terminated after a final upload checked it, and before the
/// final read its bytes, makes the final a `410` (its bytes are gone), as
/// when it was terminated before: not a `500`. Nothing is stored, and the
/// other partial stays usable.
#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_partial_terminated_while_a_final_joins_it_is_gone_not_an_error() {
    // Held 6 s: the DELETE must end within it, also on a loaded machine.
    let node = TestNode::start_with(&[("FAILPOINTS", "tus.concat.before_read=return(tus/raced.txt@6000)")]);
    let la = partial(&node, b"abc").await;
    let lb = partial(&node, b"def").await;
    let parts = format!("{la} {lb}");
    let terminate = async {
        let held = "failpoint tus.concat.before_read: `tus/raced.txt` waits";
        let reached = eventually(Duration::from_secs(30), async || node.log_as_written().contains(held)).await;
        assert!(reached, "the final never reached its read:\n{}", node.log_tail(20));
        call(&node, "DELETE", &la, &[("Tus-Resumable", "1.0.0")], None).await
    };
    let (joined, terminated) = tokio::join!(final_upload(&node, &parts, "tus/raced.txt"), terminate);
    assert_eq!(terminated.status, 204, "DELETE of the partial: {}", terminated.describe());
    assert_eq!(joined.status, 410, "the final whose partial went: {}", joined.describe());
    assert_eq!(joined.code().as_deref(), Some("upload-expired"), "{}", joined.describe());
    assert!(node.list_all().await.is_empty(), "the final stored a dataset");
    assert_eq!(offset_of(&node, &lb).await, 3, "the other partial");
}

#[tokio::test]
async fn concatenation_joins_partial_uploads() {
    let node = TestNode::start();
    let a = generated(300_000, 47);
    let b = generated(123_457, 48);
    let la = partial(&node, &a).await;
    let lb = partial(&node, &b).await;
    let h = head(&node, &la).await;
    assert_eq!(h.header("upload-concat"), Some("partial"), "HEAD of a partial: {}", h.describe());
    // A partial upload is not a dataset.
    assert!(node.list_all().await.is_empty());

    let r = final_upload(&node, &format!("{la} {lb}"), "tus/joined.txt").await;
    assert_eq!(r.status, 201, "final: {}", r.describe());
    let lf = location(&r);
    let whole = [a.clone(), b.clone()].concat();
    let record = assert_dataset(&node, "tus/joined.txt", &whole).await;
    assert_eq!(record["content_type"], "text/plain");
    for part in [&la, &lb] {
        let h = head(&node, part).await;
        assert!(h.status == 404 || h.status == 410, "HEAD of a used partial: {}", h.describe());
        assert!(!upload_file(&node, part).exists(), "the bytes of {part} are left");
    }
    let h = head(&node, &lf).await;
    assert_eq!(h.status, 200, "HEAD of the final upload: {}", h.describe());
    assert_eq!(h.offset(), Some(whole.len() as u64));
    assert_eq!(h.header("upload-length"), Some(whole.len().to_string().as_str()));
    assert!(
        h.header("upload-concat").is_some_and(|c| c.starts_with("final")),
        "Upload-Concat on HEAD of a final upload: {:?}",
        h.header("upload-concat")
    );

    // A final upload takes no PATCH.
    let r = patch(&node, &lf, whole.len() as u64, b"x", &[]).await;
    assert_eq!(r.status, 403, "PATCH on a final upload: {}", r.describe());

    // Absolute URLs in the list.
    let c = generated(1000, 49);
    let d = generated(2000, 50);
    let (lc, ld) = (partial(&node, &c).await, partial(&node, &d).await);
    let list = format!("{0}{lc} {0}{ld}", node.base);
    let r = final_upload(&node, &list, "tus/absolute.txt").await;
    assert_eq!(r.status, 201, "final with absolute URLs: {}", r.describe());
    assert_dataset(&node, "tus/absolute.txt", &[c, d].concat()).await;

    // A final upload listing an incomplete partial: 400; nothing stored.
    let e = generated(1000, 51);
    let le = partial(&node, &e).await;
    let len = 1000.to_string();
    let r = call(
        &node,
        "POST",
        "/uploads",
        &[("Tus-Resumable", "1.0.0"), ("Upload-Length", &len), ("Upload-Concat", "partial")],
        None,
    )
    .await;
    let lg = location(&r);
    assert_eq!(patch(&node, &lg, 0, &e[..10], &[]).await.status, 204);
    let r = final_upload(&node, &format!("{le} {lg}"), "tus/incomplete.txt").await;
    assert_eq!(r.status, 400, "final with an incomplete partial: {}", r.describe());
    assert_eq!(node.get("/datasets/tus/incomplete.txt").await.status(), 404);
    assert_eq!(offset_of(&node, &le).await, 1000, "the complete partial is kept");
    assert_eq!(offset_of(&node, &lg).await, 10, "the incomplete partial is kept");
}

// ---------------------------------------------------------------------------
// X-HTTP-Method-Override
// ---------------------------------------------------------------------------

/// A POST that asks to be taken as `method` (a PATCH's headers included).
async fn post_as(node: &TestNode, loc: &str, method: &str, offset: u64, body: Vec<u8>) -> Reply {
    let offset = offset.to_string();
    call(
        node,
        "POST",
        loc,
        &[
            ("Tus-Resumable", "1.0.0"),
            ("X-HTTP-Method-Override", method),
            ("Content-Type", OCTET),
            ("Upload-Offset", &offset),
        ],
        Some(body),
    )
    .await
}

#[tokio::test]
async fn method_override_acts_as_patch_and_delete() {
    let node = TestNode::start();
    let data = generated(5000, 52);
    let loc = create(&node, data.len() as u64, &meta(&[("key", "tus/override.bin")])).await;
    let r = post_as(&node, &loc, "PATCH", 0, data[..2000].to_vec()).await;
    assert_eq!(r.status, 204, "POST as PATCH: {}", r.describe());
    assert_eq!(r.offset(), Some(2000));
    let r = post_as(&node, &loc, "PATCH", 2000, data[2000..].to_vec()).await;
    assert_eq!(r.status, 204, "POST as PATCH: {}", r.describe());
    assert_dataset(&node, "tus/override.bin", &data).await;

    let loc2 = create(&node, 100, &meta(&[("key", "tus/override-deleted.bin")])).await;
    assert_eq!(patch(&node, &loc2, 0, BODY10, &[]).await.status, 204);
    let r = call(&node, "POST", &loc2, &[("Tus-Resumable", "1.0.0"), ("X-HTTP-Method-Override", "DELETE")], None).await;
    assert_eq!(r.status, 204, "POST as DELETE: {}", r.describe());
    let h = head(&node, &loc2).await;
    assert!(h.status == 404 || h.status == 410, "HEAD after POST as DELETE: {}", h.describe());
    assert!(!upload_file(&node, &loc2).exists());
}

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_patch_past_the_length_is_413() {
    let node = TestNode::start();
    let data = generated(1000, 53);
    let loc = create(&node, 1000, &meta(&[("key", "tus/exact.bin")])).await;
    assert_eq!(patch(&node, &loc, 0, &data[..600], &[]).await.status, 204);
    let r = patch(&node, &loc, 600, &generated(600, 54), &[]).await;
    assert_eq!(r.status, 413, "600 bytes at 600 of 1000: {}", r.describe());
    let offset = offset_of(&node, &loc).await;
    assert!(offset <= 1000, "offset {offset} passed the length 1000");
    assert_eq!(node.get("/datasets/tus/exact.bin").await.status(), 404, "a dataset from a 413");
    // A refused PATCH takes nothing; the upload is finished with the right bytes.
    assert_eq!(offset, 600, "offset after a refused PATCH");
    patch_all(&node, &loc, &data, 600, 1000).await;
    assert_dataset(&node, "tus/exact.bin", &data).await;
    // Past the end of the completed upload, with a length and chunked: any
    // byte is still past the length, and the dataset stays as it was.
    let r = patch(&node, &loc, 1000, b"more", &[]).await;
    assert_eq!(r.status, 413, "4 bytes at the end of a completed upload: {}", r.describe());
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(b"more".to_vec())]));
    let r = node
        .client
        .patch(node.url(&loc))
        .header("Tus-Resumable", "1.0.0")
        .header("Content-Type", OCTET)
        .header("Upload-Offset", "1000")
        .body(chunked)
        .send()
        .await
        .expect("a chunked PATCH");
    assert_eq!(r.status(), 413, "a chunked PATCH at the end of a completed upload");
    let r = patch(&node, &loc, 1000, b"", &[]).await;
    assert_eq!(r.status, 204, "an empty PATCH at the end learns that the upload is complete: {}", r.describe());
    assert_eq!(r.header("upload-offset"), Some("1000"));
    assert_dataset(&node, "tus/exact.bin", &data).await;
}

/// Waits until a held PATCH is inside its upload: the node has received its
/// `bytes` (watched in the metrics: a HEAD would take the upload over from
/// it, and its bytes may wait in memory for a whole direct write).
async fn wait_held_patch(node: &TestNode, bytes: usize) {
    let inside = eventually(Duration::from_secs(10), async || {
        node.metric("spillway_resumable_upload_bytes_total").await.unwrap_or(0.0) >= bytes as f64
    })
    .await;
    assert!(inside, "the held PATCH never started");
}

#[tokio::test]
async fn max_uploads_answers_503_with_retry_after() {
    let node = TestNode::start_with(&[("SPILLWAY_MAX_UPLOADS", "1"), ("SPILLWAY_STALL_TIMEOUT", "30")]);
    let held_loc = create(&node, MIB as u64, &meta(&[("key", "tus/held.bin")])).await;
    let held = raw_patch(&node, &held_loc, 0, MIB as u64, &generated(300 * KIB, 55));
    wait_held_patch(&node, 300 * KIB).await;

    let loc = create(&node, 10, &meta(&[("key", "tus/second.bin")])).await;
    let r = patch(&node, &loc, 0, BODY10, &[]).await;
    assert_eq!(r.status, 503, "a second PATCH beside max_uploads = 1: {}", r.describe());
    let retry = r.header("retry-after").unwrap_or_default();
    assert!(retry.trim().parse::<u64>().is_ok(), "Retry-After: {retry:?}");
    assert_eq!(offset_of(&node, &loc).await, 0);

    // Once the held one goes, the second gets in (bounded wait).
    held.shutdown(Shutdown::Both).unwrap();
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = patch(&node, &loc, 0, BODY10, &[]).await;
        if r.status == 204 {
            break;
        }
        assert!(r.status == 503 && Instant::now() < deadline, "PATCH after the held one closed: {}", r.describe());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_dataset(&node, "tus/second.bin", BODY10).await;
}

// ---------------------------------------------------------------------------
// Stalls, broken-off bodies, takeover
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_stalled_patch_keeps_every_byte_that_arrived() {
    let node = TestNode::start_with(&[("SPILLWAY_STALL_TIMEOUT", "2")]);
    let data = generated(MIB, 56);
    let loc = create(&node, data.len() as u64, &meta(&[("key", "tus/stalled.bin")])).await;
    // Not a multiple of any plausible buffer size.
    let sent = 300_000;
    let started = Instant::now();
    let mut s = raw_patch(&node, &loc, 0, data.len() as u64, &data[..sent]);
    match read_response(&mut s, Duration::from_secs(10)) {
        Ok(resp) => {
            assert_eq!(resp.status, 408, "a stalled PATCH: {resp:?}");
            assert_eq!(resp.header("tus-resumable"), Some("1.0.0"));
        }
        Err(e) => assert!(e.contains("closed") || e.contains("failed"), "a stalled PATCH: {e}"),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1500), "ended after {took:?}, before the 2 s stall timeout");
    drop(s);
    let offset = offset_of(&node, &loc).await;
    assert_eq!(offset, sent as u64, "HEAD after a stall must report every byte that reached the node");
    patch_all(&node, &loc, &data, offset as usize, MIB).await;
    assert_dataset(&node, "tus/stalled.bin", &data).await;
}

#[tokio::test]
async fn a_broken_off_patch_resumes_at_the_true_offset() {
    let node = TestNode::start();
    let data = generated(4 * MIB, 57);
    let loc = create(&node, data.len() as u64, &meta(&[("key", "tus/broken.bin")])).await;
    let mut s = raw_patch(&node, &loc, 0, data.len() as u64, &data[..2 * MIB]);
    s.shutdown(Shutdown::Write).unwrap();
    // The node may answer (400) or just close; either way the socket ends.
    let _ = read_response(&mut s, Duration::from_secs(10));
    drop(s);
    let mut last = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let offset = offset_of(&node, &loc).await;
        if offset == 2 * MIB as u64 || (offset == last && offset > 0) || Instant::now() > deadline {
            last = offset;
            break;
        }
        last = offset;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    eprintln!("broken off after 2 MiB sent: HEAD reports {last}");
    assert!(last > 0 && last <= 2 * MIB as u64, "offset {last} after 2 MiB sent");
    let r = patch_all(&node, &loc, &data, last as usize, 4 * MIB).await;
    assert_eq!(r.header("etag"), Some(format!("\"{}\"", b3(&data)).as_str()));
    assert_dataset(&node, "tus/broken.bin", &data).await;
}

#[tokio::test]
async fn a_reconnecting_client_takes_over_a_stalled_patch() {
    let node = TestNode::start_with(&[("SPILLWAY_STALL_TIMEOUT", "30")]);
    let data = generated(2 * MIB, 58);
    let loc = create(&node, data.len() as u64, &meta(&[("key", "tus/takeover.bin")])).await;
    let sent = 512 * KIB;
    let first = raw_patch(&node, &loc, 0, data.len() as u64, &data[..sent]);
    let h = poll_head(&node, &loc, Duration::from_secs(5), |_, o| o == Some(sent as u64)).await;
    let offset = h.offset().expect("an offset while the first PATCH stalls");
    eprintln!("takeover: HEAD reports {offset} while the first PATCH stalls");

    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(15), patch(&node, &loc, offset, &data[offset as usize..], &[]))
        .await
        .expect("the second PATCH got no answer in 15 s");
    let took = started.elapsed();
    assert_eq!(r.status, 204, "the second PATCH: {}", r.describe());
    assert!(took < Duration::from_secs(10), "the takeover took {took:?}");
    assert_eq!(r.offset(), Some(data.len() as u64));
    assert_eq!(r.header("etag"), Some(format!("\"{}\"", b3(&data)).as_str()));
    drop(first);
    assert_dataset(&node, "tus/takeover.bin", &data).await;
}

/// With `direct_writes` (the default) a PATCH from a block-aligned offset
/// is written around the page cache and one from an unaligned offset
/// through it: the two ways alternate on one file, the pieces straddle the
/// node's 2 MiB direct buffer and end on and off block boundaries, and the
/// dataset is every byte in order.
#[tokio::test]
async fn patches_alternating_direct_and_cached_writes_join_exactly() {
    let node = TestNode::start();
    let data = generated(7 * MIB + 4099, 61);
    let key = "tus/direct-mixed.bin";
    let loc = create(&node, data.len() as u64, &meta(&[("key", key)])).await;
    // 0 (aligned, ends unaligned) -> 5 (unaligned, ends aligned at 8192) ->
    // 8192 (aligned, more than one buffer, ends unaligned) -> ... -> the end.
    let cuts = [0usize, 5, 8192, 8192 + 2 * MIB + 1, 3 * MIB, 3 * MIB + 4096 * 100, data.len()];
    for w in cuts.windows(2) {
        let r = patch(&node, &loc, w[0] as u64, &data[w[0]..w[1]], &[]).await;
        assert_eq!(r.status, 204, "PATCH at {}: {}", w[0], r.describe());
        assert_eq!(r.offset(), Some(w[1] as u64), "PATCH at {}", w[0]);
    }
    assert_dataset(&node, key, &data).await;
}

// ---------------------------------------------------------------------------
// Durability across kill -9
// ---------------------------------------------------------------------------

#[tokio::test]
async fn acknowledged_chunks_survive_kill_9_and_are_rehashed() {
    let mut node = TestNode::start();
    let data = generated(4 * MIB, 59);
    let key = "tus/restarted.bin";
    let loc = create(&node, data.len() as u64, &meta(&[("key", key)])).await;
    for i in 0..3 {
        let r = patch(&node, &loc, (i * MIB) as u64, &data[i * MIB..(i + 1) * MIB], &[]).await;
        assert_eq!(r.status, 204, "chunk {i}: {}", r.describe());
    }
    node.kill9();
    node.launch();
    assert_eq!(offset_of(&node, &loc).await, 3 * MIB as u64, "offset after kill -9");
    let r = patch(&node, &loc, 3 * MIB as u64, &data[3 * MIB..], &[]).await;
    assert_eq!(r.status, 204, "the last chunk after the restart: {}", r.describe());
    let hash = b3(&data);
    assert_eq!(r.header("etag"), Some(format!("\"{hash}\"").as_str()), "ETag after the restart");
    assert_dataset(&node, key, &data).await;
    let log = node.log().to_lowercase();
    assert!(log.contains("rehash"), "the node log does not mention rehashing the prefix");
}

// ---------------------------------------------------------------------------
// A conflict found at completion
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_conflict_at_completion_is_409_and_never_claims_success() {
    let node = TestNode::start();
    let data = generated(1000, 60);
    let loc = create(&node, data.len() as u64, &meta(&[("key", "c/d")])).await;
    assert_eq!(patch(&node, &loc, 0, &data[..400], &[]).await.status, 204);
    // Meanwhile `c` becomes a dataset, so `c/d` cannot be one.
    assert_eq!(node.put("c", b"a plain file".to_vec()).await.status(), 201);

    let r = patch(&node, &loc, 400, &data[400..], &[]).await;
    assert_eq!(r.status, 409, "the final PATCH: {}", r.describe());
    assert_eq!(r.code().as_deref(), Some("key-conflict"), "{}", r.describe());
    assert!(r.header("etag").is_none(), "a failed commit answers with an ETag");

    let h = head(&node, &loc).await;
    assert!(h.status == 404 || h.status == 410, "HEAD after the failed commit: {}", h.describe());
    let r = patch(&node, &loc, 1000, b"", &[]).await;
    assert!(r.status >= 400, "PATCH after the failed commit: {}", r.describe());
    assert_eq!(node.get("/datasets/c/d").await.status(), 404);
    assert_eq!(node.get("/data/c/d").await.status(), 404);
    assert!(!node.dataset_files().iter().any(|p| p.ends_with("c/d")), "a file for c/d: {:?}", node.dataset_files());
    assert!(upload_files(&node).is_empty(), "upload bytes left: {:?}", upload_files(&node));
    assert!(node.wait_spool_empty(Duration::from_secs(2)).is_empty());
    let served = node.get("/data/c").await;
    assert_eq!(served.status(), 200);
    assert_eq!(served.bytes().await.unwrap().as_ref(), b"a plain file");
}

/// tus-js-client and Uppy send no PATCH for an empty file: the creation
/// itself must store it.
#[tokio::test]
async fn an_empty_upload_is_stored_at_creation() {
    let node = TestNode::start();
    let loc = create(&node, 0, &meta(&[("key", "tus/empty.bin")])).await;
    let h = head(&node, &loc).await;
    assert_eq!(h.status, 200, "{}", h.describe());
    assert_eq!(h.offset(), Some(0));
    assert_eq!(h.header("etag").unwrap_or_default(), format!("\"{}\"", blake3::hash(b"").to_hex()));
    assert_dataset(&node, "tus/empty.bin", b"").await;
}

/// creation-with-upload honours `Upload-Checksum` like a PATCH does.
#[tokio::test]
async fn creation_with_upload_checks_the_checksum() {
    let node = TestNode::start();
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let metadata = meta(&[("key", "tus/ck.txt")]);
    let create = |checksum: String| {
        node.client
            .post(node.url("/uploads"))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", "11")
            .header("Upload-Metadata", metadata.as_str())
            .header("Content-Type", "application/offset+octet-stream")
            .header("Upload-Checksum", checksum)
            .body("hello world")
            .send()
    };
    let r = create(format!("sha1 {}", b64(&sha1::Sha1::digest(b"WRONG")))).await.unwrap();
    assert_eq!(r.status().as_u16(), 460);
    assert_eq!(node.get("/datasets/tus/ck.txt").await.status(), 404);

    let r = create(format!("sha1 {}", b64(&sha1::Sha1::digest(b"hello world")))).await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_dataset(&node, "tus/ck.txt", b"hello world").await;
}

// ---------------------------------------------------------------------------
// Memory held per upload
// ---------------------------------------------------------------------------

/// `spillway_resumable_uploads_in_memory`, read from `/metrics`.
async fn in_memory(node: &TestNode) -> i64 {
    let text = node.get("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("spillway_resumable_uploads_in_memory "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no spillway_resumable_uploads_in_memory in /metrics"))
}

/// Every way an upload ends gives back the memory it held: concatenation,
/// completion (and HEADs or PATCHes after it), and termination (after a
/// refused PATCH).
#[tokio::test]
async fn no_upload_stays_in_memory_once_it_ends() {
    let node = TestNode::start();
    let (a, b) = (generated(5000, 62), generated(7000, 63));
    let (la, lb) = (partial(&node, &a).await, partial(&node, &b).await);
    let r = final_upload(&node, &format!("{la} {lb}"), "mem/joined.bin").await;
    assert_eq!(r.status, 201, "final: {}", r.describe());
    assert_eq!(in_memory(&node).await, 0, "after concatenation");
    assert_eq!(head(&node, &location(&r)).await.status, 200);

    let data = generated(3000, 61);
    let loc = create(&node, data.len() as u64, &meta(&[("key", "mem/done.bin")])).await;
    assert_eq!(patch(&node, &loc, 0, &data[..1000], &[]).await.status, 204);
    assert_eq!(in_memory(&node).await, 1, "an upload half sent is held");
    patch_all(&node, &loc, &data, 1000, 2000).await;
    assert_eq!(in_memory(&node).await, 0, "after completion");
    assert_eq!(head(&node, &loc).await.status, 200);
    let r = patch(&node, &loc, data.len() as u64, b"", &[]).await;
    assert_eq!(r.status, 204, "a repeated final PATCH: {}", r.describe());
    assert_eq!(in_memory(&node).await, 0, "after a HEAD and a PATCH of a completed upload");

    let loc = create(&node, 1000, &meta(&[("key", "mem/terminated.bin")])).await;
    assert_eq!(patch(&node, &loc, 0, &generated(400, 64), &[]).await.status, 204);
    assert_eq!(patch(&node, &loc, 7, b"wrong offset", &[]).await.status, 409);
    assert_eq!(in_memory(&node).await, 1);
    let r = call(&node, "DELETE", &loc, &[("Tus-Resumable", "1.0.0")], None).await;
    assert_eq!(r.status, 204, "{}", r.describe());
    assert_eq!(head(&node, &loc).await.status, 404);
    assert_eq!(in_memory(&node).await, 0, "after termination");
}

/// An upload left half sent is forgotten when it expires.
#[tokio::test]
async fn an_expired_upload_leaves_no_memory() {
    let node = TestNode::start_with(&[("SPILLWAY_UPLOAD_EXPIRY", "2")]);
    let loc = create(&node, 1000, &meta(&[("key", "mem/expiring.bin")])).await;
    assert_eq!(patch(&node, &loc, 0, &generated(300, 65), &[]).await.status, 204);
    assert_eq!(in_memory(&node).await, 1);
    let file = upload_file(&node, &loc);
    let deadline = Instant::now() + Duration::from_secs(15);
    while file.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!file.exists(), "the sweeper left {}", file.display());
    assert_eq!(in_memory(&node).await, 0, "after expiry");
}

// ---------------------------------------------------------------------------
// Caps on open uploads
// ---------------------------------------------------------------------------

const CAP_A: &str = "cap-a-secret-1Xy7";
const CAP_B: &str = "cap-b-secret-8Qw2";

/// `POST /uploads` of `length` bytes for `key` as `token` (none: open).
async fn create_as(node: &TestNode, token: Option<&str>, length: u64, key: &str) -> Reply {
    let (length, metadata) = (length.to_string(), meta(&[("key", key)]));
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Tus-Resumable", "1.0.0"), ("Upload-Length", length.as_str())];
    headers.push(("Upload-Metadata", metadata.as_str()));
    if let Some(bearer) = &bearer {
        headers.push(("Authorization", bearer.as_str()));
    }
    call(node, "POST", "/uploads", &headers, None).await
}

/// A 429 `too-many-open-uploads` problem with a `Retry-After` in seconds.
fn assert_capped(r: &Reply, what: &str) {
    assert_eq!(r.status, 429, "{what}: {}", r.describe());
    assert_eq!(r.code().as_deref(), Some("too-many-open-uploads"), "{what}: {}", r.describe());
    let retry = r.header("retry-after").unwrap_or_default();
    assert!(retry.trim().parse::<u64>().is_ok_and(|s| s > 0), "{what}: Retry-After {retry:?}");
}

/// `max_open_uploads` = 3 and `max_open_uploads_per_token` = 2 with two
/// tokens: each token's third upload, then anyone's fourth, is refused
/// until one finishes or is terminated.
#[tokio::test]
async fn open_uploads_are_capped_in_total_and_per_token() {
    let tokens =
        format!(r#"[{{name="a",token="{CAP_A}",scopes=["write"]}},{{name="b",token="{CAP_B}",scopes=["write"]}}]"#);
    let node = TestNode::start_with(&[
        ("SPILLWAY_TOKENS", &tokens),
        ("SPILLWAY_MAX_OPEN_UPLOADS", "3"),
        ("SPILLWAY_MAX_OPEN_UPLOADS_PER_TOKEN", "2"),
    ]);
    let auth_a = format!("Bearer {CAP_A}");
    let a1 = create_as(&node, Some(CAP_A), 10, "cap/a1.bin").await;
    assert_eq!(a1.status, 201, "a's first: {}", a1.describe());
    let a2 = create_as(&node, Some(CAP_A), 10, "cap/a2.bin").await;
    assert_eq!(a2.status, 201, "a's second: {}", a2.describe());
    assert_capped(&create_as(&node, Some(CAP_A), 10, "cap/a3.bin").await, "a's third (per token)");
    let b1 = create_as(&node, Some(CAP_B), 10, "cap/b1.bin").await;
    assert_eq!(b1.status, 201, "b's first beside a's two: {}", b1.describe());
    assert_capped(&create_as(&node, Some(CAP_B), 10, "cap/b2.bin").await, "b's second (the fourth in total)");

    // A terminated upload frees its place.
    let r =
        call(&node, "DELETE", &location(&a1), &[("Tus-Resumable", "1.0.0"), ("Authorization", &auth_a)], None).await;
    assert_eq!(r.status, 204, "terminating a1: {}", r.describe());
    let a3 = create_as(&node, Some(CAP_A), 10, "cap/a3.bin").await;
    assert_eq!(a3.status, 201, "a's upload after one was terminated: {}", a3.describe());
    assert_capped(&create_as(&node, Some(CAP_B), 10, "cap/b2.bin").await, "b's second, total full again");

    // A finished upload frees its place.
    let headers =
        [("Tus-Resumable", "1.0.0"), ("Content-Type", OCTET), ("Upload-Offset", "0"), ("Authorization", &auth_a)];
    let r = call(&node, "PATCH", &location(&a2), &headers, Some(BODY10.to_vec())).await;
    assert_eq!(r.status, 204, "finishing a2: {}", r.describe());
    let b2 = create_as(&node, Some(CAP_B), 10, "cap/b2.bin").await;
    assert_eq!(b2.status, 201, "b's second after a2 finished: {}", b2.describe());
    assert_capped(&create_as(&node, Some(CAP_A), 10, "cap/a4.bin").await, "a's upload, total full");
    let rows = upload_files(&node).len();
    assert_eq!(rows, 3, "open uploads' files: {:?}", upload_files(&node));
}

/// Creations racing for the last places never pass the cap; an open node
/// counts every upload against `max_open_uploads` only.
#[tokio::test]
async fn racing_creations_do_not_pass_the_cap() {
    let node =
        TestNode::start_with(&[("SPILLWAY_MAX_OPEN_UPLOADS", "3"), ("SPILLWAY_MAX_OPEN_UPLOADS_PER_TOKEN", "2")]);
    let attempts = (0..24).map(|i| {
        let node = &node;
        async move { create_as(node, None, 10, &format!("race/{i}.bin")).await }
    });
    let replies = futures_util::future::join_all(attempts).await;
    let created = replies.iter().filter(|r| r.status == 201).count();
    for r in replies.iter().filter(|r| r.status != 201) {
        assert_capped(r, "a racing creation");
    }
    assert_eq!(created, 3, "racing creations accepted past max_open_uploads = 3");
    assert_eq!(upload_files(&node).len(), 3, "{:?}", upload_files(&node));
    assert_capped(&create_as(&node, None, 10, "race/late.bin").await, "a creation after the race");
}

// ---------------------------------------------------------------------------
// Failed creation-with-upload (probe F5) and the start-up sweep (probe F11)
// ---------------------------------------------------------------------------

/// A `POST /uploads` carrying a body.
async fn create_with_body(node: &TestNode, length: u64, key: &str, extra: &[(&str, &str)], body: &[u8]) -> Reply {
    let (length, metadata) = (length.to_string(), meta(&[("key", key)]));
    let mut headers = vec![
        ("Tus-Resumable", "1.0.0"),
        ("Upload-Length", length.as_str()),
        ("Upload-Metadata", metadata.as_str()),
        ("Content-Type", OCTET),
    ];
    headers.extend_from_slice(extra);
    call(node, "POST", "/uploads", &headers, Some(body.to_vec())).await
}

/// A creation-with-upload refused (503 from `max_uploads`, 460, 413) leaves
/// no upload behind: no file in `uploads/`, nothing counted against
/// `max_open_uploads`, and no `Location` the client could not use anyway.
#[tokio::test]
async fn a_refused_creation_with_upload_leaves_no_upload() {
    let node = TestNode::start_with(&[
        ("SPILLWAY_MAX_UPLOADS", "1"),
        ("SPILLWAY_MAX_OPEN_UPLOADS", "2"),
        ("SPILLWAY_STALL_TIMEOUT", "30"),
    ]);
    let held_loc = create(&node, MIB as u64, &meta(&[("key", "tus/held.bin")])).await;
    let held = raw_patch(&node, &held_loc, 0, MIB as u64, &generated(300 * KIB, 57));
    wait_held_patch(&node, 300 * KIB).await;
    let file = upload_file(&node, &held_loc);
    for i in 0..3 {
        let r = create_with_body(&node, 10, &format!("tus/busy{i}.bin"), &[], BODY10).await;
        assert_eq!(r.status, 503, "creation-with-upload beside max_uploads = 1: {}", r.describe());
        assert_eq!(r.header("location"), None, "a 503 names an upload: {}", r.describe());
        assert_eq!(upload_files(&node), vec![file.clone()], "a 503 created an upload");
    }
    held.shutdown(Shutdown::Both).unwrap();
    drop(held);
    // The held PATCH lets go of its slot once the node sees the close.
    let deadline = Instant::now() + Duration::from_secs(10);
    let bad_sum = checksum::<sha1::Sha1>("sha1", b"not these bytes");
    loop {
        let r = create_with_body(&node, 10, "tus/bad-sum.bin", &[("Upload-Checksum", &bad_sum)], BODY10).await;
        if r.status == 503 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(r.status, 460, "a wrong Upload-Checksum: {}", r.describe());
        assert_eq!(r.header("location"), None, "{}", r.describe());
        break;
    }
    assert_eq!(upload_files(&node), vec![file.clone()], "a 460 left an upload");
    let r = create_with_body(&node, 5, "tus/long.bin", &[], BODY10).await;
    assert_eq!(r.status, 413, "a body longer than Upload-Length: {}", r.describe());
    assert_eq!(r.header("location"), None, "{}", r.describe());
    assert_eq!(upload_files(&node), vec![file.clone()], "a 413 left an upload");
    // Only the held upload counts against max_open_uploads = 2.
    let r = create_with_body(&node, 10, "tus/fine.bin", &[], BODY10).await;
    assert_eq!(r.status, 201, "a creation-with-upload after the refusals: {}", r.describe());
    assert_dataset(&node, "tus/fine.bin", BODY10).await;
    create(&node, 10, &meta(&[("key", "tus/open.bin")])).await;
}

/// A creation-with-upload whose body breaks off (the client half-closes,
/// as a cut proxy would) answers as tusd does: `201` with the `Location`
/// and the durable `Upload-Offset`, so the client can resume the upload it
/// caused rather than leave it orphaned.
#[tokio::test]
async fn a_broken_creation_with_upload_answers_where_to_resume() {
    let node = TestNode::start();
    let data = generated(100_000, 58);
    let metadata = meta(&[("key", "tus/broken-create.bin")]);
    let mut s = node.raw();
    let head = format!(
        "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Length: {}\r\n\
         Upload-Metadata: {metadata}\r\nContent-Type: {OCTET}\r\nContent-Length: {}\r\n\r\n",
        data.len(),
        data.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&data[..40_000]).unwrap();
    s.flush().unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let resp = read_response(&mut s, Duration::from_secs(15)).expect("an answer to the broken creation");
    assert_eq!(resp.status, 201, "a broken creation-with-upload: {resp:?}");
    let loc = resp.header("location").expect("a Location").to_string();
    let loc = match loc.strip_prefix("http://") {
        Some(rest) => rest[rest.find('/').unwrap()..].to_string(),
        None => loc,
    };
    let offset: u64 = resp.header("upload-offset").expect("an Upload-Offset").parse().unwrap();
    assert_eq!(offset, 40_000, "the offset answered is every byte that arrived");
    assert_eq!(offset_of(&node, &loc).await, offset);
    patch_all(&node, &loc, &data, offset as usize, 30_000).await;
    assert_dataset(&node, "tus/broken-create.bin", &data).await;
    assert!(upload_files(&node).is_empty(), "{:?}", upload_files(&node));
}

/// The start-up sweep removes only upload files without a row: anything
/// else an operator leaves in `uploads/` (a folder, a note) stays, with a
/// warning naming it, and the node starts.
#[tokio::test]
async fn foreign_entries_in_uploads_are_kept_and_do_not_stop_the_start() {
    let mut node = TestNode::start();
    let loc = create(&node, 10, &meta(&[("key", "tus/kept.bin")])).await;
    let uploads = node.data_dir.join("uploads");
    std::fs::create_dir(uploads.join("junkdir")).unwrap();
    std::fs::write(uploads.join("junkdir").join("inner"), b"inner").unwrap();
    std::fs::write(uploads.join("NOTES.txt"), b"operator notes").unwrap();
    let orphan = uploads.join("0123456789abcdef0123456789abcdef");
    std::fs::write(&orphan, b"no row").unwrap();
    node.restart();
    assert!(uploads.join("junkdir").join("inner").is_file(), "a folder in uploads/ was removed");
    assert_eq!(std::fs::read(uploads.join("NOTES.txt")).unwrap(), b"operator notes");
    assert!(!orphan.exists(), "an upload file without a row was kept");
    let log = node.log();
    for name in ["junkdir", "NOTES.txt"] {
        assert!(log.lines().any(|l| l.contains("WARN") && l.contains(name)), "no warning names {name}:\n{log}");
    }
    assert_eq!(offset_of(&node, &loc).await, 0, "the live upload survived the sweep");
    patch_all(&node, &loc, BODY10, 0, 10).await;
    assert_dataset(&node, "tus/kept.bin", BODY10).await;
}

/// `POST /uploads` of 5 bytes for `key` with `If-None-Match: if_none_match`.
async fn create_if_none_match(node: &TestNode, key: &str, if_none_match: &str) -> Reply {
    let metadata = meta(&[("key", key)]);
    let headers = [
        ("Tus-Resumable", "1.0.0"),
        ("Upload-Length", "5"),
        ("Upload-Metadata", metadata.as_str()),
        ("If-None-Match", if_none_match),
    ];
    call(node, "POST", "/uploads", &headers, None).await
}

/// `If-None-Match: *` on a creation makes the upload create its key only:
/// refused (412) when the key is taken at creation, and again at the last
/// PATCH when another upload took it meanwhile, which then keeps its bytes.
/// Any other `If-None-Match` on a creation is a 400.
#[tokio::test]
async fn a_create_only_upload_never_replaces_a_dataset() {
    let node = TestNode::start();
    assert_eq!(node.put("taken", b"first".to_vec()).await.status(), 201);
    let r = create_if_none_match(&node, "taken", "*").await;
    assert_problem(&r, 412, "precondition-failed", "create-only upload of a taken key");

    let r = create_if_none_match(&node, "raced", "*").await;
    assert_eq!(r.status, 201, "create-only upload of a free key: {}", r.describe());
    let loc = location(&r);
    assert_eq!(node.put("raced", b"other".to_vec()).await.status(), 201);
    let r = patch(&node, &loc, 0, b"mine!", &[]).await;
    assert_problem(&r, 412, "precondition-failed", "the last PATCH after another upload took the key");
    assert_dataset(&node, "raced", b"other").await;

    let loc = location(&create_if_none_match(&node, "fresh", "*").await);
    patch_all(&node, &loc, b"fresh", 0, 5).await;
    assert_dataset(&node, "fresh", b"fresh").await;

    let r = create_if_none_match(&node, "etag", "\"abc\"").await;
    assert_eq!(r.status, 400, "If-None-Match other than * on a creation: {}", r.describe());
}

/// An upload created with the whole file's blake3 (`blake3` in
/// `Upload-Metadata`, as the CLI sends it instead of a checksum per PATCH)
/// commits only those bytes: other bytes are refused at the last PATCH
/// (`digest-mismatch`) and leave nothing; a value that is not 64 hex digits
/// is refused at creation.
#[tokio::test]
async fn an_upload_created_with_its_blake3_commits_only_those_bytes() {
    let node = TestNode::start();
    let good = b"the right bytes";
    let loc = create(&node, good.len() as u64, &meta(&[("key", "b3/ok"), ("blake3", &b3(good))])).await;
    patch_all(&node, &loc, good, 0, 5).await;
    assert_dataset(&node, "b3/ok", good).await;

    let wrong = b"the wrong bytes";
    let loc = create(&node, wrong.len() as u64, &meta(&[("key", "b3/bad"), ("blake3", &b3(good))])).await;
    let r = patch(&node, &loc, 0, wrong, &[]).await;
    assert_problem(&r, 400, "digest-mismatch", "the last PATCH of bytes with another blake3");
    assert_eq!(node.get("/datasets/b3/bad").await.status(), 404, "nothing is committed");
    assert_eq!(head(&node, &loc).await.status, 404, "the upload is gone");

    let r = call(
        &node,
        "POST",
        "/uploads",
        &[
            ("Tus-Resumable", "1.0.0"),
            ("Upload-Length", "5"),
            ("Upload-Metadata", &meta(&[("key", "b3/x"), ("blake3", "beef")])),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 400, "a blake3 that is not 64 hex digits: {}", r.describe());
}

/// A client that hashes while it sends (the CLI) names the whole upload's
/// blake3 on its last PATCH (`X-Blake3`): the node commits only bytes that
/// have it, and both it and a `blake3` given at creation must hold. On a
/// PATCH that does not end the upload, where it could not be checked, the
/// header is refused and nothing is taken.
#[tokio::test]
async fn the_last_patch_may_name_the_whole_blake3() {
    let node = TestNode::start();
    let data = generated(300 * KIB, 45);
    let (head_part, rest) = data.split_at(100 * KIB);
    let loc = create(&node, data.len() as u64, &meta(&[("key", "b3/last")])).await;
    let r = patch(&node, &loc, 0, head_part, &[("X-Blake3", &b3(&data))]).await;
    assert_problem(&r, 400, "bad-request", "X-Blake3 on a PATCH that stops short of the end");
    assert_eq!(offset_of(&node, &loc).await, 0, "the refused PATCH took nothing");
    assert_eq!(patch(&node, &loc, 0, head_part, &[]).await.status, 204);
    let r = patch(&node, &loc, 100 * KIB as u64, rest, &[("X-Blake3", "beef")]).await;
    assert_problem(&r, 400, "bad-request", "an X-Blake3 that is not 64 hex digits");
    assert_eq!(offset_of(&node, &loc).await, 100 * KIB as u64);
    let r = patch(&node, &loc, 100 * KIB as u64, rest, &[("X-Blake3", &b3(&data))]).await;
    assert_eq!(r.status, 204, "the last PATCH with the right blake3: {}", r.describe());
    assert_eq!(r.header("etag"), Some(format!("\"{}\"", b3(&data)).as_str()));
    assert_dataset(&node, "b3/last", &data).await;

    let wrong = b3(b"other bytes");
    let cases = [
        ("b3/wrong", None, wrong.as_str(), "a wrong X-Blake3"),
        ("b3/created-right", Some(b3(&data)), wrong.as_str(), "the creation's right, the PATCH's wrong"),
        ("b3/created-wrong", Some(wrong.clone()), &b3(&data)[..], "the creation's wrong, the PATCH's right"),
    ];
    for (key, created, sent, what) in cases {
        let mut pairs = vec![("key", key)];
        if let Some(created) = &created {
            pairs.push(("blake3", created.as_str()));
        }
        let loc = create(&node, data.len() as u64, &meta(&pairs)).await;
        let r = patch(&node, &loc, 0, &data, &[("X-Blake3", sent)]).await;
        assert_problem(&r, 400, "digest-mismatch", what);
        assert_eq!(node.get(&format!("/datasets/{key}")).await.status(), 404, "{what}: nothing is committed");
        assert_eq!(head(&node, &loc).await.status, 404, "{what}: the upload is gone");
    }
    assert!(upload_files(&node).is_empty(), "no upload file is left: {:?}", upload_files(&node));
}
