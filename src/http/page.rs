//! The web page and the OpenAPI document, compiled into the binary so that
//! the node serves them wherever it runs.

use rocket::http::ContentType;
use rocket::Route;

pub fn routes() -> Vec<Route> {
    rocket::routes![index, script, style, openapi]
}

#[utoipa::path(
    get,
    path = "/",
    operation_id = "page",
    tag = "web page",
    summary = "The web page",
    responses(
        (status = 200, description = "List, search, drag-and-drop upload with progress and resume, download, delete."),
        (status = 421, response = super::openapi::responses::Misdirected),
    ),
    security(()),
)]
#[rocket::get("/")]
fn index() -> (ContentType, &'static str) {
    (ContentType::HTML, include_str!("../../static/index.html"))
}

#[utoipa::path(
    get,
    path = "/app.js",
    operation_id = "pageScript",
    tag = "web page",
    summary = "The web page's script",
    responses(
        (status = 200, description = "JavaScript."),
        (status = 421, response = super::openapi::responses::Misdirected),
    ),
    security(()),
)]
#[rocket::get("/app.js")]
fn script() -> (ContentType, &'static str) {
    (ContentType::JavaScript, include_str!("../../static/app.js"))
}

#[utoipa::path(
    get,
    path = "/style.css",
    operation_id = "pageStyle",
    tag = "web page",
    summary = "The web page's style sheet",
    responses(
        (status = 200, description = "CSS."),
        (status = 421, response = super::openapi::responses::Misdirected),
    ),
    security(()),
)]
#[rocket::get("/style.css")]
fn style() -> (ContentType, &'static str) {
    (ContentType::CSS, include_str!("../../static/style.css"))
}

/// The OpenAPI 3.1 document of the API: `static/openapi.json`, the snapshot
/// of what `super::openapi` generates (`tests/openapi.rs` fails when they
/// differ, and checks it against the mounted routes).
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    summary = "This document",
    responses(
        (status = 200, description = "The OpenAPI document."),
        (status = 421, response = super::openapi::responses::Misdirected),
    ),
    security(()),
)]
#[rocket::get("/openapi.json")]
fn openapi() -> (ContentType, &'static str) {
    (ContentType::JSON, include_str!("../../static/openapi.json"))
}
