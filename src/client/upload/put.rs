//! Uploads in one `PUT /data/{key}`: a small file (one chunk or less, where
//! tus's two requests and the state file cost more than sending it again
//! after a crash), and standard input (`upload - KEY`), streamed.
//!
//! A file's blake3 goes along as `X-Blake3`, so the node commits only those
//! bytes; `--no-clobber` sends `If-None-Match: *`, and the node's `412`
//! means the key was taken.

use anyhow::{Context, Result};
use futures_util::StreamExt;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use tokio_util::io::ReaderStream;

use crate::client::{etag_of, ApiError, Node};
use crate::key::Key;

/// How a PUT ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    Replaced,
    /// `--no-clobber` and the key holds a dataset (`412`).
    Exists,
}

/// What a PUT says about itself.
pub struct PutRequest<'a> {
    pub node: &'a Node,
    pub key: &'a Key,
    pub content_type: Option<&'a str>,
    pub no_clobber: bool,
}

impl PutRequest<'_> {
    /// Sends `bytes` (their blake3 is `blake3`); the node's blake3 must match.
    pub async fn bytes(&self, bytes: bytes::Bytes, blake3: &str) -> Result<Put> {
        let length = bytes.len();
        let request = self.request().header("X-Blake3", blake3).header(CONTENT_LENGTH, length).body(bytes);
        let (put, etag) = self.send(request).await?;
        if let Some(etag) = etag.filter(|e| e != blake3) {
            anyhow::bail!("blake3 mismatch: the node stored {etag} at `{}`, the file hashes to {blake3}", self.key);
        }
        Ok(put)
    }

    /// Streams standard input (chunked); returns the outcome, the bytes
    /// read and their blake3 (checked against the node's).
    pub async fn stdin(&self) -> Result<(Put, u64, String)> {
        let hasher = std::sync::Arc::new(std::sync::Mutex::new((blake3::Hasher::new(), 0u64)));
        let seen = hasher.clone();
        let body = ReaderStream::with_capacity(tokio::io::stdin(), 256 * 1024).map(move |chunk| {
            if let Ok(chunk) = &chunk {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                seen.0.update(chunk);
                seen.1 += chunk.len() as u64;
            }
            chunk
        });
        let request = self.request().body(reqwest::Body::wrap_stream(body));
        let (put, etag) = self.send(request).await?;
        let (hasher, read) = &*hasher.lock().unwrap_or_else(|e| e.into_inner());
        let local = hasher.finalize().to_hex().to_string();
        if let Some(etag) = etag.filter(|e| *e != local && put != Put::Exists) {
            anyhow::bail!(
                "blake3 mismatch: the node stored {etag} at `{}`, standard input hashed to {local}",
                self.key
            );
        }
        Ok((put, *read, local))
    }

    fn request(&self) -> reqwest::RequestBuilder {
        let url = self.node.url(&self.key.url_path());
        let mut request = self.node.request(Method::PUT, url.expect("a key's URL below a valid base"));
        request = request.header(CONTENT_TYPE, self.content_type.unwrap_or("application/octet-stream"));
        if self.no_clobber {
            request = request.header(IF_NONE_MATCH, "*");
        }
        request
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(Put, Option<String>)> {
        match self.node.send(request).await {
            Ok(response) if response.status() == StatusCode::CREATED => Ok((Put::Created, etag_of(&response))),
            Ok(response) => Ok((Put::Replaced, etag_of(&response))),
            Err(e) if self.no_clobber && e.downcast_ref::<ApiError>().is_some_and(|a| a.is(412)) => {
                Ok((Put::Exists, None))
            }
            Err(e) => Err(e).with_context(|| format!("cannot upload `{}`", self.key)),
        }
    }
}
