//! Access control (issue 5): bearer tokens and scopes on every route, hashed
//! tokens, signed URLs and their tamper corpus, signing-key rotation and
//! persistence, open mode and its bind refusal, CORS, and that no secret or
//! signature ever reaches the log.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const READ: &str = "rd-secret-7Kq2vXw9Lm";
const WRITE: &str = "wr-secret-3Jm8pLz4Qa";
const ADMIN: &str = "ad-secret-9Tn5bHc1Ze";
/// Configured only as `sha256:<hex>` of itself, with scope `write`.
const HASHED: &str = "hs-secret-6Rf1yGd0Uo";
/// Never configured.
const UNKNOWN: &str = "un-secret-4Wq8sNe2Xi";
const SIGNING_KEY: &str = "sk-7f3a9c2e5b1d8f4a6c0e2b9d7f5a3c1e";
const SIGNING_KEY_2: &str = "sk-0b8d6f4a2c9e7b5d3f1a8c6e4b2d0f9a";
const APP_ORIGIN: &str = "http://app.example";
const EVIL_ORIGIN: &str = "http://evil.example";
const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
const JSON_CT: (&str, &str) = ("Content-Type", "application/json");

// ---------------------------------------------------------------------------
// Setup and plumbing
// ---------------------------------------------------------------------------

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `SPILLWAY_TOKENS` in figment's inline syntax: one token per scope and a
/// hashed one.
fn tokens_setting() -> String {
    format!(
        r#"[{{name="reader",token="{READ}",scopes=["read"]}},{{name="writer",token="{WRITE}",scopes=["write"]}},{{name="boss",token="{ADMIN}",scopes=["admin"]}},{{name="hashed",token="sha256:{}",scopes=["write"]}}]"#,
        sha256_hex(HASHED)
    )
}

fn secured_node(extra: &[(&str, &str)]) -> TestNode {
    let tokens = tokens_setting();
    let mut settings = vec![("SPILLWAY_TOKENS", tokens.as_str())];
    settings.extend_from_slice(extra);
    TestNode::start_with(&settings)
}

fn cors_setting() -> String {
    format!(r#"["{APP_ORIGIN}"]"#)
}

/// One response, read whole.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    /// Every value of a header, joined by `, ` (None when absent).
    fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    fn is_problem(&self) -> bool {
        self.header("content-type").is_some_and(|ct| ct.starts_with("application/problem+json"))
    }

    fn code(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        v["code"].as_str().map(str::to_owned)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).chars().take(300).collect()
    }

    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

async fn call(
    node: &TestNode,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<reqwest::Body>,
) -> Reply {
    let mut req = node.client.request(method.clone(), node.url(path));
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req.body(body);
    }
    let resp = tokio::time::timeout(Duration::from_secs(30), req.send())
        .await
        .unwrap_or_else(|_| panic!("{method} {path}: no answer within 30 s"))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    Reply { status, headers, body }
}

fn body(bytes: impl Into<Vec<u8>>) -> Option<reqwest::Body> {
    Some(reqwest::Body::from(bytes.into()))
}

fn json_body(v: Value) -> Option<reqwest::Body> {
    body(v.to_string())
}

/// Stores `bytes` at `key` with the admin token.
async fn put_admin(node: &TestNode, key: &str, bytes: &[u8]) {
    let r = call(node, Method::PUT, &format!("/data/{key}"), Some(ADMIN), &[], body(bytes)).await;
    assert!(r.ok(), "setup PUT {key}: {} {}", r.status, r.text());
}

/// Whether a record exists at `key` (asked with the admin token).
async fn exists(node: &TestNode, key: &str) -> bool {
    let r = call(node, Method::GET, &format!("/datasets/{key}"), Some(ADMIN), &[], None).await;
    match r.status {
        200 => true,
        404 => false,
        other => panic!("GET /datasets/{key}: {other} {}", r.text()),
    }
}

async fn record(node: &TestNode, key: &str) -> Value {
    let r = call(node, Method::GET, &format!("/datasets/{key}"), Some(ADMIN), &[], None).await;
    assert_eq!(r.status, 200, "GET /datasets/{key}: {}", r.text());
    r.json()
}

/// Every key in the catalog under `prefix`.
async fn all_keys(node: &TestNode, prefix: &str) -> Vec<String> {
    let path = format!("/datasets?limit=10000&prefix={prefix}");
    let r = call(node, Method::GET, &path, Some(ADMIN), &[], None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().as_array().unwrap().iter().map(|rec| rec["key"].as_str().unwrap().to_string()).collect()
}

/// Creates a tus upload of `len` bytes for `key` with the admin token.
async fn tus_create(node: &TestNode, key: &str, len: usize) -> String {
    tus_create_as(node, ADMIN, key, len).await
}

/// Creates a tus upload of `len` bytes for `key` with `token`.
async fn tus_create_as(node: &TestNode, token: &str, key: &str, len: usize) -> String {
    let metadata = format!("key {}", STANDARD.encode(key));
    let len = len.to_string();
    let r = call(
        node,
        Method::POST,
        "/uploads",
        Some(token),
        &[TUS, ("Upload-Length", &len), ("Upload-Metadata", &metadata)],
        None,
    )
    .await;
    assert_eq!(r.status, 201, "setup POST /uploads: {}", r.text());
    r.header("location").unwrap().rsplit('/').next().unwrap().to_string()
}

fn multipart(key: &str, content: &str) -> (String, Vec<u8>) {
    let b = "spillway-access-boundary-1f9";
    let body = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\n{key}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.txt\"\r\n\
         Content-Type: text/plain\r\n\r\n{content}\r\n--{b}--\r\n"
    );
    (format!("multipart/form-data; boundary={b}"), body.into_bytes())
}

/// Problems found, reported together at the end of a test.
#[derive(Default)]
struct Checks {
    problems: Vec<String>,
    /// Every `sig` value sent, for the leak check.
    sigs: Vec<String>,
}

impl Checks {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.problems.push(what());
        }
    }

    /// `status`, and for a problem response with a body, its `code`.
    fn reply(&mut self, label: &str, r: &Reply, status: u16, code: Option<&str>) {
        if r.status != status {
            self.problems.push(format!("{label}: got {} (want {status}) {}", r.status, r.text()));
            return;
        }
        if let Some(code) = code {
            if !r.body.is_empty() || !label.starts_with("HEAD") {
                self.check(r.is_problem() && r.code().as_deref() == Some(code), || {
                    format!("{label}: {status} but code {:?} (want {code:?}) {}", r.code(), r.text())
                });
            }
        }
    }

    fn assert_clean(&self, what: &str) {
        assert!(
            self.problems.is_empty(),
            "{what}: {} problem(s):\n  {}",
            self.problems.len(),
            self.problems.join("\n  ")
        );
    }
}

/// Secrets and signatures that must never be in the node's log; each
/// finding quotes the first log line that has it.
fn leaks(node: &TestNode, sigs: &[String]) -> Vec<String> {
    let log = node.log();
    let line_with = |needle: &str| log.lines().find(|l| l.contains(needle)).unwrap_or_default().to_string();
    let mut found = Vec::new();
    for secret in [READ, WRITE, ADMIN, HASHED, UNKNOWN, SIGNING_KEY, SIGNING_KEY_2] {
        if log.contains(secret) {
            found.push(format!("the secret `{secret}` is in the log: {}", line_with(secret)));
        }
    }
    for sig in sigs.iter().filter(|s| s.len() >= 8) {
        if log.contains(sig.as_str()) {
            found.push(format!("the signature `{sig}` is in the log: {}", line_with(sig)));
        }
    }
    if log.contains("sig=") {
        found.push(format!("a `sig=` query parameter is in the log: {}", line_with("sig=")));
    }
    found
}

fn assert_no_leaks(node: &TestNode, sigs: &[String]) {
    let found = leaks(node, sigs);
    assert!(found.is_empty(), "leaks:\n  {}", found.join("\n  "));
}

// ---------------------------------------------------------------------------
// The route table
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    NoToken,
    Unknown,
    Read,
    Write,
    Admin,
}

impl Caller {
    const ALL: [Caller; 5] = [Caller::NoToken, Caller::Unknown, Caller::Read, Caller::Write, Caller::Admin];

    fn token(self) -> Option<&'static str> {
        match self {
            Caller::NoToken => None,
            Caller::Unknown => Some(UNKNOWN),
            Caller::Read => Some(READ),
            Caller::Write => Some(WRITE),
            Caller::Admin => Some(ADMIN),
        }
    }

    /// 0 for no or an unknown token.
    fn level(self) -> u8 {
        match self {
            Caller::NoToken | Caller::Unknown => 0,
            Caller::Read => 1,
            Caller::Write => 2,
            Caller::Admin => 3,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Route {
    List,
    GetRecord,
    Patch,
    Delete,
    Acknowledge,
    UploadUrl,
    DownloadUrl,
    PutData,
    GetData,
    HeadData,
    Multipart,
    TusCreate,
    TusHead,
    TusPatch,
    TusDelete,
    TusOptions,
    Health,
    Ready,
    OpenApi,
    Page,
    Metrics,
}

impl Route {
    const ALL: [Route; 21] = [
        Route::List,
        Route::GetRecord,
        Route::Patch,
        Route::Delete,
        Route::Acknowledge,
        Route::UploadUrl,
        Route::DownloadUrl,
        Route::PutData,
        Route::GetData,
        Route::HeadData,
        Route::Multipart,
        Route::TusCreate,
        Route::TusHead,
        Route::TusPatch,
        Route::TusDelete,
        Route::TusOptions,
        Route::Health,
        Route::Ready,
        Route::OpenApi,
        Route::Page,
        Route::Metrics,
    ];

    fn label(self) -> &'static str {
        match self {
            Route::List => "GET /datasets",
            Route::GetRecord => "GET /datasets/{key}",
            Route::Patch => "PATCH /datasets/{key}",
            Route::Delete => "DELETE /datasets/{key}",
            Route::Acknowledge => "POST /datasets/{key}/action/acknowledge",
            Route::UploadUrl => "POST /datasets/{key}/upload-url",
            Route::DownloadUrl => "POST /datasets/{key}/download-url",
            Route::PutData => "PUT /data/{key}",
            Route::GetData => "GET /data/{key}",
            Route::HeadData => "HEAD /data/{key}",
            Route::Multipart => "POST /datasets (multipart)",
            Route::TusCreate => "POST /uploads",
            Route::TusHead => "HEAD /uploads/{id}",
            Route::TusPatch => "PATCH /uploads/{id}",
            Route::TusDelete => "DELETE /uploads/{id}",
            Route::TusOptions => "OPTIONS /uploads",
            Route::Health => "GET /health",
            Route::Ready => "GET /ready",
            Route::OpenApi => "GET /openapi.json",
            Route::Page => "GET /",
            Route::Metrics => "GET /metrics",
        }
    }

    /// The scope level it needs (0: open).
    fn needs(self) -> u8 {
        match self {
            Route::List | Route::GetRecord | Route::DownloadUrl | Route::GetData | Route::HeadData => 1,
            Route::Patch
            | Route::Acknowledge
            | Route::UploadUrl
            | Route::PutData
            | Route::Multipart
            | Route::TusCreate
            | Route::TusHead
            | Route::TusPatch
            | Route::TusDelete => 2,
            Route::Delete => 3,
            Route::TusOptions | Route::Health | Route::Ready | Route::OpenApi | Route::Page | Route::Metrics => 0,
        }
    }

    /// The status of a call that is allowed.
    fn success(self) -> u16 {
        match self {
            Route::PutData | Route::Multipart | Route::TusCreate => 201,
            Route::Delete | Route::TusPatch | Route::TusDelete | Route::TusOptions => 204,
            _ => 200,
        }
    }
}

fn expected(route: Route, caller: Caller, open: bool) -> u16 {
    if open || route.needs() == 0 {
        route.success()
    } else if caller.level() == 0 {
        401
    } else if caller.level() < route.needs() {
        403
    } else {
        route.success()
    }
}

/// Runs `route` as a caller holding `token` on fresh fixtures (made with
/// the admin token). Returns the reply and, when the route's effect does
/// not match its status (done although refused, or not done although
/// allowed), what is wrong.
async fn exercise(node: &TestNode, route: Route, token: Option<&str>, n: usize) -> (Reply, Option<String>) {
    let key = format!("table/{n}.txt");
    let content = format!("the bytes of case {n}");
    let mismatch = |allowed: bool, happened: bool, what: &str| {
        (allowed != happened).then(|| {
            format!(
                "answered {} but {what} {}",
                if allowed { "2xx" } else { "an error" },
                if happened { "happened" } else { "did not happen" }
            )
        })
    };
    let get = |path: &'static str| async move { (call(node, Method::GET, path, token, &[], None).await, None) };
    // An upload belongs to its creator: a caller who may write tries its
    // own (`an_upload_belongs_to_the_token_that_created_it` covers others').
    let owner = token.filter(|t| [WRITE, ADMIN, HASHED].contains(t)).unwrap_or(ADMIN);
    match route {
        Route::List => get("/datasets").await,
        Route::GetRecord => {
            put_admin(node, &key, content.as_bytes()).await;
            let r = call(node, Method::GET, &format!("/datasets/{key}"), token, &[], None).await;
            let wrong = (r.ok() && r.json()["key"] != key.as_str()).then(|| format!("the record is {}", r.text()));
            (r, wrong)
        }
        Route::Patch => {
            put_admin(node, &key, content.as_bytes()).await;
            let patch = json!({"description": "patched"});
            let r = call(node, Method::PATCH, &format!("/datasets/{key}"), token, &[JSON_CT], json_body(patch)).await;
            let patched = record(node, &key).await["description"] == "patched";
            let wrong = mismatch(r.ok(), patched, "the patch");
            (r, wrong)
        }
        Route::Delete => {
            put_admin(node, &key, content.as_bytes()).await;
            let r = call(node, Method::DELETE, &format!("/datasets/{key}"), token, &[], None).await;
            let gone = !exists(node, &key).await;
            let wrong = mismatch(r.ok(), gone, "the deletion");
            (r, wrong)
        }
        Route::Acknowledge => {
            put_admin(node, &key, content.as_bytes()).await;
            let ack = json!({"name": "acknowledged", "blake3": b3(content.as_bytes())});
            let path = format!("/datasets/{key}/action/acknowledge");
            let r = call(node, Method::POST, &path, token, &[JSON_CT], json_body(ack)).await;
            let named = record(node, &key).await["name"] == "acknowledged";
            let wrong = mismatch(r.ok(), named, "the acknowledgement");
            (r, wrong)
        }
        Route::UploadUrl | Route::DownloadUrl => {
            let (action, method, request) = match route {
                Route::UploadUrl => ("upload-url", "PUT", json!({"expires_in": 60, "max_size": 100})),
                _ => ("download-url", "GET", json!({"expires_in": 60})),
            };
            let path = format!("/datasets/{key}/{action}");
            let r = call(node, Method::POST, &path, token, &[JSON_CT], json_body(request)).await;
            let v = r.json();
            let wrong = (r.ok()
                && (v["method"] != method || !v["url"].as_str().unwrap_or("").starts_with(&format!("/data/{key}?"))))
            .then(|| format!("the minted URL is {v}"));
            (r, wrong)
        }
        Route::PutData => {
            let r = call(node, Method::PUT, &format!("/data/{key}"), token, &[], body(content.clone())).await;
            let stored = exists(node, &key).await;
            let wrong = mismatch(r.ok(), stored, "the store");
            (r, wrong)
        }
        Route::GetData | Route::HeadData => {
            put_admin(node, &key, content.as_bytes()).await;
            let method = if matches!(route, Route::GetData) { Method::GET } else { Method::HEAD };
            let r = call(node, method, &format!("/data/{key}"), token, &[], None).await;
            let wrong = match route {
                Route::GetData => {
                    (r.ok() && r.body != content.as_bytes()).then(|| format!("the body is {:?}", r.text()))
                }
                _ => (r.ok() && r.header("content-length") != Some(content.len().to_string()))
                    .then(|| format!("Content-Length is {:?}", r.header("content-length"))),
            };
            (r, wrong)
        }
        Route::Multipart => {
            let (ct, form) = multipart(&key, &content);
            let r = call(node, Method::POST, "/datasets", token, &[("Content-Type", &ct)], body(form)).await;
            let stored = exists(node, &key).await;
            let wrong = mismatch(r.ok(), stored, "the store");
            (r, wrong)
        }
        Route::TusCreate => {
            let metadata = format!("key {}", STANDARD.encode(&key));
            let headers = [TUS, ("Upload-Length", "5"), ("Upload-Metadata", metadata.as_str())];
            let r = call(node, Method::POST, "/uploads", token, &headers, None).await;
            let wrong = (r.ok() && r.header("location").is_none()).then(|| "no Location".to_string());
            (r, wrong)
        }
        Route::TusHead => {
            let id = tus_create_as(node, owner, &key, content.len()).await;
            let r = call(node, Method::HEAD, &format!("/uploads/{id}"), token, &[TUS], None).await;
            let wrong = (r.ok() && r.header("upload-offset").as_deref() != Some("0"))
                .then(|| format!("Upload-Offset is {:?}", r.header("upload-offset")));
            (r, wrong)
        }
        Route::TusPatch => {
            let id = tus_create_as(node, owner, &key, content.len()).await;
            let headers = [TUS, ("Upload-Offset", "0"), ("Content-Type", "application/offset+octet-stream")];
            let r = call(node, Method::PATCH, &format!("/uploads/{id}"), token, &headers, body(content.clone())).await;
            let committed = exists(node, &key).await;
            let wrong = mismatch(r.ok(), committed, "the upload's commit");
            (r, wrong)
        }
        Route::TusDelete => {
            let id = tus_create_as(node, owner, &key, content.len()).await;
            let r = call(node, Method::DELETE, &format!("/uploads/{id}"), token, &[TUS], None).await;
            let after = call(node, Method::HEAD, &format!("/uploads/{id}"), Some(ADMIN), &[TUS], None).await;
            let gone = matches!(after.status, 404 | 410);
            let wrong = mismatch(r.ok(), gone, "the termination");
            (r, wrong)
        }
        Route::TusOptions => (call(node, Method::OPTIONS, "/uploads", token, &[], None).await, None),
        Route::Health => get("/health").await,
        Route::Ready => get("/ready").await,
        Route::OpenApi => get("/openapi.json").await,
        Route::Page => get("/").await,
        Route::Metrics => get("/metrics").await,
    }
}

/// Every route × every caller; `open`: the node has no tokens.
async fn table_checks(node: &TestNode, open: bool) -> Checks {
    let mut checks = Checks::default();
    let mut n = 0;
    for route in Route::ALL {
        for caller in Caller::ALL {
            n += 1;
            let (r, wrong) = exercise(node, route, caller.token(), n).await;
            let want = expected(route, caller, open);
            let label = format!("{} as {caller:?}", route.label());
            if let Some(wrong) = wrong {
                checks.problems.push(format!("{label}: {wrong}"));
            }
            let head = route.label().starts_with("HEAD");
            match want {
                401 => {
                    checks.reply(&label, &r, 401, (!head).then_some("unauthorized"));
                    let challenge = r.header("www-authenticate").unwrap_or_default();
                    checks.check(challenge.to_ascii_lowercase().starts_with("bearer"), || {
                        format!("{label}: 401 with WWW-Authenticate {challenge:?}")
                    });
                }
                403 => checks.reply(&label, &r, 403, (!head).then_some("forbidden")),
                _ => checks.reply(&label, &r, want, None),
            }
        }
    }
    checks
}

#[tokio::test]
async fn every_route_for_every_caller() {
    let node = secured_node(&[]);
    let checks = table_checks(&node, false).await;
    checks.assert_clean("route table");
    assert_no_leaks(&node, &[]);
}

/// The scheme of `Authorization` is case-insensitive (RFC 9110 §11.1):
/// `BEARER` and `bEaReR` are `Bearer`; whitespace around the token is not
/// part of it, and another scheme is still no token.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let node = secured_node(&[]);
    let mut c = Checks::default();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        for value in [format!("{scheme} {WRITE}"), format!("  {scheme}   {WRITE} ")] {
            let r =
                node.client.put(node.url("/data/scheme.bin")).header("Authorization", &value).body("x").send().await;
            let status = r.unwrap().status();
            c.check(status == 200 || status == 201, || format!("PUT with `Authorization: {value}`: {status}"));
        }
    }
    for value in [format!("Bearer{WRITE}"), format!("Bearers {WRITE}"), format!("Basic {WRITE}"), WRITE.to_string()] {
        let r = node.client.get(node.url("/datasets")).header("Authorization", &value).send().await.unwrap();
        c.check(r.status() == 401, || format!("GET with `Authorization: {value}`: {}", r.status()));
    }
    c.assert_clean("bearer scheme");
}

#[tokio::test]
async fn metrics_token_makes_metrics_need_read() {
    let node = secured_node(&[("SPILLWAY_METRICS_TOKEN", "true")]);
    let mut checks = Checks::default();
    for caller in Caller::ALL {
        let r = call(&node, Method::GET, "/metrics", caller.token(), &[], None).await;
        let label = format!("GET /metrics as {caller:?} (metrics_token)");
        match caller.level() {
            0 => checks.reply(&label, &r, 401, Some("unauthorized")),
            _ => {
                checks.reply(&label, &r, 200, None);
                checks
                    .check(String::from_utf8_lossy(&r.body).contains("spillway_"), || format!("{label}: {}", r.text()));
            }
        }
        for open in ["/health", "/ready", "/openapi.json"] {
            let r = call(&node, Method::GET, open, caller.token(), &[], None).await;
            checks.reply(&format!("GET {open} as {caller:?} (metrics_token)"), &r, 200, None);
        }
    }
    checks.assert_clean("metrics_token");
    assert_no_leaks(&node, &[]);
}

#[tokio::test]
async fn open_mode_serves_everything_without_a_token() {
    let node = TestNode::start();
    let checks = table_checks(&node, true).await;
    checks.assert_clean("open mode table");
    let log = node.log();
    assert!(
        log.lines().any(|l| l.contains("no tokens") && l.contains("open")),
        "open mode is not announced at start:\n{log}"
    );
}

// ---------------------------------------------------------------------------
// Who may touch a resumable upload
// ---------------------------------------------------------------------------

/// A second `write` token besides `WRITE`.
const OTHER: &str = "ot-secret-2Vb6nKs8Pd";

/// The answer to `method` on `/uploads/{id}` as `token` (a PATCH sends
/// `body` at `offset`).
async fn on_upload(node: &TestNode, method: Method, id: &str, token: &str, offset: usize, body: &[u8]) -> Reply {
    let offset = offset.to_string();
    let patch = [TUS, ("Upload-Offset", offset.as_str()), ("Content-Type", "application/offset+octet-stream")];
    let (headers, body) = if method == Method::PATCH { (&patch[..], self::body(body)) } else { (&[TUS][..], None) };
    call(node, method, &format!("/uploads/{id}"), Some(token), headers, body).await
}

/// Another write token gets exactly what an unknown id gets (404
/// `not-found`) for HEAD, PATCH, DELETE and as a part of a concatenation,
/// and changes nothing; the creator and an admin get the upload.
#[tokio::test]
async fn an_upload_belongs_to_the_token_that_created_it() {
    let tokens = format!(
        r#"[{{name="writer",token="{WRITE}",scopes=["write"]}},{{name="other",token="{OTHER}",scopes=["write"]}},{{name="boss",token="{ADMIN}",scopes=["admin"]}}]"#
    );
    let node = TestNode::start_with(&[("SPILLWAY_TOKENS", tokens.as_str())]);
    let mut c = Checks::default();
    let content = b"0123456789";
    let id = tus_create_as(&node, WRITE, "owned/a.bin", content.len()).await;
    let unknown = "0123456789abcdef0123456789abcdef";
    for method in [Method::HEAD, Method::PATCH, Method::DELETE] {
        let label = format!("{method} of another token's upload");
        let theirs = on_upload(&node, method.clone(), &id, OTHER, 0, &content[..4]).await;
        let nobodys = on_upload(&node, method.clone(), unknown, OTHER, 0, &content[..4]).await;
        c.reply(&label, &theirs, 404, Some("not-found"));
        c.check(theirs.text().replace(&id, "ID") == nobodys.text().replace(unknown, "ID"), || {
            format!("{label}: answers {} where an unknown id answers {}", theirs.text(), nobodys.text())
        });
        c.check(theirs.header("upload-offset").is_none(), || format!("{label}: an Upload-Offset"));
    }
    let h = on_upload(&node, Method::HEAD, &id, WRITE, 0, &[]).await;
    c.reply("HEAD by its creator", &h, 200, None);
    c.check(h.header("upload-offset").as_deref() == Some("0"), || {
        format!("another token changed the upload: Upload-Offset {:?}", h.header("upload-offset"))
    });
    c.reply("PATCH by its creator", &on_upload(&node, Method::PATCH, &id, WRITE, 0, &content[..4]).await, 204, None);
    let h = on_upload(&node, Method::HEAD, &id, ADMIN, 0, &[]).await;
    c.reply("HEAD by an admin", &h, 200, None);
    c.reply("PATCH by an admin", &on_upload(&node, Method::PATCH, &id, ADMIN, 4, &content[4..]).await, 204, None);
    c.check(exists(&node, "owned/a.bin").await, || "the upload finished by an admin was not committed".into());

    // Concatenation: every partial must be the final upload's creator's.
    let partial = call(
        &node,
        Method::POST,
        "/uploads",
        Some(WRITE),
        &[TUS, ("Upload-Length", "3"), ("Upload-Concat", "partial")],
        None,
    )
    .await;
    c.reply("a partial upload", &partial, 201, None);
    let part = partial.header("location").unwrap_or_default();
    let part_id = part.rsplit('/').next().unwrap_or_default().to_string();
    c.reply("PATCH of the partial", &on_upload(&node, Method::PATCH, &part_id, WRITE, 0, b"abc").await, 204, None);
    let metadata = format!("key {}", STANDARD.encode("owned/joined.bin"));
    let concat = format!("final;{part}");
    let final_headers = [TUS, ("Upload-Concat", concat.as_str()), ("Upload-Metadata", metadata.as_str())];
    let theirs = call(&node, Method::POST, "/uploads", Some(OTHER), &final_headers, None).await;
    c.reply("a final upload naming another token's partial", &theirs, 404, Some("not-found"));
    c.check(!exists(&node, "owned/joined.bin").await, || "another token's partial was concatenated".into());
    let h = on_upload(&node, Method::HEAD, &part_id, WRITE, 0, &[]).await;
    c.reply("HEAD of the partial after the refused concatenation", &h, 200, None);
    c.check(h.header("upload-offset").as_deref() == Some("3"), || {
        format!("the partial changed: Upload-Offset {:?}", h.header("upload-offset"))
    });
    let mine = call(&node, Method::POST, "/uploads", Some(WRITE), &final_headers, None).await;
    c.reply("a final upload naming its creator's partial", &mine, 201, None);
    c.check(exists(&node, "owned/joined.bin").await, || "the creator's concatenation was not committed".into());

    // An admin may terminate anyone's upload.
    let id = tus_create_as(&node, WRITE, "owned/b.bin", 5).await;
    c.reply("DELETE by an admin", &on_upload(&node, Method::DELETE, &id, ADMIN, 0, &[]).await, 204, None);
    c.reply("HEAD after the admin's DELETE", &on_upload(&node, Method::HEAD, &id, WRITE, 0, &[]).await, 404, None);
    c.assert_clean("upload ownership");
}

// ---------------------------------------------------------------------------
// Hashed tokens
// ---------------------------------------------------------------------------

#[tokio::test]
async fn hashed_tokens_take_the_secret_not_the_hash() {
    let node = secured_node(&[]);
    let mut c = Checks::default();
    let hash = sha256_hex(HASHED);

    let r = call(&node, Method::PUT, "/data/hashed/a.txt", Some(HASHED), &[], body("by hash")).await;
    c.reply("PUT with the secret of a hashed token", &r, 201, None);
    let r = call(&node, Method::GET, "/data/hashed/a.txt", Some(HASHED), &[], None).await;
    c.reply("GET with the secret of a hashed token", &r, 200, None);
    c.check(r.body == b"by hash", || format!("GET body {:?}", r.text()));
    let r = call(&node, Method::DELETE, "/datasets/hashed/a.txt", Some(HASHED), &[], None).await;
    c.reply("DELETE with a hashed write token", &r, 403, Some("forbidden"));

    for (label, bearer) in [
        ("the configured string `sha256:<hex>`", format!("sha256:{hash}")),
        ("the hex alone", hash.clone()),
        ("the hex in upper case", hash.to_ascii_uppercase()),
        ("`sha256:` + the secret", format!("sha256:{HASHED}")),
    ] {
        let r = call(&node, Method::GET, "/datasets", Some(&bearer), &[], None).await;
        c.reply(&format!("GET /datasets with {label}"), &r, 401, Some("unauthorized"));
        let r = call(&node, Method::PUT, "/data/hashed/b.txt", Some(&bearer), &[], body("no")).await;
        c.reply(&format!("PUT with {label}"), &r, 401, Some("unauthorized"));
    }
    // The secret in another scheme is not a bearer token.
    let r = node
        .client
        .get(node.url("/datasets"))
        .header("Authorization", format!("Basic {}", STANDARD.encode(format!("x:{READ}"))))
        .send()
        .await
        .unwrap();
    c.check(r.status() == 401, || format!("GET /datasets with Basic auth: {}", r.status()));
    c.check(!exists(&node, "hashed/b.txt").await, || "a PUT with a hash as token stored the dataset".into());
    c.assert_clean("hashed tokens");
    assert_no_leaks(&node, &[]);
}

// ---------------------------------------------------------------------------
// Signed URLs
// ---------------------------------------------------------------------------

/// A minted signed URL, split into its parts.
#[derive(Debug, Clone)]
struct Signed {
    url: String,
    path: String,
    expires: String,
    max_size: Option<String>,
    sig: String,
}

impl Signed {
    fn parse(url: &str) -> Signed {
        let (path, query) = url.split_once('?').unwrap_or_else(|| panic!("no query in {url}"));
        let (mut expires, mut max_size, mut sig) = (None, None, None);
        for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
            match k {
                "expires" => expires = Some(v.to_string()),
                "max_size" => max_size = Some(v.to_string()),
                "sig" => sig = Some(v.to_string()),
                other => panic!("unexpected parameter `{other}` in {url}"),
            }
        }
        Signed {
            url: url.to_string(),
            path: path.to_string(),
            expires: expires.expect("expires"),
            max_size,
            sig: sig.expect("sig"),
        }
    }

    fn query(&self) -> String {
        self.url.split_once('?').unwrap().1.to_string()
    }
}

/// `?expires=..[&max_size=..][&sig=..]`.
fn query(expires: &str, max_size: Option<&str>, sig: Option<&str>) -> String {
    let mut q = format!("expires={expires}");
    if let Some(m) = max_size {
        q.push_str(&format!("&max_size={m}"));
    }
    if let Some(s) = sig {
        q.push_str(&format!("&sig={s}"));
    }
    q
}

async fn mint(node: &TestNode, key: &str, action: &str, token: &str, request: Value) -> Signed {
    let path = format!("/datasets/{key}/{action}");
    let r = call(node, Method::POST, &path, Some(token), &[JSON_CT], json_body(request)).await;
    assert_eq!(r.status, 200, "POST {path}: {}", r.text());
    let v = r.json();
    let want = if action == "upload-url" { "PUT" } else { "GET" };
    assert_eq!(v["method"], want, "{v}");
    let expires_at = v["expires_at"].as_str().unwrap_or_default();
    assert!(
        expires_at.len() >= 20 && expires_at.as_bytes()[10] == b'T' && expires_at.ends_with('Z'),
        "expires_at is not RFC 3339: {v}"
    );
    let signed = Signed::parse(v["url"].as_str().expect("url"));
    assert_eq!(signed.path, format!("/data/{key}"), "{v}");
    signed
}

fn flip_one(sig: &str) -> String {
    let mut chars: Vec<char> = sig.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

/// The same signature as standard base64 with padding (raw, so `+`, `/`
/// and `=` as they are, and percent-encoded).
fn as_standard_base64(sig: &str) -> (String, String) {
    let bytes = URL_SAFE_NO_PAD.decode(sig).expect("the minted sig is base64url");
    let std = STANDARD.encode(bytes);
    let encoded = std.replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    (std, encoded)
}

/// The whole signed-URL story on one node; see the test below.
async fn signed_url_checks(node: &TestNode) -> Checks {
    let mut c = Checks::default();
    let started = Instant::now();

    // Minted now, tried at the end (when they have expired).
    put_admin(node, "signed/expired-get.csv", b"old").await;
    let expiring_get = mint(node, "signed/expired-get.csv", "download-url", READ, json!({"expires_in": 1})).await;
    let expiring_put = mint(node, "signed/expired-put.csv", "upload-url", WRITE, json!({"expires_in": 1})).await;
    c.sigs.extend([expiring_get.sig.clone(), expiring_put.sig.clone()]);

    // --- the happy path: mint, PUT with no token, acknowledge, download.
    let data = b"id,name\n1,ada\n2,grace\n".to_vec();
    let up = mint(node, "signed/a.csv", "upload-url", WRITE, json!({"max_size": 64, "expires_in": 600})).await;
    c.sigs.push(up.sig.clone());
    c.check(up.max_size.as_deref() == Some("64"), || format!("the upload URL has no max_size=64: {}", up.url));
    let r = call(node, Method::PUT, &up.url, None, &[("Content-Type", "text/csv")], body(data.clone())).await;
    c.reply("signed PUT with no token", &r, 201, None);
    let ack = json!({
        "name": "Signed A",
        "description": "uploaded through a signed URL",
        "tags": ["signed", "csv"],
        "blake3": b3(&data),
    });
    let r =
        call(node, Method::POST, "/datasets/signed/a.csv/action/acknowledge", Some(WRITE), &[JSON_CT], json_body(ack))
            .await;
    c.reply("acknowledge after a signed PUT", &r, 200, None);
    let rec = record(node, "signed/a.csv").await;
    c.check(
        rec["name"] == "Signed A"
            && rec["description"] == "uploaded through a signed URL"
            && rec["tags"] == json!(["signed", "csv"])
            && rec["size"] == data.len()
            && rec["blake3"] == b3(&data)
            && rec["content_type"].as_str().unwrap_or("").starts_with("text/csv"),
        || format!("the acknowledged record is {rec}"),
    );

    let down = mint(node, "signed/a.csv", "download-url", READ, json!({})).await;
    c.sigs.push(down.sig.clone());
    c.check(down.max_size.is_none(), || format!("a download URL carries max_size: {}", down.url));
    let r = call(node, Method::GET, &down.url, None, &[], None).await;
    c.reply("signed GET with no token", &r, 200, None);
    c.check(r.body == data, || format!("signed GET body {:?}", r.text()));
    let r = call(node, Method::HEAD, &down.url, None, &[], None).await;
    c.reply("HEAD with a signed GET URL", &r, 200, None);
    c.check(r.header("content-length") == Some(data.len().to_string()), || {
        format!("signed HEAD Content-Length {:?}", r.header("content-length"))
    });
    // The signature binds the key, not its spelling: the same key encoded
    // another way is the same key (the code verifies the decoded key).
    for path in ["/data/signed%2Fa.csv", "/data/%73igned/a.csv", "/data/signed/%61.csv"] {
        let r = call(node, Method::GET, &format!("{path}?{}", down.query()), None, &[], None).await;
        c.reply(&format!("signed GET of the same key spelt {path}"), &r, 200, None);
        c.check(r.body == data, || format!("GET {path}: body {:?}", r.text()));
    }

    // --- the tamper corpus on an upload URL: every one is 403 forbidden
    // and stores nothing.
    let b = mint(node, "signed/b.csv", "upload-url", WRITE, json!({"max_size": 64})).await;
    let b_get = mint(node, "signed/b.csv", "download-url", READ, json!({})).await;
    let (std_sig, std_sig_encoded) = as_standard_base64(&b.sig);
    let (e, m, s) = (b.expires.as_str(), b.max_size.as_deref(), b.sig.as_str());
    let e_plus = (e.parse::<i64>().unwrap() + 1).to_string();
    let e_minus = (e.parse::<i64>().unwrap() - 1).to_string();
    let truncated = &s[..s.len() - 1];
    let half = &s[..s.len() / 2];
    let extended = format!("{s}A");
    let extended4 = format!("{s}AAAA");
    let flipped = flip_one(s);
    c.sigs.extend([
        b.sig.clone(),
        b_get.sig.clone(),
        std_sig.clone(),
        truncated.into(),
        extended.clone(),
        flipped.clone(),
    ]);
    let bq = b.query();
    let corpus: Vec<(&str, String, Vec<&str>)> = vec![
        ("another key", format!("/data/signed/other.csv?{bq}"), vec!["signed/other.csv"]),
        ("the key in another case", format!("/data/signed/B.csv?{bq}"), vec!["signed/B.csv"]),
        ("a longer key", format!("/data/signed/b.csv.bak?{bq}"), vec!["signed/b.csv.bak"]),
        ("a key one segment deeper", format!("/data/signed/b.csv/x?{bq}"), vec!["signed/b.csv/x"]),
        ("a key one segment shorter", format!("/data/b.csv?{bq}"), vec!["b.csv"]),
        ("expires + 1", format!("/data/signed/b.csv?{}", query(&e_plus, m, Some(s))), vec![]),
        ("expires - 1", format!("/data/signed/b.csv?{}", query(&e_minus, m, Some(s))), vec![]),
        ("expires far in the future", format!("/data/signed/b.csv?{}", query("99999999999", m, Some(s))), vec![]),
        ("no expires", format!("/data/signed/b.csv?max_size=64&sig={s}"), vec![]),
        ("max_size + 1", format!("/data/signed/b.csv?{}", query(e, Some("65"), Some(s))), vec![]),
        ("max_size - 1", format!("/data/signed/b.csv?{}", query(e, Some("63"), Some(s))), vec![]),
        ("max_size removed", format!("/data/signed/b.csv?{}", query(e, None, Some(s))), vec![]),
        ("max_size not a number", format!("/data/signed/b.csv?{}", query(e, Some("64x"), Some(s))), vec![]),
        ("sig truncated by one", format!("/data/signed/b.csv?{}", query(e, m, Some(truncated))), vec![]),
        ("sig cut in half", format!("/data/signed/b.csv?{}", query(e, m, Some(half))), vec![]),
        ("sig extended by one", format!("/data/signed/b.csv?{}", query(e, m, Some(&extended))), vec![]),
        ("sig extended by four", format!("/data/signed/b.csv?{}", query(e, m, Some(&extended4))), vec![]),
        ("sig with one char flipped", format!("/data/signed/b.csv?{}", query(e, m, Some(&flipped))), vec![]),
        ("sig as padded standard base64", format!("/data/signed/b.csv?{}", query(e, m, Some(&std_sig))), vec![]),
        (
            "sig as padded standard base64, percent-encoded",
            format!("/data/signed/b.csv?{}", query(e, m, Some(&std_sig_encoded))),
            vec![],
        ),
        ("no sig", format!("/data/signed/b.csv?{}", query(e, m, None)), vec![]),
        ("an empty sig", format!("/data/signed/b.csv?{}", query(e, m, Some(""))), vec![]),
        ("the GET URL of the key (method swapped)", format!("/data/signed/b.csv?{}", b_get.query()), vec![]),
        ("a used URL of another key", format!("/data/signed/b.csv?{}", up.query()), vec![]),
        (
            "the upload URL of signed/a.csv reused for another key",
            format!("/data/signed/reuse.csv?{}", up.query()),
            vec!["signed/reuse.csv"],
        ),
    ];
    for (label, path, also_absent) in &corpus {
        let r = call(node, Method::PUT, path, None, &[], body("tampered bytes")).await;
        c.reply(&format!("tampered signed PUT ({label}) {path}"), &r, 403, Some("forbidden"));
        for key in also_absent {
            c.check(!exists(node, key).await, || format!("tampered signed PUT ({label}) stored `{key}`"));
        }
    }
    c.check(!exists(node, "signed/b.csv").await, || "a tampered signed PUT stored signed/b.csv".into());
    // The untampered URL still works afterwards (the corpus was refused on
    // its merits, not because the URL was spent).
    let r = call(node, Method::PUT, &b.url, None, &[], body("the real b")).await;
    c.reply("the untampered upload URL after the corpus", &r, 201, None);

    // --- the tamper corpus on a download URL: 403, and no bytes.
    put_admin(node, "signed/secret.csv", b"not for you").await;
    let dq = down.query();
    let (de, ds) = (down.expires.as_str(), down.sig.as_str());
    let de_plus = (de.parse::<i64>().unwrap() + 1).to_string();
    let flipped_down = flip_one(ds);
    c.sigs.push(flipped_down.clone());
    let get_corpus: Vec<(&str, Method, String)> = vec![
        ("another existing key", Method::GET, format!("/data/signed/secret.csv?{dq}")),
        ("another existing key, HEAD", Method::HEAD, format!("/data/signed/secret.csv?{dq}")),
        ("the PUT URL used for GET (method swapped)", Method::GET, up.url.clone()),
        ("the PUT URL used for HEAD", Method::HEAD, up.url.clone()),
        ("expires + 1", Method::GET, format!("/data/signed/a.csv?{}", query(&de_plus, None, Some(ds)))),
        ("max_size added", Method::GET, format!("/data/signed/a.csv?{}", query(de, Some("10"), Some(ds)))),
        ("sig flipped", Method::GET, format!("/data/signed/a.csv?{}", query(de, None, Some(&flipped_down)))),
        ("no sig", Method::GET, format!("/data/signed/a.csv?{}", query(de, None, None))),
    ];
    for (label, method, path) in &get_corpus {
        let head = *method == Method::HEAD;
        let r = call(node, method.clone(), path, None, &[], None).await;
        let what = format!("{}tampered signed GET ({label}) {path}", if head { "HEAD: " } else { "" });
        c.reply(&what, &r, 403, (!head).then_some("forbidden"));
        c.check(!String::from_utf8_lossy(&r.body).contains("not for you") && r.body != data, || {
            format!("{what}: the bytes were served")
        });
    }
    // The GET URL used for PUT: refused, and the dataset is unchanged.
    let r = call(node, Method::PUT, &down.url, None, &[], body("overwritten")).await;
    c.reply("the GET URL used for PUT (method swapped)", &r, 403, Some("forbidden"));
    let r = call(node, Method::GET, "/data/signed/a.csv", Some(READ), &[], None).await;
    c.check(r.body == data, || format!("signed/a.csv changed to {:?}", r.text()));
    // A signed query grants nothing on the catalog routes.
    let r = call(node, Method::DELETE, &format!("/datasets/signed/a.csv?{}", up.query()), None, &[], None).await;
    c.reply("DELETE /datasets with a signed query and no token", &r, 401, Some("unauthorized"));
    let path = format!("/datasets/signed/a.csv?{}", up.query());
    let r = call(node, Method::PATCH, &path, None, &[JSON_CT], json_body(json!({"name": "x"}))).await;
    c.reply("PATCH /datasets with a signed query and no token", &r, 401, Some("unauthorized"));
    c.check(exists(node, "signed/a.csv").await, || "signed/a.csv was deleted".into());

    // --- max_size: over it is 413 too-large and nothing stored, whether
    // the size is announced (Content-Length) or not (chunked).
    let lim = mint(node, "signed/limit.bin", "upload-url", WRITE, json!({"max_size": 16})).await;
    c.sigs.push(lim.sig.clone());
    let r = call(node, Method::PUT, &lim.url, None, &[], body(vec![7u8; 17])).await;
    c.reply("signed PUT of 17 bytes (Content-Length) over max_size 16", &r, 413, Some("too-large"));
    c.check(!exists(node, "signed/limit.bin").await, || "an oversize signed PUT (sized) was stored".into());
    let pieces = futures_util::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![9u8; 10]))));
    let r = call(node, Method::PUT, &lim.url, None, &[], Some(reqwest::Body::wrap_stream(pieces))).await;
    c.reply("signed PUT of 40 bytes (chunked) over max_size 16", &r, 413, Some("too-large"));
    c.check(!exists(node, "signed/limit.bin").await, || "an oversize signed PUT (chunked) was stored".into());
    let left = node.wait_spool_empty(Duration::from_secs(5));
    c.check(left.is_empty(), || format!("spool files left after oversize signed PUTs: {left:?}"));
    let r = call(node, Method::PUT, &lim.url, None, &[], body(vec![7u8; 16])).await;
    c.reply("signed PUT of exactly max_size", &r, 201, None);

    // --- expiry: a URL past its `expires` is 403 expired.
    let wait = Duration::from_millis(2500).saturating_sub(started.elapsed());
    tokio::time::sleep(wait).await;
    let r = call(node, Method::PUT, &expiring_put.url, None, &[], body("late")).await;
    c.reply("an expired upload URL", &r, 403, Some("expired"));
    c.check(!exists(node, "signed/expired-put.csv").await, || "an expired upload URL stored the dataset".into());
    let r = call(node, Method::GET, &expiring_get.url, None, &[], None).await;
    c.reply("an expired download URL", &r, 403, Some("expired"));
    c.check(r.body != b"old", || "an expired download URL served the bytes".into());
    let r = call(node, Method::HEAD, &expiring_get.url, None, &[], None).await;
    c.reply("HEAD: an expired download URL", &r, 403, None);

    // --- nothing else was stored, anywhere.
    let mut keys = all_keys(node, "signed/").await;
    keys.sort();
    let want = ["signed/a.csv", "signed/b.csv", "signed/expired-get.csv", "signed/limit.bin", "signed/secret.csv"];
    c.check(keys == want, || format!("the catalog holds {keys:?}, want {want:?}"));
    let files = node.dataset_files().iter().filter(|p| p.starts_with(node.datasets_dir().join("signed"))).count();
    c.check(files == want.len(), || format!("{files} files under datasets/, want {}", want.len()));
    c
}

#[tokio::test]
async fn signed_urls() {
    let node = secured_node(&[]);
    let checks = signed_url_checks(&node).await;
    checks.assert_clean("signed URLs");
    assert_no_leaks(&node, &checks.sigs);
}

/// A signed URL with `..` in its path (raw, and percent-encoded, which a
/// client library would normalise away) never reaches the signed key and
/// stores nothing; the contract's tamper corpus says 403.
#[tokio::test]
async fn signed_url_with_a_traversal_key_is_forbidden() {
    let node = secured_node(&[]);
    let b = mint(&node, "signed/b.csv", "upload-url", WRITE, json!({})).await;
    let q = b.query();
    let mut c = Checks::default();
    c.sigs.push(b.sig.clone());
    for path in [
        format!("/data/x/../signed/b.csv?{q}"),
        format!("/data/signed/../signed/b.csv?{q}"),
        format!("/data/../signed/b.csv?{q}"),
        format!("/data/signed/%2e%2e/signed/b.csv?{q}"),
        format!("/data/signed/b.csv/..?{q}"),
    ] {
        let mut s = node.raw();
        let request =
            format!("PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntraverse");
        std::io::Write::write_all(&mut s, request.as_bytes()).unwrap();
        match read_response(&mut s, Duration::from_secs(10)) {
            Ok(r) => c.check(r.status == 403 && r.code().as_deref() == Some("forbidden"), || {
                format!("PUT {path}: {} {:?} (want 403 forbidden)", r.status, r.text())
            }),
            Err(e) => c.problems.push(format!("PUT {path}: {e}")),
        }
    }
    let keys = all_keys(&node, "").await;
    c.check(keys.is_empty(), || format!("traversal PUTs stored {keys:?}"));
    c.check(node.dataset_files().is_empty(), || format!("files: {:?}", node.dataset_files()));
    c.check(files_below(node.root.path()).iter().all(|p| !p.ends_with("b.csv")), || {
        "a file named b.csv exists outside the datasets".into()
    });
    assert_no_leaks(&node, &c.sigs);
    c.assert_clean("traversal keys on a signed URL");
}

#[tokio::test]
async fn rotating_the_signing_key_invalidates_old_urls() {
    let mut node = secured_node(&[("SPILLWAY_SIGNING_KEY", SIGNING_KEY)]);
    let mut c = Checks::default();
    put_admin(&node, "rot/a.bin", b"rotate me").await;
    let down = mint(&node, "rot/a.bin", "download-url", READ, json!({})).await;
    let up = mint(&node, "rot/b.bin", "upload-url", WRITE, json!({})).await;
    c.sigs.extend([down.sig.clone(), up.sig.clone()]);
    let r = call(&node, Method::GET, &down.url, None, &[], None).await;
    c.reply("signed GET before the rotation", &r, 200, None);

    node.kill9();
    node.set_setting("SPILLWAY_SIGNING_KEY", Some(SIGNING_KEY_2));
    node.launch();
    let r = call(&node, Method::GET, &down.url, None, &[], None).await;
    c.reply("an old download URL after the rotation", &r, 403, Some("forbidden"));
    let r = call(&node, Method::PUT, &up.url, None, &[], body("after rotation")).await;
    c.reply("an old upload URL after the rotation", &r, 403, Some("forbidden"));
    c.check(!exists(&node, "rot/b.bin").await, || "an old upload URL stored rot/b.bin".into());
    let fresh = mint(&node, "rot/a.bin", "download-url", READ, json!({})).await;
    c.sigs.push(fresh.sig.clone());
    c.check(fresh.sig != down.sig, || "the new key signs the same way as the old one".into());
    let r = call(&node, Method::GET, &fresh.url, None, &[], None).await;
    c.reply("a URL minted after the rotation", &r, 200, None);

    // Back to the first key: its URLs work again, so the key is what counts.
    node.kill9();
    node.set_setting("SPILLWAY_SIGNING_KEY", Some(SIGNING_KEY));
    node.launch();
    let r = call(&node, Method::GET, &down.url, None, &[], None).await;
    c.reply("the first key's URL with the first key back", &r, 200, None);
    let r = call(&node, Method::GET, &fresh.url, None, &[], None).await;
    c.reply("the second key's URL with the first key back", &r, 403, Some("forbidden"));

    // Unset: the generated key in the data directory takes over.
    node.kill9();
    node.set_setting("SPILLWAY_SIGNING_KEY", None);
    node.launch();
    let r = call(&node, Method::GET, &down.url, None, &[], None).await;
    c.reply("a configured key's URL under the generated key", &r, 403, Some("forbidden"));
    c.check(node.data_dir.join("signing.key").exists(), || "no signing.key was generated".into());
    c.assert_clean("signing key rotation");
    assert_no_leaks(&node, &c.sigs);
}

#[tokio::test]
async fn the_generated_signing_key_is_private_and_survives_restarts() {
    let mut node = secured_node(&[]);
    let path = node.data_dir.join("signing.key");
    let meta = fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "mode of {}", path.display());
    let key = fs::read(&path).unwrap();
    assert!(key.len() >= 32, "the generated key is {} bytes", key.len());

    put_admin(&node, "gen/a.bin", b"kept").await;
    let down = mint(&node, "gen/a.bin", "download-url", READ, json!({})).await;
    let up = mint(&node, "gen/b.bin", "upload-url", WRITE, json!({"max_size": 100})).await;
    node.restart();
    assert_eq!(fs::read(&path).unwrap(), key, "the signing key changed across a restart");
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    let r = call(&node, Method::GET, &down.url, None, &[], None).await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"kept".as_slice()), "{}", r.text());
    let r = call(&node, Method::PUT, &up.url, None, &[], body("after restart")).await;
    assert_eq!(r.status, 201, "an upload URL minted before a restart: {}", r.text());
    let key_hex = String::from_utf8_lossy(&key).into_owned();
    assert!(!node.log().contains(&key_hex), "the log contains the generated signing key");
    assert_no_leaks(&node, &[down.sig, up.sig]);
}

// ---------------------------------------------------------------------------
// Open mode on a network address
// ---------------------------------------------------------------------------

/// Kills the child (by its own handle) when dropped.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns the binary directly, with no tokens, on `address`:0.
fn spawn_bare(root: &std::path::Path, address: &str, extra: &[(&str, &str)]) -> (Reap, std::path::PathBuf) {
    let log = root.join("out.log");
    let file = fs::File::create(&log).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spillway"));
    cmd.current_dir(root)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ROCKET_CONFIG", root.join("none.toml"))
        .env("ROCKET_CLI_COLORS", "false")
        .env("SPILLWAY_ADDRESS", address)
        .env("SPILLWAY_PORT", "0")
        .env("SPILLWAY_DATA_DIR", root.join("data"))
        .env("SPILLWAY_SPOOL_DIR", root.join("spool"))
        .env("SPILLWAY_DISK_RESERVE", "0")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    (Reap(cmd.spawn().expect("spawn spillway")), log)
}

#[test]
fn open_mode_refuses_a_network_address() {
    for address in ["0.0.0.0", "::"] {
        let root = tempfile::tempdir().unwrap();
        let (mut child, log) = spawn_bare(root.path(), address, &[]);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.0.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "with no tokens on {address} the node is still running after 10 s:\n{}",
                fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let out = fs::read_to_string(&log).unwrap_or_default();
        assert!(!status.success(), "with no tokens on {address}: exited {status}:\n{out}");
        assert!(
            out.contains("tokens") && out.contains("allow_open_on_network"),
            "the refusal does not name `tokens` and `allow_open_on_network`:\n{out}"
        );
        assert!(!out.contains("listening"), "it listened on {address}:\n{out}");
    }
}

#[test]
fn open_mode_on_a_network_address_needs_allow_open_on_network() {
    let root = tempfile::tempdir().unwrap();
    let (child, log) = spawn_bare(root.path(), "0.0.0.0", &[("SPILLWAY_ALLOW_OPEN_ON_NETWORK", "true")]);
    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(30);
    let port: u16 = loop {
        let out = fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = out.lines().find(|l| l.starts_with("spillway listening on ")) {
            break line.rsplit(':').next().unwrap().trim().parse().unwrap();
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("with allow_open_on_network it exited {status}:\n{out}");
        }
        assert!(Instant::now() < deadline, "it did not start within 30 s:\n{out}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Only ever talk to loopback.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    std::io::Write::write_all(&mut s, b"GET /datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s, Duration::from_secs(10)).unwrap();
    drop(child);
    assert_eq!(r.status, 200, "open node on 0.0.0.0, GET /datasets without a token: {}", r.text());
    let out = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.lines().any(|l| l.contains("WARN") && l.contains("allow_open_on_network")),
        "no warning about allow_open_on_network:\n{out}"
    );
}

// ---------------------------------------------------------------------------
// CORS
// ---------------------------------------------------------------------------

fn has_token(list: Option<&str>, token: &str) -> bool {
    list.unwrap_or_default().split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

async fn preflight(node: &TestNode, path: &str, origin: &str, method: &str, headers: &str) -> Reply {
    let mut h = vec![("Origin", origin), ("Access-Control-Request-Method", method)];
    if !headers.is_empty() {
        h.push(("Access-Control-Request-Headers", headers));
    }
    call(node, Method::OPTIONS, path, None, &h, None).await
}

async fn cors_checks(node: &TestNode) -> Checks {
    let mut c = Checks::default();
    put_admin(node, "cors/a.txt", b"cross-origin").await;
    let id = tus_create(node, "cors/tus.bin", 4).await;

    let tus_patch = format!("/uploads/{id}");
    let allowed: [(&str, &str, &str); 4] = [
        ("/data/x", "PUT", "authorization, content-type"),
        ("/datasets/cors/a.txt", "DELETE", "authorization"),
        (&tus_patch, "PATCH", "tus-resumable, upload-offset, upload-checksum, content-type"),
        ("/uploads", "POST", "authorization, tus-resumable, upload-length, upload-metadata"),
    ];
    for (path, method, headers) in allowed {
        let label = format!("preflight {method} {path} from {APP_ORIGIN} with {headers}");
        let r = preflight(node, path, APP_ORIGIN, method, headers).await;
        c.check(r.ok(), || format!("{label}: {} {}", r.status, r.text()));
        c.check(r.header("access-control-allow-origin").as_deref() == Some(APP_ORIGIN), || {
            format!("{label}: Access-Control-Allow-Origin {:?}", r.header("access-control-allow-origin"))
        });
        c.check(has_token(r.header("access-control-allow-methods").as_deref(), method), || {
            format!("{label}: Access-Control-Allow-Methods {:?}", r.header("access-control-allow-methods"))
        });
        let allow_headers = r.header("access-control-allow-headers");
        for h in headers.split(',') {
            c.check(has_token(allow_headers.as_deref(), h.trim()), || {
                format!("{label}: Access-Control-Allow-Headers {allow_headers:?} lacks {h}")
            });
        }
    }

    // A browser uploading to a signed URL preflights the signed URL itself.
    let signed = mint(node, "cors/signed.txt", "upload-url", WRITE, json!({"max_size": 100})).await;
    c.sigs.push(signed.sig.clone());
    let r = preflight(node, &signed.url, APP_ORIGIN, "PUT", "content-type").await;
    c.check(r.ok() && r.header("access-control-allow-origin").as_deref() == Some(APP_ORIGIN), || {
        format!("preflight PUT of a signed URL: {} {:?}", r.status, r.header("access-control-allow-origin"))
    });
    let r = call(node, Method::PUT, &signed.url, None, &[("Origin", APP_ORIGIN)], body("from the browser")).await;
    c.reply("signed PUT from the allowed origin", &r, 201, None);

    for (path, method) in [("/data/x", "PUT"), (tus_patch.as_str(), "PATCH")] {
        let r = preflight(node, path, EVIL_ORIGIN, method, "authorization, content-type").await;
        let acao = r.header("access-control-allow-origin");
        c.check(acao.is_none(), || {
            format!("preflight {method} {path} from {EVIL_ORIGIN}: Access-Control-Allow-Origin {acao:?}")
        });
    }

    let r = call(node, Method::GET, "/data/cors/a.txt", Some(READ), &[("Origin", APP_ORIGIN)], None).await;
    c.reply("GET from the allowed origin", &r, 200, None);
    c.check(r.body == b"cross-origin", || format!("GET from the allowed origin: {:?}", r.text()));
    c.check(r.header("access-control-allow-origin").as_deref() == Some(APP_ORIGIN), || {
        format!(
            "GET from the allowed origin: Access-Control-Allow-Origin {:?}",
            r.header("access-control-allow-origin")
        )
    });
    let expose = r.header("access-control-expose-headers");
    for h in ["Location", "ETag", "Upload-Offset", "Upload-Length", "Tus-Resumable", "Upload-Expires"] {
        c.check(has_token(expose.as_deref(), h), || format!("Access-Control-Expose-Headers {expose:?} lacks {h}"));
    }
    c.check(has_token(r.header("vary").as_deref(), "Origin"), || format!("Vary is {:?}", r.header("vary")));

    let r = call(node, Method::PUT, "/data/cors/b.txt", Some(WRITE), &[("Origin", APP_ORIGIN)], body("b")).await;
    c.reply("PUT from the allowed origin", &r, 201, None);
    c.check(r.header("access-control-allow-origin").as_deref() == Some(APP_ORIGIN), || {
        format!(
            "PUT from the allowed origin: Access-Control-Allow-Origin {:?}",
            r.header("access-control-allow-origin")
        )
    });

    let r = call(node, Method::GET, "/data/cors/a.txt", Some(READ), &[("Origin", EVIL_ORIGIN)], None).await;
    let acao = r.header("access-control-allow-origin");
    c.check(acao.is_none(), || format!("GET from {EVIL_ORIGIN}: Access-Control-Allow-Origin {acao:?}"));
    c
}

#[tokio::test]
async fn cors_for_the_configured_origins() {
    let cors = cors_setting();
    let node = secured_node(&[("SPILLWAY_CORS_ORIGINS", &cors)]);
    let checks = cors_checks(&node).await;
    checks.assert_clean("CORS");
    assert_no_leaks(&node, &checks.sigs);
}

#[tokio::test]
async fn no_cors_headers_without_cors_origins() {
    let node = secured_node(&[]);
    put_admin(&node, "cors/a.txt", b"x").await;
    let r = call(&node, Method::GET, "/data/cors/a.txt", Some(READ), &[("Origin", APP_ORIGIN)], None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = preflight(&node, "/data/x", APP_ORIGIN, "PUT", "authorization, content-type").await;
    assert_eq!(r.header("access-control-allow-origin"), None, "preflight answered {}", r.status);
}

/// With `cors_origins` set, requests from the node's own origin (its web
/// page: browsers send `Origin` on same-origin PUT/POST/DELETE) still work.
#[tokio::test]
async fn the_nodes_own_origin_works_alongside_cors_origins() {
    let cors = cors_setting();
    let node = secured_node(&[("SPILLWAY_CORS_ORIGINS", &cors)]);
    let own = node.base.clone();
    let origin = [("Origin", own.as_str())];
    let mut c = Checks::default();
    let r = call(&node, Method::PUT, "/data/own/a.txt", Some(WRITE), &origin, body("same origin")).await;
    c.reply(&format!("PUT with Origin: {own}"), &r, 201, None);
    let (ct, form) = multipart("own/b.txt", "form");
    let r = call(&node, Method::POST, "/datasets", Some(WRITE), &[origin[0], ("Content-Type", &ct)], body(form)).await;
    c.reply(&format!("POST /datasets with Origin: {own}"), &r, 201, None);
    put_admin(&node, "own/c.txt", b"c").await;
    let r = call(&node, Method::DELETE, "/datasets/own/c.txt", Some(ADMIN), &origin, None).await;
    c.reply(&format!("DELETE with Origin: {own}"), &r, 204, None);
    c.assert_clean("same-origin requests with cors_origins set");
}

// ---------------------------------------------------------------------------
// Never leak
// ---------------------------------------------------------------------------

/// Everything above on one node; then the log holds no token secret, no
/// signing key and no signature. (The other tests report their own
/// failures; this one asserts only the leaks.)
#[tokio::test]
async fn nothing_secret_reaches_the_log() {
    let cors = cors_setting();
    let node = secured_node(&[("SPILLWAY_CORS_ORIGINS", &cors), ("SPILLWAY_SIGNING_KEY", SIGNING_KEY)]);
    let table = table_checks(&node, false).await;
    let signed = signed_url_checks(&node).await;
    let cors = cors_checks(&node).await;
    let r = call(&node, Method::GET, "/datasets", Some(HASHED), &[], None).await;
    assert_eq!(r.status, 200, "the hashed token: {}", r.text());
    let r = call(&node, Method::GET, "/datasets", Some(&format!("sha256:{}", sha256_hex(HASHED))), &[], None).await;
    assert_eq!(r.status, 401);
    for (what, checks) in [("table", &table), ("signed URLs", &signed), ("CORS", &cors)] {
        if !checks.problems.is_empty() {
            eprintln!("(reported by their own tests) {what}: {}", checks.problems.join("; "));
        }
    }
    let sigs: Vec<String> = signed.sigs.iter().chain(&cors.sigs).cloned().collect();
    assert_no_leaks(&node, &sigs);
}
