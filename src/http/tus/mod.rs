//! tus 1.0.0 over HTTP: `/uploads` and `/uploads/{id}`. The protocol's
//! rules live in `crate::service::tus`; here are the routes that call them,
//! the fairing that makes every answer under `/uploads` a tus answer, and
//! the expiry sweeper. The headers are read in [`headers`] and written in
//! [`reply`].

use std::sync::Arc;

use rocket::data::{Data, ToByteUnit};
use rocket::fairing::{AdHoc, Fairing, Info, Kind};
use rocket::http::{Header, Method, Status};
use rocket::request::Request;
use rocket::response::Response;
use rocket::{Route, State};

use super::header;
use crate::access::{Caller, Scope};
use crate::error::{Error, Result};
use crate::service::tus::{Patch, TUS_VERSION};
use crate::service::Node;

mod headers;
mod reply;

use headers::{CreationRequest, PatchRequest, TusResumable};
use reply::{Discovery, DiscoveryResponses, Reply};

pub fn routes() -> Vec<Route> {
    rocket::routes![discover, discover_upload, create, head_upload, patch_upload, terminate]
}

/// Adds `Tus-Resumable` to every response under `/uploads` (errors
/// included), and honours `X-HTTP-Method-Override` there.
pub fn fairing() -> impl Fairing {
    TusFairing
}

struct TusFairing;

fn is_tus_path(req: &Request<'_>) -> bool {
    let path = req.uri().path();
    path == "/uploads" || path.starts_with("/uploads/")
}

#[rocket::async_trait]
impl Fairing for TusFairing {
    fn info(&self) -> Info {
        Info { name: "tus", kind: Kind::Request | Kind::Response }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        if !is_tus_path(req) || req.method() != Method::Post {
            return;
        }
        let method = header(req, "X-HTTP-Method-Override").and_then(|m| m.trim().parse::<Method>().ok());
        if let Some(method) = method {
            req.set_method(method);
        }
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        if is_tus_path(req) {
            res.set_header(Header::new("Tus-Resumable", TUS_VERSION));
        }
    }
}

/// The sweeper: removes expired incomplete uploads and their bytes, and
/// what the object store kept of failed uploads (see `Node::sweep_store`).
pub fn sweeper() -> AdHoc {
    AdHoc::on_liftoff("tus expiry sweeper", |rocket| {
        Box::pin(async move {
            let Some(node) = rocket.state::<Arc<Node>>().cloned() else {
                return;
            };
            // Often enough for both: expired uploads, and the object store's
            // leftovers whose removal failed while it was away.
            let every = std::time::Duration::from_secs((node.settings().upload_expiry / 4).clamp(1, 10));
            let mut shutdown = rocket.shutdown();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = &mut shutdown => return,
                    }
                    match node.tus_sweep().await {
                        Ok(0) => {}
                        Ok(n) => log::info!("removed {n} expired resumable upload(s)"),
                        Err(e) => log::error!("sweeping expired uploads: {e}"),
                    }
                    match node.sweep_store().await {
                        Ok(0) => {}
                        Ok(n) => log::info!("removed {n} multipart upload(s) or staged object(s) left in the store"),
                        Err(e) => log::warn!("sweeping the object store: {}", e.cause()),
                    }
                }
            });
        })
    })
}

#[utoipa::path(
    options,
    path = "/uploads",
    operation_id = "tusDiscover",
    tag = "resumable uploads",
    summary = "tus: what this server supports",
    description = "tus 1.0.0 with the extensions creation, creation-with-upload, creation-defer-length, termination, checksum (sha1, md5, sha256), expiration and concatenation. Needs no token and no `Tus-Resumable`.",
    responses(DiscoveryResponses),
    security(()),
)]
#[rocket::options("/uploads")]
fn discover(node: &State<Arc<Node>>) -> Discovery {
    Discovery { max_size: node.max_size() }
}

#[utoipa::path(
    options,
    path = "/uploads/{id}",
    operation_id = "tusDiscoverUpload",
    tag = "resumable uploads",
    summary = "tus: what this server supports",
    description = "As `OPTIONS /uploads`.",
    responses(DiscoveryResponses),
    security(()),
)]
#[rocket::options("/uploads/<_>")]
fn discover_upload(node: &State<Arc<Node>>) -> Discovery {
    Discovery { max_size: node.max_size() }
}

fn body_limit(node: &Node) -> rocket::data::ByteUnit {
    node.max_size().saturating_add(1).bytes()
}

#[utoipa::path(
    post,
    path = "/uploads",
    operation_id = "tusCreate",
    tag = "resumable uploads",
    summary = "tus: create a resumable upload",
    description = "tus 1.0.0 with the extensions creation, creation-with-upload, creation-defer-length, termination, checksum (sha1, md5, sha256), expiration and concatenation. Needs `write`; the upload belongs to the token that creates it (only it, or an `admin` token, may HEAD, PATCH, terminate or concatenate it; to others it does not exist: `404`). At most `max_open_uploads` uploads, and `max_open_uploads_per_token` per token, are open at once (`429`). When the last byte arrives the upload is verified and committed as the dataset at its key exactly like a PUT. A body of type `application/offset+octet-stream` holds the first bytes (creation-with-upload).",
    responses(
        (status = 201, description = "Created; `Location` is the upload's URL. With a body (creation-with-upload), `Upload-Offset` says how much of it was kept; if that completed the upload, `Content-Location` and `ETag` name the committed dataset."),
        super::openapi::responses::TusAccessErrors,
        super::openapi::responses::TusBodyErrors,
        (status = 429, response = super::openapi::responses::TusTooManyOpenUploads),
    ),
    security(("bearerAuth" = ["write"]), ()),
)]
#[rocket::post("/uploads", data = "<body>")]
async fn create(
    node: &State<Arc<Node>>,
    caller: Caller,
    tus: Result<TusResumable, Error>,
    request: Result<CreationRequest, Error>,
    body: Data<'_>,
) -> Result<Reply> {
    tus?;
    caller.require(Scope::Write)?;
    let request = request?;
    // Admitted before anything is created: a 503 leaves no upload behind
    // (the client, which gets no `Location`, could never reach it).
    let _permit = if request.with_body { Some(node.admit_upload()?) } else { None };
    let info = node.tus_create(request.creation, &caller).await?;
    if !request.with_body {
        return Ok(Reply::created(info));
    }
    let checksum = request.checksum;
    let patch = Patch {
        offset: 0,
        length: None,
        checksum,
        blake3: None,
        content_length: None,
        body: body.open(body_limit(node)),
    };
    match node.tus_patch(&info.id, patch, &caller).await {
        Ok(info) => Ok(Reply::created(info)),
        Err(e) => failed_creation_with_upload(node, &info.id, &caller, e).await,
    }
}

/// The answer to a creation-with-upload whose body failed. The upload
/// exists at this point; an error answer carries no `Location`, so an
/// upload kept behind one is an orphan nobody can reach that counts
/// against `max_open_uploads[_per_token]` until it expires. Per case:
///
/// - The body broke off or stalled (its bytes are kept and fsynced): as
///   tusd does, `201` with `Location` and the durable `Upload-Offset`. The
///   tus 1.0 creation-with-upload extension says a client must then use
///   `Upload-Offset` to resume; tus-js-client and tuspy do (a PATCH from
///   that offset), and a client still reading (a stall, a half-close) gets
///   an upload it can finish rather than an error that makes it start over.
///   Exception: a break that brought the offset to the full length leaves
///   an upload that is not committed, and a client would take `Upload-Offset
///   == Upload-Length` as success (tus-js-client, tuspy), so that one is
///   removed and the error stands.
/// - A refusal (460 checksum, 413 too long, 507 no space, a conflict or any
///   other error): the client gets a 4xx/5xx without `Location` and starts
///   over with a new `POST` (tus-js-client retries 5xx/409/423 with a new
///   creation, since it has no URL; tuspy raises). The chunk was not kept,
///   so the upload is removed entirely, file and row.
async fn failed_creation_with_upload(node: &Node, id: &str, caller: &Caller, error: Error) -> Result<Reply> {
    if matches!(error, Error::Disconnected(_) | Error::Truncated { .. } | Error::Stalled(_)) {
        match node.tus_info(id, caller).await {
            Ok(info) if info.record.is_none() && Some(info.offset) != info.length => {
                return Ok(Reply::created(info));
            }
            Ok(_) => {}
            Err(e) => log::warn!("upload {id} after its creation body failed: {}", e.cause()),
        }
    }
    if let Err(e) = node.tus_terminate(id, caller).await {
        log::error!("removing upload {id} after its creation failed: {}", e.cause());
    }
    Err(error)
}

#[utoipa::path(
    head,
    path = "/uploads/{id}",
    operation_id = "tusHead",
    tag = "resumable uploads",
    summary = "tus: an upload's offset",
    description = "Needs `write`. Like tusd, a HEAD takes the upload over from a PATCH still writing to it (that PATCH answers `409 upload-taken-over`), so the offset it reports is final.",
    responses(
        (status = 200, description = "The upload's state; once committed, `Content-Location` and `ETag` name the dataset."),
        (status = 401, response = super::openapi::responses::HeadTusUnauthorized),
        (status = 403, response = super::openapi::responses::HeadTusForbidden),
        (status = 404, response = super::openapi::responses::HeadTusNotFound),
        (status = 409, response = super::openapi::responses::HeadTusConflict),
        (status = 410, response = super::openapi::responses::HeadTusGone),
        (status = 412, response = super::openapi::responses::HeadTusUnsupportedVersion),
        (status = 421, response = super::openapi::responses::HeadTusMisdirected),
        (status = 423, response = super::openapi::responses::HeadTusLocked),
        (status = 503, response = super::openapi::responses::HeadTusUnavailable),
    ),
    security(("bearerAuth" = ["write"]), ()),
)]
#[rocket::head("/uploads/<id>")]
async fn head_upload(
    node: &State<Arc<Node>>,
    caller: Caller,
    tus: Result<TusResumable, Error>,
    id: &str,
) -> Result<Reply> {
    tus?;
    caller.require(Scope::Write)?;
    let info = node.tus_info(id, &caller).await?;
    Ok(Reply::head(info))
}

#[utoipa::path(
    patch,
    path = "/uploads/{id}",
    operation_id = "tusPatch",
    tag = "resumable uploads",
    summary = "tus: append bytes",
    description = "Appends the body at `Upload-Offset`. Needs `write`. `X-Blake3` (64 hex digits; Spillway's own) on the PATCH whose `Content-Length` reaches `Upload-Length` names the whole upload's blake3, for a client that hashed while it sent: the upload is committed only if its bytes have it (else `400 digest-mismatch`, and the upload is gone, as with a `blake3` given at creation); on any other PATCH it is `400`. Every byte of a PATCH that breaks off is kept (unless it carried `Upload-Checksum`); a chunk past the length is refused whole. A PATCH to an upload another PATCH is still writing takes it over.",
    responses(
        (status = 204, description = "The bytes are durable (they survive a crash of the node). When they completed the upload it was committed: `Content-Location` and `ETag` name the dataset."),
        super::openapi::responses::TusAccessErrors,
        super::openapi::responses::TusBodyErrors,
        (status = 415, response = super::openapi::responses::TusUnsupportedMediaType),
        (status = 423, response = super::openapi::responses::TusLocked),
    ),
    security(("bearerAuth" = ["write"]), ()),
)]
#[rocket::patch("/uploads/<id>", data = "<body>")]
async fn patch_upload(
    node: &State<Arc<Node>>,
    caller: Caller,
    tus: Result<TusResumable, Error>,
    id: &str,
    request: Result<PatchRequest, Error>,
    body: Data<'_>,
) -> Result<Reply> {
    tus?;
    caller.require(Scope::Write)?;
    let request = request?;
    let _permit = node.admit_upload()?;
    let patch = Patch {
        offset: request.offset,
        length: request.length,
        checksum: request.checksum,
        blake3: request.blake3,
        content_length: request.content_length,
        body: body.open(body_limit(node)),
    };
    let info = node.tus_patch(id, patch, &caller).await?;
    Ok(Reply::patched(info))
}

#[utoipa::path(
    delete,
    path = "/uploads/{id}",
    operation_id = "tusTerminate",
    tag = "resumable uploads",
    summary = "tus: terminate an upload",
    description = "Stops any PATCH in progress and removes the upload. Needs `write`.",
    responses(
        (status = 204, description = "The upload and its bytes are gone."),
        super::openapi::responses::TusAccessErrors,
        (status = 423, response = super::openapi::responses::TusLocked),
        (status = 503, response = super::openapi::responses::TusUnavailable),
    ),
    security(("bearerAuth" = ["write"]), ()),
)]
#[rocket::delete("/uploads/<id>")]
async fn terminate(
    node: &State<Arc<Node>>,
    caller: Caller,
    tus: Result<TusResumable, Error>,
    id: &str,
) -> Result<Status> {
    tus?;
    caller.require(Scope::Write)?;
    node.tus_terminate(id, &caller).await?;
    Ok(Status::NoContent)
}
