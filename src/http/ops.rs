//! Operations: `/health`, `/ready`, `/metrics`, and the telemetry fairing
//! that logs one line per request, counts it in the metrics and echoes
//! (or assigns) its `X-Request-Id`.

use std::sync::Arc;
use std::time::Instant;

use rocket::data::Data;
use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::{ContentType, Header, Status};
use rocket::request::Request;
use rocket::response::{self, Responder, Response};
use rocket::serde::json::{json, Json, Value};
use rocket::{Route, State};

use super::header;
use crate::access::{Caller, Scope};
use crate::error::{Error, Result};
use crate::service::Node;

pub fn routes() -> Vec<Route> {
    rocket::routes![health, ready, metrics]
}

/// Liveness: the process serves.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "operations",
    summary = "Liveness",
    responses(
        (status = 200, description = "The process serves.", body = super::openapi::responses::Health),
    ),
    security(()),
)]
#[rocket::get("/health")]
fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Readiness: the index answers, the data and spool directories take a
/// write, and each volume has more free space than the reserve.
#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "ready",
    tag = "operations",
    summary = "Readiness",
    responses(
        (status = 200, description = "The index answers, the data and spool directories are writable and free space is above the reserve on each volume.", body = super::openapi::responses::Ready),
        (status = 421, response = super::openapi::responses::Misdirected),
        (status = 503, response = super::openapi::responses::NotReady),
    ),
    security(()),
)]
#[rocket::get("/ready")]
async fn ready(node: &State<Arc<Node>>) -> Result<Json<Value>> {
    let node = node.inner().clone();
    let checks = crate::blocking::blocking(move || Ok(node.readiness())).await?;
    match checks.iter().find(|(_, problem)| problem.is_some()) {
        None => Ok(Json(json!({"status": "ready"}))),
        Some((what, Some(problem))) => Err(Error::NotReady(format!("{what}: {problem}"))),
        Some(_) => unreachable!(),
    }
}

/// Prometheus text exposition.
pub struct Exposition(String);

impl<'r> Responder<'r, 'static> for Exposition {
    fn respond_to(self, req: &'r Request<'_>) -> response::Result<'static> {
        Response::build_from(self.0.respond_to(req)?)
            .header(ContentType::new("text", "plain").with_params([("version", "0.0.4"), ("charset", "utf-8")]))
            .ok()
    }
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "Needs no token unless `metrics_token = true` (then `read`).",
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4."),
        super::openapi::responses::AccessErrors,
    ),
    security((), ("bearerAuth" = ["read"])),
)]
#[rocket::get("/metrics")]
async fn metrics(node: &State<Arc<Node>>, caller: Caller) -> Result<Exposition> {
    if node.settings().metrics_token {
        caller.require(Scope::Read)?;
    }
    Ok(Exposition(node.render_metrics().await))
}

/// Logs, counts and tags every request.
pub struct Telemetry;

/// What the fairing remembers between request and response.
struct Started {
    at: Instant,
    id: String,
}

/// A client's `X-Request-Id` is kept if it is short and plain; otherwise
/// (or when absent) the node makes one.
fn request_id(req: &Request<'_>) -> String {
    match header(req, "X-Request-Id") {
        Some(id)
            if !id.is_empty()
                && id.len() <= 128
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
        {
            id.to_string()
        }
        _ => uuid::Uuid::new_v4().simple().to_string(),
    }
}

#[rocket::async_trait]
impl Fairing for Telemetry {
    fn info(&self) -> Info {
        Info { name: "telemetry", kind: Kind::Request | Kind::Response }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        req.local_cache(|| Started { at: Instant::now(), id: request_id(req) });
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let started = req.local_cache(|| Started { at: Instant::now(), id: request_id(req) });
        let elapsed = started.at.elapsed();
        // Route templates only: never a raw key, query string or token.
        let route = req.route().map_or("unmatched", |r| r.uri.origin.path().as_str());
        let method = req.method().as_str();
        let status = res.status().code;
        if let Some(node) = req.rocket().state::<Arc<Node>>() {
            let m = node.metrics();
            m.http_requests.with_label_values(&[route, method, &status.to_string()]).inc();
            m.http_duration.with_label_values(&[route, method]).observe(elapsed.as_secs_f64());
        }
        res.set_header(Header::new("X-Request-Id", started.id.clone()));
        let content_length = header(req, "Content-Length").unwrap_or("-");
        let bytes_out = res.body().preset_size().map_or_else(|| "-".to_string(), |n| n.to_string());
        log::info!(
            target: "spillway::access",
            "request_id={} method={method} route={route} status={status} content_length={content_length} bytes_out={bytes_out} duration_ms={:.1}",
            started.id,
            elapsed.as_secs_f64() * 1000.0,
        );
        if status == Status::InternalServerError.code {
            log::warn!(target: "spillway::access", "request_id={} answered 500; see the error above", started.id);
        }
    }
}
