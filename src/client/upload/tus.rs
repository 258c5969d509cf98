//! The tus 1.0.0 requests an upload makes (`POST /uploads`, `HEAD` and
//! `PATCH` of the upload's URL) and what their answers say. What to do with
//! an answer, or a failure, is the upload's business ([`super`]).

use anyhow::{Context, Result};
use base64::Engine;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, Response, Url};
use sha2::Digest;

use crate::client::progress::Progress;
use crate::client::{etag_of, Node};

const TUS_VERSION: &str = "1.0.0";
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// A chunk in memory goes out in pieces this big (progress granularity).
const PIECE: usize = 256 * 1024;

/// What a tus answer says about the upload.
#[derive(Debug, Clone, Default)]
pub struct TusInfo {
    pub offset: u64,
    pub length: Option<u64>,
    /// The committed dataset's blake3 (`ETag`), once the upload is complete.
    pub etag: Option<String>,
}

impl TusInfo {
    fn of(response: &Response) -> Result<TusInfo> {
        let number = |name: &str| -> Result<Option<u64>> {
            response
                .headers()
                .get(name)
                .map(|v| {
                    v.to_str()
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .with_context(|| format!("the node sent a bad {name}"))
                })
                .transpose()
        };
        let completed = response.headers().contains_key(reqwest::header::CONTENT_LOCATION);
        Ok(TusInfo {
            offset: number("upload-offset")?.context("the node's tus answer has no Upload-Offset")?,
            length: number("upload-length")?,
            etag: if completed { etag_of(response) } else { None },
        })
    }
}

/// `POST /uploads`: a new upload of `size` bytes (none for a final
/// concatenation, which names its parts in `concat`); its URL and state.
pub async fn create(
    node: &Node,
    size: Option<u64>,
    metadata: &[(&str, &str)],
    concat: Option<&str>,
) -> Result<(Url, TusInfo)> {
    let url = node.url("/uploads")?;
    let mut request = node.request(Method::POST, url.clone()).header("Tus-Resumable", TUS_VERSION);
    if let Some(size) = size {
        request = request.header("Upload-Length", size);
    }
    if !metadata.is_empty() {
        request = request.header("Upload-Metadata", upload_metadata(metadata));
    }
    if let Some(concat) = concat {
        request = request.header("Upload-Concat", concat);
    }
    let request = request.header(CONTENT_LENGTH, 0);
    let response = node.send(request).await?;
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .context("the node created an upload but sent no Location")?;
    let upload_url = Node::resolve(&url, location)?;
    let info = TusInfo::of(&response).unwrap_or_default();
    Ok((upload_url, info))
}

/// `HEAD /uploads/{id}`.
pub async fn head(node: &Node, url: &Url) -> Result<TusInfo> {
    let request = node.request(Method::HEAD, url.clone()).header("Tus-Resumable", TUS_VERSION);
    TusInfo::of(&node.send(request).await?)
}

/// `PATCH /uploads/{id}` with one chunk, which starts at `offset`; the
/// progress moves as its pieces go out. The last chunk of a whole file
/// carries the file's blake3 (`whole`), which the node checks before it
/// commits; any other is checked on its own (`Upload-Checksum`).
pub async fn patch(
    node: &Node,
    url: &Url,
    offset: u64,
    chunk: Bytes,
    whole: Option<&str>,
    progress: &Progress,
) -> Result<TusInfo> {
    let length = chunk.len();
    let pieces: Vec<Bytes> = (0..length).step_by(PIECE).map(|i| chunk.slice(i..(i + PIECE).min(length))).collect();
    let mut request = node
        .request(Method::PATCH, url.clone())
        .header("Tus-Resumable", TUS_VERSION)
        .header("Upload-Offset", offset)
        .header(CONTENT_TYPE, OFFSET_OCTET_STREAM)
        .header(CONTENT_LENGTH, length);
    request = match whole {
        Some(blake3) => request.header("X-Blake3", blake3),
        None => {
            let checksum = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&chunk));
            request.header("Upload-Checksum", format!("sha256 {checksum}"))
        }
    };
    let body = futures_util::stream::iter(pieces.into_iter().map(Ok::<_, std::io::Error>));
    send_patch(node, request, body, offset, progress).await
}

/// `PATCH` of bytes `offset..end` of a file, streamed (never held whole),
/// with no checksum per request: the last piece, sent apart, carries the
/// whole file's blake3.
pub async fn patch_from(
    node: &Node,
    url: &Url,
    body: impl Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
    (offset, end): (u64, u64),
    progress: &Progress,
) -> Result<TusInfo> {
    let request = node
        .request(Method::PATCH, url.clone())
        .header("Tus-Resumable", TUS_VERSION)
        .header("Upload-Offset", offset)
        .header(CONTENT_TYPE, OFFSET_OCTET_STREAM)
        .header(CONTENT_LENGTH, end - offset);
    send_patch(node, request, body, offset, progress).await
}

/// Sends a PATCH whose body starts at `offset`, moving the progress as its
/// pieces go out.
async fn send_patch(
    node: &Node,
    request: reqwest::RequestBuilder,
    body: impl Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
    offset: u64,
    progress: &Progress,
) -> Result<TusInfo> {
    let progress = progress.clone();
    let mut sent = offset;
    let body = body.map(move |piece| {
        if let Ok(piece) = &piece {
            sent += piece.len() as u64;
            progress.set(sent);
        }
        piece
    });
    TusInfo::of(&node.send(request.body(reqwest::Body::wrap_stream(body))).await?)
}

/// `Upload-Metadata`: `key base64(value)` pairs, comma-separated.
fn upload_metadata(pairs: &[(&str, &str)]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    pairs.iter().map(|(k, v)| format!("{k} {}", b64.encode(v.as_bytes()))).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_base64() {
        assert_eq!(upload_metadata(&[("key", "a/b.csv"), ("name", "B")]), "key YS9iLmNzdg==,name Qg==");
    }
}
