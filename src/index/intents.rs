//! The `intents` table: changes of the store about to happen, so that a
//! crash in the middle can be finished or rolled back at the next start.

use super::datasets::{self, NewVersion, Record};
use super::db::vals;
use super::Index;
use crate::error::{Error, Result};
use crate::key::Key;

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

impl Index {
    /// Records an intent durably (one commit) before the change it names.
    pub fn begin(&self, intent: &Intent) -> Result<()> {
        self.with(|db| {
            match intent {
                Intent::Install(v) => db.execute(
                    "INSERT INTO intents (key, action, version, size, blake3, content_type, name, description)
                     VALUES ($1, 'install', $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (key) DO UPDATE SET action = excluded.action, version = excluded.version,
                        size = excluded.size, blake3 = excluded.blake3, content_type = excluded.content_type,
                        name = excluded.name, description = excluded.description",
                    vals![v.key.as_str(), &v.version, v.size, &v.blake3, &v.content_type, &v.name, &v.description],
                )?,
                Intent::Remove(key) => db.execute(
                    "INSERT INTO intents (key, action) VALUES ($1, 'remove')
                     ON CONFLICT (key) DO UPDATE SET action = excluded.action",
                    vals![key.as_str()],
                )?,
            };
            Ok(())
        })
    }

    /// Drops an intent whose change did not happen.
    pub fn abandon(&self, key: &Key) -> Result<()> {
        self.with(|db| db.execute("DELETE FROM intents WHERE key = $1", vals![key.as_str()]).map(drop))
    }

    /// The change happened: the row follows and the intent goes, in one
    /// transaction. Returns the new record (none for a removal).
    pub fn complete(&self, intent: &Intent, now: &str) -> Result<Option<Record>> {
        self.tx(|db| {
            let (key, record) = match intent {
                Intent::Install(v) => (&v.key, Some(datasets::upsert(db, v, now)?)),
                Intent::Remove(key) => {
                    datasets::remove(db, key)?;
                    (key, None)
                }
            };
            db.execute("DELETE FROM intents WHERE key = $1", vals![key.as_str()])?;
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
}
