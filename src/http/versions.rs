//! `GET /versions/{key}`: a key's versions, newest first. It lives outside
//! `/datasets/` so that no key can collide with it.

use std::sync::Arc;
use std::time::Duration;

use rocket::fairing::AdHoc;
use rocket::{Route, State};

use super::catalog::{parse_limit, Page};
use super::data::version_number;
use super::KeyTail;
use crate::access::{Caller, Scope};
use crate::error::Result;
use crate::index::Version;
use crate::key::encode_path;
use crate::service::Node;

pub fn routes() -> Vec<Route> {
    rocket::routes![list_versions]
}

/// The background work of versions: pruning by age (a few times per
/// `keep_versions_for`, at least once a minute) and, with `scrub_every`,
/// the scrub at `scrub_rate`. Both stop at shutdown.
pub fn sweepers() -> AdHoc {
    AdHoc::on_liftoff("versions sweepers", |rocket| {
        Box::pin(async move {
            let Some(node) = rocket.state::<Arc<Node>>().cloned() else {
                return;
            };
            let settings = node.settings().clone();
            let adopter = node.clone();
            tokio::spawn(async move {
                if let Err(e) = adopter.adopt_unversioned().await {
                    log::warn!("adopting datasets from before versions: {}", e.cause());
                }
            });
            let prune_every = (settings.keep_versions_for.0 / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
            let (pruner, mut shutdown) = (node.clone(), rocket.shutdown());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(prune_every) => {}
                        _ = &mut shutdown => return,
                    }
                    match pruner.prune_versions().await {
                        Ok(0) => {}
                        Ok(n) => log::info!("freed {n} stored blob(s) of pruned versions"),
                        Err(e) => log::warn!("pruning versions: {}", e.cause()),
                    }
                }
            });
            let Some(every) = settings.scrub_every else { return };
            let rate = settings.scrub_rate.saturating_mul(1_000_000);
            let mut shutdown = rocket.shutdown();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every.0) => {}
                        _ = &mut shutdown => return,
                    }
                    tokio::select! {
                        scrubbed = node.scrub(Some(rate)) => match scrubbed {
                            Ok(report) => log::info!(
                                "scrub: {} blob(s), {} bytes, {} damaged",
                                report.checked, report.bytes, report.damaged.len()
                            ),
                            Err(e) => log::warn!("scrub: {}", e.cause()),
                        },
                        _ = &mut shutdown => return,
                    }
                }
            });
        })
    })
}

#[utoipa::path(
    get,
    path = "/versions/{key}",
    operation_id = "listVersions",
    tag = "catalog",
    summary = "A key's versions, newest first (paged)",
    description = "Needs `read`. Every commit to a key (an upload, a restore) makes a version whose number grows by one; `current` marks the one `GET /data/{key}` serves (none, after the key was deleted). Versions are kept per `keep_versions` (the current one included) and `keep_versions_for` (after they stopped being current). Paged like the catalog: when a page is full, `Link: rel=\"next\"` gives the next page's URL. A key with no versions is `404`.",
    params(
        ("limit" = Option<u64>, Query, minimum = 1, description = "Upper bound on the number of versions: default 1000, larger values are clamped to 10000."),
        ("after" = Option<i64>, Query, minimum = 1, description = "Only versions older than this number: the paging cursor."),
    ),
    responses(
        (status = 200, description = "The versions, newest first.", body = Vec<Version>),
        super::openapi::responses::AccessErrors,
        super::openapi::responses::DatasetErrors,
    ),
    security(("bearerAuth" = ["read"]), ()),
)]
#[rocket::get("/versions/<_..>?<limit>&<after>")]
async fn list_versions(
    node: &State<Arc<Node>>,
    caller: Caller,
    tail: KeyTail<'_>,
    limit: Option<&str>,
    after: Option<&str>,
) -> Result<Page<Version>> {
    caller.require(Scope::Read)?;
    let key = tail.key()?;
    let limit = parse_limit(limit)?;
    let before = after.map(version_number).transpose()?;
    let versions = node.versions(&key, before, limit).await?;
    let next = (versions.len() == limit).then(|| {
        let last = versions[versions.len() - 1].version;
        format!("/versions/{}?limit={limit}&after={last}", encode_path(key.as_str()))
    });
    Ok(Page { records: versions, next })
}
