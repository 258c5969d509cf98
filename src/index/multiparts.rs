//! The `multiparts` table: an object store's multipart uploads a node
//! opened, so that the ones a crash left open can be aborted.

use super::db::vals;
use super::Index;
use crate::error::Result;

impl Index {
    /// Notes an object store's multipart upload this node opened.
    pub fn note_multipart(&self, id: &str, path: &str, node: &str) -> Result<()> {
        self.with(|db| {
            db.execute("INSERT INTO multiparts (id, path, node) VALUES ($1, $2, $3)", vals![id, path, node]).map(drop)
        })
    }

    pub fn forget_multipart(&self, id: &str) -> Result<()> {
        self.with(|db| db.execute("DELETE FROM multiparts WHERE id = $1", vals![id]).map(drop))
    }

    /// The multipart uploads `node` noted and never completed or aborted.
    pub fn open_multiparts(&self, node: &str) -> Result<Vec<(String, String)>> {
        self.with(|db| {
            let rows = db.query("SELECT id, path FROM multiparts WHERE node = $1", vals![node])?;
            Ok(rows.iter().map(|r| (r.text(0), r.text(1))).collect())
        })
    }
}
