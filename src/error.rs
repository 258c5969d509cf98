//! The one error type of the node and its single mapping to HTTP.
//!
//! Every failure a client can see is a variant here. [`Error::status`] and
//! [`Error::code`] are the only place that decides the status line and the
//! stable problem code; the responder renders RFC 9457 problem+json. Internal
//! causes (I/O, SQLite, panics) are logged and never reach the body.

use std::io;

use rocket::http::{ContentType, Header, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};
use serde::Serialize;

use crate::key::KeyError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidKey(#[from] KeyError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    InvalidBody(String),
    #[error("the request body ended after {} of {}", readable(*received), readable(*expected))]
    Truncated { received: u64, expected: u64 },
    #[error("the request body broke off: {0}")]
    Disconnected(String),
    #[error("{0}")]
    DigestMismatch(String),
    #[error("{0}")]
    StoredDigestMismatch(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    Conflict(String),
    /// A symlink where a dataset or one of its folders should be: put there
    /// by hand, never followed, replaced or removed by the node.
    #[error("{0}")]
    SymlinkRefused(String),
    #[error("another write to this key completed while this upload was in progress, and the store dropped this upload's unfinished parts; send it again")]
    Superseded,
    #[error("{0}")]
    CorruptData(String),
    #[error("the body is larger than the limit of {}", readable(*limit))]
    TooLarge { limit: u64 },
    #[error("the range `{range}` cannot be served from {size} bytes")]
    RangeNotSatisfiable { range: String, size: u64 },
    #[error("{0}")]
    InsufficientStorage(String),
    #[error("no body bytes arrived for {0} seconds; the upload was aborted")]
    Stalled(u64),
    #[error("{limit} uploads are already in flight; retry shortly")]
    Busy { limit: usize },
    /// `whose`: "for this token" or "in total".
    #[error("{limit} resumable uploads are already open {whose}; finish or terminate one, or retry later")]
    TooManyOpenUploads { limit: u64, whose: &'static str },
    #[error("the upload is at offset {current}, not {sent}")]
    OffsetMismatch { current: u64, sent: u64 },
    #[error("the chunk's {0} checksum does not match; it was discarded")]
    ChecksumMismatch(String),
    #[error("another request is writing to this upload")]
    Locked,
    #[error("another request is writing to this upload; HEAD it to take it over, then resume")]
    UploadInUse,
    #[error("another request (a HEAD or PATCH of a resuming client) took this upload over; HEAD it for the offset")]
    TakenOver,
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A transfer coding the node does not undo (RFC 9112 § 6.1).
    #[error("{0}")]
    NotImplemented(String),
    #[error("this node speaks tus 1.0.0, not `{0}`")]
    TusVersion(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("{0}")]
    Unauthorized(String),
    /// An open node asked under a `Host` that is not one of its names: a
    /// page whose domain was rebound to the node's address.
    #[error("this node does not answer for the host `{0}`; an open node answers only for loopback names and `allowed_hosts`")]
    Misdirected(String),
    /// An open node asked to write by a page of another origin: a form or
    /// a simple request that a browser sends without a CORS preflight.
    #[error("an open node takes writes only from its own page, its cors_origins and clients that send no Origin, not from `{0}`")]
    CrossOrigin(String),
    #[error("{0}")]
    Expired(String),
    /// A service the node depends on (the object store, a shared index)
    /// does not answer; the cause goes to the log.
    #[error("{0} is unavailable; retry shortly")]
    Unavailable(&'static str, String),
    /// Anything unexpected. The message goes to the log, never to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn no_dataset(key: impl std::fmt::Display) -> Self {
        Error::NotFound(format!("no dataset at key `{key}`"))
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal(cause.to_string())
    }

    /// Maps an I/O error of the write path: a full disk is the client's 507,
    /// anything else is internal.
    pub fn from_io(e: io::Error) -> Self {
        // An error of ours carried through an `io::Error` (an object store's
        // failure, met by the writer thread) comes out as itself.
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            let inner = e.into_inner().expect("checked above");
            return *inner.downcast::<Error>().expect("checked above");
        }
        if is_disk_full(&e) {
            Error::InsufficientStorage("the disk is full".into())
        } else {
            Error::internal(e)
        }
    }

    pub fn status(&self) -> Status {
        match self {
            Error::InvalidKey(_) | Error::BadRequest(_) | Error::InvalidBody(_) => Status::BadRequest,
            Error::Truncated { .. } | Error::Disconnected(_) | Error::DigestMismatch(_) => Status::BadRequest,
            Error::NotFound(_) => Status::NotFound,
            Error::Stalled(_) => Status::RequestTimeout,
            Error::Conflict(_) | Error::StoredDigestMismatch(_) | Error::Superseded => Status::Conflict,
            Error::SymlinkRefused(_) => Status::Conflict,
            Error::PreconditionFailed(_) => Status::PreconditionFailed,
            Error::TooLarge { .. } => Status::PayloadTooLarge,
            Error::RangeNotSatisfiable { .. } => Status::RangeNotSatisfiable,
            Error::Internal(_) | Error::CorruptData(_) => Status::InternalServerError,
            Error::Busy { .. } => Status::ServiceUnavailable,
            Error::TooManyOpenUploads { .. } => Status::TooManyRequests,
            Error::InsufficientStorage(_) => Status::InsufficientStorage,
            Error::OffsetMismatch { .. } => Status::Conflict,
            Error::ChecksumMismatch(_) => Status::new(460),
            Error::Locked => Status::Locked,
            Error::UploadInUse => Status::Conflict,
            Error::TakenOver => Status::Conflict,
            Error::Gone(_) => Status::Gone,
            Error::UnsupportedMediaType(_) => Status::UnsupportedMediaType,
            Error::NotImplemented(_) => Status::NotImplemented,
            Error::TusVersion(_) => Status::PreconditionFailed,
            Error::Forbidden(_) => Status::Forbidden,
            Error::NotReady(_) | Error::Unavailable(..) => Status::ServiceUnavailable,
            Error::Unauthorized(_) => Status::Unauthorized,
            Error::Misdirected(_) => Status::MisdirectedRequest,
            Error::CrossOrigin(_) => Status::Forbidden,
            Error::Expired(_) => Status::Forbidden,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidKey(_) => "invalid-key",
            Error::NotFound(_) => "not-found",
            Error::BadRequest(_) => "bad-request",
            Error::InvalidBody(_) => "invalid-body",
            Error::Truncated { .. } | Error::Disconnected(_) => "truncated-body",
            Error::DigestMismatch(_) | Error::StoredDigestMismatch(_) => "digest-mismatch",
            Error::PreconditionFailed(_) => "precondition-failed",
            Error::Conflict(_) => "key-conflict",
            Error::SymlinkRefused(_) => "symlink-refused",
            Error::Superseded => "upload-superseded",
            Error::TooLarge { .. } => "too-large",
            Error::RangeNotSatisfiable { .. } => "range-not-satisfiable",
            Error::InsufficientStorage(_) => "insufficient-storage",
            Error::Stalled(_) => "upload-stalled",
            Error::Busy { .. } => "too-many-uploads",
            Error::TooManyOpenUploads { .. } => "too-many-open-uploads",
            Error::Internal(_) => "internal",
            Error::CorruptData(_) => "corrupt-data",
            Error::OffsetMismatch { .. } => "offset-mismatch",
            Error::ChecksumMismatch(_) => "checksum-mismatch",
            Error::Locked => "upload-locked",
            Error::UploadInUse => "upload-in-use",
            Error::TakenOver => "upload-taken-over",
            Error::Gone(_) => "upload-expired",
            Error::UnsupportedMediaType(_) => "unsupported-media-type",
            Error::NotImplemented(_) => "not-implemented",
            Error::TusVersion(_) => "unsupported-version",
            Error::Forbidden(_) => "forbidden",
            Error::NotReady(_) => "not-ready",
            Error::Unavailable(..) => "unavailable",
            Error::Unauthorized(_) => "unauthorized",
            Error::Misdirected(_) => "misdirected-request",
            Error::CrossOrigin(_) => "cross-origin",
            Error::Expired(_) => "expired",
        }
    }

    /// One of every error the node has (the OpenAPI document's `code` enum
    /// is read from them). The `match` has no wildcard: a new variant does
    /// not compile until it is added here.
    pub fn every() -> Vec<Error> {
        let all = vec![
            Error::InvalidKey(KeyError::Empty),
            Error::NotFound(String::new()),
            Error::BadRequest(String::new()),
            Error::InvalidBody(String::new()),
            Error::Truncated { received: 0, expected: 1 },
            Error::Disconnected(String::new()),
            Error::DigestMismatch(String::new()),
            Error::StoredDigestMismatch(String::new()),
            Error::PreconditionFailed(String::new()),
            Error::Conflict(String::new()),
            Error::SymlinkRefused(String::new()),
            Error::Superseded,
            Error::CorruptData(String::new()),
            Error::TooLarge { limit: 1 },
            Error::RangeNotSatisfiable { range: String::new(), size: 0 },
            Error::InsufficientStorage(String::new()),
            Error::Stalled(1),
            Error::Busy { limit: 1 },
            Error::TooManyOpenUploads { limit: 1, whose: "in total" },
            Error::OffsetMismatch { current: 0, sent: 1 },
            Error::ChecksumMismatch(String::new()),
            Error::Locked,
            Error::UploadInUse,
            Error::TakenOver,
            Error::Gone(String::new()),
            Error::UnsupportedMediaType(String::new()),
            Error::NotImplemented(String::new()),
            Error::TusVersion(String::new()),
            Error::Forbidden(String::new()),
            Error::NotReady(String::new()),
            Error::Unauthorized(String::new()),
            Error::Misdirected(String::new()),
            Error::CrossOrigin(String::new()),
            Error::Expired(String::new()),
            Error::Unavailable("the object store", String::new()),
            Error::Internal(String::new()),
        ];
        for e in &all {
            match e {
                Error::InvalidKey(_)
                | Error::NotFound(_)
                | Error::BadRequest(_)
                | Error::InvalidBody(_)
                | Error::Truncated { .. }
                | Error::Disconnected(_)
                | Error::DigestMismatch(_)
                | Error::StoredDigestMismatch(_)
                | Error::PreconditionFailed(_)
                | Error::Conflict(_)
                | Error::SymlinkRefused(_)
                | Error::Superseded
                | Error::CorruptData(_)
                | Error::TooLarge { .. }
                | Error::RangeNotSatisfiable { .. }
                | Error::InsufficientStorage(_)
                | Error::Stalled(_)
                | Error::Busy { .. }
                | Error::TooManyOpenUploads { .. }
                | Error::OffsetMismatch { .. }
                | Error::ChecksumMismatch(_)
                | Error::Locked
                | Error::UploadInUse
                | Error::TakenOver
                | Error::Gone(_)
                | Error::UnsupportedMediaType(_)
                | Error::NotImplemented(_)
                | Error::TusVersion(_)
                | Error::Forbidden(_)
                | Error::NotReady(_)
                | Error::Unauthorized(_)
                | Error::Misdirected(_)
                | Error::CrossOrigin(_)
                | Error::Expired(_)
                | Error::Unavailable(..)
                | Error::Internal(_) => {}
            }
        }
        all
    }

    /// The whole story, for logs and the command line (internal causes too).
    pub fn cause(&self) -> String {
        match self {
            Error::Internal(cause) => cause.clone(),
            Error::Unavailable(what, cause) => format!("{what} is unavailable: {cause}"),
            other => other.to_string(),
        }
    }

    /// The text a client may read. Internal errors say nothing specific.
    fn detail(&self) -> String {
        match self {
            Error::Internal(_) => "the node failed to handle the request; the cause is in its log".into(),
            other => other.to_string(),
        }
    }

    fn extra_header(&self) -> Option<Header<'static>> {
        match self {
            Error::RangeNotSatisfiable { size, .. } => Some(Header::new("Content-Range", format!("bytes */{size}"))),
            Error::Busy { .. } => Some(Header::new("Retry-After", "1")),
            // Places free up as uploads finish, are terminated or expire.
            Error::TooManyOpenUploads { .. } => Some(Header::new("Retry-After", "60")),
            Error::Unavailable(..) => Some(Header::new("Retry-After", "5")),
            Error::OffsetMismatch { current, .. } => Some(Header::new("Upload-Offset", current.to_string())),
            Error::TusVersion(_) => Some(Header::new("Tus-Version", "1.0.0")),
            Error::Unauthorized(_) => Some(Header::new("WWW-Authenticate", "Bearer realm=\"spillway\"")),
            _ => None,
        }
    }
}

/// A size as people read it, with the exact count: `8MiB (8388608 bytes)`.
pub fn readable(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    format!("{:.1} ({bytes} bytes)", rocket::data::ByteUnit::from(bytes))
}

/// True for ENOSPC and EDQUOT, the errors of a full volume.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::from_io(e)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return Error::InsufficientStorage("the index volume is full".into());
        }
        Error::internal(format!("index: {e}"))
    }
}

/// An RFC 9457 problem detail.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    pub code: String,
}

impl Problem {
    pub fn new(status: Status, code: &str, detail: String) -> Self {
        Problem {
            kind: format!("https://spillway.dev/problems/{code}"),
            title: match status.code {
                460 => "Checksum Mismatch".to_string(),
                _ => status.reason_lossy().to_string(),
            },
            status: status.code,
            detail,
            code: code.to_string(),
        }
    }

    pub fn into_response<'o>(self) -> Response<'o> {
        let body = serde_json::to_string(&self).unwrap_or_else(|_| "{}".into());
        Response::build()
            .status(Status::new(self.status))
            .header(ContentType::new("application", "problem+json"))
            .sized_body(body.len(), std::io::Cursor::new(body))
            .finalize()
    }
}

impl<'r> Responder<'r, 'static> for Error {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let status = self.status();
        // No room or no capacity for this request is a refusal, which any
        // client can provoke (a declared size no disk holds): a warning.
        let refusal = matches!(
            self,
            Error::InsufficientStorage(_) | Error::Busy { .. } | Error::NotReady(_) | Error::NotImplemented(_)
        );
        if refusal {
            log::warn!("{} {}: {self}", req.method(), req.uri().path());
        } else if status.code >= 500 {
            log::error!("{} {}: {self}", req.method(), req.uri().path());
        } else {
            log::info!("{} {}: {} ({})", req.method(), req.uri().path(), status.code, self.code());
        }
        let mut response = Problem::new(status, self.code(), self.detail()).into_response();
        if let Some(header) = self.extra_header() {
            response.set_header(header);
        }
        Ok(response)
    }
}

/// Rocket's own errors (unknown route, wrong method, oversized JSON, a body
/// that does not parse) in the same problem+json shape.
#[rocket::catch(default)]
pub fn default_catcher(status: Status, _req: &Request<'_>) -> Problem {
    let (code, detail) = match status.code {
        s if s >= 500 => CATCHER_INTERNAL,
        s => CATCHER.iter().find(|(c, _, _)| *c == s).map_or(CATCHER_OTHER, |&(_, code, detail)| (code, detail)),
    };
    Problem::new(status, code, detail.to_string())
}

/// What `default_catcher` answers for Rocket's own errors, by status.
const CATCHER: [(u16, &str, &str); 8] = [
    (400, "bad-request", "the request could not be understood"),
    (401, "unauthorized", "this needs a bearer token"),
    (403, "forbidden", "the request is not allowed (for a browser: its origin is not in cors_origins)"),
    (404, "not-found", "no such resource"),
    (405, "method-not-allowed", "the method is not allowed on this resource"),
    (413, "too-large", "the request body is larger than this endpoint accepts"),
    (415, "unsupported-media-type", "the request body has an unsupported type"),
    (422, "invalid-body", "the request body does not have the expected shape"),
];
const CATCHER_INTERNAL: (&str, &str) = ("internal", "the node failed to handle the request; the cause is in its log");
const CATCHER_OTHER: (&str, &str) = ("error", "the request failed");

/// Every code `default_catcher` may answer with.
pub const CATCHER_CODES: [&str; 10] = [
    CATCHER[0].1,
    CATCHER[1].1,
    CATCHER[2].1,
    CATCHER[3].1,
    CATCHER[4].1,
    CATCHER[5].1,
    CATCHER[6].1,
    CATCHER[7].1,
    CATCHER_INTERNAL.0,
    CATCHER_OTHER.0,
];

impl<'r> Responder<'r, 'static> for Problem {
    fn respond_to(self, _req: &'r Request<'_>) -> response::Result<'static> {
        Ok(self.into_response())
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        // A lost or refused connection is the shared index being down (503);
        // a database error (constraint, syntax) is ours (500).
        match e.as_db_error() {
            Some(db) if db.code() == &tokio_postgres::error::SqlState::DISK_FULL => {
                Error::InsufficientStorage("the index volume is full".into())
            }
            Some(db) => Error::internal(format!("index: {db}")),
            None if e.is_closed() || std::error::Error::source(&e).is_some() => {
                Error::Unavailable("the index", e.to_string())
            }
            None => Error::internal(format!("index: {e}")),
        }
    }
}
