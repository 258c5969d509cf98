//! The `uploads` table: resumable uploads (tus) in progress.

use super::db::{vals, Db, DbRow};
use super::Index;
use crate::error::{Error, Result};

/// A resumable upload's row. On the filesystem its offset is not stored: it
/// is the length of its data file (or `length` once completed).
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
    /// The offset durable in the object store, for an upload kept there as
    /// it arrives (see `upload_parts`); `None` for one in a local file.
    pub stored_offset: Option<u64>,
    /// The size of its parts (a power of two), for an upload kept in the store.
    pub part_size: Option<u64>,
}

/// Resumable uploads that hold a place: neither completed nor expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenUploads {
    pub total: u64,
    /// Those of the new upload's owner.
    pub owner: u64,
}

const COLUMNS: &str =
    "id, length, metadata, key, concat, created_at, expires_at, completed, node, owner, stored_offset, part_size";

impl Index {
    pub fn create_upload(&self, u: &UploadRow) -> Result<()> {
        self.with(|db| insert(db, u))
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
        self.serial_tx(super::postgres::UPLOADS_LOCK, |db| {
            let counts = db
                .query_opt(
                    "SELECT count(*), coalesce(sum(CASE WHEN owner = $1 THEN 1 ELSE 0 END), 0) FROM uploads
                     WHERE completed = $2 AND expires_at >= $3",
                    vals![&u.owner, false, now],
                )?
                .ok_or_else(|| Error::internal("count returned no row"))?;
            admit(OpenUploads { total: counts.int(0) as u64, owner: counts.int(1) as u64 })?;
            insert(db, u)
        })
    }

    pub fn get_upload(&self, id: &str) -> Result<Option<UploadRow>> {
        self.with(|db| {
            Ok(db.query_opt(&format!("SELECT {COLUMNS} FROM uploads WHERE id = $1"), vals![id])?.as_ref().map(from_row))
        })
    }

    pub fn set_upload_length(&self, id: &str, length: u64) -> Result<()> {
        self.with(|db| db.execute("UPDATE uploads SET length = $2 WHERE id = $1", vals![id, length]).map(drop))
    }

    pub fn touch_upload(&self, id: &str, expires_at: i64) -> Result<()> {
        self.with(|db| db.execute("UPDATE uploads SET expires_at = $2 WHERE id = $1", vals![id, expires_at]).map(drop))
    }

    pub fn complete_upload(&self, id: &str) -> Result<()> {
        self.tx(|db| {
            db.execute("DELETE FROM upload_parts WHERE upload = $1", vals![id])?;
            db.execute("UPDATE uploads SET completed = $2, lease = NULL WHERE id = $1", vals![id, true]).map(drop)
        })
    }

    pub fn delete_upload(&self, id: &str) -> Result<bool> {
        self.tx(|db| {
            db.execute("DELETE FROM upload_parts WHERE upload = $1", vals![id])?;
            Ok(db.execute("DELETE FROM uploads WHERE id = $1", vals![id])? > 0)
        })
    }

    /// The uploads this node may sweep whose expiry passed before `now`
    /// (Unix seconds): its own, and any kept in the object store (`true`
    /// beside its id). Rows from before nodes had names (`''`) are this node's.
    pub fn expired_uploads(&self, node: &str, now: i64) -> Result<Vec<(String, bool)>> {
        self.with(|db| {
            let rows = db.query(
                "SELECT id, stored_offset IS NOT NULL FROM uploads
                 WHERE (node = $1 OR node = '' OR stored_offset IS NOT NULL) AND expires_at < $2",
                vals![node, now],
            )?;
            Ok(rows.iter().map(|r| (r.text(0), r.bool(1))).collect())
        })
    }

    /// Every upload id of this node (fsck: data files without a row are strays).
    pub fn upload_ids(&self, node: &str) -> Result<Vec<String>> {
        self.with(|db| {
            let rows = db.query("SELECT id FROM uploads WHERE node = $1 OR node = ''", vals![node])?;
            Ok(rows.iter().map(|r| r.text(0)).collect())
        })
    }
}

fn insert(db: &mut dyn Db, u: &UploadRow) -> Result<()> {
    db.execute(
        &format!("INSERT INTO uploads ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"),
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
            &u.owner,
            u.stored_offset,
            u.part_size
        ],
    )
    .map(drop)
}

fn from_row(row: &DbRow) -> UploadRow {
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
        stored_offset: row.opt_int(10).map(|o| o as u64),
        part_size: row.opt_int(11).map(|p| p as u64),
    }
}
