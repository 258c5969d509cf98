//! DNS rebinding: a page on another domain whose name re-resolves to the
//! node's address reaches an open node (no tokens) with the page's own
//! domain in `Host`, and the browser then treats the node as that domain:
//! it may list, upload and delete. So an open node answers only requests
//! whose `Host` is one of its names: a loopback name, one of
//! `allowed_hosts`, or none (HTTP/1.0; an HTTP/1.1 request without `Host`,
//! or any with two, is a `400` on every node). Every other gets `421`, whatever
//! the route (unknown ones included), before any route's guards run. With
//! tokens configured, a rebound page has no token, so `Host` is not checked.
//!
//! `/health` stays open: it says only "ok", and probes that address the
//! node by an IP or a service name must keep working.
//!
//! CSRF: a page on any origin can also make a browser send a form (or any
//! other "simple" request) to the node's real loopback name, without a
//! preflight. Browsers send `Origin` with every such write, so an open
//! node refuses writes whose `Origin` is neither the node itself nor one of
//! `cors_origins` (`403 cross-origin`); API clients send no `Origin`.
//!
//! A query that gives one field twice (`?version=1&version=2`) is refused
//! here too, on any node and whatever the route (`400`): Rocket hands an
//! optional query parameter that repeats to its handler as absent, so
//! such a request served the current bytes for a version and the whole
//! catalog for a `limit` or `prefix`.

use std::sync::Arc;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::uri::Origin;
use rocket::http::{Method, Status};
use rocket::request::{FromRequest, Outcome, Request};
use rocket::{Data, Route};

use crate::error::Error;
use crate::service::Node;

/// Where a refused request is sent, whatever it asked for: a fairing cannot
/// answer, but it can reroute. (Checking in a request guard instead made
/// every other request log that the guard forwarded it.)
const REFUSED: &str = "/.spillway/refused";

pub fn routes() -> Vec<Route> {
    rocket::routes![get, head, put, post, patch, delete, options]
}

/// Checks `Host` and `Origin` on an open node before routing.
pub struct HostCheck;

#[rocket::async_trait]
impl Fairing for HostCheck {
    fn info(&self) -> Info {
        Info { name: "one Host; Host and Origin of an open node; repeated query fields", kind: Kind::Request }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        let refusal = one_host(req).or_else(|| check(req)).or_else(|| repeated_query_field(req));
        if refusal.is_some() {
            req.set_uri(Origin::parse(REFUSED).expect("a valid path"));
        }
        req.local_cache(|| Refusal(std::sync::Mutex::new(refusal)));
    }
}

/// RFC 9112 3.2: an HTTP/1.1 request without `Host`, or any request with
/// two `Host` lines (which one would a proxy have looked at?), is a `400`,
/// on any node and whatever the route.
fn one_host(req: &Request<'_>) -> Option<Error> {
    let lines = req.headers().get("Host").count();
    let needed = req.http_version() == Some(rocket::http::hyper::Version::HTTP_11);
    match lines {
        0 if needed => Some(Error::BadRequest("an HTTP/1.1 request names its `Host`".into())),
        0 | 1 => None,
        n => Some(Error::BadRequest(format!("{n} `Host` lines where a request takes one"))),
    }
}

/// The first query field given twice, as a refusal (names as Rocket's form
/// parser reads them: percent-decoded).
fn repeated_query_field(req: &Request<'_>) -> Option<Error> {
    let mut seen = std::collections::HashSet::new();
    let name = req.uri().query()?.segments().map(|(name, _)| name).find(|name| !seen.insert(*name))?;
    Some(Error::BadRequest(format!("the query gives `{name}` more than once")))
}

/// Why the fairing refused this request, if it did (taken by the route).
struct Refusal(std::sync::Mutex<Option<Error>>);

fn check(req: &Request<'_>) -> Option<Error> {
    let node = req.rocket().state::<Arc<Node>>()?;
    if !node.access().is_open() || req.uri().path() == "/health" {
        return None;
    }
    // At most one `Host` line gets here (`one_host`).
    let host = req.headers().get_one("Host");
    if let Some(foreign) = host.filter(|h| !is_own_host(h, &node.settings().allowed_hosts)) {
        return Some(Error::Misdirected(foreign.to_owned()));
    }
    let writes = !matches!(req.method(), Method::Get | Method::Head | Method::Options);
    match req.headers().get_one("Origin") {
        Some(origin) if writes && !is_own_origin(origin, host, &node.settings().cors_origins) => {
            Some(Error::CrossOrigin(origin.to_owned()))
        }
        _ => None,
    }
}

/// A request the fairing refused (and nothing else: a client that asks for
/// the path itself gets a 404).
pub struct Refused(Error);

#[rocket::async_trait]
impl<'r> FromRequest<'r> for Refused {
    type Error = std::convert::Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Self::Error> {
        let taken = req.local_cache(|| Refusal(std::sync::Mutex::new(None))).0.lock().ok().and_then(|mut e| e.take());
        match taken {
            Some(e) => Outcome::Success(Refused(e)),
            None => Outcome::Forward(Status::NotFound),
        }
    }
}

/// The node's own page (`Origin`'s authority is the `Host` asked for) or
/// an origin the operator let in through CORS. `null` (a sandboxed frame,
/// a file) is neither.
fn is_own_origin(origin: &str, host: Option<&str>, cors_origins: &[String]) -> bool {
    let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
    let same = host.is_some_and(|h| !authority.is_empty() && authority.eq_ignore_ascii_case(h.trim()));
    same || cors_origins.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
}

/// A loopback name (`localhost`, `127.0.0.1`, `[::1]`) or one of
/// `allowed`, any letter case; a port is ignored unless the allowed entry
/// names one.
pub fn is_own_host(host: &str, allowed: &[String]) -> bool {
    let host = host.trim();
    let name = host_name(host);
    let loopback = name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "[::1]";
    loopback || allowed.iter().any(|a| a.eq_ignore_ascii_case(host) || a.eq_ignore_ascii_case(name))
}

/// `files.lan` of `files.lan:8000`, `[::1]` of `[::1]:80` (and of `[::1]`).
fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn refuse(r: Refused) -> Error {
    r.0
}

#[rocket::get("/.spillway/refused")]
fn get(r: Refused) -> Error {
    refuse(r)
}

#[rocket::head("/.spillway/refused")]
fn head(r: Refused) -> Error {
    refuse(r)
}

#[rocket::put("/.spillway/refused")]
fn put(r: Refused) -> Error {
    refuse(r)
}

#[rocket::post("/.spillway/refused")]
fn post(r: Refused) -> Error {
    refuse(r)
}

#[rocket::patch("/.spillway/refused")]
fn patch(r: Refused) -> Error {
    refuse(r)
}

#[rocket::delete("/.spillway/refused")]
fn delete(r: Refused) -> Error {
    refuse(r)
}

#[rocket::options("/.spillway/refused")]
fn options(r: Refused) -> Error {
    refuse(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_hosts() {
        let allowed = ["files.lan".to_string(), "data.example:9000".to_string()];
        for host in
            ["localhost", "LOCALHOST:80", "127.0.0.1:8000", "[::1]", "[::1]:8000", "files.lan:1", "Data.Example:9000"]
        {
            assert!(is_own_host(host, &allowed), "{host}");
        }
        for host in
            ["evil.example", "localhost.evil", "127.0.0.1.nip.io", "::1", "data.example", "data.example:9001", ""]
        {
            assert!(!is_own_host(host, &allowed), "{host}");
        }
    }
}
