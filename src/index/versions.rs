//! The `versions` and `blobs` tables: every commit to a key is a version,
//! numbered per key; identical bytes (same blake3 and size) are one blob,
//! however many versions refer to it. A blob's references are the version
//! rows that name it, counted by the database in the transaction that
//! changes them, so they cannot drift. A blob left without references is
//! marked `doomed` in that transaction; its bytes are removed after it, and
//! its row last, so a crash in between leaves a doomed row that the next
//! start finishes.

use serde::Serialize;

use super::db::{vals, Db, DbRow};
use super::Index;
use crate::error::Result;
use crate::key::Key;

/// One version of a key, as `GET /versions/{key}` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Version {
    /// Grows by one with each commit to the key.
    pub version: i64,
    pub blake3: String,
    pub size: u64,
    pub content_type: String,
    pub created_at: String,
    /// The token's name, when tokens are configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uploaded_by: Option<String>,
    /// Whether the key's current bytes are this version.
    pub current: bool,
}

/// Stored bytes, shared by every version with their blake3 and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub blake3: String,
    pub size: u64,
    /// The store's version of the blob's bytes (an inode; an ETag).
    pub version: String,
    /// A scrub found the bytes no longer hash to `blake3`.
    pub corrupt: bool,
}

/// How many versions a key keeps, and for how long after they stopped
/// being current. The current version is always kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Versions per key, the current one included; 0 and 1 keep only it.
    pub keep: u64,
    pub keep_for: std::time::Duration,
}

impl Retention {
    /// `keep_versions` and `keep_versions_for`.
    pub fn of(settings: &crate::config::Settings) -> Retention {
        Retention { keep: settings.keep_versions, keep_for: settings.keep_versions_for.0 }
    }

    /// Versioning off: a replace or delete frees the old bytes at once.
    pub fn off(&self) -> bool {
        self.keep <= 1
    }
}

/// Logical and physical bytes: every kept version's size, and every
/// stored blob's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub version_bytes: u64,
    pub stored_bytes: u64,
}

const VERSION_COLUMNS: &str = "v.number, v.blake3, v.size, v.content_type, v.created_at, v.uploaded_by,
     CAST(d.key IS NOT NULL AS INTEGER)";
const BLOB_COLUMNS: &str = "blake3, size, version, corrupt";

impl Index {
    /// A key's versions, newest first, strictly older than `before`.
    pub fn versions(&self, key: &Key, before: Option<i64>, limit: usize) -> Result<Vec<Version>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM versions v
             LEFT JOIN datasets d ON d.key = v.key AND d.number = v.number
             WHERE v.key = $1 AND v.number < $2 ORDER BY v.number DESC LIMIT $3"
        );
        self.with(|db| {
            let rows = db.query(&sql, vals![key.as_str(), before.unwrap_or(i64::MAX), limit as i64])?;
            Ok(rows.iter().map(version_from_row).collect())
        })
    }

    /// One version of a key and its blob.
    pub fn version(&self, key: &Key, number: i64) -> Result<Option<(Version, Blob)>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS}, b.version, b.corrupt FROM versions v
             LEFT JOIN datasets d ON d.key = v.key AND d.number = v.number
             JOIN blobs b ON b.blake3 = v.blake3 AND b.size = v.size
             WHERE v.key = $1 AND v.number = $2"
        );
        self.with(|db| {
            Ok(db.query_opt(&sql, vals![key.as_str(), number])?.map(|row| {
                let version = version_from_row(&row);
                let blob = Blob {
                    blake3: version.blake3.clone(),
                    size: version.size,
                    version: row.text(7),
                    corrupt: row.bool(8),
                };
                (version, blob)
            }))
        })
    }

    /// The blob of these bytes, if stored and not doomed.
    pub fn blob(&self, blake3: &str, size: u64) -> Result<Option<Blob>> {
        let sql = format!("SELECT {BLOB_COLUMNS} FROM blobs WHERE blake3 = $1 AND size = $2 AND doomed = FALSE");
        self.with(|db| Ok(db.query_opt(&sql, vals![blake3, size])?.as_ref().map(blob_from_row)))
    }

    /// The blob of these bytes if it is doomed (fsck).
    pub fn doomed_blob(&self, blake3: &str, size: u64) -> Result<Option<Blob>> {
        let sql = format!("SELECT {BLOB_COLUMNS} FROM blobs WHERE blake3 = $1 AND size = $2 AND doomed = TRUE");
        self.with(|db| Ok(db.query_opt(&sql, vals![blake3, size])?.as_ref().map(blob_from_row)))
    }

    /// Blobs whose bytes are to be removed (freed, or left by a crash).
    pub fn doomed_blobs(&self) -> Result<Vec<Blob>> {
        let sql = format!("SELECT {BLOB_COLUMNS} FROM blobs WHERE doomed = TRUE");
        self.with(|db| Ok(db.query(&sql, &[])?.iter().map(blob_from_row).collect()))
    }

    /// Whether the bytes of this doomed blob may go now: its row is still
    /// doomed, as this version, and no version refers to it. A doomed row
    /// that a version refers to (pruning read the versions before a commit
    /// that took the blob up wrote its row) is revived. The caller holds
    /// the blob's lock, so no commit is between taking it up and its row.
    pub fn confirm_doomed(&self, blob: &Blob) -> Result<bool> {
        self.tx(|db| {
            let referred = "SELECT 1 FROM versions WHERE blake3 = $1 AND size = $2 LIMIT 1";
            if !db.query(referred, vals![&blob.blake3, blob.size])?.is_empty() {
                db.execute(
                    "UPDATE blobs SET doomed = FALSE WHERE blake3 = $1 AND size = $2",
                    vals![&blob.blake3, blob.size],
                )?;
                return Ok(false);
            }
            let doomed = "SELECT 1 FROM blobs WHERE blake3 = $1 AND size = $2 AND version = $3 AND doomed = TRUE";
            Ok(!db.query(doomed, vals![&blob.blake3, blob.size, &blob.version])?.is_empty())
        })
    }

    /// A doomed blob's bytes are gone: its row goes too.
    pub fn forget_blob(&self, blob: &Blob) -> Result<()> {
        self.with(|db| {
            db.execute(
                "DELETE FROM blobs WHERE blake3 = $1 AND size = $2 AND doomed = TRUE",
                vals![&blob.blake3, blob.size],
            )
            .map(drop)
        })
    }

    /// One page of the stored blobs in (blake3, size) order, after `after`
    /// (scrub, fsck).
    pub fn blobs_after(&self, after: Option<&Blob>, limit: usize) -> Result<Vec<Blob>> {
        let (blake3, size) = after.map_or((String::new(), -1), |b| (b.blake3.clone(), b.size as i64));
        let sql = format!(
            "SELECT {BLOB_COLUMNS} FROM blobs
             WHERE doomed = FALSE AND (blake3 > $1 OR (blake3 = $1 AND size > $2))
             ORDER BY blake3, size LIMIT $3"
        );
        self.with(|db| Ok(db.query(&sql, vals![blake3, size, limit as i64])?.iter().map(blob_from_row).collect()))
    }

    /// Current keys whose row names these bytes under another store
    /// version than `version` (still links to a blob's replaced bytes).
    pub fn stale_links(&self, blake3: &str, size: u64, version: &str) -> Result<Vec<String>> {
        self.with(|db| {
            let rows = db.query(
                "SELECT key FROM datasets WHERE blake3 = $1 AND size = $2 AND version <> $3 ORDER BY key",
                vals![blake3, size, version],
            )?;
            Ok(rows.iter().map(|r| r.text(0)).collect())
        })
    }

    /// The key's current file is now `version` (the same bytes, relinked).
    pub fn set_current_version(&self, key: &Key, version: &str) -> Result<()> {
        self.with(|db| {
            db.execute("UPDATE datasets SET version = $2 WHERE key = $1", vals![key.as_str(), version]).map(drop)
        })
    }

    /// Blobs no version refers to that are not doomed (fsck).
    pub fn unreferenced_blobs(&self) -> Result<Vec<Blob>> {
        let sql = format!(
            "SELECT {BLOB_COLUMNS} FROM blobs b WHERE doomed = FALSE
               AND NOT EXISTS (SELECT 1 FROM versions v WHERE v.blake3 = b.blake3 AND v.size = b.size)"
        );
        self.with(|db| Ok(db.query(&sql, &[])?.iter().map(blob_from_row).collect()))
    }

    /// Versions whose bytes have no blob row (fsck): key and number.
    pub fn versions_without_blob(&self) -> Result<Vec<(String, i64)>> {
        self.with(|db| {
            let rows = db.query(
                "SELECT key, number FROM versions v WHERE NOT EXISTS
                   (SELECT 1 FROM blobs b WHERE b.blake3 = v.blake3 AND b.size = v.size AND b.doomed = FALSE)
                 ORDER BY key, number",
                &[],
            )?;
            Ok(rows.iter().map(|r| (r.text(0), r.int(1))).collect())
        })
    }

    /// Drops the versions of a blob whose bytes are gone, except a current
    /// one; whether a current version still names it (fsck repair).
    pub fn drop_versions_of_blob(&self, blob: &Blob) -> Result<bool> {
        self.tx(|db| {
            db.execute(
                "DELETE FROM versions WHERE blake3 = $1 AND size = $2 AND NOT EXISTS
                   (SELECT 1 FROM datasets d WHERE d.key = versions.key AND d.number = versions.number)",
                vals![&blob.blake3, blob.size],
            )?;
            let left = db.query_opt(
                "SELECT 1 FROM versions WHERE blake3 = $1 AND size = $2 LIMIT 1",
                vals![&blob.blake3, blob.size],
            )?;
            Ok(left.is_some())
        })
    }

    /// Marks the blob doomed (fsck found nothing refers to it).
    pub fn doom_blob(&self, blob: &Blob) -> Result<()> {
        self.with(|db| {
            db.execute("UPDATE blobs SET doomed = TRUE WHERE blake3 = $1 AND size = $2", vals![&blob.blake3, blob.size])
                .map(drop)
        })
    }

    /// Marks a blob corrupt (a scrub found other bytes), or clean again.
    pub fn set_corrupt(&self, blob: &Blob, corrupt: bool) -> Result<()> {
        self.with(|db| {
            db.execute(
                "UPDATE blobs SET corrupt = $3 WHERE blake3 = $1 AND size = $2",
                vals![&blob.blake3, blob.size, corrupt],
            )
            .map(drop)
        })
    }

    /// Every key and version number that refers to these bytes.
    pub fn referrers(&self, blake3: &str, size: u64) -> Result<Vec<(String, i64)>> {
        self.with(|db| {
            let rows = db.query(
                "SELECT key, number FROM versions WHERE blake3 = $1 AND size = $2 ORDER BY key, number",
                vals![blake3, size],
            )?;
            Ok(rows.iter().map(|r| (r.text(0), r.int(1))).collect())
        })
    }

    /// Removes every version of `key` (it is no longer in the catalog);
    /// returns the blobs this doomed.
    pub fn purge_versions(&self, key: &Key) -> Result<Vec<Blob>> {
        self.tx(|db| purge(db, key))
    }

    /// Removes the versions that stopped being current before `cutoff`
    /// (Unix seconds); returns the blobs this doomed.
    pub fn prune_replaced_before(&self, cutoff: i64) -> Result<Vec<Blob>> {
        self.tx(|db| {
            let freed = db.query(
                "DELETE FROM versions WHERE replaced_at IS NOT NULL AND replaced_at < $1 RETURNING blake3, size",
                vals![cutoff],
            )?;
            doom_unreferenced(db, &freed)
        })
    }

    /// A dataset from before versions becomes version 1 of its key (or
    /// one past what its key had), its bytes the blob `blob_version`.
    pub fn adopt(&self, record: &super::Record, blob_version: &str) -> Result<()> {
        self.tx(|db| {
            let number = next_number(db, &record.key)?;
            db.execute(
                "INSERT INTO versions (key, number, blake3, size, content_type, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                vals![&record.key, number, &record.blake3, record.size, &record.content_type, &record.updated_at],
            )?;
            db.execute(
                "INSERT INTO blobs (blake3, size, version) VALUES ($1, $2, $3)
                 ON CONFLICT (blake3, size) DO UPDATE SET doomed = FALSE",
                vals![&record.blake3, record.size, blob_version],
            )?;
            db.execute("UPDATE datasets SET number = $2 WHERE key = $1", vals![&record.key, number]).map(drop)
        })
    }

    /// Logical and physical bytes (kept by the schema's triggers).
    pub fn totals(&self) -> Result<Totals> {
        self.with(|db| {
            let row = db
                .query_opt("SELECT version_bytes, stored_bytes FROM totals WHERE id = 1", &[])?
                .ok_or_else(|| crate::error::Error::internal("the totals row is missing"))?;
            Ok(Totals { version_bytes: row.int(0) as u64, stored_bytes: row.int(1) as u64 })
        })
    }
}

/// The number of `key`'s next version: one past the highest it ever had.
/// Never one it had before, even once all its versions are gone: a number
/// names the same bytes for good (a URL signed for it, a client resuming a
/// download of it). The counter is the one record of that highest number
/// (migration 11 filled it from the versions kept before), so a commit
/// reads and writes one row and does not scan the key's versions.
fn next_number(db: &mut dyn Db, key: &str) -> Result<i64> {
    let row = db.query_opt(
        "INSERT INTO version_numbers (key, last) VALUES ($1, 1)
         ON CONFLICT (key) DO UPDATE SET last = version_numbers.last + 1
         RETURNING last",
        vals![key],
    )?;
    row.map(|r| r.int(0)).ok_or_else(|| crate::error::Error::internal("no version number was returned"))
}

/// Inside a commit's transaction: the new version of `key` (number one
/// past the highest it ever had), the old current one marked replaced, the blob
/// recorded, and versions past `retention.keep` pruned. Returns the new
/// number and the blobs pruning doomed.
pub(super) fn record(
    db: &mut dyn Db,
    v: &super::NewVersion,
    blob_version: &str,
    retention: Retention,
    now: &str,
    now_secs: i64,
) -> Result<(i64, Vec<Blob>)> {
    let key = v.key.as_str();
    let number = next_number(db, key)?;
    db.execute("UPDATE versions SET replaced_at = $2 WHERE key = $1 AND replaced_at IS NULL", vals![key, now_secs])?;
    db.execute(
        "INSERT INTO versions (key, number, blake3, size, content_type, created_at, uploaded_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        vals![key, number, &v.blake3, v.size, &v.content_type, now, &v.uploaded_by],
    )?;
    // New bytes for a blob clear its corrupt mark: they were just hashed.
    db.execute(
        "INSERT INTO blobs (blake3, size, version) VALUES ($1, $2, $3)
         ON CONFLICT (blake3, size) DO UPDATE SET doomed = FALSE,
            corrupt = CASE WHEN blobs.version = excluded.version THEN blobs.corrupt ELSE FALSE END,
            version = excluded.version",
        vals![&v.blake3, v.size, blob_version],
    )?;
    let freed = db.query(
        "DELETE FROM versions WHERE key = $1 AND number <= $2 RETURNING blake3, size",
        vals![key, number - retention.keep.max(1) as i64],
    )?;
    Ok((number, doom_unreferenced(db, &freed)?))
}

/// Inside a delete's transaction: the key's current version stops being
/// current; with versioning off, its versions go.
pub(super) fn replaced(db: &mut dyn Db, key: &Key, retention: Retention, now_secs: i64) -> Result<Vec<Blob>> {
    if retention.off() {
        return purge(db, key);
    }
    db.execute(
        "UPDATE versions SET replaced_at = $2 WHERE key = $1 AND replaced_at IS NULL",
        vals![key.as_str(), now_secs],
    )?;
    Ok(Vec::new())
}

pub(super) fn purge(db: &mut dyn Db, key: &Key) -> Result<Vec<Blob>> {
    let freed = db.query("DELETE FROM versions WHERE key = $1 RETURNING blake3, size", vals![key.as_str()])?;
    doom_unreferenced(db, &freed)
}

/// Marks doomed each of these blobs that no version refers to any more.
fn doom_unreferenced(db: &mut dyn Db, freed: &[DbRow]) -> Result<Vec<Blob>> {
    let mut doomed = Vec::new();
    for row in freed {
        let (blake3, size) = (row.text(0), row.int(1));
        let sql = format!(
            "UPDATE blobs SET doomed = TRUE WHERE blake3 = $1 AND size = $2 AND doomed = FALSE
               AND NOT EXISTS (SELECT 1 FROM versions WHERE blake3 = $1 AND size = $2)
             RETURNING {BLOB_COLUMNS}"
        );
        doomed.extend(db.query(&sql, vals![blake3, size])?.iter().map(blob_from_row));
    }
    Ok(doomed)
}

fn version_from_row(row: &DbRow) -> Version {
    Version {
        version: row.int(0),
        blake3: row.text(1),
        size: row.int(2) as u64,
        content_type: row.text(3),
        created_at: row.text(4),
        uploaded_by: row.opt_text(5).filter(|s| !s.is_empty()),
        current: row.bool(6),
    }
}

fn blob_from_row(row: &DbRow) -> Blob {
    Blob { blake3: row.text(0), size: row.int(1) as u64, version: row.text(2), corrupt: row.bool(3) }
}
