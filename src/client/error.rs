//! The node's answers that are errors ([`ApiError`]: status, problem
//! detail, and what a retry needs), and failures on the way
//! ([`NetworkError`]), each said in one line.

use std::fmt;

use anyhow::Result;
use reqwest::{Response, StatusCode};

use super::{config, one_line};

/// An answer of the node that is an error: the status and, when the body is
/// an RFC 9457 problem detail, its `code` and `detail`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Option<String>,
    pub detail: Option<String>,
    /// Whether the request carried a token (for the 401 message).
    pub had_token: bool,
    /// `Retry-After`, in seconds, when the node sent one.
    pub retry_after: Option<u64>,
    /// `Upload-Offset` (tus: the offset the node is really at).
    pub upload_offset: Option<u64>,
}

impl ApiError {
    /// Reads an error answer, body included (bounded).
    pub async fn from_response(response: Response, had_token: bool) -> ApiError {
        let status = response.status();
        let header_number =
            |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
        let retry_after = header_number("retry-after");
        let upload_offset = header_number("upload-offset");
        let body = read_bounded(response, 64 * 1024).await.unwrap_or_default();
        let problem: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
        let field = |name: &str| problem.as_ref().and_then(|p| p[name].as_str()).map(one_line);
        let detail = field("detail").or_else(|| field("title")).or_else(|| {
            // Not problem+json (a proxy's page, say): a short plain body.
            let text = one_line(&String::from_utf8_lossy(&body));
            (!text.is_empty() && text.len() <= 200 && !text.starts_with('<')).then_some(text)
        });
        ApiError { status, code: field("code"), detail, had_token, retry_after, upload_offset }
    }

    pub fn is(&self, status: u16) -> bool {
        self.status.as_u16() == status
    }

    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status.as_u16();
        let detail = self.detail.as_deref().unwrap_or_else(|| self.status.canonical_reason().unwrap_or("error"));
        match status {
            401 if self.had_token => write!(f, "the node refused the token (401): {detail}"),
            401 => write!(
                f,
                "the node wants a token (401): {detail}; pass --token, set SPILLWAY_TOKEN, or put `token = \"...\"` \
                 in a profile of the client config file ({})",
                config::config_path()
                    .map_or_else(|| "~/.config/spillway/config.toml".into(), |p| p.display().to_string())
            ),
            403 => write!(f, "the token is not allowed to do this (403): {detail}"),
            _ => match &self.code {
                Some(code) => write!(f, "{detail} ({status} {code})"),
                None => write!(f, "{detail} ({status})"),
            },
        }
    }
}

impl std::error::Error for ApiError {}

/// Reads at most `limit` bytes of a body (error bodies are small; a
/// misbehaving server's are not read whole).
async fn read_bounded(mut response: Response, limit: usize) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}

/// A request that failed on the way (connect, timeout, broken connection):
/// worth retrying. Its message already names the innermost cause.
#[derive(Debug)]
pub struct NetworkError {
    message: String,
    source: reqwest::Error,
}

impl NetworkError {
    pub(super) fn new(message: String, source: reqwest::Error) -> NetworkError {
        NetworkError { message, source }
    }

    /// The underlying HTTP client error.
    pub fn reqwest(&self) -> &reqwest::Error {
        &self.source
    }
}

impl fmt::Display for NetworkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// No `source()`: the message says it all, on one line.
impl std::error::Error for NetworkError {}

/// Whether an error is a failure to connect at all (the node is down, or
/// the URL is wrong).
pub fn is_connect_error(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.downcast_ref::<NetworkError>().is_some_and(|n| n.source.is_connect()))
}

/// Whether an error is (or was caused by) a network failure.
pub fn is_network_error(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| cause.is::<NetworkError>() || cause.is::<reqwest::Error>())
}
