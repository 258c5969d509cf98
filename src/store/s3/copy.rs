//! CopyObject with replaced metadata and UploadPartCopy, which object_store
//! does not offer: requests presigned by its signer and sent as they are.

use std::time::Duration;

use object_store::path::Path;
use object_store::signer::Signer;

use super::bucket::Bucket;
use crate::error::{Error, Result};
use crate::store::ObjectInfo;

/// Characters of a key escaped in `x-amz-copy-source` (as object_store
/// escapes paths).
const COPY_SOURCE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

/// The `x-amz-copy-source` of `from` in `bucket`.
pub(super) fn copy_source(bucket: &str, from: &Path) -> String {
    format!("{bucket}/{}", percent_encoding::utf8_percent_encode(from.as_ref(), COPY_SOURCE))
}

/// CopyObject with the metadata replaced (`x-amz-metadata-directive:
/// REPLACE`), so that the copy carries its blake3 and content type:
/// object_store's copy keeps the source's.
pub(super) async fn copy_with_metadata(
    store: &Bucket,
    bucket: &str,
    from: &Path,
    to: &Path,
    info: &ObjectInfo,
) -> Result<()> {
    let mut headers = vec![
        ("x-amz-copy-source", copy_source(bucket, from)),
        ("x-amz-metadata-directive", "REPLACE".to_owned()),
        ("x-amz-meta-blake3", info.blake3.clone()),
        ("x-amz-meta-size", info.size.to_string()),
    ];
    if reqwest::header::HeaderValue::from_str(&info.content_type).is_ok() {
        headers.push(("content-type", info.content_type.clone()));
    }
    let request = CopyRequest { to, query: Vec::new(), headers };
    match send_copy(store, &request).await {
        Ok(_) => Ok(()),
        Err(failure) => Err(failure.into_error(from, to)),
    }
}

/// A copy request (CopyObject, or UploadPartCopy with its `partNumber` and
/// `uploadId`), a PUT on `to`.
pub(super) struct CopyRequest<'a> {
    pub(super) to: &'a Path,
    pub(super) query: Vec<(&'static str, String)>,
    /// Lower-case names; every one is signed.
    pub(super) headers: Vec<(&'static str, String)>,
}

/// Sends `request`, presigned by object_store's signer with its query and
/// headers signed, and retried as object_store retries its own calls: a
/// few times, backing off. The body of a successful answer.
pub(super) async fn send_copy(store: &Bucket, request: &CopyRequest<'_>) -> std::result::Result<String, CopyFailure> {
    use backon::{ExponentialBuilder, Retryable};
    use object_store::signer::SignedUrlOptions;
    use reqwest::header::{HeaderName, HeaderValue};
    let mut options = SignedUrlOptions::new().with_query(request.query.iter().map(|(k, v)| (*k, v.as_str())));
    for (name, value) in &request.headers {
        let value = HeaderValue::from_str(value).map_err(|e| CopyFailure::Refused(format!("header {name}: {e}")))?;
        options = options.with_signed_header(HeaderName::from_static(name), value);
    }
    let attempt = || async {
        // Signed for each attempt, so that a retry never holds an expired URL.
        let url = store
            .signed_url_opts(reqwest::Method::PUT, request.to, Duration::from_secs(300), &options)
            .await
            .map_err(|e| CopyFailure::Transient(e.to_string()))?;
        let mut put = store.http.put(url.as_str());
        for (name, value) in &request.headers {
            put = put.header(*name, value);
        }
        let response = put.send().await.map_err(|e| CopyFailure::Transient(e.to_string()))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| CopyFailure::Transient(e.to_string()))?;
        CopyFailure::check(status, &body)?;
        Ok(body)
    };
    let policy = ExponentialBuilder::default().with_max_times(3).with_total_delay(Some(Duration::from_secs(15)));
    attempt.retry(policy).when(CopyFailure::is_transient).await
}

/// Why a copy request did not land.
#[derive(Debug)]
pub(super) enum CopyFailure {
    /// The source is gone (`NoSuchKey`).
    Missing(String),
    /// The multipart upload of a part copy is gone (`NoSuchUpload`): Garage
    /// drops one when another write of its object lands.
    Dropped(String),
    /// Worth another try: the connection broke, a 5xx, `SlowDown`.
    Transient(String),
    Refused(String),
}

/// An S3 error document: `<Error><Code>…</Code><Message>…</Message></Error>`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ErrorDocument {
    code: String,
    message: String,
}

impl CopyFailure {
    /// S3 may answer a copy 200 and still fail it: the body's root element
    /// says which (`CopyObjectResult`, `CopyPartResult` or `Error`).
    fn check(status: reqwest::StatusCode, body: &str) -> std::result::Result<(), CopyFailure> {
        let failed = !status.is_success() || root_element(body).as_deref() == Some("Error");
        if !failed {
            return Ok(());
        }
        let doc: ErrorDocument = quick_xml::de::from_str(body).unwrap_or_default();
        let answer = format!("{status} {} {}", doc.code, doc.message);
        Err(match doc.code.as_str() {
            "NoSuchKey" => CopyFailure::Missing(answer),
            "NoSuchUpload" => CopyFailure::Dropped(answer),
            _ if status == reqwest::StatusCode::NOT_FOUND => CopyFailure::Missing(answer),
            "InternalError" | "SlowDown" | "ServiceUnavailable" | "RequestTimeout" => CopyFailure::Transient(answer),
            _ if status.is_server_error() => CopyFailure::Transient(answer),
            _ => CopyFailure::Refused(answer),
        })
    }

    fn is_transient(&self) -> bool {
        matches!(self, CopyFailure::Transient(_))
    }

    /// The node's error for a copy of `from` to `to` that failed so (the
    /// store's answer goes to the log).
    pub(super) fn into_error(self, from: &Path, to: &Path) -> Error {
        match self {
            CopyFailure::Missing(answer) => {
                log::warn!("object store: copying {from} to {to}: {answer}");
                Error::NotFound("the object to copy is missing in the store".into())
            }
            CopyFailure::Dropped(answer) => {
                log::warn!("object store: copying {from} to {to}: the store dropped the multipart upload: {answer}");
                Error::Superseded
            }
            CopyFailure::Transient(cause) | CopyFailure::Refused(cause) => {
                log::warn!("object store: copying {from} to {to}: {cause}");
                Error::Unavailable("the object store", cause)
            }
        }
    }
}

/// The name of an XML document's root element.
fn root_element(xml: &str) -> Option<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event().ok()? {
            quick_xml::events::Event::Start(e) | quick_xml::events::Event::Empty(e) => {
                return Some(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
            }
            quick_xml::events::Event::Eof => return None,
            _ => {}
        }
    }
}

/// `<CopyPartResult><ETag>"…"</ETag>…</CopyPartResult>`: the ETag of the
/// part, as CompleteMultipartUpload wants it back.
pub(super) fn part_etag(body: &str) -> std::result::Result<String, CopyFailure> {
    #[derive(serde::Deserialize)]
    struct CopyPartResult {
        #[serde(rename = "ETag")]
        e_tag: String,
    }
    match quick_xml::de::from_str::<CopyPartResult>(body) {
        Ok(result) if root_element(body).as_deref() == Some("CopyPartResult") && !result.e_tag.is_empty() => {
            Ok(result.e_tag)
        }
        _ => Err(CopyFailure::Refused(format!("an UploadPartCopy answer without an ETag: {body:.200}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_etags_and_errors_are_read() {
        let ok = r#"<?xml version="1.0" encoding="UTF-8"?>
<CopyPartResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyPartResult>"#;
        assert_eq!(part_etag(ok).unwrap(), "\"9b2cf535f27731c974343645a3985328\"");
        assert!(CopyFailure::check(reqwest::StatusCode::OK, ok).is_ok());
        let error = "<Error><Code>NoSuchUpload</Code><Message>gone</Message></Error>";
        assert!(part_etag(error).is_err());
        let failure = CopyFailure::check(reqwest::StatusCode::OK, error).unwrap_err();
        assert!(matches!(failure, CopyFailure::Dropped(_)), "{failure:?}");
        let failure = CopyFailure::check(reqwest::StatusCode::SERVICE_UNAVAILABLE, "").unwrap_err();
        assert!(failure.is_transient(), "{failure:?}");
        assert!(part_etag("").is_err());
    }
}
