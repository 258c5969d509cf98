//! CopyObject with replaced metadata, which object_store does not offer.

use std::time::Duration;

use object_store::path::Path;
use object_store::signer::Signer;

use super::bucket::Bucket;
use super::s3_error;
use crate::error::{Error, Result};
use crate::store::ObjectInfo;

/// Characters of a key escaped in `x-amz-copy-source` (as object_store
/// escapes paths).
const COPY_SOURCE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

/// CopyObject with the metadata replaced (`x-amz-metadata-directive:
/// REPLACE`), so that the copy carries its blake3 and content type:
/// object_store's copy keeps the source's. The request is presigned by
/// object_store's signer, with those headers signed, and sent as it is.
pub(super) async fn copy_with_metadata(
    store: &Bucket,
    bucket: &str,
    from: &Path,
    to: &Path,
    info: &ObjectInfo,
) -> Result<()> {
    use backon::{ExponentialBuilder, Retryable};
    use object_store::signer::SignedUrlOptions;
    use reqwest::header::{HeaderName, HeaderValue};
    let source = format!("{bucket}/{}", percent_encoding::utf8_percent_encode(from.as_ref(), COPY_SOURCE));
    let mut headers = vec![
        ("x-amz-copy-source", source),
        ("x-amz-metadata-directive", "REPLACE".to_owned()),
        ("x-amz-meta-blake3", info.blake3.clone()),
        ("x-amz-meta-size", info.size.to_string()),
    ];
    if HeaderValue::from_str(&info.content_type).is_ok() {
        headers.push(("content-type", info.content_type.clone()));
    }
    let mut options = SignedUrlOptions::new();
    for (name, value) in &headers {
        let value = HeaderValue::from_str(value).map_err(Error::internal)?;
        options = options.with_signed_header(HeaderName::from_static(name), value);
    }
    let url =
        store.signed_url_opts(reqwest::Method::PUT, to, Duration::from_secs(300), &options).await.map_err(s3_error)?;
    let attempt = || async {
        let mut request = store.http.put(url.as_str());
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.map_err(|e| CopyFailure::Transient(e.to_string()))?;
        let status = response.status();
        let body = response.text().await.map_err(|e| CopyFailure::Transient(e.to_string()))?;
        CopyFailure::check(status, &body)
    };
    // As object_store retries its own calls: a few times, backing off.
    let policy = ExponentialBuilder::default().with_max_times(3).with_total_delay(Some(Duration::from_secs(15)));
    match attempt.retry(policy).when(CopyFailure::is_transient).await {
        Ok(()) => Ok(()),
        Err(CopyFailure::Missing(answer)) => {
            log::warn!("object store: copying {from} to {to}: {answer}");
            Err(Error::NotFound("the object to copy is missing in the store".into()))
        }
        Err(CopyFailure::Transient(cause) | CopyFailure::Refused(cause)) => {
            log::warn!("object store: copying {from} to {to}: {cause}");
            Err(Error::Unavailable("the object store", cause))
        }
    }
}

/// Why a CopyObject did not land.
#[derive(Debug)]
enum CopyFailure {
    /// The source is gone (`NoSuchKey`).
    Missing(String),
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
    /// S3 may answer a CopyObject 200 and still fail it: the body's root
    /// element says which (`CopyObjectResult` or `Error`).
    fn check(status: reqwest::StatusCode, body: &str) -> std::result::Result<(), CopyFailure> {
        let failed = !status.is_success() || root_element(body).as_deref() == Some("Error");
        if !failed {
            return Ok(());
        }
        let doc: ErrorDocument = quick_xml::de::from_str(body).unwrap_or_default();
        let answer = format!("{status} {} {}", doc.code, doc.message);
        Err(match doc.code.as_str() {
            "NoSuchKey" => CopyFailure::Missing(answer),
            _ if status == reqwest::StatusCode::NOT_FOUND => CopyFailure::Missing(answer),
            "InternalError" | "SlowDown" | "ServiceUnavailable" | "RequestTimeout" => CopyFailure::Transient(answer),
            _ if status.is_server_error() => CopyFailure::Transient(answer),
            _ => CopyFailure::Refused(answer),
        })
    }

    fn is_transient(&self) -> bool {
        matches!(self, CopyFailure::Transient(_))
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
