//! What the node does with the bytes on the wire around a request's body,
//! on raw sockets (a normal client would finish or tidy these requests):
//! a body that breaks off is never committed, whatever byte it broke at;
//! refusals that the headers decide come before any body byte, and never
//! after a `100 Continue`; a connection whose headers do not arrive in
//! `header_timeout` is closed while everyone else is served, and so is one
//! whose client takes no bytes of a response for `stall_timeout`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// Where a raw request is cut: after its head and these body bytes.
const CUTS: [(&str, &str); 3] = [
    ("after the headers", ""),
    ("inside the first chunk", "a\r\n0123"),
    ("inside the second chunk", "a\r\n0123456789\r\n5\r\nab"),
];

#[derive(Clone, Copy, Debug)]
enum Close {
    /// An orderly FIN: the node reads a clean end of stream.
    Fin,
    /// A reset (SO_LINGER 0), as a crashed client or a middlebox sends.
    Rst,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Sum of a metric over its label sets (0 when absent); `name` may carry
/// a label filter after a space: `"spillway_http_requests_total PATCH"`.
async fn metric_sum(node: &TestNode, name: &str) -> f64 {
    let (name, filter) = name.split_once(' ').unwrap_or((name, ""));
    let text = node.get("/metrics").await.text().await.unwrap();
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{')))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (bounded) until `metric` reaches at least `at_least`.
async fn wait_metric(node: &TestNode, metric: &str, at_least: f64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if metric_sum(node, metric).await >= at_least {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Sends `head` and `body`, then breaks the connection as `close` says. A
/// reset is sent only once the node holds the request (its upload counts
/// as in flight, or after a bound), or it could drop the head unread.
async fn send_and_break(node: &TestNode, head: &str, body: &[u8], close: Close) {
    let in_flight = metric_sum(node, "spillway_uploads_in_flight").await;
    let mut s = node.raw();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s.flush().unwrap();
    match close {
        Close::Fin => {
            s.shutdown(Shutdown::Write).unwrap();
            // Whatever the node answers, it must not be a success.
            if let Ok(resp) = read_response(&mut s, Duration::from_secs(20)) {
                assert!(resp.status >= 400, "a broken body was answered {}: {}", resp.status, resp.text());
            }
        }
        Close::Rst => {
            wait_metric(node, "spillway_uploads_in_flight", in_flight + 1.0, Duration::from_secs(10)).await;
            socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
        }
    }
    drop(s);
}

fn chunked_put(key: &str) -> String {
    format!("PUT /data/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
}

#[test]
fn a_chunked_put_that_breaks_off_never_replaces_a_dataset() {
    let node = TestNode::start();
    let rt = runtime();
    let kept = generated(900_000, 13);
    rt.block_on(async {
        assert_eq!(node.put("kept.bin", kept.clone()).await.status(), 201);
        for close in [Close::Fin, Close::Rst] {
            for (at, cut) in CUTS {
                let what = format!("chunked PUT cut {at} ({close:?})");
                let ended = metric_sum(&node, "spillway_uploads_total").await;
                send_and_break(&node, &chunked_put("kept.bin"), cut.as_bytes(), close).await;
                send_and_break(&node, &chunked_put("fresh.bin"), cut.as_bytes(), close).await;
                assert!(
                    wait_metric(&node, "spillway_uploads_total", ended + 2.0, Duration::from_secs(30)).await,
                    "{what}: the node never ended the two uploads"
                );
                assert_serves(&node, "kept.bin", &kept).await;
                let fresh = node.get("/datasets/fresh.bin").await.status();
                assert_eq!(fresh, 404, "{what}: a key was created from a broken body");
                let keys: Vec<String> =
                    node.list_all().await.iter().map(|r| r["key"].as_str().unwrap().into()).collect();
                assert_eq!(keys, ["kept.bin"], "{what}");
            }
        }
        let left = node.wait_spool_empty(Duration::from_secs(30));
        assert!(left.is_empty(), "spool files left: {left:?}");
        assert_eq!(node.dataset_files().len(), 1, "{:?}", node.dataset_files());
    });
}

/// A multipart form whose parts are all there, in a chunked body that
/// never sends its terminating chunk: still a broken body.
#[test]
fn a_multipart_post_without_its_last_chunk_is_not_committed() {
    let node = TestNode::start();
    let rt = runtime();
    let form = "--XYZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nform.txt\r\n\
                --XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f.txt\"\r\n\r\nhello\r\n--XYZ--\r\n";
    let head = "POST /datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\
                Content-Type: multipart/form-data; boundary=XYZ\r\n\r\n";
    rt.block_on(async {
        for close in [Close::Fin, Close::Rst] {
            let cuts = [
                format!("{:x}\r\n{form}\r\n", form.len()),
                format!("{:x}\r\n{}", form.len(), &form[..10]),
                String::new(),
            ];
            for cut in cuts {
                let what = format!("multipart cut after {} bytes ({close:?})", cut.len());
                let ended = metric_sum(&node, "spillway_uploads_total").await;
                send_and_break(&node, head, cut.as_bytes(), close).await;
                assert!(
                    wait_metric(&node, "spillway_uploads_total", ended + 1.0, Duration::from_secs(30)).await,
                    "{what}: the node never ended the upload"
                );
                assert_eq!(node.get("/datasets/form.txt").await.status(), 404, "{what}: committed");
            }
        }
        assert!(node.list_all().await.is_empty());
    });
}

fn tus_create(node: &TestNode, key: &str, length: usize) -> String {
    let meta = format!("key {}", base64_of(key.as_bytes()));
    let resp = raw_request(
        node,
        format!(
            "POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Length: {length}\r\n\
             Upload-Metadata: {meta}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(status_of(&resp), 201, "{resp}");
    let location = resp.lines().find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")));
    let location = location.expect("a Location").trim();
    location.rsplit('/').next().unwrap().to_string()
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn tus_offset(node: &TestNode, id: &str) -> u64 {
    let resp = raw_request(
        node,
        format!("HEAD /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status_of(&resp), 200, "{resp}");
    resp.lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("upload-offset: ").map(|v| v.trim().parse().unwrap()))
        .expect("an Upload-Offset")
}

/// tus keeps what arrived of a broken PATCH, never reports more, and never
/// completes the upload from it; the client resumes from the offset.
#[test]
fn a_tus_patch_that_breaks_off_never_completes_the_upload() {
    let node = TestNode::start();
    let rt = runtime();
    let bytes = b"0123456789abcdefghij";
    rt.block_on(async {
        for close in [Close::Fin, Close::Rst] {
            let cuts = [
                (String::new(), 0),
                ("a\r\n0123".to_string(), 4),
                // Every byte of the upload, but no terminating chunk.
                (format!("14\r\n{}\r\n", std::str::from_utf8(bytes).unwrap()), 20),
            ];
            for (cut, arrived) in cuts {
                let what = format!("tus PATCH cut after {cut:?} ({close:?})");
                let key = format!("tus-{}-{close:?}.bin", cut.len());
                let id = tus_create(&node, &key, bytes.len());
                let head = format!(
                    "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
                     Content-Type: application/offset+octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                );
                const PATCHES: &str = "spillway_http_requests_total method=\"PATCH\"";
                let ended = metric_sum(&node, PATCHES).await;
                send_and_break(&node, &head, cut.as_bytes(), close).await;
                // The PATCH has ended once its answer is counted (even one
                // that nobody heard).
                assert!(
                    wait_metric(&node, PATCHES, ended + 1.0, Duration::from_secs(30)).await,
                    "{what}: the PATCH never ended"
                );
                let offset = tus_offset(&node, &id);
                assert!(offset as usize <= arrived, "{what}: offset {offset} but only {arrived} bytes arrived");
                // tus-js-client and tuspy take `Upload-Offset == Upload-Length`
                // for a finished upload and send nothing more: an upload that is
                // not complete must never say so.
                assert!(
                    (offset as usize) < bytes.len(),
                    "{what}: HEAD says {offset} of {} but it is not complete",
                    bytes.len()
                );
                assert_eq!(node.get(&format!("/datasets/{key}")).await.status(), 404, "{what}: completed");
                // Resume from the offset the node reported.
                let rest = &bytes[offset as usize..];
                let resp = raw_request(
                    &node,
                    &[
                        format!(
                            "PATCH /uploads/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n\
                             Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n",
                            rest.len()
                        )
                        .as_bytes(),
                        rest,
                    ]
                    .concat(),
                );
                assert_eq!(status_of(&resp), 204, "{what}: resume: {resp}");
                assert_serves(&node, &key, bytes).await;
            }
        }
    });
}

// ---------------------------------------------------------------------------
// Answers from the headers alone
// ---------------------------------------------------------------------------

/// Reads the first response head off `s` within `within`, 1xx included.
fn first_head(s: &mut TcpStream, within: Duration) -> Result<String, String> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no answer within {within:?}: {:?}", String::from_utf8_lossy(&buf)));
        }
        s.set_read_timeout(Some(left.min(Duration::from_millis(200)))).unwrap();
        match s.read(&mut tmp) {
            Ok(0) => return Err(format!("closed with no answer: {:?}", String::from_utf8_lossy(&buf))),
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("{e}: {:?}", String::from_utf8_lossy(&buf))),
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

struct Refusal {
    what: &'static str,
    head: String,
    status: u16,
    code: &'static str,
}

fn refusal(what: &'static str, request_line: &str, headers: &str, status: u16, code: &'static str) -> Refusal {
    let head = format!("{request_line} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n");
    Refusal { what, head, status, code }
}

/// Each refusal is sent with its headers only (no body byte follows), with
/// and without `Expect: 100-continue`: the final answer must come, and no
/// `100` before it.
fn assert_refused_from_headers(node: &TestNode, cases: &[Refusal]) {
    for case in cases {
        for expect in [false, true] {
            let what = format!("{} (Expect: 100-continue: {expect})", case.what);
            let mut head = case.head.clone();
            if expect {
                head = head.replacen("\r\n", "\r\nExpect: 100-continue\r\n", 1);
            }
            let mut s = node.raw();
            s.write_all(head.as_bytes()).unwrap();
            let first = first_head(&mut s, Duration::from_secs(15)).unwrap_or_else(|e| panic!("{what}: {e}"));
            let status = status_of(&first);
            assert_ne!(status, 100, "{what}: 100 Continue for a request that is refused");
            assert_eq!(status, case.status, "{what}: {first}");
            let lower = first.to_ascii_lowercase();
            assert!(lower.contains("application/problem+json"), "{what}: {first}");
            drop(s);
            // The same again, read whole, for its code.
            let mut s = node.raw();
            s.write_all(head.replacen("\r\n", "\r\nConnection: close\r\n", 1).as_bytes()).unwrap();
            let resp = read_response(&mut s, Duration::from_secs(15)).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(resp.code().as_deref(), Some(case.code), "{what}: {}", resp.text());
        }
    }
}

#[test]
fn refusals_come_from_the_headers_alone() {
    let node = TestNode::start_with(&[("SPILLWAY_MAX_DATASET_SIZE", "10MiB")]);
    let rt = runtime();
    rt.block_on(async { assert_eq!(node.put("taken.bin", b"x".to_vec()).await.status(), 201) });
    // The limit is said in the units people read, with the exact count.
    let mut s = node.raw();
    s.write_all(
        b"PUT /data/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 20971520\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let resp = read_response(&mut s, Duration::from_secs(15)).unwrap();
    assert!(resp.text().contains("10MiB (10485760 bytes)"), "the 413's detail: {}", resp.text());
    let id = "0123456789abcdef0123456789abcdef";
    assert_refused_from_headers(
        &node,
        &[
            refusal("413 from Content-Length", "PUT /data/big.bin", "Content-Length: 20971520\r\n", 413, "too-large"),
            refusal(
                "413 tus creation over the maximum",
                "POST /uploads",
                "Tus-Resumable: 1.0.0\r\nUpload-Length: 20971520\r\nUpload-Metadata: key YmlnLmJpbg==\r\n\
                 Content-Type: application/offset+octet-stream\r\nContent-Length: 5\r\n",
                413,
                "too-large",
            ),
            refusal(
                "412 If-None-Match: * on a stored key",
                "PUT /data/taken.bin",
                "If-None-Match: *\r\nContent-Length: 1000\r\n",
                412,
                "precondition-failed",
            ),
            refusal("400 bad key", "PUT /data/a/../b", "Content-Length: 1000\r\n", 400, "invalid-key"),
            refusal(
                "404 PATCH of an unknown upload",
                &format!("PATCH /uploads/{id}"),
                "Tus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 1000\r\n",
                404,
                "not-found",
            ),
            refusal("404 no such route", "PUT /nowhere", "Content-Length: 1000\r\n", 404, "not-found"),
            refusal(
                "404 form POST to no route",
                "POST /nowhere",
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n",
                404,
                "not-found",
            ),
        ],
    );
}

#[test]
fn insufficient_storage_comes_from_the_headers_alone() {
    // A reserve larger than any disk: every upload of known size is refused.
    let node = TestNode::start_with(&[("SPILLWAY_DISK_RESERVE", "1 PiB")]);
    assert_refused_from_headers(
        &node,
        &[refusal(
            "507 for a known size",
            "PUT /data/x.bin",
            "Content-Length: 1048576\r\n",
            507,
            "insufficient-storage",
        )],
    );
}

#[test]
fn token_refusals_come_from_the_headers_alone() {
    let node = TestNode::start_with(&[(
        "SPILLWAY_TOKENS",
        r#"[{name="reader",token="read-secret",scopes=["read"]},{name="writer",token="write-secret",scopes=["write"]}]"#,
    )]);
    assert_refused_from_headers(
        &node,
        &[
            refusal("401 without a token", "PUT /data/x.bin", "Content-Length: 1000\r\n", 401, "unauthorized"),
            refusal(
                "401 with an unknown token",
                "PUT /data/x.bin",
                "Authorization: Bearer nope\r\nContent-Length: 1000\r\n",
                401,
                "unauthorized",
            ),
            refusal(
                "403 read token writes",
                "PUT /data/x.bin",
                "Authorization: Bearer read-secret\r\nContent-Length: 1000\r\n",
                403,
                "forbidden",
            ),
            refusal(
                "403 write token deletes",
                "DELETE /datasets/x.bin",
                "Authorization: Bearer write-secret\r\nContent-Length: 1000\r\n",
                403,
                "forbidden",
            ),
            refusal(
                "401 form POST without a token",
                "POST /datasets",
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n",
                401,
                "unauthorized",
            ),
            refusal(
                "401 tus creation without a token",
                "POST /uploads",
                "Tus-Resumable: 1.0.0\r\nUpload-Length: 1000\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: 1000\r\n",
                401,
                "unauthorized",
            ),
        ],
    );
}

/// With `Expect: 100-continue` an accepted upload gets its `100`, then the
/// body, then `201`: refusing early must not break the normal path.
#[test]
fn an_accepted_upload_still_gets_100_continue() {
    let node = TestNode::start();
    let body = generated(100_000, 7);
    let mut s = node.raw();
    let head = format!(
        "PUT /data/cont.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let first = first_head(&mut s, Duration::from_secs(15)).unwrap();
    assert_eq!(status_of(&first), 100, "{first}");
    s.write_all(&body).unwrap();
    let resp = read_response(&mut s, Duration::from_secs(30)).unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    runtime().block_on(assert_serves(&node, "cont.bin", &body));
}

/// A body with a transfer coding besides `chunked` (`gzip, chunked`) would
/// reach the node still encoded (hyper undoes only the chunking): it is
/// refused, `501 not-implemented` (RFC 9112 § 6.1), on every way in, and
/// nothing is stored or changed; `chunked` alone, in any case, is taken.
#[test]
fn a_body_in_a_transfer_coding_besides_chunked_is_refused() {
    let node = TestNode::start();
    runtime().block_on(async { assert_eq!(node.put("te/kept.bin", "kept").await.status(), 201) });
    let id = tus_create(&node, "te/tus.bin", 3);
    let form = "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"te-form.bin\"\r\n\r\nabc\r\n--B--\r\n";
    for coding in ["gzip, chunked", "deflate,chunked", "chunked, chunked, gzip, chunked"] {
        let chunked = "3\r\nzzz\r\n0\r\n\r\n";
        for (what, head, body) in [
            ("PUT a new key", "PUT /data/te/new.bin HTTP/1.1\r\n".to_string(), chunked.to_string()),
            ("PUT over a kept key", "PUT /data/te/kept.bin HTTP/1.1\r\n".to_string(), chunked.to_string()),
            (
                "POST a form",
                "POST /datasets HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=B\r\n".to_string(),
                format!("{:x}\r\n{form}\r\n0\r\n\r\n", form.len()),
            ),
            (
                "PATCH a tus upload",
                format!(
                    "PATCH /uploads/{id} HTTP/1.1\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
                     Content-Type: application/offset+octet-stream\r\n"
                ),
                chunked.to_string(),
            ),
        ] {
            let request =
                format!("{head}Host: 127.0.0.1\r\nTransfer-Encoding: {coding}\r\nConnection: close\r\n\r\n{body}");
            let resp = raw_request(&node, request.as_bytes());
            assert_eq!(status_of(&resp), 501, "{what} with Transfer-Encoding: {coding}: {resp}");
            assert!(resp.contains("\"code\":\"not-implemented\""), "{what}: {resp}");
        }
    }
    runtime().block_on(async {
        assert_serves(&node, "te/kept.bin", b"kept").await;
        assert_eq!(node.get("/datasets/te/new.bin").await.status(), 404, "a refused PUT stored its key");
        assert_eq!(node.get("/datasets/te-form.bin").await.status(), 404, "a refused form stored its key");
    });
    assert_eq!(tus_offset(&node, &id), 0, "a refused PATCH moved the upload's offset");
    let request = "PUT /data/te/plain.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: Chunked\r\n\
                   Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let resp = raw_request(&node, request.as_bytes());
    assert_eq!(status_of(&resp), 201, "Transfer-Encoding: Chunked: {resp}");
    runtime().block_on(assert_serves(&node, "te/plain.bin", b"abc"));
}

/// A client may send its whole request and then close its sending side
/// (`shutdown(SHUT_WR)`, as `nc -N` or `curl --upload-file` over some
/// proxies do) while it waits for the answer. The node answers it: hyper's
/// default took the end of the stream for a client gone, so the answer was
/// never sent and whether the PUT was stored was a race.
#[test]
fn a_client_that_half_closes_after_its_request_gets_its_answer() {
    let node = TestNode::start();
    for i in 0..5 {
        let body = generated(10_000 + i * 1000, i as u64);
        let key = format!("half/{i}.bin");
        let mut s = node.raw();
        let head = format!("PUT /data/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n", body.len());
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let resp = read_response(&mut s, Duration::from_secs(30));
        let resp =
            resp.unwrap_or_else(|e| panic!("PUT {key}, then a half-close: no answer ({e})\n{}", node.log_tail(20)));
        assert_eq!(resp.status, 201, "PUT {key}: {}", resp.text());
        runtime().block_on(assert_serves(&node, &key, &body));

        let mut s = node.raw();
        s.write_all(format!("GET /data/{key} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let resp = read_response(&mut s, Duration::from_secs(30));
        let resp = resp.unwrap_or_else(|e| panic!("GET {key}, then a half-close: no answer ({e})"));
        assert_eq!(resp.status, 200, "GET {key}");
        assert_same_bytes(&resp.body, &body, &format!("GET {key} after a half-close"));
    }
}

// ---------------------------------------------------------------------------
// Slow headers
// ---------------------------------------------------------------------------

#[test]
fn connections_without_whole_headers_are_closed_after_header_timeout() {
    let node = TestNode::start_with(&[("SPILLWAY_HEADER_TIMEOUT", "2")]);
    let rt = runtime();
    let mut stuck: Vec<(&str, TcpStream)> = Vec::new();
    for i in 0..400 {
        let mut s = node.raw();
        match i % 4 {
            0 => stuck.push(("silent", s)),
            1 => {
                s.write_all(b"PUT /data/x HT").unwrap();
                stuck.push(("half a request line", s));
            }
            2 => {
                s.write_all(b"GET /datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").unwrap();
                stuck.push(("half a header block", s));
            }
            _ => {
                // A whole request, answered; then the connection idles.
                s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
                let resp = read_response(&mut s, Duration::from_secs(15)).unwrap();
                assert_eq!(resp.status, 200);
                stuck.push(("idle keep-alive", s));
            }
        }
    }
    // Everyone else is served meanwhile.
    rt.block_on(async {
        let body = generated(1 << 20, 5);
        assert_eq!(node.put("served.bin", body.clone()).await.status(), 201);
        assert_serves(&node, "served.bin", &body).await;
    });
    // 2 s timeout; the bound is generous for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (what, s) in &mut stuck {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(closed_within(s, left), "{what}: still open after the header timeout");
    }
    assert!(node.log().lines().all(|l| !l.contains("panicked")), "{}", node.log());
}

// ---------------------------------------------------------------------------
// Responses a client stops reading
// ---------------------------------------------------------------------------

/// How a paced read of a response ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// Every body byte the head announced arrived.
    Whole,
    /// The node closed (or reset) the connection first.
    Closed,
    /// Nothing arrived for 30 s, the connection still open.
    Silent,
}

/// Reads one response's head and then its body, `piece` bytes at a time
/// with `gap` between reads (the client's pace, not a wait for the node).
/// Returns the head, the body bytes read and how the read ended.
fn read_paced(s: &mut TcpStream, piece: usize, gap: Duration) -> (String, Vec<u8>, Ended) {
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; piece];
    let head_end = loop {
        if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = s.read(&mut buf).expect("the response head");
        assert!(n > 0, "closed before the response head");
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap()))
        .expect("a Content-Length");
    let mut body = got.split_off(head_end);
    while body.len() < length {
        match s.read(&mut buf) {
            Ok(0) => return (head, body, Ended::Closed),
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return (head, body, Ended::Silent)
            }
            Err(_) => return (head, body, Ended::Closed),
        }
        std::thread::sleep(gap);
    }
    (head, body, Ended::Whole)
}

/// A client that stops reading a download would hold its connection, and
/// the chunks queued for it, for as long as it liked: a write that waits
/// `stall_timeout` closes the connection. A slow reader that keeps taking
/// bytes is never cut, however long the whole takes.
#[test]
fn a_download_the_client_stops_reading_is_closed_after_stall_timeout() {
    let node = TestNode::start_with(&[("SPILLWAY_STALL_TIMEOUT", "2")]);
    let rt = runtime();
    // Far more than the socket buffers of both sides hold.
    let body = generated(64 << 20, 11);
    rt.block_on(async { assert_eq!(node.put("big.bin", body.clone()).await.status(), 201) });
    let get = b"GET /data/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

    let mut stalled = node.raw();
    stalled.write_all(get).unwrap();
    // Nothing is read until the node says it gave up: a read would be progress.
    let line = "a client took no bytes of a response for 2 s";
    let gave_up = rt.block_on(eventually(Duration::from_secs(60), async || node.log_as_written().contains(line)));
    assert!(gave_up, "the stalled download is still open: {}", node.log_tail(20));
    let (head, got, ended) = read_paced(&mut stalled, 1 << 20, Duration::ZERO);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(ended, Ended::Closed, "the stalled download, after {} bytes", got.len());
    assert!(got.len() < body.len(), "the stalled download got all {} bytes", got.len());
    assert_same_bytes(&got, &body[..got.len()], "what the stalled download got");

    // At least 256 reads (of at most 256 KiB) with a pause after each:
    // longer in all than the stall timeout, never a gap of it.
    let mut slow = node.raw();
    slow.write_all(get).unwrap();
    let (head, got, ended) = read_paced(&mut slow, 256 << 10, Duration::from_millis(10));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(ended, Ended::Whole, "the slow reader, after {} bytes", got.len());
    assert_same_bytes(&got, &body, "the slow reader's download");
    assert_eq!(node.log_as_written().matches(line).count(), 1, "{}", node.log_tail(20));
    rt.block_on(assert_serves(&node, "big.bin", &body));
}

#[test]
fn a_bad_header_timeout_stops_the_start_and_names_the_key() {
    let root = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spillway"))
        .current_dir(root.path())
        .env_clear()
        .env("ROCKET_CONFIG", root.path().join("none.toml"))
        .env("SPILLWAY_DATA_DIR", root.path().join("data"))
        .env("SPILLWAY_HEADER_TIMEOUT", "soon")
        .env("SPILLWAY_PORT", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.to_ascii_lowercase().contains("header_timeout"), "{text}");
}

/// Rocket's `_method` form field would turn a form POST (which a page on
/// any origin can send without a preflight) into a DELETE or a PUT.
#[test]
fn a_method_field_in_a_form_never_changes_the_method() {
    let node = TestNode::start();
    let rt = runtime();
    rt.block_on(async { assert_eq!(node.put("kept.bin", b"kept".to_vec()).await.status(), 201) });
    for (line, body) in [
        ("POST /datasets/kept.bin", "_method=DELETE"),
        ("POST /data/kept.bin", "_method=PUT&x=attacker-bytes"),
        ("POST /data/new.bin", "_method=PUT&x=attacker-bytes"),
        ("POST /datasets/kept.bin", "_method=PATCH&name=pwned"),
    ] {
        let resp = raw_request(
            &node,
            format!(
                "{line} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        let status = status_of(&resp);
        assert!(status >= 400, "{line} with {body}: {status}: {resp}");
    }
    rt.block_on(async {
        assert_serves(&node, "kept.bin", b"kept").await;
        assert_eq!(node.get("/datasets/new.bin").await.status(), 404);
        assert_eq!(node.json("/datasets/kept.bin").await["name"], "kept.bin");
    });
}

/// Past the form's cap the body stream ends without an error: a body cut
/// off after the cap must still not look whole.
#[test]
fn a_multipart_body_cut_past_its_cap_is_not_committed() {
    let node = TestNode::start_with(&[("SPILLWAY_MAX_DATASET_SIZE", "1000")]);
    let rt = runtime();
    rt.block_on(async { assert_eq!(node.put("kept.bin", b"ORIGINAL".to_vec()).await.status(), 201) });
    let form = "--XYZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nkept.bin\r\n\
                --XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n\r\nEVIL\r\n--XYZ--\r\n";
    let epilogue = vec![b'e'; (1 << 20) + 4000];
    let head = "POST /datasets HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\
                Content-Type: multipart/form-data; boundary=XYZ\r\n\r\n";
    for close in [Close::Fin, Close::Rst] {
        let mut body = format!("{:x}\r\n{form}\r\n", form.len()).into_bytes();
        body.extend_from_slice(format!("{:x}\r\n", epilogue.len()).as_bytes());
        body.extend_from_slice(&epilogue);
        body.extend_from_slice(b"\r\n");
        rt.block_on(async {
            let ended = metric_sum(&node, "spillway_uploads_total").await;
            send_and_break(&node, head, &body, close).await;
            assert!(
                wait_metric(&node, "spillway_uploads_total", ended + 1.0, Duration::from_secs(30)).await,
                "{close:?}: the node never ended the upload"
            );
            assert_serves(&node, "kept.bin", b"ORIGINAL").await;
        });
    }
}

/// A client that streams its body without `Expect: 100-continue` and is
/// refused from the headers must still read the refusal: the node reads
/// (and drops) a bounded amount of the body before it closes, instead of
/// closing on unread bytes, which makes the kernel send a reset that can
/// destroy the answer before the client reads it.
#[test]
fn an_early_refusal_reaches_a_client_that_keeps_sending() {
    let node = TestNode::start();
    let rt = runtime();
    rt.block_on(async { assert_eq!(node.put("taken.bin", b"x".to_vec()).await.status(), 201) });
    let body = generated(32 << 20, 3);
    let mut lost = Vec::new();
    for round in 0..20 {
        let mut s = node.raw();
        let head = format!(
            "PUT /data/taken.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nIf-None-Match: *\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut w = s.try_clone().unwrap();
        w.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        // As curl does: send the whole body first, then read the answer;
        // a send that fails (the node closed on it) loses the answer.
        if let Err(e) = w.write_all(&body) {
            lost.push(format!("round {round}: sending the body: {e}"));
            continue;
        }
        match read_response(&mut s, Duration::from_secs(20)) {
            Ok(resp) => assert_eq!(resp.status, 412, "round {round}: {}", resp.text()),
            Err(e) => lost.push(format!("round {round}: {e}")),
        }
    }
    assert!(lost.is_empty(), "the 412 was lost {} times of 20: {lost:?}", lost.len());
    rt.block_on(assert_serves(&node, "taken.bin", b"x"));
}
