//! Spillway: a storage node for datasets far bigger than RAM, over HTTP.
//!
//! Where things live (dependencies run downwards; `scripts/test.sh` fails
//! on any cycle between these modules):
//! - [`http`]: routes, guards and responders;
//! - [`service`]: the node's operations (the commit protocol, reads,
//!   deletes, resumable uploads), tying the three below together;
//! - [`ingest`]: reading upload bodies: the capped in-memory spool, the
//!   spill to a file or into the store, hashing, fsync;
//! - [`store`]: the byte stores (filesystem, S3) behind one trait;
//! - [`index`]: the catalog (SQLite or PostgreSQL);
//! - [`datadir`]: the data directory: its folders, lock, free space, and
//!   the symlink-safe way from a key to its file;
//! - [`key`]: the key rules; [`error`]: the one error enum;
//!   [`blocking`], [`timestamp`], [`cache`], [`logging`]: small shared
//!   helpers; [`failpoint`]: test-only pauses.

pub mod access;
pub mod blocking;
pub mod cache;
pub mod client;
pub mod config;
pub mod datadir;
pub mod error;
pub mod failpoint;
pub mod fsck;
pub mod http;
pub mod index;
pub mod ingest;
pub mod key;
pub mod logging;
pub mod metrics;
pub mod service;
pub mod store;
pub mod timestamp;

use std::sync::Arc;

use figment::Figment;
use rocket::fairing::AdHoc;
use rocket::{Build, Rocket};

use crate::config::Settings;
use crate::service::Node;

/// Builds the node from a figment: settings are extracted and checked here;
/// the data directory is prepared, leftovers swept, interrupted commits
/// resolved and the index opened when Rocket ignites (after its logger is
/// up, so all of that is logged). `main` and the tests use this function.
pub fn build(figment: Figment) -> Result<Rocket<Build>, String> {
    let settings = Settings::from_figment(&figment)?;
    let address: std::net::IpAddr = figment.extract_inner("address").map_err(|e| e.to_string())?;
    if settings.tokens.is_empty() {
        if address.is_loopback() {
            log::warn!("no tokens are configured: the node is open to anyone on this machine");
        } else if settings.allow_open_on_network {
            log::warn!("no tokens are configured and allow_open_on_network is set: anyone who reaches {address} may read, write and delete");
        } else {
            return Err(format!(
                "no tokens are configured, so the node serves only on a loopback address, not {address}; \
                 configure `tokens` or set `allow_open_on_network = true`"
            ));
        }
    }
    let cors = http::cors(&settings.cors_origins)?;
    let rocket = rocket::custom(figment)
        .attach(AdHoc::try_on_ignite("spillway node", |rocket| async move {
            match Node::open(settings).await {
                Ok(node) => Ok(rocket.manage(Arc::new(node))),
                Err(e) => {
                    log::error!("cannot open the node: {}", e.cause());
                    Err(rocket)
                }
            }
        }))
        .attach(AdHoc::on_liftoff("announce", |rocket| {
            Box::pin(async move {
                let config = rocket.config();
                // Tests and scripts read this line to find an ephemeral port.
                // What start-up logged comes first: whoever waits for this
                // line may read the log next.
                crate::logging::flush();
                println!("spillway listening on http://{}:{}", config.address, config.port);
            })
        }));
    let rocket = match cors {
        Some(cors) => rocket.attach(cors).attach(AdHoc::on_response("Vary: Origin", |_, res| {
            Box::pin(async move {
                // Answers differ by Origin: caches must not mix them.
                res.adjoin_raw_header("Vary", "Origin");
            })
        })),
        None => rocket,
    };
    Ok(http::mount(rocket))
}
