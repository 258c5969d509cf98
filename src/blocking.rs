//! Blocking work (SQLite, fsync, rename, hashing a file) runs off the async
//! workers, on tokio's blocking pool.

use crate::error::{Error, Result};

pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::internal(format!("blocking task failed: {e}")))?
}
