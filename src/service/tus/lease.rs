//! Who writes an upload kept in the store: the one request holding its
//! lease in the index (see `index::upload_parts`). The lease is renewed
//! every second while its request runs, and each renewal also learns
//! whether another request (a resuming client's HEAD, through any node)
//! asked for the upload; the holder then stops at once, keeping what it
//! made durable, as a PATCH does on one node when it is taken over. A
//! holder whose node died lets go when its lease runs out.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::blocking::blocking;
use crate::error::{Error, Result};
use crate::index::{Index, LeaseState};
use crate::timestamp::unix_now_ms;

/// How often a holder renews its lease, at most.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a request waiting for a lease looks again.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// A request's hold on an upload. Dropped, it lets go.
pub(super) struct Lease {
    index: Index,
    id: String,
    token: String,
    /// Cancelled when another request asked for the upload, or when the
    /// lease was lost (its renewals failed past its expiry).
    stop: CancellationToken,
    renewer: JoinHandle<()>,
}

impl Lease {
    /// Takes the lease of upload `id` if no request holds it; else
    /// `409 upload-in-use` at once (two writers racing: one wins).
    pub(super) async fn take(index: &Index, id: &str, ttl: Duration) -> Result<Lease> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let (i, u, t) = (index.clone(), id.to_owned(), token.clone());
        let ms = ttl.as_millis() as i64;
        let taken = blocking(move || {
            let now = unix_now_ms();
            i.take_lease(&u, &t, now, now + ms)
        })
        .await?;
        if !taken {
            return Err(Error::UploadInUse);
        }
        let stop = CancellationToken::new();
        let renewer = tokio::spawn(renew(index.clone(), id.to_owned(), token.clone(), ttl, stop.clone()));
        Ok(Lease { index: index.clone(), id: id.to_owned(), token, stop, renewer })
    }

    pub(super) fn token(&self) -> &str {
        &self.token
    }

    /// Resolves when the holder should stop.
    pub(super) fn stopped(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }
}

impl Lease {
    /// Lets go before the answer leaves, so the client's next request
    /// (through any node) finds the upload free.
    pub(super) async fn release(mut self) {
        let release = self.letting_go();
        if let Err(e) = blocking(move || release.map_or(Ok(()), |release| release())).await {
            log::warn!("releasing a lease: {}", e.cause());
        }
    }

    /// Stops renewing; the release to run, once (none after `release`).
    fn letting_go(&mut self) -> Option<impl FnOnce() -> Result<()> + Send + 'static> {
        self.renewer.abort();
        if self.token.is_empty() {
            return None;
        }
        let (index, id, token) = (self.index.clone(), std::mem::take(&mut self.id), std::mem::take(&mut self.token));
        Some(move || index.release_lease(&id, &token))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Released in the background (an early return dropped the lease); a
        // lease that is not released runs out by itself.
        if let Some(release) = self.letting_go() {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = release() {
                    log::warn!("releasing a lease: {}", e.cause());
                }
            });
        }
    }
}

async fn renew(index: Index, id: String, token: String, ttl: Duration, stop: CancellationToken) {
    let every = RENEW_EVERY.min(ttl / 3);
    let ms = ttl.as_millis() as i64;
    let mut valid_until = unix_now_ms() + ms;
    loop {
        tokio::time::sleep(every).await;
        let (i, u, t) = (index.clone(), id.clone(), token.clone());
        let until = unix_now_ms() + ms;
        match blocking(move || i.renew_lease(&u, &t, until)).await {
            Ok(Some(wanted)) => {
                valid_until = until;
                if wanted {
                    stop.cancel();
                }
            }
            Ok(None) => {
                log::warn!("upload {id}: the lease was lost; the writing request stops");
                stop.cancel();
                return;
            }
            // The index is away: keep going while the lease may still hold
            // (every change the holder makes names the lease anyway).
            Err(e) if unix_now_ms() < valid_until => log::warn!("upload {id}: renewing its lease: {}", e.cause()),
            Err(_) => {
                stop.cancel();
                return;
            }
        }
    }
}

/// Asks the holder of upload `id`'s lease, if any, to let go, and waits
/// until it did or its lease ran out (a dead node's), at most `ttl` and a
/// second: a resuming client's HEAD then reports an offset no writer moves.
pub(super) async fn wait_free(index: &Index, id: &str, ttl: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + ttl + Duration::from_secs(1);
    loop {
        let (i, u) = (index.clone(), id.to_owned());
        if blocking(move || i.want_lease(&u, unix_now_ms())).await? == LeaseState::Free {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}
