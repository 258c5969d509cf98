//! The catalog: a row per dataset, in SQLite (WAL, synchronous=FULL; the
//! default, in the data directory) or in PostgreSQL (shared by several
//! nodes). Rows are keyed by the dataset key, ordered bytewise (SQLite's
//! BINARY collation, PostgreSQL's "C"), which is the order of the API. The
//! SQL is written once for both. Every call blocks: callers run them on
//! blocking threads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use r2d2::Pool;
use r2d2_postgres::PostgresConnectionManager;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::key::Key;

/// What the catalog knows about a dataset (the API's record, plus the
/// store's version that ties the row to the bytes it describes).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Record {
    pub name: String,
    pub path: String,
    pub key: String,
    pub size: u64,
    pub blake3: String,
    pub content_type: String,
    pub created_at: String,
    pub updated_at: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// The file's inode (filesystem store) or the object's ETag (S3).
    #[serde(skip)]
    pub version: String,
}

/// The columns a commit writes.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub key: Key,
    pub size: u64,
    pub blake3: String,
    pub content_type: String,
    /// The store's version of the bytes (empty until the store knows it).
    pub version: String,
    pub name: Option<String>,
    pub description: Option<String>,
}

/// A change of the data directory about to happen, committed to the index
/// before it, so that a crash in the middle can be finished or rolled back
/// at the next start: the file system and the index cannot change in one
/// step, and the intent makes the pair recoverable.
#[derive(Debug, Clone)]
pub enum Intent {
    /// These bytes are being installed at the key.
    Install(NewVersion),
    /// The key's file is being removed.
    Remove(Key),
}

/// Metadata a client may change.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetadataPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

/// A value bound to, or read from, a statement: the few types the catalog
/// uses, so that one piece of SQL serves both backends.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(v.to_owned())
    }
}
impl From<String> for Val {
    fn from(v: String) -> Val {
        Val::Text(v)
    }
}
impl From<&String> for Val {
    fn from(v: &String) -> Val {
        Val::Text(v.clone())
    }
}
impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}
impl From<u64> for Val {
    fn from(v: u64) -> Val {
        Val::Int(v as i64)
    }
}
impl From<bool> for Val {
    fn from(v: bool) -> Val {
        Val::Bool(v)
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Val {
        v.map_or(Val::Null, Into::into)
    }
}
impl From<&Option<String>> for Val {
    fn from(v: &Option<String>) -> Val {
        v.clone().into()
    }
}

macro_rules! vals {
    ($($v:expr),* $(,)?) => { &[$(Val::from($v)),*] as &[Val] };
}

/// One result row.
#[derive(Debug)]
pub struct DbRow(Vec<Val>);

impl DbRow {
    fn text(&self, i: usize) -> String {
        self.opt_text(i).unwrap_or_default()
    }
    fn opt_text(&self, i: usize) -> Option<String> {
        match &self.0[i] {
            Val::Text(s) => Some(s.clone()),
            Val::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }
    fn int(&self, i: usize) -> i64 {
        self.opt_int(i).unwrap_or_default()
    }
    fn opt_int(&self, i: usize) -> Option<i64> {
        match &self.0[i] {
            Val::Int(n) => Some(*n),
            Val::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }
    fn bool(&self, i: usize) -> bool {
        self.opt_int(i).is_some_and(|n| n != 0)
    }
}

/// A connection or transaction of either backend. SQL is written once, with
/// SQLite's `?N` placeholders (rewritten to `$N` for PostgreSQL).
pub trait Db {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64>;
    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<DbRow>>;
    fn query_opt(&mut self, sql: &str, params: &[Val]) -> Result<Option<DbRow>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

struct Lite<'c>(&'c Connection);

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

impl Db for Lite<'_> {
    fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
        let mut stmt = self.0.prepare_cached(sql)?;
        Ok(stmt.execute(rusqlite::params_from_iter(params))? as u64)
    }

    fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<DbRow>> {
        let mut stmt = self.0.prepare_cached(sql)?;
        let width = stmt.column_count();
        let rows = stmt.query_map(rusqlite::params_from_iter(params), |row| {
            (0..width)
                .map(|i| {
                    use rusqlite::types::ValueRef;
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Val::Null,
                        ValueRef::Integer(n) => Val::Int(n),
                        ValueRef::Real(f) => Val::Int(f as i64),
                        ValueRef::Text(t) | ValueRef::Blob(t) => Val::Text(String::from_utf8_lossy(t).into_owned()),
                    })
                })
                .collect::<rusqlite::Result<Vec<_>>>()
                .map(DbRow)
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

impl postgres::types::ToSql for Val {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(n) if *ty == Type::INT4 => i32::try_from(*n)?.to_sql(ty, out),
            Val::Int(n) => n.to_sql(ty, out),
            Val::Text(s) => s.to_sql(ty, out),
            Val::Bool(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// `?N` placeholders to PostgreSQL's `$N`.
fn pg_sql(sql: &str) -> String {
    sql.replace('?', "$")
}

fn pg_params(params: &[Val]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn postgres::types::ToSql + Sync)).collect()
}

fn pg_row(row: &postgres::Row) -> Result<DbRow> {
    use postgres::types::Type;
    let mut values = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map(Val::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?.map(|n| Val::Int(n.into()))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)?.map(Val::Bool)
        } else {
            row.try_get::<_, Option<String>>(i)?.map(Val::Text)
        };
        values.push(value.unwrap_or(Val::Null));
    }
    Ok(DbRow(values))
}

macro_rules! pg_db {
    ($t:ty) => {
        impl Db for $t {
            fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64> {
                Ok(postgres::GenericClient::execute(self, pg_sql(sql).as_str(), &pg_params(params))?)
            }

            fn query(&mut self, sql: &str, params: &[Val]) -> Result<Vec<DbRow>> {
                postgres::GenericClient::query(self, pg_sql(sql).as_str(), &pg_params(params))?
                    .iter()
                    .map(pg_row)
                    .collect()
            }
        }
    };
}
pg_db!(postgres::Client);
pg_db!(postgres::Transaction<'_>);

const SQLITE_MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE datasets (
        key          TEXT PRIMARY KEY NOT NULL,
        name         TEXT NOT NULL,
        size         INTEGER NOT NULL,
        blake3       TEXT NOT NULL,
        content_type TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        description  TEXT,
        tags         TEXT NOT NULL DEFAULT '[]',
        inode        INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
"#,
    r#"
    CREATE TABLE intents (
        key          TEXT PRIMARY KEY NOT NULL,
        action       TEXT NOT NULL,
        inode        INTEGER NOT NULL DEFAULT 0,
        size         INTEGER NOT NULL DEFAULT 0,
        blake3       TEXT NOT NULL DEFAULT '',
        content_type TEXT NOT NULL DEFAULT '',
        name         TEXT,
        description  TEXT
    ) WITHOUT ROWID;
"#,
    r#"
    CREATE TABLE uploads (
        id          TEXT PRIMARY KEY NOT NULL,
        length      INTEGER,
        metadata    TEXT,
        key         TEXT,
        concat      TEXT NOT NULL DEFAULT 'none',
        created_at  TEXT NOT NULL,
        expires_at  INTEGER NOT NULL,
        completed   INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
"#,
    // The store's version of a dataset's bytes: a file's inode, or an
    // object's ETag, instead of an inode only.
    r#"
    ALTER TABLE datasets ADD COLUMN version TEXT NOT NULL DEFAULT '';
    UPDATE datasets SET version = CAST(inode AS TEXT);
    ALTER TABLE datasets DROP COLUMN inode;
    ALTER TABLE intents ADD COLUMN version TEXT NOT NULL DEFAULT '';
    UPDATE intents SET version = CAST(inode AS TEXT);
    ALTER TABLE intents DROP COLUMN inode;
    ALTER TABLE uploads ADD COLUMN node TEXT NOT NULL DEFAULT '';
    CREATE TABLE settings (name TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE multiparts (id TEXT PRIMARY KEY NOT NULL, path TEXT NOT NULL, node TEXT NOT NULL) WITHOUT ROWID;
"#,
    // Who created a resumable upload: a token's name ('' on an open node,
    // and for uploads from before owners were kept).
    r#"
    ALTER TABLE uploads ADD COLUMN owner TEXT NOT NULL DEFAULT '';
"#,
    // Open uploads are counted at each creation, in total and per owner.
    r#"
    CREATE INDEX uploads_open ON uploads (completed, owner);
"#,
];

/// The same schema for PostgreSQL. Keys collate as "C" (bytewise), the
/// order of the API and of SQLite's BINARY collation.
const POSTGRES_MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE datasets (
        key          TEXT COLLATE "C" PRIMARY KEY,
        name         TEXT NOT NULL,
        size         BIGINT NOT NULL,
        blake3       TEXT NOT NULL,
        content_type TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        updated_at   TEXT NOT NULL,
        description  TEXT,
        tags         TEXT NOT NULL DEFAULT '[]',
        version      TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE intents (
        key          TEXT COLLATE "C" PRIMARY KEY,
        action       TEXT NOT NULL,
        version      TEXT NOT NULL DEFAULT '',
        size         BIGINT NOT NULL DEFAULT 0,
        blake3       TEXT NOT NULL DEFAULT '',
        content_type TEXT NOT NULL DEFAULT '',
        name         TEXT,
        description  TEXT
    );
    CREATE TABLE uploads (
        id          TEXT PRIMARY KEY,
        length      BIGINT,
        metadata    TEXT,
        key         TEXT,
        concat      TEXT NOT NULL DEFAULT 'none',
        created_at  TEXT NOT NULL,
        expires_at  BIGINT NOT NULL,
        completed   BOOLEAN NOT NULL DEFAULT FALSE,
        node        TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE multiparts (id TEXT PRIMARY KEY, path TEXT NOT NULL, node TEXT NOT NULL);
"#,
    // As SQLite's fifth migration.
    r#"
    ALTER TABLE uploads ADD COLUMN owner TEXT NOT NULL DEFAULT '';
"#,
    // As SQLite's sixth.
    r#"
    CREATE INDEX uploads_open ON uploads (completed, owner);
"#,
];

/// Advisory lock ids (PostgreSQL): migrations, and the commit section that
/// several nodes must take in turn.
const PG_MIGRATION_LOCK: i64 = 0x5350_494c_0001;
const PG_COMMIT_LOCK: i64 = 0x5350_494c_0002;
/// Taken by each creation of a resumable upload, for its count and insert.
const PG_UPLOADS_LOCK: i64 = 0x5350_494c_0003;

const COLUMNS: &str = "key, name, size, blake3, content_type, created_at, updated_at, description, tags, version";

#[derive(Clone)]
enum Backend {
    Sqlite(Pool<SqliteConnectionManager>),
    Postgres(Arc<PgPool>),
}

/// The PostgreSQL pool. The synchronous client runs a runtime of its own,
/// and closing a connection inside tokio's would panic; the last owner may
/// be dropped there (at shutdown), so the pool is closed on a plain thread.
struct PgPool(Option<Pool<PostgresConnectionManager<postgres::NoTls>>>);

impl std::ops::Deref for PgPool {
    type Target = Pool<PostgresConnectionManager<postgres::NoTls>>;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("the pool lives until dropped")
    }
}

impl Drop for PgPool {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

#[derive(Clone)]
pub struct Index {
    backend: Backend,
}

/// Held while a node commits: other nodes on the same PostgreSQL index wait
/// for it (with SQLite there is one node, and its own lock suffices).
pub struct CommitLock(Option<r2d2::PooledConnection<PostgresConnectionManager<postgres::NoTls>>>);

impl Drop for CommitLock {
    fn drop(&mut self) {
        if let Some(conn) = &mut self.0 {
            if let Err(e) = conn.execute("SELECT pg_advisory_unlock($1)", &[&PG_COMMIT_LOCK]) {
                // The lock dies with the session; a broken session is closed.
                log::error!("releasing the commit lock: {e}");
            }
        }
    }
}

impl Index {
    /// The SQLite catalog in the data directory.
    pub fn open(path: &Path) -> Result<Index> {
        let manager = SqliteConnectionManager::file(path).with_init(|c| {
            c.execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA busy_timeout = 10000;",
            )
        });
        let pool = Pool::builder()
            .max_size(8)
            .build(manager)
            .map_err(|e| Error::internal(format!("index {}: {e}", path.display())))?;
        let index = Index { backend: Backend::Sqlite(pool) };
        index.migrate()?;
        Ok(index)
    }

    /// A catalog in PostgreSQL, shared by every node configured with it.
    pub fn open_postgres(url: &str) -> Result<Index> {
        let config: postgres::Config =
            url.parse().map_err(|e| Error::internal(format!("postgres_url does not parse: {e}")))?;
        let manager = PostgresConnectionManager::new(config, postgres::NoTls);
        let pool = Pool::builder()
            .max_size(16)
            .connection_timeout(std::time::Duration::from_secs(3))
            .build(manager)
            .map_err(|e| Error::Unavailable("the index", format!("connecting to PostgreSQL: {e}")))?;
        let index = Index { backend: Backend::Postgres(Arc::new(PgPool(Some(pool)))) };
        index.migrate()?;
        Ok(index)
    }

    pub fn open_configured(settings: &crate::config::Settings, sqlite_file: &Path) -> Result<Index> {
        match settings.index {
            crate::config::IndexKind::Sqlite => Index::open(sqlite_file),
            crate::config::IndexKind::Postgres => Index::open_postgres(settings.postgres_url.as_deref().unwrap_or("")),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Runs `f` on a connection, each statement committing on its own.
    fn with<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let conn = pool.get().map_err(|e| Error::internal(format!("index pool: {e}")))?;
                f(&mut Lite(&conn))
            }
            Backend::Postgres(pool) => f(&mut *pg_conn(pool)?),
        }
    }

    /// Runs `f` in one transaction, committed if it returns `Ok`.
    fn tx<T>(&self, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let mut conn = pool.get().map_err(|e| Error::internal(format!("index pool: {e}")))?;
                let tx = conn.transaction()?;
                let out = f(&mut Lite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Backend::Postgres(pool) => {
                let mut conn = pg_conn(pool)?;
                let mut tx = conn.transaction()?;
                let out = f(&mut tx)?;
                tx.commit()?;
                Ok(out)
            }
        }
    }

    /// Runs `f` in one transaction that writers take one at a time from
    /// its first read on, so that what it writes may depend on what it read
    /// (a count checked before an insert): SQLite's IMMEDIATE transaction;
    /// with PostgreSQL (nodes sharing it too) the transaction-scoped
    /// advisory lock `lock`, since READ COMMITTED lets two transactions
    /// count the same rows and both insert.
    fn serial_tx<T>(&self, lock: i64, f: impl FnOnce(&mut dyn Db) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let mut conn = pool.get().map_err(|e| Error::internal(format!("index pool: {e}")))?;
                let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let out = f(&mut Lite(&tx))?;
                tx.commit()?;
                Ok(out)
            }
            Backend::Postgres(pool) => {
                let mut conn = pg_conn(pool)?;
                let mut tx = conn.transaction()?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock])?;
                let out = f(&mut tx)?;
                tx.commit()?;
                Ok(out)
            }
        }
    }

    fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let mut conn = pool.get().map_err(|e| Error::internal(format!("index pool: {e}")))?;
                let tx = conn.transaction()?;
                let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                for (i, sql) in SQLITE_MIGRATIONS.iter().enumerate().skip(version as usize) {
                    tx.execute_batch(sql)?;
                    tx.pragma_update(None, "user_version", i as i64 + 1)?;
                }
                tx.commit()?;
            }
            Backend::Postgres(pool) => {
                let mut conn = pg_conn(pool)?;
                let mut tx = conn.transaction()?;
                // Nodes starting together migrate one at a time.
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PG_MIGRATION_LOCK])?;
                tx.batch_execute("CREATE TABLE IF NOT EXISTS spillway_schema (version INTEGER NOT NULL)")?;
                let version: i64 = match tx.query_opt("SELECT version FROM spillway_schema", &[])? {
                    Some(row) => row.get::<_, i32>(0).into(),
                    None => {
                        tx.execute("INSERT INTO spillway_schema (version) VALUES (0)", &[])?;
                        0
                    }
                };
                for (i, sql) in POSTGRES_MIGRATIONS.iter().enumerate().skip(version as usize) {
                    tx.batch_execute(sql)?;
                    tx.execute("UPDATE spillway_schema SET version = $1", &[&(i as i32 + 1)])?;
                }
                tx.commit()?;
            }
        }
        Ok(())
    }

    /// Takes the cluster-wide commit lock (a no-op with SQLite).
    pub fn commit_lock(&self) -> Result<CommitLock> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(CommitLock(None)),
            Backend::Postgres(pool) => {
                let mut conn = pg_conn(pool)?;
                conn.execute("SELECT pg_advisory_lock($1)", &[&PG_COMMIT_LOCK])?;
                Ok(CommitLock(Some(conn)))
            }
        }
    }

    pub fn get(&self, key: &Key) -> Result<Option<Record>> {
        self.with(|db| get(db, key.as_str()))
    }

    /// One page in key order: keys starting with `prefix`, strictly after
    /// `after`. Keyset pagination on the primary key: each page is one
    /// index range scan, however deep.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<Record>> {
        let lower = match after {
            Some(after) if after >= prefix => after,
            _ => prefix,
        };
        let lower_inclusive = after.is_none_or(|a| a < prefix);
        let upper = prefix_successor(prefix);
        let sql = format!(
            "SELECT {COLUMNS} FROM datasets WHERE key {} ?1 AND (?2 IS NULL OR key < ?2) ORDER BY key LIMIT ?3",
            if lower_inclusive { ">=" } else { ">" }
        );
        let sql = match self.backend {
            // PostgreSQL cannot infer the type of a parameter seen only in `IS NULL`.
            Backend::Postgres(_) => sql.replace("?2 IS NULL", "CAST(?2 AS TEXT) IS NULL"),
            Backend::Sqlite(_) => sql,
        };
        self.with(|db| db.query(&sql, vals![lower, upper, limit as i64])?.iter().map(record_from_row).collect())
    }

    /// Inserts or replaces a dataset's row (reindex, fsck repairs).
    pub fn upsert(&self, v: &NewVersion, now: &str) -> Result<Record> {
        self.tx(|db| upsert(db, v, now))
    }

    /// Records an intent durably (one commit) before the change it names.
    pub fn begin(&self, intent: &Intent) -> Result<()> {
        self.with(|db| {
            match intent {
                Intent::Install(v) => db.execute(
                    "INSERT INTO intents (key, action, version, size, blake3, content_type, name, description)
                     VALUES (?1, 'install', ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (key) DO UPDATE SET action = excluded.action, version = excluded.version,
                        size = excluded.size, blake3 = excluded.blake3, content_type = excluded.content_type,
                        name = excluded.name, description = excluded.description",
                    vals![v.key.as_str(), &v.version, v.size, &v.blake3, &v.content_type, &v.name, &v.description],
                )?,
                Intent::Remove(key) => db.execute(
                    "INSERT INTO intents (key, action) VALUES (?1, 'remove')
                     ON CONFLICT (key) DO UPDATE SET action = excluded.action",
                    vals![key.as_str()],
                )?,
            };
            Ok(())
        })
    }

    /// Drops an intent whose change did not happen.
    pub fn abandon(&self, key: &Key) -> Result<()> {
        self.with(|db| db.execute("DELETE FROM intents WHERE key = ?1", vals![key.as_str()]).map(drop))
    }

    /// The change happened: the row follows and the intent goes, in one
    /// transaction. Returns the new record (none for a removal).
    pub fn complete(&self, intent: &Intent, now: &str) -> Result<Option<Record>> {
        self.tx(|db| {
            let (key, record) = match intent {
                Intent::Install(v) => (&v.key, Some(upsert(db, v, now)?)),
                Intent::Remove(key) => {
                    db.execute("DELETE FROM datasets WHERE key = ?1", vals![key.as_str()])?;
                    (key, None)
                }
            };
            db.execute("DELETE FROM intents WHERE key = ?1", vals![key.as_str()])?;
            Ok(record)
        })
    }

    /// Intents a crash left behind.
    pub fn pending_intents(&self) -> Result<Vec<Intent>> {
        let rows = self.with(|db| {
            db.query(
                "SELECT key, action, version, size, blake3, content_type, name, description FROM intents ORDER BY key",
                &[],
            )
        })?;
        rows.iter()
            .map(|r| {
                let version = NewVersion {
                    key: Key::parse(&r.text(0)).map_err(|e| Error::internal(format!("intent key: {e}")))?,
                    version: r.text(2),
                    size: r.int(3) as u64,
                    blake3: r.text(4),
                    content_type: r.text(5),
                    name: r.opt_text(6),
                    description: r.opt_text(7),
                };
                Ok(if r.text(1) == "remove" { Intent::Remove(version.key) } else { Intent::Install(version) })
            })
            .collect()
    }

    pub fn patch(&self, key: &Key, patch: &MetadataPatch, now: &str) -> Result<Option<Record>> {
        let tags = patch.tags.as_ref().map(|t| serde_json::to_string(t).expect("tags serialize"));
        self.tx(|db| {
            let changed = db.execute(
                "UPDATE datasets SET name = coalesce(?2, name), description = coalesce(?3, description),
                        tags = coalesce(?4, tags), updated_at = ?5
                 WHERE key = ?1",
                vals![key.as_str(), &patch.name, &patch.description, tags, now],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            get(db, key.as_str())
        })
    }

    pub fn delete(&self, key: &Key) -> Result<bool> {
        self.with(|db| Ok(db.execute("DELETE FROM datasets WHERE key = ?1", vals![key.as_str()])? > 0))
    }

    /// The first dataset strictly below `key/`, if any (a key that is a
    /// folder of others cannot become a dataset).
    pub fn first_below(&self, key: &Key) -> Result<Option<String>> {
        let prefix = format!("{key}/");
        let upper = prefix_successor(&prefix);
        self.with(|db| {
            Ok(db
                .query_opt(
                    "SELECT key FROM datasets WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT 1",
                    vals![prefix, upper],
                )?
                .map(|r| r.text(0)))
        })
    }

    /// Any of the given keys that is a dataset.
    pub fn first_existing<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Result<Option<String>> {
        self.with(|db| {
            for key in keys {
                if let Some(found) = db.query_opt("SELECT key FROM datasets WHERE key = ?1", vals![key])? {
                    return Ok(Some(found.text(0)));
                }
            }
            Ok(None)
        })
    }

    /// A trivial query: the database opens and answers.
    pub fn ping(&self) -> Result<()> {
        self.with(|db| db.query("SELECT count(*) FROM datasets WHERE key = ''", &[]).map(drop))
    }

    pub fn count(&self) -> Result<(u64, u64)> {
        self.with(|db| {
            let row = db
                .query_opt("SELECT count(*), CAST(coalesce(sum(size), 0) AS BIGINT) FROM datasets", &[])?
                .ok_or_else(|| Error::internal("count returned no row"))?;
            Ok((row.int(0) as u64, row.int(1) as u64))
        })
    }

    /// Every row in key order, streamed to `f` in pages (fsck, start-up
    /// reconcile, reindex).
    pub fn for_each(&self, mut f: impl FnMut(Record)) -> Result<()> {
        let mut after: Option<String> = None;
        loop {
            let page = self.list("", after.as_deref(), 1000)?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = Some(last.key.clone());
            page.into_iter().for_each(&mut f);
        }
    }

    /// Replaces every dataset row with rows found in the store, in one
    /// transaction (reindex); `old` rows lend their metadata.
    pub fn replace_all(&self, found: &[NewVersion], old: &BTreeMap<String, Record>, now: &str) -> Result<()> {
        self.tx(|db| {
            db.execute("DELETE FROM datasets", &[])?;
            for v in found {
                upsert(db, v, now)?;
                if let Some(row) = old.get(v.key.as_str()) {
                    db.execute(
                        "UPDATE datasets SET created_at = ?2, tags = ?3 WHERE key = ?1",
                        vals![
                            v.key.as_str(),
                            &row.created_at,
                            serde_json::to_string(&row.tags).unwrap_or_else(|_| "[]".into())
                        ],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Notes an object store's multipart upload this node opened.
    pub fn note_multipart(&self, id: &str, path: &str, node: &str) -> Result<()> {
        self.with(|db| {
            db.execute("INSERT INTO multiparts (id, path, node) VALUES (?1, ?2, ?3)", vals![id, path, node]).map(drop)
        })
    }

    pub fn forget_multipart(&self, id: &str) -> Result<()> {
        self.with(|db| db.execute("DELETE FROM multiparts WHERE id = ?1", vals![id]).map(drop))
    }

    /// The multipart uploads `node` noted and never completed or aborted.
    pub fn open_multiparts(&self, node: &str) -> Result<Vec<(String, String)>> {
        self.with(|db| {
            let rows = db.query("SELECT id, path FROM multiparts WHERE node = ?1", vals![node])?;
            Ok(rows.iter().map(|r| (r.text(0), r.text(1))).collect())
        })
    }

    pub fn setting(&self, name: &str) -> Result<Option<String>> {
        self.with(|db| Ok(db.query_opt("SELECT value FROM settings WHERE name = ?1", vals![name])?.map(|r| r.text(0))))
    }

    pub fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        self.with(|db| {
            db.execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                vals![name, value],
            )
            .map(drop)
        })
    }

    /// A shared setting: the value stored under `name`, or `value` stored
    /// now if there is none yet (the first node to ask decides).
    pub fn setting_or_insert(&self, name: &str, value: &str) -> Result<String> {
        self.tx(|db| {
            db.execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                vals![name, value],
            )?;
            let row = db
                .query_opt("SELECT value FROM settings WHERE name = ?1", vals![name])?
                .ok_or_else(|| Error::internal("setting vanished"))?;
            Ok(row.text(0))
        })
    }
}

fn pg_conn(
    pool: &Pool<PostgresConnectionManager<postgres::NoTls>>,
) -> Result<r2d2::PooledConnection<PostgresConnectionManager<postgres::NoTls>>> {
    pool.get().map_err(|e| Error::Unavailable("the index", format!("PostgreSQL pool: {e}")))
}

/// A resumable upload's row. Its offset is not stored: it is the length of
/// its data file (or `length` once completed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    pub id: String,
    pub length: Option<u64>,
    /// The raw `Upload-Metadata` value, echoed on HEAD.
    pub metadata: Option<String>,
    /// The dataset key it commits to (none for a partial upload).
    pub key: Option<String>,
    /// `none`, `partial` or `final`.
    pub concat: String,
    pub created_at: String,
    /// Unix seconds.
    pub expires_at: i64,
    pub completed: bool,
    /// The node whose disk holds the upload's bytes (several nodes share a
    /// PostgreSQL index; each keeps its uploads in progress locally).
    pub node: String,
    /// The name of the token that created it (`""`: none, an open node).
    pub owner: String,
}

const UPLOAD_COLUMNS: &str = "id, length, metadata, key, concat, created_at, expires_at, completed, node, owner";

fn upload_from_row(row: &DbRow) -> UploadRow {
    UploadRow {
        id: row.text(0),
        length: row.opt_int(1).map(|l| l as u64),
        metadata: row.opt_text(2),
        key: row.opt_text(3),
        concat: row.text(4),
        created_at: row.text(5),
        expires_at: row.int(6),
        completed: row.bool(7),
        node: row.text(8),
        owner: row.text(9),
    }
}

/// Resumable uploads that hold a place: neither completed nor expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenUploads {
    pub total: u64,
    /// Those of the new upload's owner.
    pub owner: u64,
}

/// Resumable uploads (tus).
impl Index {
    pub fn create_upload(&self, u: &UploadRow) -> Result<()> {
        self.with(|db| insert_upload(db, u))
    }

    /// Inserts an upload's row if `admit` lets one more in beside the open
    /// uploads (of every node, with a shared index) counted at `now` (Unix
    /// seconds). Count and insert are one transaction that creations take
    /// in turn, so racing creations never pass a cap.
    pub fn create_upload_admitted(
        &self,
        u: &UploadRow,
        now: i64,
        admit: impl FnOnce(OpenUploads) -> Result<()>,
    ) -> Result<()> {
        self.serial_tx(PG_UPLOADS_LOCK, |db| {
            let counts = db
                .query_opt(
                    "SELECT count(*), coalesce(sum(CASE WHEN owner = ?1 THEN 1 ELSE 0 END), 0) FROM uploads
                     WHERE completed = ?2 AND expires_at >= ?3",
                    vals![&u.owner, false, now],
                )?
                .ok_or_else(|| Error::internal("count returned no row"))?;
            admit(OpenUploads { total: counts.int(0) as u64, owner: counts.int(1) as u64 })?;
            insert_upload(db, u)
        })
    }

    pub fn get_upload(&self, id: &str) -> Result<Option<UploadRow>> {
        self.with(|db| {
            Ok(db
                .query_opt(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ?1"), vals![id])?
                .as_ref()
                .map(upload_from_row))
        })
    }

    pub fn set_upload_length(&self, id: &str, length: u64) -> Result<()> {
        self.with(|db| db.execute("UPDATE uploads SET length = ?2 WHERE id = ?1", vals![id, length]).map(drop))
    }

    pub fn touch_upload(&self, id: &str, expires_at: i64) -> Result<()> {
        self.with(|db| db.execute("UPDATE uploads SET expires_at = ?2 WHERE id = ?1", vals![id, expires_at]).map(drop))
    }

    pub fn complete_upload(&self, id: &str) -> Result<()> {
        self.with(|db| db.execute("UPDATE uploads SET completed = ?2 WHERE id = ?1", vals![id, true]).map(drop))
    }

    pub fn delete_upload(&self, id: &str) -> Result<bool> {
        self.with(|db| Ok(db.execute("DELETE FROM uploads WHERE id = ?1", vals![id])? > 0))
    }

    /// This node's uploads whose expiry passed before `now` (Unix seconds).
    /// Rows from before nodes had names (`''`) are this node's.
    pub fn expired_uploads(&self, node: &str, now: i64) -> Result<Vec<String>> {
        self.with(|db| {
            let rows = db
                .query("SELECT id FROM uploads WHERE (node = ?1 OR node = '') AND expires_at < ?2", vals![node, now])?;
            Ok(rows.iter().map(|r| r.text(0)).collect())
        })
    }

    /// Every upload id of this node (fsck: data files without a row are strays).
    pub fn upload_ids(&self, node: &str) -> Result<Vec<String>> {
        self.with(|db| {
            let rows = db.query("SELECT id FROM uploads WHERE node = ?1 OR node = ''", vals![node])?;
            Ok(rows.iter().map(|r| r.text(0)).collect())
        })
    }
}

fn insert_upload(db: &mut dyn Db, u: &UploadRow) -> Result<()> {
    db.execute(
        &format!("INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        vals![
            &u.id,
            u.length,
            &u.metadata,
            &u.key,
            &u.concat,
            &u.created_at,
            u.expires_at,
            u.completed,
            &u.node,
            &u.owner
        ],
    )
    .map(drop)
}

/// Inserts or replaces a row. Metadata of a replaced dataset is kept unless
/// the new version sets it; `created_at` is kept.
fn upsert(db: &mut dyn Db, v: &NewVersion, now: &str) -> Result<Record> {
    let name = v.name.clone().unwrap_or_else(|| v.key.file_name().to_owned());
    db.execute(
        "INSERT INTO datasets (key, name, size, blake3, content_type, created_at, updated_at, description, version)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8)
         ON CONFLICT (key) DO UPDATE SET
            name = CASE WHEN ?9 THEN excluded.name ELSE datasets.name END,
            size = excluded.size, blake3 = excluded.blake3,
            content_type = excluded.content_type, updated_at = excluded.updated_at,
            description = coalesce(excluded.description, datasets.description),
            version = excluded.version",
        vals![
            v.key.as_str(),
            name,
            v.size,
            &v.blake3,
            &v.content_type,
            now,
            &v.description,
            &v.version,
            v.name.is_some()
        ],
    )?;
    get(db, v.key.as_str())?.ok_or_else(|| Error::internal("row vanished after upsert"))
}

fn get(db: &mut dyn Db, key: &str) -> Result<Option<Record>> {
    db.query_opt(&format!("SELECT {COLUMNS} FROM datasets WHERE key = ?1"), vals![key])?
        .as_ref()
        .map(record_from_row)
        .transpose()
}

fn record_from_row(row: &DbRow) -> Result<Record> {
    let key = row.text(0);
    Ok(Record {
        path: Key::parse(&key).map(|k| k.url_path()).unwrap_or_default(),
        name: row.text(1),
        size: row.int(2) as u64,
        blake3: row.text(3),
        content_type: row.text(4),
        created_at: row.text(5),
        updated_at: row.text(6),
        description: row.opt_text(7),
        tags: serde_json::from_str(&row.text(8)).unwrap_or_default(),
        version: row.text(9),
        key,
    })
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
