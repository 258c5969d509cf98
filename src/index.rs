//! The catalog: one SQLite database (WAL, synchronous=FULL) holding a row per
//! dataset. Rows are keyed by the dataset key; the default BINARY collation
//! orders keys bytewise, which is the order of the API. Every call blocks:
//! callers run them on blocking threads.

use std::path::Path;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::key::Key;

/// What the catalog knows about a dataset (the API's record, plus the inode
/// that ties the row to the file it describes).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
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
    #[serde(skip)]
    pub inode: u64,
}

/// The columns a commit writes.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub key: Key,
    pub size: u64,
    pub blake3: String,
    pub content_type: String,
    pub inode: u64,
    pub name: Option<String>,
    pub description: Option<String>,
}

/// A change of the data directory about to happen, committed to the index
/// before it, so that a crash in the middle can be finished or rolled back
/// at the next start: the file system and the index cannot change in one
/// step, and the intent makes the pair recoverable.
#[derive(Debug, Clone)]
pub enum Intent {
    /// The file with this inode is being renamed to the key's path.
    Install(NewVersion),
    /// The key's file is being removed.
    Remove(Key),
}

/// Metadata a client may change.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

const MIGRATIONS: &[&str] = &[
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
];

const COLUMNS: &str = "key, name, size, blake3, content_type, created_at, updated_at, description, tags, inode";

#[derive(Clone)]
pub struct Index {
    pool: Pool<SqliteConnectionManager>,
}

impl Index {
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
        let index = Index { pool };
        index.migrate()?;
        Ok(index)
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>> {
        self.pool.get().map_err(|e| Error::internal(format!("index pool: {e}")))
    }

    fn migrate(&self) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn get(&self, key: &Key) -> Result<Option<Record>> {
        let conn = self.conn()?;
        get(&conn, key.as_str())
    }

    /// One page in key order: keys starting with `prefix`, strictly after
    /// `after`. Keyset pagination on the primary key: each page is one
    /// index range scan, however deep.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<Vec<Record>> {
        let conn = self.conn()?;
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
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![lower, upper, limit as i64], record_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Inserts or replaces a dataset's row (reindex, fsck repairs).
    pub fn upsert(&self, v: &NewVersion, now: &str) -> Result<Record> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let record = upsert(&tx, v, now)?;
        tx.commit()?;
        Ok(record)
    }

    /// Records an intent durably (one commit) before the change it names.
    pub fn begin(&self, intent: &Intent) -> Result<()> {
        let conn = self.conn()?;
        match intent {
            Intent::Install(v) => conn.execute(
                "INSERT OR REPLACE INTO intents (key, action, inode, size, blake3, content_type, name, description)
                 VALUES (?1, 'install', ?2, ?3, ?4, ?5, ?6, ?7)",
                params![v.key.as_str(), v.inode as i64, v.size as i64, v.blake3, v.content_type, v.name, v.description],
            )?,
            Intent::Remove(key) => {
                conn.execute("INSERT OR REPLACE INTO intents (key, action) VALUES (?1, 'remove')", [key.as_str()])?
            }
        };
        Ok(())
    }

    /// Drops an intent whose change did not happen.
    pub fn abandon(&self, key: &Key) -> Result<()> {
        let conn = self.conn()?;
        conn.execute("DELETE FROM intents WHERE key = ?1", [key.as_str()])?;
        Ok(())
    }

    /// The change happened: the row follows and the intent goes, in one
    /// transaction. Returns the new record (none for a removal).
    pub fn complete(&self, intent: &Intent, now: &str) -> Result<Option<Record>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let (key, record) = match intent {
            Intent::Install(v) => (&v.key, Some(upsert(&tx, v, now)?)),
            Intent::Remove(key) => {
                tx.execute("DELETE FROM datasets WHERE key = ?1", [key.as_str()])?;
                (key, None)
            }
        };
        tx.execute("DELETE FROM intents WHERE key = ?1", [key.as_str()])?;
        tx.commit()?;
        Ok(record)
    }

    /// Intents a crash left behind.
    pub fn pending_intents(&self) -> Result<Vec<Intent>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT key, action, inode, size, blake3, content_type, name, description FROM intents ORDER BY key",
        )?;
        let rows = stmt.query_map([], |r| {
            let key: String = r.get(0)?;
            let action: String = r.get(1)?;
            let version = NewVersion {
                key: Key::parse(&key).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?,
                inode: r.get::<_, i64>(2)? as u64,
                size: r.get::<_, i64>(3)? as u64,
                blake3: r.get(4)?,
                content_type: r.get(5)?,
                name: r.get(6)?,
                description: r.get(7)?,
            };
            Ok(if action == "remove" { Intent::Remove(version.key) } else { Intent::Install(version) })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn patch(&self, key: &Key, patch: &MetadataPatch, now: &str) -> Result<Option<Record>> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let tags = patch.tags.as_ref().map(|t| serde_json::to_string(t).expect("tags serialize"));
        let changed = tx.execute(
            "UPDATE datasets SET name = coalesce(?2, name), description = coalesce(?3, description),
                    tags = coalesce(?4, tags), updated_at = ?5
             WHERE key = ?1",
            params![key.as_str(), patch.name, patch.description, tags, now],
        )?;
        if changed == 0 {
            return Ok(None);
        }
        let record = get(&tx, key.as_str())?;
        tx.commit()?;
        Ok(record)
    }

    pub fn delete(&self, key: &Key) -> Result<bool> {
        let conn = self.conn()?;
        Ok(conn.execute("DELETE FROM datasets WHERE key = ?1", [key.as_str()])? > 0)
    }

    /// The first dataset strictly below `key/`, if any (a key that is a
    /// folder of others cannot become a dataset).
    pub fn first_below(&self, key: &Key) -> Result<Option<String>> {
        let conn = self.conn()?;
        let prefix = format!("{key}/");
        let upper = prefix_successor(&prefix);
        Ok(conn
            .query_row(
                "SELECT key FROM datasets WHERE key >= ?1 AND key < ?2 ORDER BY key LIMIT 1",
                params![prefix, upper],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Any of the given keys that is a dataset.
    pub fn first_existing<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Result<Option<String>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached("SELECT key FROM datasets WHERE key = ?1")?;
        for key in keys {
            if let Some(found) = stmt.query_row([key], |r| r.get(0)).optional()? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// A trivial query: the database opens and answers.
    pub fn ping(&self) -> Result<()> {
        let conn = self.conn()?;
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?;
        Ok(())
    }

    pub fn count(&self) -> Result<(u64, u64)> {
        let conn = self.conn()?;
        Ok(conn.query_row("SELECT count(*), coalesce(sum(size), 0) FROM datasets", [], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?)
    }

    /// Every row in key order, streamed to `f` (fsck, start-up reconcile).
    pub fn for_each(&self, mut f: impl FnMut(Record)) -> Result<()> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM datasets ORDER BY key"))?;
        let rows = stmt.query_map([], record_from_row)?;
        for row in rows {
            f(row?);
        }
        Ok(())
    }

    /// Runs `f` inside one transaction on one connection (bulk loads).
    pub fn with_transaction<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
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
}

const UPLOAD_COLUMNS: &str = "id, length, metadata, key, concat, created_at, expires_at, completed";

fn upload_from_row(row: &Row<'_>) -> rusqlite::Result<UploadRow> {
    Ok(UploadRow {
        id: row.get(0)?,
        length: row.get::<_, Option<i64>>(1)?.map(|l| l as u64),
        metadata: row.get(2)?,
        key: row.get(3)?,
        concat: row.get(4)?,
        created_at: row.get(5)?,
        expires_at: row.get(6)?,
        completed: row.get(7)?,
    })
}

/// Resumable uploads (tus).
impl Index {
    pub fn create_upload(&self, u: &UploadRow) -> Result<()> {
        let conn = self.conn()?;
        conn.execute(
            &format!("INSERT INTO uploads ({UPLOAD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                u.id,
                u.length.map(|l| l as i64),
                u.metadata,
                u.key,
                u.concat,
                u.created_at,
                u.expires_at,
                u.completed
            ],
        )?;
        Ok(())
    }

    pub fn get_upload(&self, id: &str) -> Result<Option<UploadRow>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ?1"))?;
        Ok(stmt.query_row([id], upload_from_row).optional()?)
    }

    pub fn set_upload_length(&self, id: &str, length: u64) -> Result<()> {
        let conn = self.conn()?;
        conn.execute("UPDATE uploads SET length = ?2 WHERE id = ?1", params![id, length as i64])?;
        Ok(())
    }

    pub fn touch_upload(&self, id: &str, expires_at: i64) -> Result<()> {
        let conn = self.conn()?;
        conn.execute("UPDATE uploads SET expires_at = ?2 WHERE id = ?1", params![id, expires_at])?;
        Ok(())
    }

    pub fn complete_upload(&self, id: &str) -> Result<()> {
        let conn = self.conn()?;
        conn.execute("UPDATE uploads SET completed = 1 WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn delete_upload(&self, id: &str) -> Result<bool> {
        let conn = self.conn()?;
        Ok(conn.execute("DELETE FROM uploads WHERE id = ?1", [id])? > 0)
    }

    /// Uploads whose expiry passed before `now` (Unix seconds).
    pub fn expired_uploads(&self, now: i64) -> Result<Vec<String>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached("SELECT id FROM uploads WHERE expires_at < ?1")?;
        let ids = stmt.query_map([now], |r| r.get(0))?;
        Ok(ids.collect::<rusqlite::Result<Vec<String>>>()?)
    }

    /// Every upload id (fsck: data files without a row are strays).
    pub fn upload_ids(&self) -> Result<Vec<String>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT id FROM uploads")?;
        let ids = stmt.query_map([], |r| r.get(0))?;
        Ok(ids.collect::<rusqlite::Result<Vec<String>>>()?)
    }
}

/// Inserts a row as found on disk (reindex, bulk loads).
pub fn insert_found(tx: &Connection, key: &str, size: u64, blake3: &str, inode: u64, now: &str) -> Result<()> {
    let name = key.rsplit('/').next().unwrap_or(key);
    tx.execute(
        "INSERT OR REPLACE INTO datasets (key, name, size, blake3, content_type, created_at, updated_at, inode)
         VALUES (?1, ?2, ?3, ?4, 'application/octet-stream', ?5, ?5, ?6)",
        params![key, name, size as i64, blake3, now, inode as i64],
    )?;
    Ok(())
}

/// Inserts or replaces a row. Metadata of a replaced dataset is kept unless
/// the new version sets it; `created_at` is kept.
fn upsert(tx: &Connection, v: &NewVersion, now: &str) -> Result<Record> {
    let name = v.name.clone().unwrap_or_else(|| v.key.file_name().to_owned());
    tx.execute(
        "INSERT INTO datasets (key, name, size, blake3, content_type, created_at, updated_at, description, inode)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8)
         ON CONFLICT (key) DO UPDATE SET
            name = CASE WHEN ?9 THEN excluded.name ELSE name END,
            size = excluded.size, blake3 = excluded.blake3,
            content_type = excluded.content_type, updated_at = excluded.updated_at,
            description = coalesce(excluded.description, description),
            inode = excluded.inode",
        params![
            v.key.as_str(),
            name,
            v.size as i64,
            v.blake3,
            v.content_type,
            now,
            v.description,
            v.inode as i64,
            v.name.is_some(),
        ],
    )?;
    let record = get(tx, v.key.as_str())?.ok_or_else(|| Error::internal("row vanished after upsert"))?;
    Ok(record)
}

fn get(conn: &Connection, key: &str) -> Result<Option<Record>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM datasets WHERE key = ?1"))?;
    Ok(stmt.query_row([key], record_from_row).optional()?)
}

fn record_from_row(row: &Row<'_>) -> rusqlite::Result<Record> {
    let key: String = row.get(0)?;
    let tags: String = row.get(8)?;
    Ok(Record {
        path: Key::parse(&key).map(|k| k.url_path()).unwrap_or_default(),
        name: row.get(1)?,
        size: row.get::<_, i64>(2)? as u64,
        blake3: row.get(3)?,
        content_type: row.get(4)?,
        created_at: row.get(5)?,
        updated_at: row.get(6)?,
        description: row.get(7)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        inode: row.get::<_, i64>(9)? as u64,
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
