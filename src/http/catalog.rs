//! The catalog: `GET /datasets` (paged), and per-dataset `GET`, `PATCH`,
//! `DELETE` and `POST .../action/acknowledge` under `/datasets/{key}`.

use std::sync::Arc;

use rocket::http::{Header, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};
use rocket::serde::json::Json;
use rocket::{Route, State};

use super::access::mint;
use super::{JsonBody, KeyTail};
use crate::access::{Caller, Scope};
use crate::error::{Error, Result};
use crate::index::{MetadataPatch, Record};
use crate::key::{encode_query_value, Key};
use crate::service::{Acknowledge, Node};

pub fn routes() -> Vec<Route> {
    rocket::routes![list, get_record, patch_record, delete_record, post_action]
}

pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;

/// A page of records with its `Link: rel="next"`.
pub struct Page {
    records: Vec<Record>,
    next: Option<String>,
}

impl<'r> Responder<'r, 'static> for Page {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        let mut response = Response::build_from(Json(&self.records).respond_to(req)?);
        if let Some(next) = self.next {
            response.header(Header::new("Link", format!("<{next}>; rel=\"next\"")));
        }
        response.ok()
    }
}

#[rocket::get("/datasets?<prefix>&<limit>&<after>")]
async fn list(
    node: &State<Arc<Node>>,
    caller: Caller,
    prefix: Option<String>,
    limit: Option<&str>,
    after: Option<String>,
) -> Result<Page> {
    caller.require(Scope::Read)?;
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(raw) => {
            let digits = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit());
            if !digits || raw.bytes().all(|b| b == b'0') {
                return Err(Error::BadRequest(format!("limit must be a positive whole number, not `{raw}`")));
            }
            // Above the maximum (however many digits) clamps to it.
            raw.parse::<usize>().map_or(MAX_LIMIT, |n| n.min(MAX_LIMIT))
        }
    };
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

#[rocket::get("/datasets/<_..>", rank = 2)]
async fn get_record(node: &State<Arc<Node>>, caller: Caller, tail: KeyTail<'_>) -> Result<Json<Record>> {
    caller.require(Scope::Read)?;
    Ok(Json(node.get(&tail.key()?).await?))
}

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

#[rocket::delete("/datasets/<_..>")]
async fn delete_record(node: &State<Arc<Node>>, caller: Caller, tail: KeyTail<'_>) -> Result<Status> {
    caller.require(Scope::Admin)?;
    node.delete(&tail.key()?).await?;
    Ok(Status::NoContent)
}

/// The `POST /datasets/{key}/...` actions, by path suffix.
const ACTIONS: [(&str, Scope); 3] =
    [("/action/acknowledge", Scope::Write), ("/upload-url", Scope::Write), ("/download-url", Scope::Read)];

/// `POST /datasets/{key}/action/acknowledge`, `.../upload-url` and
/// `.../download-url`: the action is the path's suffix, so a key may itself
/// contain any segment.
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
        "/upload-url" => serde_json::to_value(mint(node, &key, "PUT", from_json(body)?).await?.0),
        _ => serde_json::to_value(mint(node, &key, "GET", from_json(body)?).await?.0),
    };
    value.map(Json).map_err(Error::internal)
}

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::InvalidBody(format!("the JSON body does not fit: {e}")))
}
