//! Bytes in and out: `PUT /data/{key}`, `POST /datasets` (multipart),
//! `GET`/`HEAD /data/{key}` with ranges and conditional requests.

use std::borrow::Cow;
use std::io;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{StreamExt, TryStreamExt};
use http_range_header::{parse_range_header, RangeUnsatisfiableError};
use rocket::data::{Data, ToByteUnit};
use rocket::http::{ContentType, Header, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::response::{self, Redirect, Responder, Response};
use rocket::{Route, State};
use tokio_util::io::{ReaderStream, StreamReader};

use super::access::authorize_data;
use super::{chunk_for, guard, header, header_list, plain_transfer, KeyTail};
use crate::access::{Caller, Scope, SignedParams};
use crate::error::{Error, Result};
use crate::index::Record;
use crate::ingest::Expected;
use crate::key::Key;
use crate::service::{EtagList, Node, Precondition, UploadMeta, Want};
use crate::store::Reader;
use crate::store::CHUNK;

pub fn routes() -> Vec<Route> {
    rocket::routes![put_data, get_data, post_multipart]
}

/// Largest text field of a multipart form (`key`, `name`, `description`).
const FORM_FIELD_LIMIT: usize = 64 * 1024;
/// Slack for multipart framing on top of the dataset size limit.
const FORM_OVERHEAD: u64 = 1024 * 1024;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for UploadMeta {
    type Error = Error;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Error> {
        guard(upload_meta(req))
    }
}

fn upload_meta(req: &Request<'_>) -> Result<UploadMeta> {
    plain_transfer(req)?;
    let length = header(req, "Content-Length")
        .map(|v| v.trim().parse::<u64>())
        .transpose()
        .map_err(|_| Error::BadRequest("Content-Length is not a number".into()))?;
    let digests: Vec<&str> = req.headers().get("Content-Digest").chain(req.headers().get("Repr-Digest")).collect();
    let expected = Expected { length, ..Expected::default() }.with_digests(&digests, header(req, "X-Blake3"))?;
    let precondition = match (header_list(req, "If-Match"), header_list(req, "If-None-Match")) {
        (Some(_), Some(_)) => return Err(Error::BadRequest("send either If-Match or If-None-Match, not both".into())),
        (Some(tags), None) => Precondition::IfMatch(EtagList::parse(&tags)),
        (None, Some(tags)) => Precondition::IfNoneMatch(EtagList::parse(&tags)),
        (None, None) => Precondition::None,
    };
    Ok(UploadMeta {
        content_type: req.content_type().map(|ct| ct.to_string()),
        precondition,
        expected,
        ..UploadMeta::default()
    })
}

/// `201 Created` / `200 OK` with `Location`, `ETag` and the record.
pub struct Stored {
    pub record: Record,
    pub created: bool,
}

/// What a [`Stored`] answer is, in the document (only utoipa reads it).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum StoredResponses {
    /// Stored as a new dataset.
    #[response(status = 201)]
    Created(Record),
    /// Stored, replacing the dataset that was at the key.
    #[response(status = 200)]
    Replaced(Record),
}

impl<'r> Responder<'r, 'static> for Stored {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let status = if self.created { Status::Created } else { Status::Ok };
        Response::build_from(rocket::serde::json::Json(&self.record).respond_to(req)?)
            .status(status)
            .header(Header::new("Location", self.record.path.clone()))
            .header(Header::new("ETag", self.record.etag()))
            .ok()
    }
}

#[utoipa::path(
    put,
    path = "/data/{key}",
    operation_id = "putData",
    tag = "bytes",
    summary = "Upload (create or replace) a dataset",
    description = "The body is the dataset, streamed; its `Content-Type` (any) is kept. Needs `write`, or a signed PUT URL (`expires`, `max_size`, `sig`). Without `If-Match`/`If-None-Match` a PUT replaces. Upload rules (PUT, multipart and the last step of a resumable upload): the body streams through a small in-memory spool that spills to disk, never held whole in memory; `Content-Digest`/`Repr-Digest` (`sha-256`, `sha-512`) and `X-Blake3` are verified before commit; a body shorter than its `Content-Length` or a chunked body without its last chunk is never committed; on any failure nothing is left behind and an existing dataset at the key keeps serving; a replace is atomic; `201`/`200` means the bytes and the record are durable. With no tokens configured the node is open (loopback only) and needs no `Authorization`.",
    params(
        ("name" = Option<String>, Query, description = "Display name (default: the key's last segment)."),
    ),
    responses(
        StoredResponses,
        super::openapi::responses::AccessErrors,
        super::openapi::responses::UploadErrors,
    ),
    security(("bearerAuth" = ["write"]), ()),
)]
#[rocket::put("/data/<_..>?<name>", data = "<body>")]
#[allow(clippy::too_many_arguments)]
async fn put_data(
    node: &State<Arc<Node>>,
    caller: Caller,
    signed: SignedParams,
    tail: KeyTail<'_>,
    name: Option<String>,
    meta: Result<UploadMeta, Error>,
    body: Data<'_>,
) -> Result<Stored> {
    let (key, limit) = authorize_data(node, &caller, &signed, "PUT", &tail, Scope::Write)?;
    let _permit = node.admit_upload()?;
    let mut meta = meta?;
    meta.name = name;
    meta.expected.limit = limit;
    meta.uploaded_by = caller.uploader();
    let limit = node.max_size().saturating_add(1);
    let started = Instant::now();
    let stored = node.put(key, body.open(limit.bytes()), meta).await;
    let (record, created) = node.upload_ended(started, stored)?;
    Ok(Stored { record, created })
}

/// `POST /datasets`: a browser form with a `file` part and optional `key`,
/// `name` and `description`. The file part streams through the same spool
/// as a PUT; the key (default: the file name) is only needed at commit.
#[utoipa::path(
    post,
    path = "/datasets",
    operation_id = "uploadForm",
    tag = "bytes",
    summary = "Upload a dataset with a browser form (multipart)",
    description = "`multipart/form-data`: a `file` part (with a filename), and optional `key` (default: the filename), `name`, `description`. Any other part, a second `file`, or a body that is not `multipart/form-data` with a boundary is `400`. Needs `write`. `If-Match`/`If-None-Match`, `Content-Digest`/`Repr-Digest` and `X-Blake3` apply to the file part. Upload rules (PUT, multipart and the last step of a resumable upload): the body streams through a small in-memory spool that spills to disk, never held whole in memory; `Content-Digest`/`Repr-Digest` (`sha-256`, `sha-512`) and `X-Blake3` are verified before commit; a body shorter than its `Content-Length` or a chunked body without its last chunk is never committed; on any failure nothing is left behind and an existing dataset at the key keeps serving; a replace is atomic; `201`/`200` means the bytes and the record are durable.",
    responses(
        StoredResponses,
        super::openapi::responses::AccessErrors,
        super::openapi::responses::UploadErrors,
    ),
    security(("bearerAuth" = ["write"]), ()),
)]
#[rocket::post("/datasets", data = "<body>")]
async fn post_multipart(
    node: &State<Arc<Node>>,
    caller: Caller,
    content_type: Option<&ContentType>,
    meta: Result<UploadMeta, Error>,
    body: Data<'_>,
) -> Result<Stored> {
    caller.require(Scope::Write)?;
    let _permit = node.admit_upload()?;
    let started = Instant::now();
    let meta = UploadMeta { uploaded_by: caller.uploader(), ..meta? };
    let stored = receive_form(node, content_type, meta, body).await;
    let (record, created) = node.upload_ended(started, stored)?;
    Ok(Stored { record, created })
}

async fn receive_form(
    node: &Node,
    content_type: Option<&ContentType>,
    mut meta: UploadMeta,
    body: Data<'_>,
) -> Result<(Record, bool)> {
    let boundary = content_type
        .filter(|ct| ct.is_form_data())
        .and_then(|ct| ct.params().find(|(k, _)| *k == "boundary"))
        .map(|(_, v)| v.to_string())
        .ok_or_else(|| Error::BadRequest("POST /datasets takes multipart/form-data with a boundary".into()))?;
    let limit = node.max_size().saturating_add(FORM_OVERHEAD);
    if meta.expected.length.is_some_and(|l| l > limit) {
        return Err(Error::TooLarge { limit: node.max_size() });
    }
    // The form's own length and digests are not the file's.
    let form_expected = std::mem::take(&mut meta.expected);
    // The capped stream ends quietly at the cap, as if the body ended there:
    // count what it gives, so that reaching the cap is never a clean end.
    let read = std::sync::atomic::AtomicU64::new(0);
    let counted = tokio_util::io::InspectReader::new(body.open(limit.bytes()), |bytes: &[u8]| {
        read.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
    });
    let mut stream = ReaderStream::with_capacity(counted, CHUNK);
    let mut form = multer::Multipart::new(&mut stream, boundary);

    let (mut key, mut received, mut file_name) = (None, None, None);
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or_default() {
            "file" => {
                if received.is_some() {
                    return Err(Error::BadRequest("the form has more than one `file` part".into()));
                }
                file_name = field.file_name().map(str::to_owned);
                if let Some(ct) = field.content_type() {
                    meta.content_type = Some(ct.to_string());
                }
                let reader = StreamReader::new(field.map_err(io::Error::other));
                let expected = Expected { length: None, ..form_expected.clone() };
                received = Some(node.spool(reader, &expected).await?);
            }
            "key" => key = Some(text_field(field).await?),
            "name" => meta.name = Some(text_field(field).await?),
            "description" => meta.description = Some(text_field(field).await?),
            other => return Err(Error::BadRequest(format!("unexpected form field `{other}`"))),
        }
    }
    drop(form);
    let received = received.ok_or_else(|| Error::BadRequest("the form has no `file` part".into()))?;
    ends_cleanly(&mut stream, node.stall_timeout()).await?;
    if read.load(std::sync::atomic::Ordering::Relaxed) >= limit {
        return Err(Error::TooLarge { limit: node.max_size() });
    }
    let key = match key.filter(|k| !k.is_empty()).or(file_name) {
        Some(k) => Key::parse(&k)?,
        None => return Err(Error::BadRequest("give a `key` field or a file name".into())),
    };
    // Media types are case-insensitive: `Multipart/Form-Data` is the form's own.
    let form_type = |ct: &str| ct.get(..10).is_some_and(|t| t.eq_ignore_ascii_case("multipart/"));
    if meta.content_type.as_deref().is_none_or(form_type) {
        meta.content_type = None;
    }
    node.commit(key, received, meta).await
}

/// multer stops reading at the closing boundary, but a body is whole only
/// once it ends cleanly (a chunked one with its terminating chunk): read
/// what follows (an epilogue, within the form's cap) to the end.
async fn ends_cleanly<S>(stream: &mut S, stall_timeout: std::time::Duration) -> Result<()>
where
    S: futures_util::Stream<Item = io::Result<bytes::Bytes>> + Unpin,
{
    loop {
        match tokio::time::timeout(stall_timeout, stream.next()).await {
            Err(_) => return Err(Error::Stalled(stall_timeout.as_secs())),
            Ok(Some(Err(e))) => return Err(Error::Disconnected(e.to_string())),
            Ok(Some(Ok(_epilogue))) => {}
            Ok(None) => return Ok(()),
        }
    }
}

async fn text_field(mut field: multer::Field<'_>) -> Result<String> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        if text.len() + chunk.len() > FORM_FIELD_LIMIT {
            return Err(Error::BadRequest(format!("a form field is longer than {FORM_FIELD_LIMIT} bytes")));
        }
        text.extend_from_slice(&chunk);
    }
    String::from_utf8(text).map_err(|_| Error::BadRequest("a form field is not valid UTF-8".into()))
}

fn multipart_error(e: multer::Error) -> Error {
    match e {
        multer::Error::StreamReadFailed(e) => Error::Disconnected(e.to_string()),
        other => Error::BadRequest(format!("malformed multipart body: {other}")),
    }
}

/// The read-side headers of a download.
pub struct ReadConditions<'r> {
    if_none_match: Option<Cow<'r, str>>,
    if_range: Option<&'r str>,
    range: Option<&'r str>,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ReadConditions<'r> {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        Outcome::Success(ReadConditions {
            if_none_match: header_list(req, "If-None-Match"),
            if_range: header(req, "If-Range"),
            range: header(req, "Range"),
        })
    }
}

/// What a GET wants of the bytes, from its conditional and range headers.
fn plan(record: &Record, cond: &ReadConditions<'_>) -> Result<Want> {
    if let Some(tags) = &cond.if_none_match {
        if EtagList::parse(tags).matches_weak(Some(record)) {
            return Ok(Want::Nothing);
        }
    }
    let Some(range) = cond.range else {
        return Ok(Want::All);
    };
    if let Some(tag) = cond.if_range {
        if tag.trim() != record.etag() {
            return Ok(Want::All);
        }
    }
    if !range.trim_start().to_ascii_lowercase().starts_with("bytes=") {
        // A range unit we do not know: ignored, as RFC 9110 says.
        return Ok(Want::All);
    }
    let unsatisfiable = || Error::RangeNotSatisfiable { range: range.to_string(), size: record.size };
    let ranges = parse_range_header(range)
        .and_then(|parsed| parsed.validate(record.size))
        .map_err(|_: RangeUnsatisfiableError| unsatisfiable())?;
    match ranges.as_slice() {
        [only] => Ok(Want::Range(*only.start()..=*only.end())),
        // Several ranges: the whole representation (RFC 9110 allows it).
        _ => Ok(Want::All),
    }
}

/// A dataset's bytes (or a slice of them) with its headers.
pub struct Download {
    body: Option<Reader>,
    record: Arc<Record>,
    want: Want,
}

/// A download: streamed through the node, or (an object store with
/// `downloads = "redirect"`) a `307` to a presigned GET.
#[derive(Responder)]
pub enum Served {
    Bytes(Download),
    // Boxed: a `Redirect` is several times a download's size, and rarer.
    Redirect(Box<Redirect>),
}

#[utoipa::path(
    get,
    path = "/data/{key}",
    operation_id = "getData",
    tag = "bytes",
    summary = "Download a dataset's bytes",
    description = "Needs `read`, or a signed GET URL (`expires`, `sig`, and `version` when it was minted for one). With no tokens configured the node is open (loopback only) and needs no `Authorization`. The bytes stream through the node (the filesystem store, or `s3.downloads = \"proxy\"`, the default); with `storage = \"s3\"` and `s3.downloads = \"redirect\"` the answer is a `307` to a presigned GET on the object store instead (not for `version`, which always streams through the node). `version` serves an older version (see `GET /versions/{key}`) with the same Range, ETag and conditional rules, also of a key deleted from the catalog while its versions are kept. Bytes a scrub found damaged are never served: `500 corrupt-data` until the dataset is restored or uploaded again.",
    params(
        ("version" = Option<i64>, Query, minimum = 1, description = "A version number of the key; anything but a positive whole number is `400`."),
    ),
    responses(
        (status = 200, description = "The bytes, streamed, with the dataset's `Content-Type`."),
        (status = 206, description = "One byte range of the dataset."),
        (status = 304, description = "`If-None-Match` matched the current ETag."),
        (status = 307, response = super::openapi::responses::RedirectToStore),
        super::openapi::responses::AccessErrors,
        super::openapi::responses::DatasetErrors,
        (status = 409, response = super::openapi::responses::Conflict),
        (status = 416, response = super::openapi::responses::RangeNotSatisfiable),
        (status = 500, response = super::openapi::responses::CorruptData),
    ),
    security(("bearerAuth" = ["read"]), ()),
)]
#[rocket::get("/data/<_..>?<version>")]
async fn get_data(
    node: &State<Arc<Node>>,
    caller: Caller,
    signed: SignedParams,
    tail: KeyTail<'_>,
    cond: ReadConditions<'_>,
    version: Option<&str>,
) -> Result<Served> {
    // HEAD runs this route too; a signed GET URL covers both.
    let (key, _) = authorize_data(node, &caller, &signed, "GET", &tail, Scope::Read)?;
    if let Some(raw) = version {
        let number = version_number(raw)?;
        let (record, want, body) = node.open_version(&key, number, |record| plan(record, &cond)).await?;
        return Ok(Served::Bytes(Download { body, record, want }));
    }
    if let Some(url) = node.download_redirect(&key).await? {
        return Ok(Served::Redirect(Box::new(Redirect::temporary(url))));
    }
    let (record, want, body) = node.open_dataset(&key, |record| plan(record, &cond)).await?;
    Ok(Served::Bytes(Download { body, record, want }))
}

/// A version number from a query: a positive whole number.
pub fn version_number(raw: &str) -> Result<i64> {
    match raw.parse::<i64>() {
        Ok(n) if n >= 1 && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(Error::BadRequest(format!("version must be a positive whole number, not `{raw}`"))),
    }
}

impl<'r> Responder<'r, 'static> for Download {
    fn respond_to(self, _req: &'r Request<'_>) -> response::Result<'static> {
        let Download { body, record, want } = self;
        let mut response = Response::build();
        response.header(Header::new("ETag", record.etag())).header(Header::new("Accept-Ranges", "bytes"));
        let content_type = match record.content_type.as_str() {
            // What an upload without a type is stored as: no parse per request.
            "application/octet-stream" => ContentType::Binary,
            stored => ContentType::parse_flexible(stored).unwrap_or(ContentType::Binary),
        };
        let len = match want {
            Want::Nothing => return response.status(Status::NotModified).ok(),
            Want::All => record.size,
            Want::Range(range) => {
                response.status(Status::PartialContent).header(Header::new(
                    "Content-Range",
                    format!("bytes {}-{}/{}", range.start(), range.end(), record.size),
                ));
                range.end() - range.start() + 1
            }
        };
        let body = body.ok_or(Status::InternalServerError)?;
        response.header(content_type).sized_body(len as usize, body).max_chunk_size(chunk_for(len)).ok()
    }
}
