//! Resumable uploads kept in the object store as they arrive, so that any
//! node sharing the index can continue one: the parts uploaded so far (each
//! with its ETag and the blake3 chaining value of its bytes), the object
//! holding the bytes after the last whole part, and the lease of the one
//! request writing the upload.
//!
//! A lease is a token and an expiry (Unix milliseconds), taken and renewed
//! in short statements; no connection is held while a PATCH streams. Every
//! change of an upload's progress names the lease, so a writer that lost
//! it (stalled past its expiry, then woke) changes nothing.

use super::db::vals;
use super::Index;
use crate::error::Result;

/// What the store holds of an upload, as the index records it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredUpload {
    /// Bytes durable in the store: every part, then the tail.
    pub offset: u64,
    pub part_size: u64,
    /// The store's multipart upload, once the first part was sent.
    pub multipart: Option<String>,
    /// The object holding the bytes after the last part, if any.
    pub tail: Option<String>,
    pub parts: Vec<StoredPart>,
}

/// One uploaded part: `part_size` bytes at `number * part_size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    /// What the store answered for it (its ETag), to complete the upload.
    pub etag: String,
    /// The blake3 chaining value of its bytes, in hex.
    pub cv: String,
}

/// Whether another request holds an upload's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    Free,
    /// Held until this instant (Unix milliseconds).
    Held(i64),
}

impl Index {
    pub fn stored_upload(&self, id: &str) -> Result<Option<StoredUpload>> {
        self.tx(|db| {
            let Some(row) = db.query_opt(
                "SELECT stored_offset, part_size, multipart, tail FROM uploads
                 WHERE id = $1 AND stored_offset IS NOT NULL",
                vals![id],
            )?
            else {
                return Ok(None);
            };
            let parts = db.query("SELECT etag, cv FROM upload_parts WHERE upload = $1 ORDER BY number", vals![id])?;
            Ok(Some(StoredUpload {
                offset: row.int(0) as u64,
                part_size: row.int(1) as u64,
                multipart: row.opt_text(2),
                tail: row.opt_text(3),
                parts: parts.iter().map(|p| StoredPart { etag: p.text(0), cv: p.text(1) }).collect(),
            }))
        })
    }

    /// Takes the lease of upload `id` for `token` until `until`, if no one
    /// holds it at `now` (Unix milliseconds).
    pub fn take_lease(&self, id: &str, token: &str, now: i64, until: i64) -> Result<bool> {
        self.with(|db| {
            let taken = db.execute(
                "UPDATE uploads SET lease = $2, lease_until = $4, lease_wanted = $5
                 WHERE id = $1 AND (lease IS NULL OR lease_until < $3)",
                vals![id, token, now, until, false],
            )?;
            Ok(taken > 0)
        })
    }

    /// Extends `token`'s lease to `until`. `None`: the lease is lost;
    /// `Some(true)`: another request asked for the upload.
    pub fn renew_lease(&self, id: &str, token: &str, until: i64) -> Result<Option<bool>> {
        self.with(|db| {
            let row = db.query_opt(
                "UPDATE uploads SET lease_until = $3 WHERE id = $1 AND lease = $2 RETURNING lease_wanted",
                vals![id, token, until],
            )?;
            Ok(row.map(|r| r.bool(0)))
        })
    }

    pub fn release_lease(&self, id: &str, token: &str) -> Result<()> {
        self.with(|db| {
            db.execute(
                "UPDATE uploads SET lease = NULL, lease_until = NULL, lease_wanted = $3 WHERE id = $1 AND lease = $2",
                vals![id, token, false],
            )
            .map(drop)
        })
    }

    /// Asks the holder of the lease, if any, to let go (a resuming client's
    /// HEAD); returns the lease's state.
    pub fn want_lease(&self, id: &str, now: i64) -> Result<LeaseState> {
        self.with(|db| {
            let row = db.query_opt(
                "UPDATE uploads SET lease_wanted = $3 WHERE id = $1 AND lease IS NOT NULL AND lease_until >= $2
                 RETURNING lease_until",
                vals![id, now, true],
            )?;
            Ok(row.map_or(LeaseState::Free, |r| LeaseState::Held(r.int(0))))
        })
    }

    /// Notes the store's multipart upload of `id`, under `token`'s lease.
    pub fn set_multipart(&self, id: &str, token: &str, multipart: &str) -> Result<bool> {
        self.with(|db| {
            let set = db.execute(
                "UPDATE uploads SET multipart = $3 WHERE id = $1 AND lease = $2 AND multipart IS NULL",
                vals![id, token, multipart],
            )?;
            Ok(set > 0)
        })
    }

    /// Records part `number` as uploaded, under `token`'s lease: the offset
    /// becomes its end and the tail (whose bytes it took) goes.
    pub fn record_part(&self, id: &str, token: &str, number: u64, part: &StoredPart, offset: u64) -> Result<bool> {
        self.tx(|db| {
            let moved = db.execute(
                "UPDATE uploads SET stored_offset = $3, tail = NULL WHERE id = $1 AND lease = $2",
                vals![id, token, offset],
            )?;
            if moved == 0 {
                return Ok(false);
            }
            db.execute(
                "INSERT INTO upload_parts (upload, number, etag, cv) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (upload, number) DO UPDATE SET etag = excluded.etag, cv = excluded.cv",
                vals![id, number, &part.etag, &part.cv],
            )?;
            Ok(true)
        })
    }

    /// Records the bytes after the last part as kept in object `tail`, under
    /// `token`'s lease.
    pub fn record_tail(&self, id: &str, token: &str, offset: u64, tail: Option<&str>) -> Result<bool> {
        self.with(|db| {
            let set = db.execute(
                "UPDATE uploads SET stored_offset = $3, tail = $4 WHERE id = $1 AND lease = $2",
                vals![id, token, offset, tail],
            )?;
            Ok(set > 0)
        })
    }
}
