//! Scrubbing: every stored blob is read back through the store and hashed;
//! bytes that no longer hash to their blake3 (or are gone) are marked
//! corrupt, and never served as if they were good until the dataset is
//! restored from another version or uploaded again. With a rate, the reads
//! are paced so that a background scrub leaves the disk to the clients.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::Node;
use crate::blocking::blocking;
use crate::error::Result;
use crate::index::Blob;
use crate::store::CHUNK;

/// A blob found damaged, and every key and version that refers to it.
#[derive(Debug)]
pub struct Damaged {
    pub blob: Blob,
    pub referrers: Vec<(String, i64)>,
}

#[derive(Debug, Default)]
pub struct ScrubReport {
    pub checked: u64,
    pub bytes: u64,
    pub damaged: Vec<Damaged>,
}

impl Node {
    /// Re-reads and hashes every blob, at most `rate` bytes per second.
    pub async fn scrub(&self, rate: Option<u64>) -> Result<ScrubReport> {
        let mut report = ScrubReport::default();
        let mut after: Option<Blob> = None;
        let started = Instant::now();
        loop {
            let (index, cursor) = (self.index.clone(), after.clone());
            let page = blocking(move || index.blobs_after(cursor.as_ref(), 256)).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.clone());
            for blob in page {
                let good = self.reads_right(&blob, rate, started, &mut report.bytes).await?;
                report.checked += 1;
                if good != blob.corrupt {
                    continue;
                }
                let (index, b) = (self.index.clone(), blob.clone());
                blocking(move || index.set_corrupt(&b, !good)).await?;
                if good {
                    log::info!("scrub: blob {}.{} reads right again", blob.blake3, blob.size);
                    continue;
                }
                let (index, b) = (self.index.clone(), blob.clone());
                let referrers = blocking(move || index.referrers(&b.blake3, b.size)).await?;
                let named: Vec<String> = referrers.iter().map(|(k, n)| format!("`{k}` version {n}")).collect();
                log::error!(
                    "scrub: the stored bytes of blake3 {} ({} bytes) are damaged; they back {}",
                    blob.blake3,
                    blob.size,
                    named.join(", ")
                );
                self.metrics.scrub_corrupt.inc();
                report.damaged.push(Damaged { blob, referrers });
            }
        }
        Ok(report)
    }

    /// Whether the blob reads back whole with its blake3.
    async fn reads_right(&self, blob: &Blob, rate: Option<u64>, started: Instant, read: &mut u64) -> Result<bool> {
        let Some(mut reader) = self.store.open_blob(blob, None).await? else {
            return Ok(false);
        };
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; CHUNK];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    log::warn!("scrub: reading blob {}: {e}", blob.blake3);
                    return Ok(false);
                }
            };
            hasher.update(&buf[..n]);
            size += n as u64;
            *read += n as u64;
            self.metrics.scrub_bytes.inc_by(n as u64);
            if let Some(rate) = rate.filter(|r| *r > 0) {
                let due = Duration::from_secs_f64(*read as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        Ok(size == blob.size && hasher.finalize().to_hex().as_str() == blob.blake3)
    }
}
