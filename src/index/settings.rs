//! The `settings` table: named values shared by every node of an index
//! (the signing key of a cluster); what expires goes to `grants`.

use super::db::vals;
use super::Index;
use crate::error::{Error, Result};

impl Index {
    pub fn setting(&self, name: &str) -> Result<Option<String>> {
        self.with(|db| Ok(db.query_opt("SELECT value FROM settings WHERE name = $1", vals![name])?.map(|r| r.text(0))))
    }

    pub fn set_setting(&self, name: &str, value: &str) -> Result<()> {
        self.with(|db| {
            db.execute(
                "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
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
                "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                vals![name, value],
            )?;
            let row = db
                .query_opt("SELECT value FROM settings WHERE name = $1", vals![name])?
                .ok_or_else(|| Error::internal("setting vanished"))?;
            Ok(row.text(0))
        })
    }
}
