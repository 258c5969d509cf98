//! The SQLite backend: a pooled file in the data directory (WAL,
//! synchronous=FULL), its migrations, and the binder for the shared SQL.

use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;

use r2d2::{Pool, PooledConnection};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;

use super::db::{Db, DbRow, Val};
use super::migrations;
use super::RowCache;
use crate::error::{Error, Result};

type SqlitePool = Pool<SqliteConnectionManager>;

/// Rows kept in the cache: the datasets being read at once, and more.
const ROWS: usize = 1024;

/// The catalog's connections, and the cache of dataset rows that they
/// keep current (see [`Index::get_cached`](super::Index::get_cached)).
#[derive(Clone)]
pub(super) struct Sqlite {
    pool: SqlitePool,
    pub(super) rows: Arc<RowCache>,
}

pub(super) fn open(path: &Path) -> Result<Sqlite> {
    // WAL is a property of the file: set once, by one connection. The
    // pool opens its connections at once, and on a new database each one's
    // switch to WAL found the file locked by another's and failed (r2d2
    // logged `ERROR r2d2 database is locked` and tried again).
    let index_error = |e: rusqlite::Error| Error::internal(format!("index {}: {e}", path.display()));
    let mode = rusqlite::Connection::open(path)
        .and_then(|c| c.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0)))
        .map_err(index_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::internal(format!(
            "index {}: the filesystem keeps it in `{mode}` mode, not WAL",
            path.display()
        )));
    }
    let manager = SqliteConnectionManager::file(path).with_init(|c| {
        // The catalog has more distinct statements than rusqlite's default
        // cache of 16 holds: each evicted one is parsed again on its use.
        c.set_prepared_statement_cache_capacity(128);
        c.execute_batch(
            "PRAGMA busy_timeout = 10000;
             PRAGMA synchronous = FULL;",
        )
    });
    let pool = Pool::builder()
        // Record lookups run on the async workers (see `Node::get`): enough
        // connections that they rarely wait for one behind blocking work.
        .max_size(16)
        // A connection to a local file does not go bad while pooled; the
        // check (an empty statement prepared at every check-out) was 4.5%
        // of the node's CPU serving 64 KiB ranges.
        .test_on_check_out(false)
        .build(manager)
        .map_err(|e| Error::internal(format!("index {}: {e}", path.display())))?;
    let sqlite = Sqlite { pool, rows: Arc::new(RowCache::new(ROWS)) };
    migrate(&mut *sqlite.conn()?)?;
    Ok(sqlite)
}

impl Sqlite {
    /// Every use of the catalog goes through here, so that no write can
    /// leave a cached row behind.
    pub(super) fn conn(&self) -> Result<Conn<'_>> {
        let conn = self.pool.get().map_err(|e| Error::internal(format!("index pool: {e}")))?;
        let changes = conn.total_changes();
        Ok(Conn { conn, changes, rows: &self.rows })
    }
}

/// A pooled connection that clears the row cache when it goes back to the
/// pool having changed rows. That is after its last commit (a transaction
/// on it ends first) and before its caller answers anyone.
pub(super) struct Conn<'s> {
    conn: PooledConnection<SqliteConnectionManager>,
    changes: u64,
    rows: &'s RowCache,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        // Counts rows that statements inserted, updated or deleted, rolled
        // back or not: clearing too often is safe.
        if self.conn.total_changes() != self.changes {
            self.rows.clear();
        }
    }
}

impl Deref for Conn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// The schema version is SQLite's own `user_version`.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction()?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in migrations::sqlite::MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()?;
    Ok(())
}

/// A connection or transaction (a `rusqlite::Transaction` derefs to one).
pub(super) struct Lite<'c>(pub(super) &'c Connection);

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value};
        Ok(ToSqlOutput::Owned(match self {
            Val::Null => Value::Null,
            Val::Int(n) => Value::Integer(*n),
            Val::Text(s) => Value::Text(s.clone()),
            Val::Bool(b) => Value::Integer(i64::from(*b)),
        }))
    }
}

/// Binds `params` by name: SQLite numbers named parameters in order of
/// first appearance, so `$2` may be its first; the name says which value.
fn bind(stmt: &mut rusqlite::CachedStatement<'_>, params: &[Val]) -> Result<()> {
    for i in 1..=stmt.parameter_count() {
        let name = stmt.parameter_name(i).unwrap_or_default();
        let value = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| params.get(n.checked_sub(1)?))
            .ok_or_else(|| Error::internal(format!("SQL parameter `{name}` has no value")))?;
        stmt.raw_bind_parameter(i, value)?;
    }
    Ok(())
}

impl Db for Lite<'_> {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let mut stmt = self.0.prepare_cached(sql)?;
        bind(&mut stmt, params)?;
        Ok(stmt.raw_execute()? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<DbRow>> {
        use rusqlite::types::ValueRef;
        let mut stmt = self.0.prepare_cached(sql)?;
        bind(&mut stmt, params)?;
        let width = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let values = (0..width)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Val::Null,
                        ValueRef::Integer(n) => Val::Int(n),
                        ValueRef::Real(f) => Val::Int(f as i64),
                        // `from_utf8` checks ASCII a word at a time; the
                        // lossy path (for text that is not UTF-8) goes byte
                        // by byte, and was 5% of a listing's CPU.
                        ValueRef::Text(t) | ValueRef::Blob(t) => Val::Text(match std::str::from_utf8(t) {
                            Ok(text) => text.to_owned(),
                            Err(_) => String::from_utf8_lossy(t).into_owned(),
                        }),
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.push(DbRow(values));
        }
        Ok(out)
    }
}
