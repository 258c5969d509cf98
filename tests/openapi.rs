//! Keeps `static/openapi.json` honest. It is a snapshot of the document
//! generated from the code (`spillway::http::openapi`: the handlers'
//! `#[utoipa::path]` attributes, the types' `ToSchema` derives), and the
//! first test fails when the two differ; `UPDATE_OPENAPI=1 cargo test --test
//! openapi` rewrites it. The others check the document: every route the node
//! mounts is a documented operation and every documented operation is a
//! route; every `$ref` resolves; every error response is a problem+json
//! `Problem`; the `code` enum is exactly the codes the node can send, and
//! every status an error maps to is documented somewhere. The node is built
//! in-process with [`spillway::build`]. (`scripts/e2e-openapi.sh` checks the
//! document against a live node's answers with schemathesis.)

use std::collections::BTreeSet;

use rocket::http::{Method, Status};
use rocket::local::blocking::Client;
use serde_json::Value;
use spillway::error::Error;

const DOCUMENT: &str = include_str!("../static/openapi.json");
const PROBLEM_REF: &str = "#/components/schemas/Problem";
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

const SNAPSHOT: &str = "static/openapi.json";

/// The snapshot is what the code generates, byte for byte.
#[test]
fn the_snapshot_is_the_generated_document() {
    let generated = spillway::http::openapi::json();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SNAPSHOT);
    if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        if std::fs::read_to_string(&path).ok().as_deref() != Some(generated.as_str()) {
            std::fs::write(&path, &generated).expect("write static/openapi.json");
            eprintln!("rewrote {SNAPSHOT}; run the tests again (they compile the snapshot in)");
        }
        return;
    }
    let on_disk = std::fs::read_to_string(&path).expect("read static/openapi.json");
    if on_disk != generated {
        let line = on_disk
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| on_disk.lines().count().min(generated.lines().count()) + 1, |i| i + 1);
        panic!(
            "{SNAPSHOT} is not the document the code generates (first difference at line {line}: \
             snapshot {:?}, generated {:?}). If the change is intended, run \
             `UPDATE_OPENAPI=1 cargo test --test openapi` to regenerate it, review the diff and commit it.",
            on_disk.lines().nth(line - 1).unwrap_or("<end>"),
            generated.lines().nth(line - 1).unwrap_or("<end>"),
        );
    }
    assert_eq!(DOCUMENT, generated, "the compiled-in snapshot is stale: rebuild the tests");
}

/// GET routes whose automatic HEAD (Rocket answers HEAD for every GET
/// route) is part of the API and documented; other automatic HEADs are not.
const DOCUMENTED_AUTO_HEAD: [&str; 1] = ["/data/{key}"];

/// The `POST /datasets/<_..>` route serves these actions, by path suffix.
const DATASET_ACTIONS: [&str; 4] = [
    "/datasets/{key}/action/acknowledge",
    "/datasets/{key}/action/restore",
    "/datasets/{key}/upload-url",
    "/datasets/{key}/download-url",
];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("static/openapi.json is JSON")
}

/// The node as `main` builds it, with its data in a temp dir.
fn build(root: &std::path::Path) -> rocket::Rocket<rocket::Build> {
    let figment = spillway::config::Settings::figment()
        .merge(("address", "127.0.0.1"))
        .merge(("port", 0))
        .merge(("data_dir", root.join("data")))
        .merge(("spool_dir", root.join("spool")))
        .merge(("disk_reserve", 0))
        .merge(("tokens", Vec::<spillway::access::TokenConfig>::new()))
        .merge(("cors_origins", Vec::<String>::new()))
        .merge(("log_level", "critical"));
    spillway::build(figment).expect("the node builds")
}

/// The OpenAPI operations one mounted Rocket route serves, as
/// `(method, path)` pairs.
fn operations_of(method: Method, rocket_path: &str) -> Vec<(String, String)> {
    let method = method.as_str().to_ascii_lowercase();
    let paths: Vec<String> = match rocket_path {
        "/data/<_..>" => vec!["/data/{key}".into()],
        "/datasets/<_..>" if method == "post" => DATASET_ACTIONS.iter().map(|p| p.to_string()).collect(),
        "/datasets/<_..>" => vec!["/datasets/{key}".into()],
        "/versions/<_..>" => vec!["/versions/{key}".into()],
        "/uploads/<id>" | "/uploads/<_>" => vec!["/uploads/{id}".into()],
        // The catch-all OPTIONS (CORS preflights) for any other path.
        "/<_..>" if method == "options" => vec!["/{path}".into()],
        // Where the open node's `Host`/`Origin` check (src/http/host.rs)
        // reroutes a refused request: no operation of its own (each
        // documents its 421 and 403).
        "/.spillway/refused" => vec![],
        other => {
            assert!(
                !other.contains('<'),
                "route {method} {other} has a dynamic segment this test does not know: map it to its \
                 OpenAPI path in `operations_of` and document it in static/openapi.json"
            );
            vec![other.to_string()]
        }
    };
    paths.into_iter().map(|p| (method.clone(), p)).collect()
}

/// Every `(method, path)` the document describes.
fn documented_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for method in item.keys().filter(|k| METHODS.contains(&k.as_str())) {
            ops.insert((method.clone(), path.clone()));
        }
    }
    ops
}

#[test]
fn every_route_is_documented_and_every_operation_is_a_route() {
    let root = tempfile::tempdir().unwrap();
    let rocket = build(root.path());
    let mut served = BTreeSet::new();
    let mut auto_head = BTreeSet::new();
    for route in rocket.routes() {
        for op in operations_of(route.method, route.uri.path()) {
            if op.0 == "get" {
                auto_head.insert(("head".to_string(), op.1.clone()));
            }
            served.insert(op);
        }
    }
    assert!(served.len() > 10, "suspiciously few routes: {served:?}");
    for path in DOCUMENTED_AUTO_HEAD {
        assert!(auto_head.contains(&("head".into(), path.into())), "HEAD {path}: no GET route serves it any more");
    }

    let documented = documented_operations(&document());
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(undocumented.is_empty(), "routes missing from static/openapi.json: {undocumented:?}");

    let is_documented_head = |(m, p): &&(String, String)| {
        m == "head" && (served.contains(&(m.clone(), p.clone())) || DOCUMENTED_AUTO_HEAD.contains(&p.as_str()))
    };
    let phantom: Vec<_> = documented.difference(&served).filter(|op| !is_documented_head(op)).collect();
    assert!(phantom.is_empty(), "documented operations no route serves: {phantom:?}");
    for path in DOCUMENTED_AUTO_HEAD {
        assert!(documented.contains(&("head".into(), path.into())), "HEAD {path} is not documented");
    }
}

/// Resolves a local `$ref` (`#/a/b~1c`) in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

/// Follows `$ref`s until a value without one.
fn deref<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    for _ in 0..16 {
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => value = resolve(doc, r).unwrap_or_else(|| panic!("unresolved $ref {r}")),
            None => return value,
        }
    }
    panic!("a $ref cycle");
}

fn collect_refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        out.push((at.clone(), r));
                    }
                }
                collect_refs(v, format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_document_is_openapi_3_and_every_ref_resolves() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("an `openapi` version");
    assert!(version.starts_with("3."), "OpenAPI 3.x, not {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());

    let mut refs = Vec::new();
    collect_refs(&doc, String::new(), &mut refs);
    assert!(!refs.is_empty());
    let broken: Vec<_> = refs.iter().filter(|(_, r)| !r.starts_with("#/") || resolve(&doc, r).is_none()).collect();
    assert!(broken.is_empty(), "unresolved $refs (at, ref): {broken:?}");

    // Nothing in components is dead weight.
    let used: BTreeSet<&str> = refs.iter().map(|(_, r)| *r).collect();
    for (kind, entries) in doc["components"].as_object().unwrap() {
        if kind == "securitySchemes" {
            continue;
        }
        for name in entries.as_object().unwrap().keys() {
            let target = format!("#/components/{kind}/{}", name.replace('~', "~0").replace('/', "~1"));
            assert!(used.contains(target.as_str()), "{target} is never referenced");
        }
    }
}

#[test]
fn operations_are_complete() {
    let doc = document();
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let placeholders: BTreeSet<String> =
            path.split('{').skip(1).filter_map(|s| s.split_once('}')).map(|(name, _)| name.to_string()).collect();
        let shared = item.get("parameters").and_then(Value::as_array).cloned().unwrap_or_default();
        for (method, op) in item.as_object().unwrap().iter().filter(|(k, _)| METHODS.contains(&k.as_str())) {
            let what = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{what} has no operationId"));
            assert!(ids.insert(id.to_string()), "operationId {id} is used twice");
            assert!(op["summary"].is_string(), "{what} has no summary");

            let params: Vec<&Value> = shared
                .iter()
                .chain(op.get("parameters").and_then(Value::as_array).into_iter().flatten())
                .map(|p| deref(&doc, p))
                .collect();
            let in_path: BTreeSet<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{what}: path parameter {} must be required", p["name"]);
                    p["name"].as_str().unwrap().to_string()
                })
                .collect();
            assert_eq!(in_path, placeholders, "{what}: path parameters do not match the path");
            let mut seen = BTreeSet::new();
            for p in &params {
                let key = (p["in"].as_str().unwrap().to_string(), p["name"].as_str().unwrap().to_ascii_lowercase());
                assert!(seen.insert(key.clone()), "{what}: parameter {key:?} is listed twice");
                assert!(p.get("schema").is_some(), "{what}: parameter {key:?} has no schema");
            }

            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{what} has no responses"));
            assert!(responses.keys().any(|s| s.starts_with('2') || s == "304"), "{what} documents no success response");
            for (status, response) in responses {
                let response = deref(&doc, response);
                assert!(response["description"].is_string(), "{what} {status}: no description");
                let headers = response["headers"].as_object();
                assert!(
                    headers.is_some_and(|h| h.contains_key("X-Request-Id")),
                    "{what} {status}: every response carries X-Request-Id"
                );
                if path.starts_with("/uploads") {
                    assert!(
                        headers.is_some_and(|h| h.contains_key("Tus-Resumable")),
                        "{what} {status}: every tus response carries Tus-Resumable"
                    );
                }
            }
        }
    }
}

/// Every error response of every operation is problem+json with the
/// `Problem` schema (a HEAD's has no body at all).
#[test]
fn every_error_response_is_a_problem() {
    let doc = document();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap().iter().filter(|(k, _)| METHODS.contains(&k.as_str())) {
            for (status, response) in op["responses"].as_object().unwrap() {
                let is_error = status == "default" || status.starts_with('4') || status.starts_with('5');
                if !is_error {
                    continue;
                }
                let what = format!("{} {path} {status}", method.to_uppercase());
                let response = deref(&doc, response);
                let content = response.get("content").and_then(Value::as_object);
                if method == "head" {
                    assert!(content.is_none(), "{what}: a HEAD response has no body");
                    checked += 1;
                    continue;
                }
                let content = content.unwrap_or_else(|| panic!("{what}: an error response without a body"));
                let types: Vec<&String> = content.keys().collect();
                assert_eq!(types, ["application/problem+json"], "{what}: errors are problem+json only");
                let schema = &content["application/problem+json"]["schema"];
                assert_eq!(schema["$ref"], PROBLEM_REF, "{what}: the schema must be {PROBLEM_REF}");
                checked += 1;
            }
        }
    }
    assert!(checked > 50, "only {checked} error responses?");

    let problem = &doc["components"]["schemas"]["Problem"];
    let required: BTreeSet<&str> = problem["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(required, BTreeSet::from(["type", "title", "status", "detail", "code"]));
}

#[test]
fn problem_codes_and_statuses_match_the_node() {
    let doc = document();
    let documented: BTreeSet<String> = doc["components"]["schemas"]["Problem"]["properties"]["code"]["enum"]
        .as_array()
        .expect("Problem.code has an enum")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let mut sent: BTreeSet<String> = Error::every().iter().map(|e| e.code().to_string()).collect();
    sent.extend(spillway::error::CATCHER_CODES.iter().map(|c| c.to_string()));
    assert_eq!(documented, sent, "Problem.code's enum must be exactly the codes the node sends");

    // Every status an error maps to (but 500, which is never by design) is
    // documented on at least one operation.
    let mut statuses = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS.contains(&method.as_str()) {
                statuses.extend(op["responses"].as_object().unwrap().keys().cloned());
            }
        }
    }
    for e in Error::every() {
        let status = e.status().code;
        if status != Status::InternalServerError.code {
            assert!(statuses.contains(&status.to_string()), "{status} ({}) is documented nowhere", e.code());
        }
    }
}

/// The node serves this very file at `/openapi.json`, as JSON.
#[test]
fn the_node_serves_the_document() {
    let root = tempfile::tempdir().unwrap();
    let client = Client::tracked(build(root.path())).expect("the node ignites");
    let response = client.get("/openapi.json").dispatch();
    assert_eq!(response.status(), Status::Ok);
    assert_eq!(response.content_type(), Some(rocket::http::ContentType::JSON));
    assert!(response.headers().get_one("X-Request-Id").is_some());
    assert_eq!(response.into_string().as_deref(), Some(DOCUMENT));

    // Unknown routes answer with a documented problem code too.
    let response = client.get("/no/such/route").dispatch();
    assert_eq!(response.status(), Status::NotFound);
    let problem: Value = serde_json::from_str(&response.into_string().unwrap()).unwrap();
    assert_eq!(problem["code"], "not-found");
}
