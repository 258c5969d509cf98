//! One HTTP answer, read whole, and the one way the tests send a request
//! and read it (bounded in time).

use std::time::Duration;

use reqwest::header::HeaderMap;

/// How long a request, and then its body, may take.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// One answer, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The ETag without its quotes.
    pub fn etag(&self) -> Option<String> {
        self.header("etag").map(|e| e.trim_matches('"').to_string())
    }

    /// `Upload-Offset`, as a number.
    pub fn offset(&self) -> Option<u64> {
        self.header("upload-offset").and_then(|v| v.parse().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The problem detail's `code`, if the body is problem+json with one.
    pub fn code(&self) -> Option<String> {
        let ct = self.header("content-type")?;
        if !ct.starts_with("application/problem+json") {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["code"].as_str().map(str::to_owned)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.describe()))
    }

    /// Status, the headers that matter in tests, and the body (or its size
    /// and hash), for assertion messages.
    pub fn describe(&self) -> String {
        let textual = self.header("content-type").is_some_and(|ct| ct.contains("json") || ct.starts_with("text/"));
        let body = if self.body.len() > 600 || (!textual && !self.body.is_empty()) {
            format!("<{} bytes, blake3 {}>", self.body.len(), super::b3(&self.body))
        } else {
            self.text()
        };
        let headers: Vec<String> = [
            "content-type",
            "etag",
            "location",
            "retry-after",
            "content-range",
            "upload-offset",
            "tus-resumable",
            "x-request-id",
        ]
        .into_iter()
        .filter_map(|h| self.header(h).map(|v| format!("{h}: {v}")))
        .collect();
        format!("{} [{}] {}", self.status, headers.join("; "), body)
    }
}

/// Sends a request and reads the whole answer, each within
/// [`REPLY_TIMEOUT`]; `what` names it in a panic.
pub async fn send(req: reqwest::RequestBuilder, what: &str) -> Reply {
    let resp = tokio::time::timeout(REPLY_TIMEOUT, req.send())
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer in {REPLY_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = tokio::time::timeout(REPLY_TIMEOUT, resp.bytes())
        .await
        .unwrap_or_else(|_| panic!("{what}: body not read in {REPLY_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{what}: body: {e}"))
        .to_vec();
    Reply { status, headers, body }
}

/// A chunked body fed by the test: bytes go out as they are sent on the
/// channel; dropping the sender ends the body.
pub fn fed_body() -> (tokio::sync::mpsc::Sender<Vec<u8>>, reqwest::Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (Ok::<_, std::io::Error>(bytes::Bytes::from(chunk)), rx))
    });
    (tx, reqwest::Body::wrap_stream(stream))
}
