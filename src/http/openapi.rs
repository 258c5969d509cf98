//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! attributes and the request and response types' `ToSchema` derives.
//!
//! `static/openapi.json` is its snapshot: the node serves that file at
//! `/openapi.json`, and `tests/openapi.rs` fails when it is not exactly what
//! [`json`] renders (`UPDATE_OPENAPI=1 cargo test --test openapi` rewrites
//! it). What the types cannot say lives in `openapi/protocol.json`: the
//! protocol's shared parameters, headers and error responses (the handlers'
//! attributes name the responses through the types of [`responses`]), which
//! of them each operation takes, links, non-JSON bodies, and the
//! documentation and constraints of the schemas' fields. Every entry there
//! must name an operation, status or field that exists, or [`document`]
//! panics.

use serde_json::{Map, Value};
use utoipa::{OpenApi, ToSchema};

use crate::error::Error;

pub mod responses;
pub use responses::*;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Spillway",
        version = env!("CARGO_PKG_VERSION"),
        description = "Streams datasets in and out (PUT, multipart, tus resumable uploads, ranged downloads), keeps a JSON catalog of records, and mints signed URLs. Every error response with a body is an RFC 9457 problem detail (`application/problem+json`) with `type`, `title`, `status`, `detail` and a stable `code`; 404s of unknown routes too. Every response carries `X-Request-Id`.\n\nAccess: bearer tokens with scopes `read` < `write` < `admin` (each includes the ones before). A missing or unknown token is `401` with `WWW-Authenticate: Bearer`; too small a scope is `403`. With no token configured the node is open and serves on loopback only. `/health`, `/ready`, `/openapi.json`, the web page and (by default) `/metrics` need no token.\n\nStorage and clusters: by default the bytes live on the node's disk and the catalog in SQLite. With `storage = \"s3\"` the bytes live in an S3-compatible bucket (objects `datasets/{key}` below `s3.prefix`): `POST /datasets/{key}/upload-url` then returns a presigned PUT straight to the store, confirmed by `POST /datasets/{key}/action/acknowledge`, and with `s3.downloads = \"redirect\"` `GET /data/{key}` answers `307` to a presigned GET. With `index = \"postgres\"` several nodes share one catalog (and, with one bucket, one set of datasets) behind a load balancer. A store or a PostgreSQL index that does not answer makes the requests that need it answer `503` with code `unavailable` and `Retry-After: 5`: catalog reads need the index; uploads and downloads need both. With `storage = \"s3\"` a resumable upload lives in the store as it arrives and its state in the index, so any node continues any upload (HEAD, PATCH, DELETE, concatenation); one request writes an upload at a time, and a second PATCH meanwhile is `409 upload-in-use` (a HEAD takes the upload over). On the filesystem store an upload in progress lives on the disk of the node that created it, and another node sharing the index answers `503 unavailable` for it.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    servers(
        (url = "http://127.0.0.1:8000", description = "The default address."),
    ),
    tags(
        (name = "bytes", description = "Datasets' bytes in and out."),
        (name = "catalog", description = "The JSON records."),
        (name = "signed URLs", description = "URLs that work without a token, for one method and key, until they expire. With `storage = \"s3\"` an upload URL is a presigned PUT on the object store itself."),
        (name = "resumable uploads", description = "tus 1.0.0 at `/uploads`."),
        (name = "operations", description = "Health, readiness, metrics, this document."),
        (name = "web page", description = "The browser UI."),
    ),
    paths(
        super::data::get_data,
        head_data,
        super::data::put_data,
        super::catalog::list,
        super::data::post_multipart,
        super::catalog::get_record,
        super::catalog::patch_record,
        super::catalog::delete_record,
        super::catalog::post_action,
        upload_url,
        download_url,
        restore,
        super::versions::list_versions,
        super::tus::discover,
        super::tus::create,
        super::tus::discover_upload,
        super::tus::head_upload,
        super::tus::patch_upload,
        super::tus::terminate,
        super::preflight,
        super::ops::health,
        super::ops::ready,
        super::ops::metrics,
        super::page::openapi,
        super::page::index,
        super::page::script,
        super::page::style,
    ),
    components(schemas(
        crate::index::Record,
        crate::error::Problem,
        crate::index::MetadataPatch,
        crate::service::Acknowledge,
        super::access::UrlRequest,
        DownloadUrlRequest,
        super::catalog::Restore,
        crate::index::Version,
        super::access::SignedUrl,
        Health,
        Ready,
    ))
)]
pub struct ApiDoc;

/// What the types cannot say (see the module's documentation).
const PROTOCOL: &str = include_str!("openapi/protocol.json");

/// The document as the node serves it: pretty JSON, keys in a stable
/// (sorted) order, a final newline.
pub fn json() -> String {
    /// The top level in the usual order; below it, keys are sorted.
    #[derive(serde::Serialize)]
    struct Ordered<'a> {
        openapi: &'a Value,
        info: &'a Value,
        servers: &'a Value,
        tags: &'a Value,
        paths: &'a Value,
        components: &'a Value,
    }
    let doc = document();
    let top: Vec<&str> = doc.as_object().expect("an object").keys().map(String::as_str).collect();
    assert_eq!(top, ["components", "info", "openapi", "paths", "servers", "tags"], "a new top-level key");
    let ordered = Ordered {
        openapi: &doc["openapi"],
        info: &doc["info"],
        servers: &doc["servers"],
        tags: &doc["tags"],
        paths: &doc["paths"],
        components: &doc["components"],
    };
    let mut text = serde_json::to_string_pretty(&ordered).expect("the document serialises");
    text.push('\n');
    text
}

/// The document: utoipa's, with the protocol merged in.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    let protocol: Value = serde_json::from_str(PROTOCOL).expect("openapi/protocol.json is JSON");
    let info_extra =
        serde_json::json!({"summary": "A storage node for datasets far bigger than RAM, over plain HTTP."});
    merge(&mut doc["info"], &info_extra);
    for (kind, entries) in protocol["components"].as_object().expect("protocol components") {
        merge(&mut doc["components"][kind], entries);
    }
    flatten_all_of(&mut doc["components"]["schemas"]);
    for (name, overlay) in protocol["schemas"].as_object().expect("protocol schemas") {
        let schema = doc["components"]["schemas"].get_mut(name).unwrap_or_else(|| panic!("no schema {name}"));
        document_schema(schema, overlay, name);
    }
    doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"] = problem_codes().into();
    for (path, item) in protocol["paths"].as_object().expect("protocol paths") {
        let target = doc["paths"].get_mut(path).unwrap_or_else(|| panic!("protocol.json: no path {path}"));
        for (key, extra) in item.as_object().expect("a path item") {
            if key == "parameters" {
                target[key] = extra.clone();
                continue;
            }
            let op = target.get_mut(key).unwrap_or_else(|| panic!("protocol.json: no operation {key} {path}"));
            add_to_operation(op, extra, &format!("{key} {path}"));
        }
    }
    doc
}

/// Every problem `code` the node sends: the error enum's and the catcher's.
pub fn problem_codes() -> Vec<String> {
    let mut codes: Vec<String> = Error::every().iter().map(|e| e.code().to_string()).collect();
    codes.extend(crate::error::CATCHER_CODES.iter().map(|c| c.to_string()));
    codes.sort();
    codes.dedup();
    codes
}

/// An operation's shared parameters (appended), body, response headers,
/// links and non-JSON bodies.
fn add_to_operation(op: &mut Value, extra: &Value, what: &str) {
    for (key, value) in extra.as_object().expect("an operation") {
        match key.as_str() {
            "parameters" => {
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                op["parameters"] =
                    params.into_iter().chain(value.as_array().expect("a list").iter().cloned()).collect();
            }
            "requestBody" => merge(&mut op["requestBody"], value),
            "responses" => {
                for (status, response) in value.as_object().expect("responses") {
                    let target = op["responses"]
                        .get_mut(status)
                        .unwrap_or_else(|| panic!("protocol.json: {what} has no response {status}"));
                    merge(target, response);
                }
            }
            other => panic!("protocol.json: {what}: unexpected {other}"),
        }
    }
}

/// A schema's documentation and constraints on top of what its type says;
/// a documented field the type does not have is an error.
fn document_schema(schema: &mut Value, overlay: &Value, name: &str) {
    for (key, value) in overlay.as_object().expect("a schema overlay") {
        match key.as_str() {
            "properties" => {
                for (field, doc) in value.as_object().expect("properties") {
                    let property = schema["properties"]
                        .get_mut(field)
                        .unwrap_or_else(|| panic!("protocol.json documents {name}.{field}, which the type lacks"));
                    merge(property, doc);
                }
            }
            "required" => {
                let mut required: Vec<Value> = schema["required"].as_array().cloned().unwrap_or_default();
                for field in value.as_array().expect("a list") {
                    assert!(schema["properties"].get(field.as_str().unwrap_or("")).is_some(), "{name}: {field}?");
                    if !required.contains(field) {
                        required.push(field.clone());
                    }
                }
                schema["required"] = required.into();
            }
            _ => schema[key] = value.clone(),
        }
    }
}

/// A struct with a `#[serde(flatten)]` field is one JSON object on the wire;
/// utoipa says `allOf` (of the flattened type's `$ref` and the rest). Folds
/// each such schema into one object with all the properties, so that
/// `deny_unknown_fields` (`additionalProperties: false`) holds for the whole.
fn flatten_all_of(schemas: &mut Value) {
    let snapshot = schemas.clone();
    for schema in schemas.as_object_mut().expect("schemas").values_mut() {
        let Some(parts) = schema.get("allOf").and_then(Value::as_array).cloned() else { continue };
        let (mut properties, mut required) = (Map::new(), Vec::new());
        for part in &parts {
            let part = match part["$ref"].as_str() {
                Some(r) => &snapshot[r.trim_start_matches("#/components/schemas/")],
                None => part,
            };
            assert!(part.get("allOf").is_none(), "nested allOf");
            properties.extend(part["properties"].as_object().cloned().unwrap_or_default());
            required.extend(part["required"].as_array().cloned().unwrap_or_default());
        }
        let object = schema.as_object_mut().expect("a schema");
        object.remove("allOf");
        object.insert("type".into(), "object".into());
        object.insert("properties".into(), properties.into());
        if !required.is_empty() {
            object.insert("required".into(), required.into());
        }
    }
}

/// Deep merge: objects key by key, anything else replaced.
fn merge(target: &mut Value, extra: &Value) {
    match (target, extra) {
        (Value::Object(target), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(target.entry(key.clone()).or_insert(Value::Object(Map::new())), value);
            }
        }
        (target, extra) => *target = extra.clone(),
    }
}

/// The body of `POST /datasets/{key}/download-url` (the handler reads it as
/// an upload URL's request, and refuses `max_size`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DownloadUrlRequest {
    expires_in: Option<u64>,
    /// A URL for this version of the key (`GET /versions/{key}`); the
    /// version is signed with the rest.
    #[schema(minimum = 1)]
    version: Option<i64>,
}

// Operations that no handler of their own serves: Rocket answers HEAD with
// the GET route, and `post_action` serves the two signed-URL endpoints by
// path suffix.

#[utoipa::path(
    head,
    path = "/data/{key}",
    operation_id = "headData",
    tag = "bytes",
    summary = "A dataset's download headers, no body",
    description = "The same as GET, without a body. A signed GET URL covers HEAD too. With `s3.downloads = \"redirect\"` HEAD answers the same `307`.",
    responses(
        (status = 200, description = "As GET, without the body."),
        (status = 206, description = "As GET, without the body."),
        (status = 304, description = "`If-None-Match` matched the current ETag."),
        (status = 307, response = RedirectToStore),
        (status = 400, response = HeadBadRequest),
        (status = 401, response = HeadUnauthorized),
        (status = 403, response = HeadForbidden),
        (status = 404, response = HeadNotFound),
        (status = 409, response = HeadConflict),
        (status = 416, response = HeadRangeNotSatisfiable),
        (status = 421, response = HeadMisdirected),
        (status = 503, response = HeadUnavailable),
    ),
    security(("bearerAuth" = ["read"]), ()),
)]
#[allow(dead_code)]
fn head_data() {}

#[utoipa::path(
    post,
    path = "/datasets/{key}/upload-url",
    operation_id = "createUploadUrl",
    tag = "signed URLs",
    summary = "Mint a signed upload (PUT) URL: the node's, or a presigned one on the object store",
    description = "Needs `write`. The key need not exist yet. The body may be empty (as `{}`); its Content-Type is not checked.\n\nWith the filesystem store the URL is the node's own signed `/data/{key}` URL: a `PUT` to it (no token) stores the dataset like any upload, `max_size` included (`413`); an acknowledge after it only adds metadata.\n\nWith `storage = \"s3\"` the URL is an absolute presigned S3 `PUT` URL for the object `incoming/{key}` (below `s3.prefix`) in the bucket: the bytes go straight to the object store, never through the node, and the store does not enforce `max_size`. Nothing at the key changes until `POST /datasets/{key}/action/acknowledge`, which verifies the upload (size, and blake3 if given) and installs it. Minting a new URL for the key replaces the size limit of any earlier one.",
    request_body(content = super::access::UrlRequest),
    responses(
        (status = 200, description = "The signed URL (`method: PUT`): the node's (filesystem store) or a presigned one on the object store (`storage = \"s3\"`).", body = super::access::SignedUrl),
        AccessErrors,
        (status = 400, response = BadRequest),
        (status = 413, response = TooLarge),
        (status = 503, response = Unavailable),
    ),
    security(("bearerAuth" = ["write"]), ()),
)]
#[allow(dead_code)]
fn upload_url() {}

#[utoipa::path(
    post,
    path = "/datasets/{key}/download-url",
    operation_id = "createDownloadUrl",
    tag = "signed URLs",
    summary = "Mint a signed download (GET) URL",
    description = "Needs `read`. `max_size` is refused (`400`): it applies to upload URLs only. The body may be empty (as `{}`); its Content-Type is not checked. With `version`, the URL serves that version (`/data/{key}?version=N&...`) and the version is signed: changing or removing it is `403`; a version the key does not have is `404` (numbers are never reused, so a signed version always names the same bytes).",
    request_body(content = DownloadUrlRequest),
    responses(
        (status = 200, description = "The signed URL (`method: GET`).", body = super::access::SignedUrl),
        AccessErrors,
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 413, response = TooLarge),
    ),
    security(("bearerAuth" = ["read"]), ()),
)]
#[allow(dead_code)]
fn download_url() {}

#[utoipa::path(
    post,
    path = "/datasets/{key}/action/restore",
    operation_id = "restoreVersion",
    tag = "catalog",
    summary = "Make an older version current again",
    description = "Needs `write`. A new commit of that version's bytes (a new version number, the same blake3), so a restore can itself be undone; it works for a key deleted from the catalog while its versions are kept. Preconditions and key conflicts apply as for an upload.",
    request_body(content = super::catalog::Restore),
    responses(
        (status = 200, description = "The key's record, now serving the restored bytes.", body = crate::index::Record),
        AccessErrors,
        DatasetErrors,
        (status = 409, response = Conflict),
        (status = 500, response = CorruptData),
        (status = 507, response = InsufficientStorage),
    ),
    security(("bearerAuth" = ["write"]), ()),
)]
#[allow(dead_code)]
fn restore() {}
