//! The `grants` table: a value under a name for a while, such as the size
//! limit of a direct-upload URL, which the upload's acknowledgement reads.
//! Grants were once kept in `settings` and never removed; now each grant
//! expires, and each new one sweeps the expired.

use std::time::Duration;

use super::db::vals;
use super::Index;
use crate::error::Result;
use crate::timestamp::unix_now;

/// How long a grant outlives what it was granted for: an upload to a
/// presigned URL may start just before the URL expires, and finish and be
/// acknowledged hours later, still under its grant's limit.
pub const GRANT_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

impl Index {
    /// Stores `value` under `name` for `valid_for` (plus `GRANT_GRACE`),
    /// replacing an earlier grant of that name, and removes the grants that
    /// have expired.
    pub fn grant(&self, name: &str, value: &str, valid_for: Duration) -> Result<()> {
        self.grant_at(name, value, valid_for, unix_now())
    }

    fn grant_at(&self, name: &str, value: &str, valid_for: Duration, now: i64) -> Result<()> {
        let expires_at = now.saturating_add((valid_for + GRANT_GRACE).as_secs() as i64);
        self.tx(|db| {
            db.execute("DELETE FROM grants WHERE expires_at < $1", vals![now])?;
            db.execute(
                "INSERT INTO grants (name, value, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                vals![name, value, expires_at],
            )
            .map(drop)
        })
    }

    /// The value granted under `name`, if a grant of it is kept.
    pub fn granted(&self, name: &str) -> Result<Option<String>> {
        self.with(|db| Ok(db.query_opt("SELECT value FROM grants WHERE name = $1", vals![name])?.map(|r| r.text(0))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grants an index kept in `settings` before move to `grants`.
    #[test]
    fn grants_kept_as_settings_move() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for sql in &crate::index::migrations::sqlite::MIGRATIONS[..6] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "PRAGMA user_version = 6;
                 INSERT INTO settings (name, value) VALUES ('direct-upload:a', '10'), ('signing_key', 'k');",
            )
            .unwrap();
        }
        let index = Index::open(&path).unwrap();
        assert_eq!(index.granted("direct-upload:a").unwrap().as_deref(), Some("10"));
        assert_eq!(index.setting("direct-upload:a").unwrap(), None);
        assert_eq!(index.setting("signing_key").unwrap().as_deref(), Some("k"));
    }

    #[test]
    fn a_grant_replaces_its_name_and_sweeps_the_expired() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.sqlite")).unwrap();
        let hour = Duration::from_secs(3600);
        index.grant_at("direct-upload:a", "10", hour, 1_000).unwrap();
        index.grant_at("direct-upload:a", "20", hour, 1_000).unwrap();
        index.grant_at("direct-upload:b", "", hour, 1_000).unwrap();
        assert_eq!(index.granted("direct-upload:a").unwrap().as_deref(), Some("20"));
        assert_eq!(index.granted("direct-upload:b").unwrap().as_deref(), Some(""));
        // Past its URL's hour the grant stays through the grace...
        let after_url = 1_000 + 3600 + 1;
        index.grant_at("direct-upload:c", "5", hour, after_url).unwrap();
        assert_eq!(index.granted("direct-upload:a").unwrap().as_deref(), Some("20"));
        // ...and is gone after it, with every other expired grant.
        let after_grace = 1_000 + (hour + GRANT_GRACE).as_secs() as i64 + 1;
        index.grant_at("direct-upload:c", "6", hour, after_grace).unwrap();
        assert_eq!(index.granted("direct-upload:a").unwrap(), None);
        assert_eq!(index.granted("direct-upload:b").unwrap(), None);
        assert_eq!(index.granted("direct-upload:c").unwrap().as_deref(), Some("6"));
    }
}
