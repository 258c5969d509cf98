//! What a tus request says in its headers: `Tus-Resumable`, and those of a
//! creation and of a PATCH, read and checked as request guards. Handlers
//! take them as `Result`s, so that a missing token or `Tus-Resumable` is
//! answered before a malformed header.

use base64::Engine;
use rocket::request::{FromRequest, Outcome, Request};

use crate::error::{Error, Result};
use crate::http::{guard, header, header_list, plain_transfer};
use crate::ingest::{Algorithm, Digest};
use crate::service::tus::{Concat, Creation, CHECKSUM_ALGORITHMS, CREATE_ONLY, TUS_VERSION};

pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// `Tus-Resumable: 1.0.0` must be on every request but `OPTIONS`.
pub struct TusResumable;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for TusResumable {
    type Error = Error;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Error> {
        guard(match header(req, "Tus-Resumable") {
            Some(v) if v.trim() == TUS_VERSION => Ok(TusResumable),
            other => Err(Error::TusVersion(other.unwrap_or("none").to_string())),
        })
    }
}

/// The headers of a creation, read and checked.
pub struct CreationRequest {
    pub creation: Creation,
    /// creation-with-upload: the body holds the first bytes.
    pub with_body: bool,
    /// `Upload-Checksum` of that first body.
    pub checksum: Option<Digest>,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for CreationRequest {
    type Error = Error;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Error> {
        guard(creation_request(req))
    }
}

fn creation_request(req: &Request<'_>) -> Result<CreationRequest> {
    plain_transfer(req)?;
    let length = number(req, "Upload-Length")?;
    let deferred = match header(req, "Upload-Defer-Length") {
        None => false,
        Some("1") => true,
        Some(_) => return Err(Error::BadRequest("Upload-Defer-Length must be 1".into())),
    };
    let concat = match header(req, "Upload-Concat").map(str::trim) {
        None => Concat::None,
        Some("partial") => Concat::Partial,
        Some(v) if v.starts_with("final;") => Concat::Final(
            v["final;".len()..]
                .split_whitespace()
                .map(|url| url.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string())
                .collect(),
        ),
        Some(v) => return Err(Error::BadRequest(format!("Upload-Concat `{v}` is not partial or final;..."))),
    };
    match (&concat, length, deferred) {
        (Concat::Final(parts), None, false) if !parts.is_empty() => {}
        (Concat::Final(_), _, _) => {
            return Err(Error::BadRequest("a final upload lists its parts and sends no length".into()))
        }
        (_, Some(_), true) => {
            return Err(Error::BadRequest("send Upload-Length or Upload-Defer-Length, not both".into()))
        }
        (_, None, false) => {
            return Err(Error::BadRequest("Upload-Length (or Upload-Defer-Length: 1) is required".into()))
        }
        _ => {}
    }
    let with_body = content_type_is(req, OFFSET_OCTET_STREAM)
        && (number(req, "Content-Length")?.unwrap_or(0) > 0 || header(req, "Transfer-Encoding").is_some());
    let mut metadata = header(req, "Upload-Metadata").map(str::to_owned);
    match header_list(req, "If-None-Match").as_deref().map(str::trim) {
        None => {}
        // Kept with the upload (its metadata is what the commit reads):
        // the key must still be free when the upload completes.
        Some("*") => {
            let pair = format!("{CREATE_ONLY} {}", base64::engine::general_purpose::STANDARD.encode("*"));
            metadata = Some(match metadata.filter(|m| !m.trim().is_empty()) {
                Some(m) => format!("{m},{pair}"),
                None => pair,
            });
        }
        Some(_) => return Err(Error::BadRequest("on POST /uploads, If-None-Match can only be `*`".into())),
    }
    Ok(CreationRequest { creation: Creation { length, metadata, concat }, with_body, checksum: upload_checksum(req)? })
}

fn number(req: &Request<'_>, name: &str) -> Result<Option<u64>> {
    let Some(value) = header(req, name).map(str::trim) else { return Ok(None) };
    // Digits only (tus: a non-negative integer); Rust's parse also takes a `+`.
    match value.bytes().all(|b| b.is_ascii_digit()).then(|| value.parse::<u64>()) {
        Some(Ok(n)) => Ok(Some(n)),
        _ => Err(Error::BadRequest(format!("{name} must be a whole number of bytes"))),
    }
}

fn content_type_is(req: &Request<'_>, expected: &str) -> bool {
    header(req, "Content-Type")
        .is_some_and(|ct| ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case(expected))
}

/// The headers of a PATCH, read and checked.
pub struct PatchRequest {
    pub offset: u64,
    pub length: Option<u64>,
    pub checksum: Option<Digest>,
    /// `X-Blake3`: the whole upload's blake3 (on the PATCH that ends it).
    pub blake3: Option<blake3::Hash>,
    pub content_length: Option<u64>,
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for PatchRequest {
    type Error = Error;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Error> {
        guard(patch_request(req))
    }
}

fn patch_request(req: &Request<'_>) -> Result<PatchRequest> {
    plain_transfer(req)?;
    if !content_type_is(req, OFFSET_OCTET_STREAM) {
        return Err(Error::UnsupportedMediaType(format!("a PATCH body must be {OFFSET_OCTET_STREAM}")));
    }
    let offset = number(req, "Upload-Offset")?.ok_or_else(|| Error::BadRequest("Upload-Offset is required".into()))?;
    let blake3 = header(req, "X-Blake3")
        .map(|hex| blake3::Hash::from_hex(hex.trim()))
        .transpose()
        .map_err(|_| Error::BadRequest("X-Blake3 must be 64 hex digits".into()))?;
    Ok(PatchRequest {
        offset,
        length: number(req, "Upload-Length")?,
        checksum: upload_checksum(req)?,
        blake3,
        content_length: number(req, "Content-Length")?,
    })
}

/// `Upload-Checksum: <algorithm> <base64>`.
fn upload_checksum(req: &Request<'_>) -> Result<Option<Digest>> {
    let Some(value) = header(req, "Upload-Checksum") else {
        return Ok(None);
    };
    let (name, b64) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| Error::BadRequest("Upload-Checksum is `<algorithm> <base64>`".into()))?;
    let algorithm = Algorithm::from_tus(name)
        .ok_or_else(|| Error::BadRequest(format!("checksum algorithm `{name}` is not one of {CHECKSUM_ALGORITHMS}")))?;
    let value = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| Error::BadRequest("the Upload-Checksum value is not valid base64".into()))?;
    Ok(Some(Digest { algorithm, value }))
}
