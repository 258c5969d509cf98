//! The `datasets` table: a row per dataset, keyed by the dataset key.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::db::{vals, Db, DbRow};
use super::{prefix_successor, Index};
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
    /// Its number among the key's versions.
    #[serde(skip)]
    pub number: i64,
    /// A scrub found its stored bytes damaged: they are not served.
    #[serde(skip)]
    pub corrupt: bool,
}

impl Record {
    /// Its entity tag: the blake3 of its bytes, quoted (RFC 9110 §8.8.3).
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.blake3)
    }
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
    /// The store's version of the blob that keeps these bytes for older
    /// versions (the same as `version` on the filesystem, where the key's
    /// file is the blob).
    pub blob_version: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// The token that uploaded it, when tokens are configured.
    pub uploaded_by: Option<String>,
}

/// Metadata a client may change.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetadataPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub tags: Option<Vec<String>>,
}

const COLUMNS: &str =
    "key, name, size, blake3, content_type, created_at, updated_at, description, tags, version, number";
/// Whether a scrub found the row's bytes damaged: asked only where the
/// bytes are about to be served (one row), not for catalog pages.
const CORRUPT: &str = "coalesce((SELECT CAST(corrupt AS INTEGER) FROM blobs b
    WHERE b.blake3 = datasets.blake3 AND b.size = datasets.size), 0)";

impl Index {
    pub fn get(&self, key: &Key) -> Result<Option<Record>> {
        self.with(|db| get(db, key.as_str()))
    }

    /// [`Index::get`] for the read path: with SQLite, a row read since the
    /// last write committed is answered from memory. This process makes
    /// every write to that catalog (the data directory's lock keeps `fsck`
    /// and `reindex` out while a node runs), and every connection that
    /// changed rows clears the cache as it goes back to the pool, before
    /// its caller answers anyone (`sqlite::Conn`). A shared index is
    /// written by other nodes too: it is not cached.
    pub fn get_cached(&self, key: &Key) -> Result<Option<Arc<Record>>> {
        let loaded = || Ok(self.get(key)?.map(Arc::new));
        let Some(rows) = self.row_cache() else { return loaded() };
        match rows.get(key.as_str()) {
            Some(record) => Ok(Some(record)),
            None => rows.load(key.as_str(), loaded),
        }
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
        // The CAST: PostgreSQL cannot infer the type of a parameter seen
        // only in `IS NULL`.
        let sql = format!(
            "SELECT {COLUMNS} FROM datasets WHERE key {} $1 AND (CAST($2 AS TEXT) IS NULL OR key < $2)
             ORDER BY key LIMIT $3",
            if lower_inclusive { ">=" } else { ">" }
        );
        self.with(|db| db.query(&sql, vals![lower, upper, limit as i64])?.into_iter().map(record_from_row).collect())
    }

    /// Inserts or replaces a dataset's row (reindex, fsck repairs) and
    /// makes it a version.
    pub fn upsert(&self, v: &NewVersion, now: &str, retention: super::Retention) -> Result<Record> {
        self.tx(|db| upsert(db, v, now, retention).map(|(record, _)| record))
    }

    pub fn patch(&self, key: &Key, patch: &MetadataPatch, now: &str) -> Result<Option<Record>> {
        let tags = patch.tags.as_ref().map(|t| serde_json::to_string(t).expect("tags serialize"));
        self.tx(|db| {
            let changed = db.execute(
                "UPDATE datasets SET name = coalesce($2, name), description = coalesce($3, description),
                        tags = coalesce($4, tags), updated_at = $5
                 WHERE key = $1",
                vals![key.as_str(), &patch.name, &patch.description, tags, now],
            )?;
            if changed == 0 {
                return Ok(None);
            }
            get(db, key.as_str())
        })
    }

    pub fn delete(&self, key: &Key) -> Result<bool> {
        self.with(|db| Ok(db.execute("DELETE FROM datasets WHERE key = $1", vals![key.as_str()])? > 0))
    }

    /// The first dataset strictly below `key/`, if any (a key that is a
    /// folder of others cannot become a dataset).
    pub fn first_below(&self, key: &Key) -> Result<Option<String>> {
        let prefix = format!("{key}/");
        let upper = prefix_successor(&prefix);
        self.with(|db| {
            Ok(db
                .query_opt(
                    "SELECT key FROM datasets WHERE key >= $1 AND key < $2 ORDER BY key LIMIT 1",
                    vals![prefix, upper],
                )?
                .map(|r| r.text(0)))
        })
    }

    /// Any of the given keys that is a dataset.
    pub fn first_existing<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> Result<Option<String>> {
        self.with(|db| {
            for key in keys {
                if let Some(found) = db.query_opt("SELECT key FROM datasets WHERE key = $1", vals![key])? {
                    return Ok(Some(found.text(0)));
                }
            }
            Ok(None)
        })
    }

    /// A page of the rows from before versions (no version number yet),
    /// in key order after `after`.
    pub fn unversioned(&self, after: Option<&str>, limit: usize) -> Result<Vec<Record>> {
        let sql = format!("SELECT {COLUMNS} FROM datasets WHERE number = 0 AND key > $1 ORDER BY key LIMIT $2");
        self.with(|db| {
            db.query(&sql, vals![after.unwrap_or(""), limit as i64])?.into_iter().map(record_from_row).collect()
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
    /// transaction (reindex); `old` rows lend their metadata. History goes:
    /// each row is version 1 of its key, its blob the one `blob_version`
    /// names, or (none known yet) the node's next start makes it so.
    pub fn replace_all(&self, found: &[NewVersion], old: &BTreeMap<String, Record>, now: &str) -> Result<()> {
        self.tx(|db| {
            db.execute("DELETE FROM datasets", &[])?;
            db.execute("DELETE FROM versions", &[])?;
            db.execute("DELETE FROM blobs", &[])?;
            let everything = super::Retention { keep: u64::MAX >> 2, keep_for: std::time::Duration::MAX };
            for v in found {
                if v.blob_version.is_empty() {
                    insert(db, v, now, 0)?;
                } else {
                    upsert(db, v, now, everything)?;
                }
                if let Some(row) = old.get(v.key.as_str()) {
                    db.execute(
                        "UPDATE datasets SET created_at = $2, tags = $3 WHERE key = $1",
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
}

/// Inserts or replaces a row, as a new version of the key (see
/// [`super::versions::record`]). Metadata of a replaced dataset is kept
/// unless the new version sets it; `created_at` is kept. Returns the record
/// and the blobs that pruning doomed.
pub(super) fn upsert(
    db: &mut dyn Db,
    v: &NewVersion,
    now: &str,
    retention: super::Retention,
) -> Result<(Record, Vec<super::Blob>)> {
    let blob_version = if v.blob_version.is_empty() { &v.version } else { &v.blob_version };
    let (number, doomed) = super::versions::record(db, v, blob_version, retention, now, crate::timestamp::unix_now())?;
    insert(db, v, now, number)?;
    let record = get(db, v.key.as_str())?.ok_or_else(|| Error::internal("row vanished after upsert"))?;
    Ok((record, doomed))
}

fn insert(db: &mut dyn Db, v: &NewVersion, now: &str, number: i64) -> Result<()> {
    let name = v.name.clone().unwrap_or_else(|| v.key.file_name().to_owned());
    db.execute(
        "INSERT INTO datasets (key, name, size, blake3, content_type, created_at, updated_at, description, version, number)
         VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $10)
         ON CONFLICT (key) DO UPDATE SET
            name = CASE WHEN $9 THEN excluded.name ELSE datasets.name END,
            size = excluded.size, blake3 = excluded.blake3,
            content_type = excluded.content_type, updated_at = excluded.updated_at,
            description = coalesce(excluded.description, datasets.description),
            version = excluded.version, number = excluded.number",
        vals![
            v.key.as_str(),
            name,
            v.size,
            &v.blake3,
            &v.content_type,
            now,
            &v.description,
            &v.version,
            v.name.is_some(),
            number
        ],
    )
    .map(drop)
}

pub(super) fn remove(db: &mut dyn Db, key: &Key) -> Result<()> {
    db.execute("DELETE FROM datasets WHERE key = $1", vals![key.as_str()]).map(drop)
}

fn get(db: &mut dyn Db, key: &str) -> Result<Option<Record>> {
    let Some(row) = db.query_opt(&format!("SELECT {COLUMNS}, {CORRUPT} FROM datasets WHERE key = $1"), vals![key])?
    else {
        return Ok(None);
    };
    let corrupt = row.bool(11);
    Ok(Some(Record { corrupt, ..record_from_row(row)? }))
}

fn record_from_row(mut row: DbRow) -> Result<Record> {
    let key = row.take_text(0);
    Ok(Record {
        path: Key::parse(&key).map(|k| k.url_path()).unwrap_or_default(),
        name: row.take_text(1),
        size: row.int(2) as u64,
        blake3: row.take_text(3),
        content_type: row.take_text(4),
        created_at: row.take_text(5),
        updated_at: row.take_text(6),
        description: row.take_opt_text(7),
        tags: serde_json::from_str(&row.take_text(8)).unwrap_or_default(),
        version: row.take_text(9),
        number: row.int(10),
        // Asked by `get` only (see CORRUPT).
        corrupt: false,
        key,
    })
}
