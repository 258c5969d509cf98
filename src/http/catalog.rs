//! The catalog: `GET /datasets` (paged), and per-dataset `GET`, `PATCH`,
//! `DELETE` and `POST .../action/acknowledge` under `/datasets/{key}`.

use std::sync::Arc;

use rocket::http::{Header, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};
use rocket::serde::json::Json;
use rocket::{Route, State};

use super::{JsonBody, KeyTail};
use crate::error::{Error, Result};
use crate::index::{MetadataPatch, Record};
use crate::key::{encode_query_value, Key};
use crate::node::{Acknowledge, Node};

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
    prefix: Option<String>,
    limit: Option<&str>,
    after: Option<String>,
) -> Result<Page> {
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
async fn get_record(node: &State<Arc<Node>>, tail: KeyTail<'_>) -> Result<Json<Record>> {
    Ok(Json(node.get(&tail.key()?).await?))
}

#[rocket::patch("/datasets/<_..>", data = "<patch>")]
async fn patch_record(
    node: &State<Arc<Node>>,
    tail: KeyTail<'_>,
    patch: Result<JsonBody<MetadataPatch>, Error>,
) -> Result<Json<Record>> {
    let key = tail.key()?;
    Ok(Json(node.patch(&key, patch?.0).await?))
}

#[rocket::delete("/datasets/<_..>")]
async fn delete_record(node: &State<Arc<Node>>, tail: KeyTail<'_>) -> Result<Status> {
    node.delete(&tail.key()?).await?;
    Ok(Status::NoContent)
}

const ACKNOWLEDGE: &str = "/action/acknowledge";

/// `POST /datasets/{key}/action/...`: the action is the path's suffix, so a
/// key may itself contain any segment.
#[rocket::post("/datasets/<_..>", data = "<body>", rank = 2)]
async fn post_action(
    node: &State<Arc<Node>>,
    tail: KeyTail<'_>,
    body: Result<JsonBody<Acknowledge>, Error>,
) -> Result<Json<Record>> {
    let Some(raw_key) = tail.0.strip_suffix(ACKNOWLEDGE) else {
        return Err(Error::NotFound(format!("no action at /datasets/{}", tail.0)));
    };
    let key = Key::from_raw_path(raw_key)?;
    Ok(Json(node.acknowledge(&key, body?.0).await?))
}
