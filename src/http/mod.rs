//! The HTTP layer: request guards that turn headers into typed values,
//! responders, and the routes of each API area. Handlers are thin: guards,
//! one call into [`Node`](crate::service::Node), a response.

use std::borrow::Cow;

use rocket::data::{Data, FromData, Outcome as DataOutcome, ToByteUnit};
use rocket::fairing::{Fairing, Info};
use rocket::http::{Method, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::{Build, Rocket};
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::key::Key;

mod access;
mod catalog;
mod data;
mod host;
pub mod openapi;
mod ops;
mod page;
mod tus;
mod versions;

/// Mounts every route and the problem+json catchers.
pub fn mount(rocket: Rocket<Build>) -> Rocket<Build> {
    rocket
        .mount("/", host::routes())
        .mount("/", data::routes())
        .mount("/", catalog::routes())
        .mount("/", versions::routes())
        .mount("/", tus::routes())
        .mount("/", ops::routes())
        .mount("/", page::routes())
        .mount("/", rocket::routes![preflight])
        .attach(host::HostCheck)
        .attach(ops::Telemetry)
        .attach(tus::fairing())
        .attach(tus::sweeper())
        .attach(versions::sweepers())
        .register("/", rocket::catchers![crate::error::default_catcher])
}

/// CORS for the configured browser origins (none: no CORS headers; the
/// node's own page is same-origin). Preflights cover the tus headers, and
/// the headers a browser client must read are exposed.
pub fn cors(origins: &[String]) -> Result<Option<CorsUnlessSameOrigin>, String> {
    use rocket_cors::{AllowedHeaders, AllowedOrigins, CorsOptions};
    if origins.is_empty() {
        return Ok(None);
    }
    let allowed_origins =
        if origins.iter().any(|o| o == "*") { AllowedOrigins::all() } else { AllowedOrigins::some_exact(origins) };
    let methods =
        [Method::Get, Method::Head, Method::Put, Method::Post, Method::Patch, Method::Delete, Method::Options];
    let expose = [
        "Location",
        "ETag",
        "Content-Location",
        "Content-Range",
        "Content-Length",
        "Link",
        "X-Request-Id",
        "Upload-Offset",
        "Upload-Length",
        "Upload-Defer-Length",
        "Upload-Metadata",
        "Upload-Expires",
        "Upload-Concat",
        "Tus-Resumable",
        "Tus-Version",
        "Tus-Extension",
        "Tus-Max-Size",
        "Tus-Checksum-Algorithm",
        "Retry-After",
    ];
    let cors = CorsOptions {
        allowed_origins,
        allowed_methods: methods.into_iter().map(From::from).collect(),
        allowed_headers: AllowedHeaders::all(),
        allow_credentials: false,
        expose_headers: expose.iter().map(|h| h.to_string()).collect(),
        max_age: Some(3600),
        ..CorsOptions::default()
    }
    .to_cors()
    .map_err(|e| format!("invalid value for key `cors_origins`: {e}"))?;
    Ok(Some(CorsUnlessSameOrigin(cors)))
}

/// rocket_cors, except for requests from the node's own page: browsers send
/// `Origin` on same-origin PUT, POST and DELETE too, and those must work
/// whatever `cors_origins` says.
pub struct CorsUnlessSameOrigin(rocket_cors::Cors);

#[rocket::async_trait]
impl Fairing for CorsUnlessSameOrigin {
    fn info(&self) -> Info {
        Info { name: "CORS (not for the node's own origin)", kind: self.0.info().kind }
    }

    async fn on_ignite(&self, rocket: Rocket<Build>) -> rocket::fairing::Result {
        self.0.on_ignite(rocket).await
    }

    async fn on_request(&self, req: &mut Request<'_>, data: &mut Data<'_>) {
        if !is_same_origin(req) {
            self.0.on_request(req, data).await
        }
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut rocket::Response<'r>) {
        if !is_same_origin(req) {
            self.0.on_response(req, res).await
        }
    }
}

/// A request whose `Origin` is the node itself (scheme-less compare of the
/// origin's authority with `Host`).
pub fn is_same_origin(req: &Request<'_>) -> bool {
    let (Some(origin), Some(host)) = (header(req, "Origin"), header(req, "Host")) else { return false };
    let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    authority.eq_ignore_ascii_case(host)
}

/// Answers any `OPTIONS` not otherwise routed (CORS preflights; the CORS
/// fairing adds its headers) with an empty 204.
#[utoipa::path(
    options,
    path = "/{path}",
    operation_id = "preflight",
    tag = "operations",
    summary = "CORS preflight for any path",
    description = "Answers every `OPTIONS` not otherwise routed (`OPTIONS /uploads` and `/uploads/{id}` are tus discovery), so browsers' CORS preflights succeed. Needs no token.",
    responses(
        (status = 204, description = "Empty. With `cors_origins` configured and an allowed `Origin`, the CORS headers (`Access-Control-Allow-Origin`, `-Methods`, `-Headers`, `-Max-Age`) say what the browser may send; a disallowed origin is `403`."),
        (status = 403, response = openapi::Forbidden),
        (status = 421, response = openapi::Misdirected),
    ),
    security(()),
)]
#[rocket::options("/<_..>", rank = 20)]
fn preflight() -> Status {
    Status::NoContent
}

/// The raw, still percent-encoded rest of the path after the route's own
/// prefix: `a%20b/c` for `/data/a%20b/c`. Rocket's own segment parsing drops
/// empty segments, so keys are parsed from this instead, by
/// [`Key::from_raw_path`].
///
/// Rocket routes the normalised path (`//data/K` as `/data/K`), so the raw
/// path must start with exactly the prefix the route matched; any other
/// spelling of it (`//data/`, `/dat%61/`) is refused with a 404 rather than
/// cut somewhere else into another key.
pub struct KeyTail<'r> {
    tail: Option<&'r str>,
}

impl<'r> KeyTail<'r> {
    /// The raw key part, or a 404 for a path that spells the route's prefix
    /// in another way.
    pub fn raw(&self) -> Result<&'r str, Error> {
        self.tail
            .ok_or_else(|| Error::NotFound("no such resource: send the path as /data/{key} or /datasets/{key}".into()))
    }

    pub fn key(&self) -> Result<Key, Error> {
        Ok(Key::from_raw_path(self.raw()?)?)
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for KeyTail<'r> {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let path = req.uri().path().as_str();
        // `/data/` of `/data/<_..>`: the route's static part.
        let route = req.route().map_or("", |r| r.uri.path());
        let prefix = &route[..route.find('<').unwrap_or(route.len())];
        let tail = match path.strip_prefix(prefix) {
            Some(tail) if !prefix.is_empty() => Some(tail),
            // `/data` alone: the prefix without its slash, no key.
            _ if path == prefix.trim_end_matches('/') && prefix.len() > 1 => Some(""),
            _ => None,
        };
        Outcome::Success(KeyTail { tail })
    }
}

/// A small JSON request body (metadata), read with a fixed cap. Every
/// failure becomes a problem+json error with the parser's reason.
pub struct JsonBody<T>(pub T);

const JSON_LIMIT: u64 = 64 * 1024;

#[rocket::async_trait]
impl<'r, T: DeserializeOwned> FromData<'r> for JsonBody<T> {
    type Error = Error;

    async fn from_data(_req: &'r Request<'_>, data: Data<'r>) -> DataOutcome<'r, Self> {
        let result = async {
            let text = data
                .open(JSON_LIMIT.bytes())
                .into_string()
                .await
                .map_err(|e| Error::InvalidBody(format!("the JSON body is not valid UTF-8 or broke off: {e}")))?;
            if !text.is_complete() {
                return Err(Error::TooLarge { limit: JSON_LIMIT });
            }
            let body = if text.trim().is_empty() { "{}" } else { text.as_str() };
            serde_json::from_str(body)
                .map(JsonBody)
                .map_err(|e| Error::InvalidBody(format!("the JSON body does not fit: {e}")))
        }
        .await;
        match result {
            Ok(body) => DataOutcome::Success(body),
            Err(e) => DataOutcome::Error((Status::BadRequest, e)),
        }
    }
}

/// The largest chunk a response body is sent in. Rocket reads a body into
/// buffers of the chunk size (a fresh one for the first chunk, then
/// recycled: `vendor/rocket/PATCHES.md`, 6), and each chunk is one wake-up
/// of the connection's task and one `writev`. Serving a whole 2 GiB file
/// by hand (alternating rounds; medians of 9 to 27 GETs, node CPU per GET):
/// 256 KiB chunks 680 ms at 3,070 MB/s, 512 KiB 520 ms at 3,780, 1 MiB
/// 470 ms at 4,150, 2 MiB 490 ms at 3,400 (its buffers no longer stay in
/// the CPU's cache, by our reading). 16 whole downloads at once peaked at
/// 66 MiB of RSS, 44 with 256 KiB chunks; a download whose client reads
/// nothing held about 2.75 MiB (20 of them, 55 MiB), until the stall
/// timeout cuts it (`vendor/rocket/PATCHES.md`, 7).
const SEND_CHUNK: u64 = 1024 * 1024;

/// The chunk size to send a body of `len` bytes in: a small body gets one
/// of its own size. Rocket's default, 4 KiB, made a listing page of 300 KB
/// some seventy writes, each with a wake-up.
pub fn chunk_for(len: u64) -> usize {
    len.clamp(1, SEND_CHUNK) as usize
}

/// A checked guard's result in the shape Rocket wants: the error keeps its
/// status, and the handler (taking `Result<T, Error>`) answers with it.
pub fn guard<T>(result: Result<T, Error>) -> Outcome<T, Error> {
    match result {
        Ok(value) => Outcome::Success(value),
        Err(e) => Outcome::Error((e.status(), e)),
    }
}

/// One header's value, if present.
pub fn header<'r>(req: &'r Request<'_>, name: &str) -> Option<&'r str> {
    req.headers().get_one(name)
}

/// A list-valued header (`If-Match`, `If-None-Match`): its lines joined
/// with `, `, as RFC 9110 § 5.3 reads several lines of one name. One line
/// (the usual case) is borrowed.
pub fn header_list<'r>(req: &'r Request<'_>, name: &str) -> Option<Cow<'r, str>> {
    let mut lines = req.headers().get(name);
    let first = lines.next()?;
    let Some(second) = lines.next() else { return Some(Cow::Borrowed(first)) };
    let mut joined = format!("{first}, {second}");
    for line in lines {
        joined.push_str(", ");
        joined.push_str(line);
    }
    Some(Cow::Owned(joined))
}

/// Refuses a body sent in a transfer coding besides `chunked` (`gzip,
/// chunked`): hyper undoes only the chunking, so the bytes would be stored
/// still encoded. `501`, as RFC 9112 § 6.1 says.
pub fn plain_transfer(req: &Request<'_>) -> Result<(), Error> {
    for coding in req.headers().get("Transfer-Encoding").flat_map(|v| v.split(',')).map(str::trim) {
        if !coding.is_empty() && !coding.eq_ignore_ascii_case("chunked") {
            return Err(Error::NotImplemented(format!(
                "Transfer-Encoding `{coding}` is not supported: send the bytes as they are to be stored (only `chunked`)"
            )));
        }
    }
    Ok(())
}
