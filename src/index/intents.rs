//! The `intents` table: changes of the store about to happen, so that a
//! crash in the middle can be finished or rolled back at the next start.

use super::datasets::{self, NewVersion, Record};
use super::db::{vals, Db};
use super::{versions, Blob, Index, Retention};
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
    /// The key's file is being removed; with `purge`, its versions too.
    Remove { key: Key, purge: bool },
}

impl Intent {
    pub fn key(&self) -> &Key {
        match self {
            Intent::Install(v) => &v.key,
            Intent::Remove { key, .. } => key,
        }
    }
}

/// What a completed intent changed in the index.
#[derive(Debug)]
pub struct Completed {
    /// The new record (none for a removal).
    pub record: Option<Record>,
    /// Blobs no version refers to any more: their bytes are to go.
    pub doomed: Vec<Blob>,
}

impl Index {
    /// Records an intent durably (one commit) before the change it names.
    pub fn begin(&self, intent: &Intent) -> Result<()> {
        self.begin_while(intent, || Ok(()))
    }

    /// Like [`Index::begin`], and runs `during` while the intent commits
    /// (the staged file's fsync, which would otherwise wait for it). Fails
    /// if either fails; an intent recorded for a `during` that failed is
    /// dropped again.
    pub fn begin_while(&self, intent: &Intent, during: impl FnOnce() -> Result<()>) -> Result<()> {
        let (begun, during) = self.batched_while(Self::intent_writer(intent.clone()), during);
        match (begun, during) {
            (Ok(()), Err(e)) => {
                let _ = self.abandon(intent.key());
                Err(e)
            }
            (begun, during) => begun.and(during),
        }
    }

    fn intent_writer(intent: Intent) -> impl FnOnce(&mut dyn Db) -> Result<()> + Send + 'static {
        move |db| {
            match &intent {
                Intent::Install(v) => db.execute(
                    "INSERT INTO intents (key, action, version, size, blake3, content_type, name, description,
                        uploaded_by)
                     VALUES ($1, 'install', $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (key) DO UPDATE SET action = excluded.action, version = excluded.version,
                        size = excluded.size, blake3 = excluded.blake3, content_type = excluded.content_type,
                        name = excluded.name, description = excluded.description,
                        uploaded_by = excluded.uploaded_by",
                    vals![
                        v.key.as_str(),
                        &v.version,
                        v.size,
                        &v.blake3,
                        &v.content_type,
                        &v.name,
                        &v.description,
                        &v.uploaded_by
                    ],
                )?,
                Intent::Remove { key, purge } => db.execute(
                    "INSERT INTO intents (key, action, purge) VALUES ($1, 'remove', $2)
                     ON CONFLICT (key) DO UPDATE SET action = excluded.action, purge = excluded.purge",
                    vals![key.as_str(), *purge],
                )?,
            };
            Ok(())
        }
    }

    /// Drops an intent whose change did not happen.
    pub fn abandon(&self, key: &Key) -> Result<()> {
        let key = key.clone();
        self.batched(move |db| db.execute("DELETE FROM intents WHERE key = $1", vals![key.as_str()]).map(drop))
    }

    /// The change happened: the rows follow and the intent goes, in one
    /// transaction.
    pub fn complete(&self, intent: &Intent, now: &str, retention: Retention) -> Result<Completed> {
        let (intent, now) = (intent.clone(), now.to_string());
        self.batched(move |db| {
            let now = now.as_str();
            let (key, completed) = match &intent {
                Intent::Install(v) => {
                    let (record, doomed) = datasets::upsert(db, v, now, retention)?;
                    (&v.key, Completed { record: Some(record), doomed })
                }
                Intent::Remove { key, purge } => {
                    datasets::remove(db, key)?;
                    let doomed = if *purge {
                        versions::purge(db, key)?
                    } else {
                        versions::replaced(db, key, retention, crate::timestamp::unix_now())?
                    };
                    (key, Completed { record: None, doomed })
                }
            };
            db.execute("DELETE FROM intents WHERE key = $1", vals![key.as_str()])?;
            Ok(completed)
        })
    }

    /// Intents a crash left behind.
    pub fn pending_intents(&self) -> Result<Vec<Intent>> {
        let rows = self.with(|db| {
            db.query(
                "SELECT key, action, version, size, blake3, content_type, name, description, uploaded_by, purge
                 FROM intents ORDER BY key",
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
                    uploaded_by: r.opt_text(8),
                    blob_version: String::new(),
                };
                Ok(if r.text(1) == "remove" {
                    Intent::Remove { key: version.key, purge: r.bool(9) }
                } else {
                    Intent::Install(version)
                })
            })
            .collect()
    }
}
