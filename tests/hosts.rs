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
    assert!(two.status == 421 || two.status == 400, "two Host headers: {}", two.status);

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
