//! The web page and the OpenAPI document, compiled into the binary so that
//! the node serves them wherever it runs.

use rocket::http::ContentType;
use rocket::Route;

pub fn routes() -> Vec<Route> {
    rocket::routes![index, script, style, openapi]
}

#[rocket::get("/")]
fn index() -> (ContentType, &'static str) {
    (ContentType::HTML, include_str!("../../static/index.html"))
}

#[rocket::get("/app.js")]
fn script() -> (ContentType, &'static str) {
    (ContentType::JavaScript, include_str!("../../static/app.js"))
}

#[rocket::get("/style.css")]
fn style() -> (ContentType, &'static str) {
    (ContentType::CSS, include_str!("../../static/style.css"))
}

/// The OpenAPI 3 document of the API (kept in `static/openapi.json`;
/// `tests/openapi.rs` checks it against the mounted routes).
#[rocket::get("/openapi.json")]
fn openapi() -> (ContentType, &'static str) {
    (ContentType::JSON, include_str!("../../static/openapi.json"))
}
