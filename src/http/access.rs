//! Access on the HTTP side: the `Caller` guard (bearer tokens), the signed
//! URL parameters, and the endpoints that mint signed URLs.

use std::sync::Arc;

use rocket::request::{FromRequest, Outcome, Request};
use rocket::serde::json::Json;
use serde::{Deserialize, Serialize};

use super::{header, KeyTail};
use crate::access::{Caller, Scope, SignedParams};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::service::Node;

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Caller {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let caller = match req.rocket().state::<Arc<Node>>() {
            Some(node) => node.access().authenticate(header(req, "Authorization")),
            None => Caller::Anonymous,
        };
        Outcome::Success(caller)
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for SignedParams {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let mut params = SignedParams::default();
        for field in req.uri().query().into_iter().flat_map(|q| q.segments()) {
            let value = Some(field.1.to_string());
            match field.0 {
                "expires" => params.expires = value,
                "max_size" => params.max_size = value,
                "sig" => params.sig = value,
                "version" => params.version = value,
                _ => {}
            }
        }
        Outcome::Success(params)
    }
}

/// The right to `method` on `/data/{key}`: a signed URL for exactly that
/// (whatever the token), else a token holding `scope` (checked before the
/// key is even parsed). Returns the key and the signed URL's size limit.
pub fn authorize_data(
    node: &Node,
    caller: &Caller,
    signed: &SignedParams,
    method: &str,
    tail: &KeyTail<'_>,
    scope: Scope,
) -> Result<(Key, Option<u64>)> {
    if signed.present() {
        // Only valid keys are ever signed: any other is a tampered URL.
        let key = tail.key().map_err(|_| Error::Forbidden("the signed URL is not valid for this request".into()))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let grant = node.access().verify(method, &key, signed, now)?;
        return Ok((key, grant.max_size));
    }
    caller.require(scope)?;
    Ok((tail.key()?, None))
}

/// The body of `POST /datasets/{key}/upload-url` and `/download-url`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UploadUrlRequest)]
pub struct UrlRequest {
    pub expires_in: Option<u64>,
    pub max_size: Option<u64>,
    /// A download URL for this version of the key (see `GET /versions/{key}`).
    #[schema(ignore)]
    pub version: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SignedUrl {
    pub url: String,
    pub method: &'static str,
    pub expires_at: String,
}

const DEFAULT_EXPIRY: u64 = 60 * 60;
const MAX_EXPIRY: u64 = 7 * 24 * 60 * 60;

/// Mints a signed URL for `method` on `key`.
/// A signed URL of the node; with an object store, an upload URL is a
/// presigned PUT straight to the store instead (acknowledge it after).
pub async fn mint(node: &Node, key: &Key, method: &'static str, request: UrlRequest) -> Result<Json<SignedUrl>> {
    let expires_in = request.expires_in.unwrap_or(DEFAULT_EXPIRY);
    if expires_in == 0 || expires_in > MAX_EXPIRY {
        return Err(Error::BadRequest(format!("expires_in must be between 1 and {MAX_EXPIRY} seconds")));
    }
    if method == "GET" && request.max_size.is_some() {
        return Err(Error::BadRequest("max_size applies to upload URLs only".into()));
    }
    if method == "PUT" && request.version.is_some() {
        return Err(Error::BadRequest("version applies to download URLs only".into()));
    }
    if request.version.is_some_and(|v| v < 1) {
        return Err(Error::BadRequest("version must be a positive whole number".into()));
    }
    let expires = time::OffsetDateTime::now_utc() + time::Duration::seconds(expires_in as i64);
    let url =
        node.signed_url(method, key, expires.unix_timestamp(), expires_in, request.max_size, request.version).await?;
    Ok(Json(SignedUrl { url, method, expires_at: crate::timestamp::format(expires) }))
}
