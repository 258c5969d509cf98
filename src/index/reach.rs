//! Whether the PostgreSQL server was last found reachable. A request that
//! would queue (for a pooled connection, a commit-lock slot, a lock another
//! session holds) gives up as soon as the server is known gone, instead of
//! waiting its full time for what an outage will never give it.

use tokio::sync::watch;

pub(super) struct Reach(watch::Sender<bool>);

/// What an operation saw of the server since it started: a waiter's view.
pub(super) struct Watch(watch::Receiver<bool>);

impl Reach {
    pub(super) fn new() -> Reach {
        Reach(watch::Sender::new(false))
    }

    pub(super) fn is_down(&self) -> bool {
        *self.0.borrow()
    }

    /// Notes the server unreachable; true if it was not known so, so that
    /// the caller drops what the outage made stale once, not at each error.
    pub(super) fn down(&self, cause: &crate::error::Error) -> bool {
        let news = self.0.send_if_modified(|down| !std::mem::replace(down, true));
        if news {
            log::warn!("PostgreSQL is unreachable ({}); what needs it answers 503 until it answers", cause.cause());
        }
        news
    }

    /// Notes the server reachable. Called after every operation, so a read
    /// first: the usual answer takes no lock.
    pub(super) fn up(&self) {
        if self.is_down() && self.0.send_if_modified(|down| std::mem::replace(down, false)) {
            log::info!("PostgreSQL answers again");
        }
    }

    pub(super) fn watch(&self) -> Watch {
        Watch(self.0.subscribe())
    }
}

impl Watch {
    /// Whether the server was found gone since the watch began.
    pub(super) fn went_down(&self) -> bool {
        self.0.has_changed().unwrap_or(false) && *self.0.borrow()
    }

    /// Resolves when the server is found gone after the watch began.
    pub(super) async fn goes_down(mut self) {
        // The sender lives as long as the pool that waits on it.
        while self.0.changed().await.is_ok() {
            if *self.0.borrow_and_update() {
                return;
            }
        }
        std::future::pending().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn gone() -> crate::error::Error {
        crate::error::Error::Unavailable("the index", "refused".into())
    }

    #[test]
    fn an_outage_is_news_once() {
        let reach = Reach::new();
        assert!(reach.down(&gone()));
        assert!(!reach.down(&gone()));
        reach.up();
        assert!(!reach.is_down());
        assert!(reach.down(&gone()), "a second outage");
    }

    #[test]
    fn a_watch_sees_outages_after_it_began() {
        let reach = Reach::new();
        let watch = reach.watch();
        assert!(!watch.went_down());
        reach.down(&gone());
        assert!(watch.went_down());
        let late = reach.watch();
        assert!(!late.went_down(), "down before the watch began");
        reach.up();
        assert!(!watch.went_down(), "back up since");
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_the_server_goes() {
        let reach = Arc::new(Reach::new());
        let waiter = tokio::spawn(reach.watch().goes_down());
        reach.up();
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        reach.down(&gone());
        tokio::time::timeout(std::time::Duration::from_secs(10), waiter).await.unwrap().unwrap();
    }
}
