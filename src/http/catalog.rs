//! The catalog: `GET /datasets` (paged), and per-dataset `GET`, `PATCH`,
//! `DELETE` and `POST .../action/acknowledge` under `/datasets/{key}`.

use std::sync::Arc;

use rocket::http::{Header, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};
use rocket::serde::json::Json;
use rocket::{Route, State};

use super::access::mint;
use super::{chunk_for, JsonBody, KeyTail};
use crate::access::{Caller, Scope};
use crate::error::{Error, Result};
use crate::index::{MetadataPatch, Record};
use crate::key::{encode_query_value, Key};
use crate::service::{Acknowledge, Node};
use crate::store::CHUNK;

pub fn routes() -> Vec<Route> {
    rocket::routes![list, get_record, patch_record, delete_record, post_action]
}

pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;

/// A page of records (or versions) with its `Link: rel="next"`.
pub struct Page<T: serde::Serialize = Record> {
    pub(super) records: Vec<T>,
    pub(super) next: Option<String>,
}

impl<'r, T: serde::Serialize> Responder<'r, 'static> for Page<T> {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let json = Json(&self.records).respond_to(req)?;
        let len = json.body().preset_size().unwrap_or(CHUNK);
        let mut response = Response::build_from(json);
        response.max_chunk_size(chunk_for(len as u64));
        if let Some(next) = self.next {
            response.header(Header::new("Link", format!("<{next}>; rel=\"next\"")));
        }
        response.ok()
    }
}

#[utoipa::path(
    get,
    path = "/datasets",
    operation_id = "listDatasets",
    tag = "catalog",
    summary = "List datasets (paged)",
    description = "Needs `read`. When a page is full (as many records as `limit`), `Link: rel=\"next\"` gives the next page's URL. With no tokens configured the node is open (loopback only) and needs no `Authorization`.",
    params(
        ("prefix" = Option<String>, Query, description = "Only keys starting with this string (bytewise)."),
        ("limit" = Option<u64>, Query, minimum = 1, description = "Upper bound on the number of records: default 1000, larger values are clamped to 10000. Anything but a positive whole number is `400`."),
        ("after" = Option<String>, Query, description = "Only keys after this one (bytewise): the paging cursor."),
    ),
    responses(
        (status = 200, description = "Full records ordered by key, bytewise (UTF-8 byte order).", body = Vec<crate::index::Record>),
        super::openapi::responses::AccessErrors,
        (status = 400, response = super::openapi::responses::BadRequest),
        (status = 503, response = super::openapi::responses::Unavailable),
    ),
    security(("bearerAuth" = ["read"]), ()),
)]
#[rocket::get("/datasets?<prefix>&<limit>&<after>")]
async fn list(
    node: &State<Arc<Node>>,
    caller: Caller,
    prefix: Option<String>,
    limit: Option<&str>,
    after: Option<String>,
) -> Result<Page> {
    caller.require(Scope::Read)?;
    let limit = parse_limit(limit)?;
    let prefix = prefix.unwrap_or_default();
    let records = node.list(prefix.clone(), after, limit).await?;
    let next = (records.len() == limit).then(|| {
        let last = &records[records.len() - 1].key;
        let mut query = format!("limit={limit}&after={}", encode_query_value(last));
        if !prefix.is_empty() {
            query = format!("prefix={}&{query}", encode_query_value(&prefix));
        }
        format!("/datasets?{query}")
    });
    Ok(Page { records, next })
}

/// A page's `limit`: a positive whole number, clamped to [`MAX_LIMIT`].
pub(super) fn parse_limit(limit: Option<&str>) -> Result<usize> {
    let Some(raw) = limit else { return Ok(DEFAULT_LIMIT) };
    let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
    if !digits || raw.bytes().all(|b| b == b'0') {
        return Err(Error::BadRequest(format!("limit must be a positive whole number, not `{raw}`")));
    }
    // Above the maximum (however many digits) clamps to it.
    Ok(raw.parse::<usize>().map_or(MAX_LIMIT, |n| n.min(MAX_LIMIT)))
}

#[utoipa::path(
    get,
    path = "/datasets/{key}",
    operation_id = "getDataset",
    tag = "catalog",
    summary = "A dataset's record",
    description = "Needs `read`. With no tokens configured the node is open (loopback only) and needs no `Authorization`.",
    responses(
        (status = 200, description = "The record.", body = crate::index::Record),
        super::openapi::responses::AccessErrors,
        super::openapi::responses::DatasetErrors,
    ),
    security(("bearerAuth" = ["read"]), ()),
)]
#[rocket::get("/datasets/<_..>", rank = 2)]
async fn get_record(node: &State<Arc<Node>>, caller: Caller, tail: KeyTail<'_>) -> Result<Json<Record>> {
    caller.require(Scope::Read)?;
    Ok(Json(Arc::unwrap_or_clone(node.get(&tail.key()?).await?)))
}

#[utoipa::path(
    patch,
    path = "/datasets/{key}",
    operation_id = "patchDataset",
    tag = "catalog",
    summary = "Change a dataset's metadata",
    description = "Merges `name`, `description`, `tags` into the record. Needs `write`. The body may be empty (as `{}`); its Content-Type is not checked.",
    request_body(content = crate::index::MetadataPatch),
    responses(
        (status = 200, description = "The updated record.", body = crate::index::Record),
        super::openapi::responses::AccessErrors,
        super::openapi::responses::DatasetErrors,
        (status = 413, response = super::openapi::responses::TooLarge),
        (status = 507, response = super::openapi::responses::InsufficientStorage),
    ),
    security(("bearerAuth" = ["write"]), ()),
)]
#[rocket::patch("/datasets/<_..>", data = "<patch>")]
async fn patch_record(
    node: &State<Arc<Node>>,
    caller: Caller,
    tail: KeyTail<'_>,
    patch: Result<JsonBody<MetadataPatch>, Error>,
) -> Result<Json<Record>> {
    caller.require(Scope::Write)?;
    let key = tail.key()?;
    Ok(Json(node.patch(&key, patch?.0).await?))
}

#[utoipa::path(
    delete,
    path = "/datasets/{key}",
    operation_id = "deleteDataset",
    tag = "catalog",
    summary = "Delete a dataset",
    description = "Needs `admin`. The key leaves the catalog and its current bytes are no longer served; its versions stay (`GET /versions/{key}`, restorable) until pruned by `keep_versions` / `keep_versions_for`, or at once with `keep_versions = 0`. `?versions=all` removes them too (also of a key already deleted).",
    params(
        ("versions" = Option<String>, Query, description = "`all`: remove every version as well."),
    ),
    responses(
        (status = 204, description = "The key is gone from the catalog (and with `versions=all`, its versions)."),
        super::openapi::responses::AccessErrors,
        super::openapi::responses::DatasetErrors,
        (status = 409, response = super::openapi::responses::Conflict),
        (status = 507, response = super::openapi::responses::InsufficientStorage),
    ),
    security(("bearerAuth" = ["admin"]), ()),
)]
#[rocket::delete("/datasets/<_..>?<versions>")]
async fn delete_record(
    node: &State<Arc<Node>>,
    caller: Caller,
    tail: KeyTail<'_>,
    versions: Option<&str>,
) -> Result<Status> {
    caller.require(Scope::Admin)?;
    let purge = match versions {
        None => false,
        Some("all") => true,
        Some(other) => return Err(Error::BadRequest(format!("versions may only be `all`, not `{other}`"))),
    };
    node.delete(&tail.key()?, purge).await?;
    Ok(Status::NoContent)
}

/// The `POST /datasets/{key}/...` actions, by path suffix.
const ACTIONS: [(&str, Scope); 4] = [
    ("/action/acknowledge", Scope::Write),
    ("/action/restore", Scope::Write),
    ("/upload-url", Scope::Write),
    ("/download-url", Scope::Read),
];

/// The body of `POST /datasets/{key}/action/restore`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Restore {
    /// The version to make current again (see `GET /versions/{key}`).
    pub version: i64,
}

/// `POST /datasets/{key}/action/acknowledge`, `.../upload-url` and
/// `.../download-url`: the action is the path's suffix, so a key may itself
/// contain any segment.
#[utoipa::path(
    post,
    path = "/datasets/{key}/action/acknowledge",
    operation_id = "acknowledgeDataset",
    tag = "catalog",
    summary = "Confirm a stored or directly uploaded dataset and record its metadata",
    description = "Needs `write`. The body may be empty (as `{}`); its Content-Type is not checked.\n\nAfter a direct upload (`storage = \"s3\"`: the client PUT the bytes to the presigned URL of `POST /datasets/{key}/upload-url`, which left them at `incoming/{key}` in the bucket): the node reads the uploaded object through and hashes it (blake3), checks `blake3` if given (`409 digest-mismatch`) and the size against the upload URL's `max_size` and `max_dataset_size` (`413 too-large`) — a refused upload is deleted and nothing at the key changes — then installs it at the key (a server-side copy, replacing any dataset there), indexes it like any upload and merges the metadata: `200` with the new record.\n\nOtherwise (the filesystem store, or no direct upload waiting for this key, e.g. after a signed upload to the node): confirms the dataset stored at the key (`404` if there is none; with `blake3`, `409 digest-mismatch` unless it matches) and merges the metadata.",
    request_body(content = crate::service::Acknowledge),
    responses(
        (status = 200, description = "The record: of the dataset just installed from a direct upload, or the updated one.", body = crate::index::Record),
        (status = 400, description = "`invalid-key`, or `invalid-body` (the JSON body does not fit).", body = crate::error::Problem, content_type = "application/problem+json"),
        super::openapi::responses::AccessErrors,
        (status = 404, description = "`not-found`: no dataset at this key, and no direct upload waiting for it.", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "`digest-mismatch`: the bytes' blake3 is not the one given: a waiting direct upload's (it is deleted; nothing at the key changed) or the stored dataset's; or `key-conflict`: a waiting direct upload cannot be installed because a dataset sits at one of the key's ancestors, or datasets sit below it.", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "`too-large`: the waiting direct upload is larger than its upload URL's `max_size` or than `max_dataset_size` (the upload is deleted; nothing at the key changed), or the JSON body is over 64 KiB.", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, response = super::openapi::responses::Unavailable),
        (status = 507, response = super::openapi::responses::InsufficientStorage),
    ),
    security(("bearerAuth" = ["write"]), ()),
)]
#[rocket::post("/datasets/<_..>", data = "<body>", rank = 2)]
async fn post_action(
    node: &State<Arc<Node>>,
    caller: Caller,
    tail: KeyTail<'_>,
    body: Result<JsonBody<serde_json::Value>, Error>,
) -> Result<Json<serde_json::Value>> {
    let raw = tail.raw()?;
    let Some((action, raw_key, scope)) =
        ACTIONS.iter().find_map(|(suffix, scope)| raw.strip_suffix(suffix).map(|k| (*suffix, k, *scope)))
    else {
        return Err(Error::NotFound(format!("no action at /datasets/{raw}")));
    };
    caller.require(scope)?;
    let key = Key::from_raw_path(raw_key)?;
    let body = body?.0;
    let value = match action {
        "/action/acknowledge" => {
            let ack: Acknowledge = from_json(body)?;
            serde_json::to_value(node.acknowledge(&key, ack).await?)
        }
        "/action/restore" => {
            let restore: Restore = from_json(body)?;
            serde_json::to_value(node.restore(&key, restore.version, caller.uploader()).await?)
        }
        "/upload-url" => serde_json::to_value(mint(node, &key, "PUT", from_json(body)?).await?.0),
        _ => serde_json::to_value(mint(node, &key, "GET", from_json(body)?).await?.0),
    };
    value.map(Json).map_err(Error::internal)
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::InvalidBody(format!("the JSON body does not fit: {e}")))
}
