//! The catalog: a row per dataset, in SQLite (WAL, synchronous=FULL; the
//! default, in the data directory) or in PostgreSQL (shared by several
//! nodes). Rows are keyed by the dataset key, ordered bytewise (SQLite's
//! BINARY collation, PostgreSQL's "C"), which is the order of the API.
//! Every call blocks: callers run them on blocking threads.
//!
//! A file per table (`datasets`, `intents`, `uploads`, `multiparts`,
//! `settings`, `grants`) holds its queries, written once for both backends (see
//! `db`); `sqlite` and `postgres` hold what differs, and `migrations` each
//! dialect's schema.

mod batch;
mod datasets;
mod db;
mod grants;
mod intents;
mod multiparts;
mod postgres;
mod reach;
mod settings;
mod sqlite;
mod upload_parts;
mod uploads;
mod versions;

mod migrations {
    pub(super) mod postgres;
    pub(super) mod sqlite;
}

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use datasets::{MetadataPatch, NewVersion, Record};
pub use intents::{Completed, Intent};
pub use upload_parts::{LeaseState, StoredPart, StoredUpload};
pub use uploads::{OpenUploads, UploadRow};
pub use versions::{Blob, Retention, Totals, Version};

use crate::config::PostgresTls;
use crate::error::Result;
use db::Db;
use postgres::PgPool;
use sqlite::{Lite, Sqlite};

/// Dataset rows by key (SQLite only, see [`Index::get_cached`]).
type RowCache = crate::cache::Cache<std::sync::Arc<Record>>;

#[derive(Clone)]
enum Backend {
    Sqlite(Sqlite, batch::Batcher),
    Postgres(Arc<PgPool>),
}

#[derive(Clone)]
pub struct Index {
    backend: Backend,
}

/// How a lock is held: by any number of holders at once, or by one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

/// Advisory locks by id, in the order they are taken.
pub type LockSet = Vec<(i64, LockMode)>;

/// Locks that nodes sharing a PostgreSQL index hold while they commit
/// (with SQLite there is one node, and its own locks suffice).
pub struct CommitLock(Option<postgres::HeldLock>);

impl Drop for CommitLock {
    fn drop(&mut self) {
        if let Some(lock) = self.0.take() {
            lock.release();
        }
    }
}

impl Index {
    /// The SQLite catalog in the data directory.
    pub fn open(path: &Path) -> Result<Index> {
        let sqlite = sqlite::open(path)?;
        let batcher = batch::Batcher::start(sqlite.clone())?;
        Ok(Index { backend: Backend::Sqlite(sqlite, batcher) })
    }

    /// A catalog in PostgreSQL, shared by every node configured with it.
    pub fn open_postgres(url: &str) -> Result<Index> {
        let defaults = crate::config::Settings::default();
        Index::open_postgres_with(url, PostgresTls::Disable, defaults.postgres_connect_timeout.0)
    }

    fn open_postgres_with(url: &str, tls: PostgresTls, connect_timeout: Duration) -> Result<Index> {
        Ok(Index { backend: Backend::Postgres(Arc::new(PgPool::open(url, tls, connect_timeout)?)) })
    }

    pub fn open_configured(settings: &crate::config::Settings, sqlite_file: &Path) -> Result<Index> {
        match settings.index {
            crate::config::IndexKind::Sqlite => Index::open(sqlite_file),
            crate::config::IndexKind::Postgres => Index::open_postgres_with(
                settings.postgres_url.as_deref().unwrap_or(""),
                settings.postgres_tls,
                settings.postgres_connect_timeout.0,
            ),
        }
    }

    /// The cache of rows, where nothing but this process writes the index.
    fn row_cache(&self) -> Option<&RowCache> {
        match &self.backend {
            Backend::Sqlite(sqlite, _) => Some(&sqlite.rows),
            Backend::Postgres(_) => None,
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Takes `locks` among the nodes sharing this index, in order, until
    /// the returned value is dropped (a no-op with SQLite).
    pub fn lock(&self, locks: &LockSet) -> Result<CommitLock> {
        match &self.backend {
            Backend::Sqlite(..) => Ok(CommitLock(None)),
            Backend::Postgres(pool) => Ok(CommitLock(Some(pool.lock(locks)?))),
        }
    }

    /// Takes `locks` like [`Index::lock`] if no other node holds any of
    /// them now.
    pub fn try_lock(&self, locks: &LockSet) -> Result<Option<CommitLock>> {
        match &self.backend {
            Backend::Sqlite(..) => Ok(Some(CommitLock(None))),
            Backend::Postgres(pool) => Ok(pool.try_lock(locks)?.map(|held| CommitLock(Some(held)))),
        }
    }

    /// Runs `f` on a connection, each statement committing on its own.
    fn with<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(sqlite, _) => f(&mut Lite(&*sqlite.conn()?)),
            Backend::Postgres(pool) => pool.with(f),
        }
    }

    /// Runs `f` in one transaction, committed if it returns `Ok` (with
    /// SQLite an IMMEDIATE one, as [`Index::serial_tx`] says why).
    fn tx<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        self.run_tx(None, f)
    }

    /// Runs `f` in one transaction that writers take one at a time from
    /// its first read on, so that what it writes may depend on what it read
    /// (a count checked before an insert): SQLite's IMMEDIATE transaction
    /// (which every transaction is: a deferred one that reads, then writes
    /// while another connection writes, fails at once with "database is
    /// locked", since SQLite cannot wait there without risking a deadlock);
    /// with PostgreSQL (nodes sharing it too) the transaction-scoped
    /// advisory lock `lock`, since READ COMMITTED lets two transactions
    /// count the same rows and both insert.
    fn serial_tx<T>(&self, lock: i64, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        self.run_tx(Some(lock), f)
    }

    /// Runs `f` in one transaction like [`Index::tx`]; with SQLite in the
    /// writer's next batch, shared with the other writes waiting (group
    /// commit, see `batch`). For the writes of the commit path.
    fn batched<T: Send + 'static>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T> + Send + 'static) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(_, batcher) => batcher.run(f),
            Backend::Postgres(pool) => pool.tx(None, f),
        }
    }

    /// Like [`Index::batched`], with `during` run meanwhile (with SQLite,
    /// on this thread while the writer commits; with PostgreSQL, before
    /// the transaction). Both are done when it returns.
    fn batched_while<T: Send + 'static, U>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> Result<T> + Send + 'static,
        during: impl FnOnce() -> U,
    ) -> (Result<T>, U) {
        match &self.backend {
            Backend::Sqlite(_, batcher) => batcher.run_while(f, during),
            Backend::Postgres(pool) => {
                let during = during();
                (pool.tx(None, f), during)
            }
        }
    }

    fn run_tx<T>(&self, lock: Option<i64>, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(sqlite, _) => {
                let mut conn = sqlite.conn()?;
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let out = f(&mut Lite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Backend::Postgres(pool) => pool.tx(lock, f),
        }
    }
}

/// The smallest string greater than every string that starts with `prefix`
/// (None when there is none, or the prefix is empty). Code point order is
/// UTF-8 byte order, so bumping the last character that can be bumped works.
pub fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = last as u32 + 1;
        if (0xD800..=0xDFFF).contains(&next) {
            next = 0xE000;
        }
        if let Some(c) = char::from_u32(next) {
            chars.push(c);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite numbers `$N` parameters in order of first appearance; a
    /// statement naming `$2` before `$1` must still bind by name.
    #[test]
    fn sqlite_binds_parameters_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let row = UploadRow {
            id: "u1".into(),
            length: None,
            metadata: None,
            key: Some("a/b".into()),
            concat: "none".into(),
            created_at: "now".into(),
            expires_at: 10,
            completed: false,
            node: "n".into(),
            owner: String::new(),
            stored_offset: None,
            part_size: None,
        };
        index.create_upload(&row).unwrap();
        index.set_upload_length("u1", 42).unwrap();
        index.touch_upload("u1", 20).unwrap();
        let got = index.get_upload("u1").unwrap().unwrap();
        assert_eq!((got.length, got.expires_at), (Some(42), 20));
        assert_eq!(index.expired_uploads("n", 21).unwrap(), vec![("u1".to_owned(), false)]);
    }

    #[test]
    fn successor_bounds_the_prefix() {
        assert_eq!(prefix_successor("a"), Some("b".into()));
        assert_eq!(prefix_successor("a/"), Some("a0".into()));
        assert_eq!(prefix_successor(""), None);
        assert_eq!(prefix_successor("x\u{10FFFF}"), Some("y".into()));
        assert_eq!(prefix_successor("\u{D7FF}"), Some("\u{E000}".into()));
        for key in ["a", "a/b", "a\u{10FFFF}\u{10FFFF}", "aé"] {
            assert!(key < prefix_successor("a").unwrap().as_str());
        }
    }
}
