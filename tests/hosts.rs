//! DNS rebinding: an open node (no tokens) answers only requests whose
//! `Host` is a loopback name, one of `allowed_hosts`, or absent; any other
//! gets `421 misdirected-request` before a route runs, whatever the route.
//! With tokens configured `Host` is not checked. Raw sockets, since a
//! client library sets `Host` itself.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

/// Sends one request with exactly these header lines (`Host` included, or
/// not) and reads the answer.
fn send(node: &TestNode, request_line: &str, headers: &[&str], body: &[u8]) -> RawResponse {
    let mut s = node.raw();
    let mut head = format!("{request_line}\r\n");
    for h in headers {
        head.push_str(&format!("{h}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s, Duration::from_secs(30)).unwrap_or_else(|e| panic!("{request_line}: {e}"))
}

fn assert_misdirected(resp: &RawResponse, what: &str) {
    assert_eq!(resp.status, 421, "{what}: {}", resp.text());
    assert_eq!(resp.code().as_deref(), Some("misdirected-request"), "{what}: {}", resp.text());
}

#[tokio::test]
async fn an_open_node_refuses_foreign_hosts() {
    let node = TestNode::start();
    assert_eq!(node.put("kept.txt", "kept").await.status(), 201);
    let evil = ["Host: evil.example"];
    let cases: &[(&str, &[u8])] = &[
        ("GET /datasets HTTP/1.1", b""),
        ("GET /data/kept.txt HTTP/1.1", b""),
        ("PUT /data/evil.txt HTTP/1.1", b"evil"),
        ("DELETE /datasets/kept.txt HTTP/1.1", b""),
        ("PATCH /datasets/kept.txt HTTP/1.1", br#"{"name":"evil"}"#),
        ("POST /uploads HTTP/1.1", b""),
        ("GET / HTTP/1.1", b""),
        ("GET /no/such/route HTTP/1.1", b""),
        ("OPTIONS /datasets HTTP/1.1", b""),
    ];
    for (line, body) in cases {
        assert_misdirected(&send(&node, line, &evil, body), line);
    }
    // A rebinding page may send any case, port or a second Host.
    for host in ["Host: EVIL.example:8000", "Host: localhost.evil.example", "Host: 127.0.0.1.nip.io"] {
        assert_misdirected(&send(&node, "GET /datasets HTTP/1.1", &[host], b""), host);
    }
    let two = send(&node, "GET /datasets HTTP/1.1", &["Host: localhost", "Host: evil.example"], b"");
    assert_eq!(two.status, 400, "two Host headers: {}", two.text());

    // Nothing was written, changed or deleted.
    let listed = node.list_all().await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["key"], "kept.txt");
    assert_eq!(listed[0]["name"], "kept.txt");
}

#[tokio::test]
async fn an_open_node_serves_loopback_hosts_and_no_host() {
    let node = TestNode::start();
    for (i, host) in ["Host: localhost:1234", "Host: LocalHost", "Host: 127.0.0.1", "Host: [::1]:80", "Host: [::1]"]
        .iter()
        .enumerate()
    {
        let put = send(&node, &format!("PUT /data/f{i}.txt HTTP/1.1"), &[host], b"ok");
        assert_eq!(put.status, 201, "{host}: {}", put.text());
        let list = send(&node, "GET /datasets HTTP/1.1", &[host], b"");
        assert_eq!(list.status, 200, "{host}: {}", list.text());
    }
    let page = send(&node, "GET / HTTP/1.1", &["Host: localhost:8000"], b"");
    assert_eq!(page.status, 200, "the node's own page");
    let old = send(&node, "GET /datasets HTTP/1.0", &[], b"");
    assert_eq!(old.status, 200, "HTTP/1.0 without Host: {}", old.text());
    let health = send(&node, "GET /health HTTP/1.1", &["Host: evil.example"], b"");
    assert_eq!(health.status, 200, "/health stays open to probes");
}

#[tokio::test]
async fn allowed_hosts_are_served_with_or_without_a_port() {
    let node = TestNode::start_with(&[("SPILLWAY_ALLOWED_HOSTS", r#"["files.lan", "Data.Example:9000"]"#)]);
    for host in ["Host: files.lan:8000", "Host: FILES.LAN", "Host: data.example:9000"] {
        let list = send(&node, "GET /datasets HTTP/1.1", &[host], b"");
        assert_eq!(list.status, 200, "{host}: {}", list.text());
    }
    for host in ["Host: data.example:9001", "Host: data.example", "Host: files.lan.evil.example"] {
        assert_misdirected(&send(&node, "GET /datasets HTTP/1.1", &[host], b""), host);
    }
}

#[tokio::test]
async fn with_tokens_the_host_is_not_checked() {
    let node = TestNode::start_with(&[("SPILLWAY_TOKENS", r#"[{name="ci",token="s3cret-token",scopes=["admin"]}]"#)]);
    let auth = "Authorization: Bearer s3cret-token";
    let put = send(&node, "PUT /data/x.txt HTTP/1.1", &["Host: evil.example", auth], b"x");
    assert_eq!(put.status, 201, "{}", put.text());
    let list = send(&node, "GET /datasets HTTP/1.1", &["Host: evil.example", auth], b"");
    assert_eq!(list.status, 200, "{}", list.text());
    let anonymous = send(&node, "GET /datasets HTTP/1.1", &["Host: evil.example"], b"");
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
}

/// RFC 9112 3.2: an HTTP/1.1 request without `Host`, or any request with
/// two, is a `400 bad-request` on every node, whatever the route, and
/// changes nothing; like any answer it has its access-log line. HTTP/1.0
/// needs no `Host`.
#[tokio::test]
async fn an_http_1_1_request_without_one_host_is_400() {
    let open = TestNode::start();
    let token = "Authorization: Bearer s3cret-token";
    let guarded =
        TestNode::start_with(&[("SPILLWAY_TOKENS", r#"[{name="ci",token="s3cret-token",scopes=["admin"]}]"#)]);
    for (node, auth) in [(&open, &[][..]), (&guarded, &[token][..])] {
        assert_eq!(
            send(node, "PUT /data/kept.txt HTTP/1.1", &[&["Host: localhost"][..], auth].concat(), b"kept").status,
            201
        );
        let cases: &[(&str, &[&str], &[u8])] = &[
            ("GET /datasets HTTP/1.1", &[], b""),
            ("GET /health HTTP/1.1", &[], b""),
            ("PUT /data/no-host.txt HTTP/1.1", &[], b"no host"),
            ("DELETE /datasets/kept.txt HTTP/1.1", &[], b""),
            ("PUT /data/two-hosts.txt HTTP/1.1", &["Host: localhost", "Host: localhost"], b"two"),
            ("GET /datasets HTTP/1.0", &["Host: localhost", "Host: 127.0.0.1"], b""),
        ];
        for (i, (line, hosts, body)) in cases.iter().enumerate() {
            let id = format!("X-Request-Id: one-host-{i}");
            let resp = send(node, line, &[*hosts, auth, &[id.as_str()]].concat(), body);
            assert_eq!(resp.status, 400, "{line} with {hosts:?}: {}", resp.text());
            assert_eq!(resp.code().as_deref(), Some("bad-request"), "{line}: {}", resp.text());
            let logged = format!("request_id=one-host-{i} method=");
            let seen = eventually(Duration::from_secs(10), async || {
                node.log_as_written().lines().any(|l| l.contains(&logged) && l.contains("status=400"))
            })
            .await;
            assert!(seen, "{line}: no access line with status=400:\n{}", node.log_tail(10));
        }
        let old = send(node, "GET /data/kept.txt HTTP/1.0", auth, b"");
        assert_eq!((old.status, old.text()), (200, "kept".to_string()), "HTTP/1.0 without Host");
        let listed = send(node, "GET /datasets HTTP/1.1", &[&["Host: localhost"][..], auth].concat(), b"");
        assert_eq!(listed.status, 200);
        let keys: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&listed.text())
            .expect("a list")
            .iter()
            .map(|r| r["key"].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(keys, ["kept.txt"], "a refused request changed the catalog");
    }
}

/// A page on another origin can make a browser send a form (urlencoded,
/// multipart or text/plain) to the node without a preflight, with the
/// node's own loopback `Host`: an open node refuses writes whose `Origin`
/// is not the node itself (nor one of `cors_origins`). Reads stay open:
/// the browser keeps their answers from the page.
#[tokio::test]
async fn an_open_node_refuses_cross_site_writes() {
    // Without cors_origins (the default) and with one allowed origin, whose
    // CORS layer refuses other origins itself (`forbidden`).
    refuses_cross_site_writes(&[], &["cross-origin"]).await;
    refuses_cross_site_writes(
        &[("SPILLWAY_CORS_ORIGINS", r#"["https://app.example"]"#)],
        &["cross-origin", "forbidden"],
    )
    .await;
}

async fn refuses_cross_site_writes(settings: &[(&str, &str)], codes: &[&str]) {
    let node = TestNode::start_with(settings);
    let cors = !settings.is_empty();
    assert_eq!(node.put("kept.txt", "kept").await.status(), 201);
    let host = format!("Host: 127.0.0.1:{}", node.port);
    let form = "--XYZ\r\nContent-Disposition: form-data; name=\"key\"\r\n\r\nkept.txt\r\n\
                --XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.txt\"\r\n\r\nPWNED\r\n--XYZ--\r\n";
    let multipart = "Content-Type: multipart/form-data; boundary=XYZ";
    let text = "Content-Type: text/plain";
    for origin in ["Origin: https://evil.example", "Origin: null", "Origin: http://localhost:1"] {
        let cases: &[(&str, &str, &[u8])] = &[
            ("POST /datasets HTTP/1.1", multipart, form.as_bytes()),
            ("PUT /data/kept.txt HTTP/1.1", text, b"PWNED"),
            ("DELETE /datasets/kept.txt HTTP/1.1", text, b""),
            ("POST /datasets/kept.txt/action/acknowledge HTTP/1.1", text, br#"{"name":"pwned"}"#),
            ("PATCH /datasets/kept.txt HTTP/1.1", text, br#"{"name":"pwned"}"#),
            ("POST /uploads HTTP/1.1", "Tus-Resumable: 1.0.0\r\nUpload-Length: 5", b""),
        ];
        for (line, header, body) in cases {
            let resp = send(&node, line, &[&host, origin, header], body);
            let what = format!("{line} with {origin}");
            assert_eq!(resp.status, 403, "{what}: {}", resp.text());
            assert!(codes.contains(&resp.code().unwrap_or_default().as_str()), "{what}: {}", resp.text());
        }
        if !cors {
            // (With cors_origins set, the CORS layer refuses other origins' reads too.)
            let read = send(&node, "GET /data/kept.txt HTTP/1.1", &[&host, origin], b"");
            assert_eq!(read.status, 200, "a read with {origin}");
        }
    }
    let record = node.json("/datasets/kept.txt").await;
    assert_eq!(record["name"], "kept.txt", "{record}");
    assert_serves(&node, "kept.txt", b"kept").await;

    // The node's own page, an allowed origin, and clients that send no Origin.
    let own = format!("Origin: http://127.0.0.1:{}", node.port);
    let allowed: &[&str] = if cors { &[own.as_str(), "Origin: https://app.example"] } else { &[own.as_str()] };
    for origin in allowed {
        let resp = send(&node, "PUT /data/ok.txt HTTP/1.1", &[&host, origin, text], b"fine");
        assert!(resp.status == 201 || resp.status == 200, "PUT with {origin}: {}", resp.text());
    }
    let resp = send(&node, "PUT /data/ok.txt HTTP/1.1", &[&host, text], b"fine");
    assert_eq!(resp.status, 200, "PUT without Origin: {}", resp.text());
}

/// With tokens, a cross-site page has no token to send: `Origin` is not
/// what protects the node, and API clients may send any.
#[tokio::test]
async fn with_tokens_origin_is_not_checked() {
    let node = TestNode::start_with(&[("SPILLWAY_TOKENS", r#"[{name="w",token="write-secret",scopes=["write"]}]"#)]);
    let resp = send(
        &node,
        "PUT /data/x.txt HTTP/1.1",
        &["Host: 127.0.0.1", "Origin: https://elsewhere.example", "Authorization: Bearer write-secret"],
        b"x",
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
}
