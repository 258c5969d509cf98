//! A big file as several tus partial uploads (`Upload-Concat: partial`)
//! sent at once, each a byte range of the file driven by the same state
//! machine as a whole file (resumed from the state file, where each part
//! has its entry), then one final upload (`Upload-Concat: final;URL...`)
//! that the node concatenates and commits. One connection's round trips and
//! the node's per-PATCH fsync then no longer bound the rate.
//!
//! The whole file's blake3 is computed locally beside the transfer and must
//! equal the committed dataset's `ETag`.

use std::fs::File;

use anyhow::{Context, Result};

use super::resumable::{Resumable, Sent, Upload};
use super::{tus, worth_retrying};
use crate::client::progress::Progress;
use crate::client::state::mtime_ns;
use crate::client::{backoff, parse_key};

/// Parts are at least this big: below it a part's own requests cost more
/// than the parallelism gains.
pub const MIN_PART: u64 = 32 * 1024 * 1024;

/// How many parts a file of `size` bytes goes in, at most `wanted`.
pub fn part_count(size: u64, wanted: u16) -> u64 {
    u64::from(wanted).min(size / MIN_PART).max(1)
}

impl Resumable<'_> {
    /// Sends the file as `parts` partial uploads at once and concatenates
    /// them; checks the committed bytes against the local blake3.
    pub async fn send_in_parts(self, parts: u64, progress: Progress) -> Result<Sent> {
        let metadata = std::fs::metadata(self.path).with_context(|| format!("cannot read {}", self.shown))?;
        let size = metadata.len();
        let mtime = mtime_ns(metadata.modified().context("the file has no modification time")?);
        let path = self.path.to_path_buf();
        let shown = self.shown.clone();
        let whole = tokio::task::spawn_blocking(move || super::file::blake3_of(&path, &shown));

        let part_len = size.div_ceil(parts);
        let mut uploads: Vec<Upload> = (0..parts)
            .map(|i| {
                let start = i * part_len;
                let len = size.min(start + part_len) - start;
                Upload {
                    node: self.node,
                    args: self.args,
                    shown: self.shown.clone(),
                    key: self.key.clone(),
                    content_type: self.content_type.clone(),
                    size: len,
                    state: self.state,
                    entry: self.entry((size, mtime), Some(format!("{}/{parts}", i + 1))),
                    progress: progress.part(len),
                    resumed_from: 0,
                    part: Some(start),
                    prefix: None,
                    part_url: None,
                }
            })
            .collect();
        let sending = uploads.iter_mut().map(|upload| async {
            let mut file = File::open(self.path).with_context(|| format!("cannot open {}", self.shown))?;
            upload.run(&mut file).await
        });
        if let Err(e) = futures_util::future::try_join_all(sending).await {
            progress.abandon();
            return Err(e);
        }

        let urls: Vec<String> = uploads.iter().filter_map(|u| u.part_url.as_ref().map(|u| u.to_string())).collect();
        anyhow::ensure!(urls.len() as u64 == parts, "a part of {} has no upload URL", self.shown);
        let concat = format!("final;{}", urls.join(" "));
        // Hashed beside the parts' transfer; done by now, as a rule. The
        // node commits the joined parts only if they have it.
        let local = whole.await??;
        let mut dataset = uploads[0].metadata();
        dataset.push(("blake3", local.as_str()));
        let mut failures = 0;
        let etag = loop {
            match tus::create(self.node, None, &dataset, Some(&concat)).await {
                Ok((_, info)) => break info.etag,
                Err(e) if failures < self.args.transfer.retries && worth_retrying(&e) => {
                    failures += 1;
                    tokio::time::sleep(backoff(failures)).await;
                }
                // A final upload that failed on the way may have been
                // committed (its parts are then gone): the catalog says.
                Err(_) if failures > 0 && self.holds(&local).await => break Some(local.clone()),
                Err(e) => {
                    progress.abandon();
                    return Err(e.context(format!("cannot join the parts of {}", self.shown)));
                }
            }
        };
        // The parts are gone on the node's side now, whatever we find next.
        for upload in &uploads {
            upload.forget();
        }
        let blake3 = match etag {
            Some(etag) => etag,
            None => self.node.record(&parse_key(&self.key)?).await?.blake3,
        };
        super::resumable::check_stored(self.path, &self.shown, (size, mtime), &self.key, &blake3, &local)?;
        progress.finish();
        Ok(Sent { blake3, resumed_from: uploads.iter().map(|u| u.resumed_from).sum() })
    }

    /// Whether the key holds the bytes whose blake3 is `blake3`.
    async fn holds(&self, blake3: &str) -> bool {
        let Ok(key) = parse_key(&self.key) else { return false };
        self.node.record(&key).await.is_ok_and(|r| r.blake3 == blake3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_never_small() {
        assert_eq!(part_count(10 * MIN_PART, 4), 4);
        assert_eq!(part_count(3 * MIN_PART - 1, 4), 2);
        assert_eq!(part_count(MIN_PART, 4), 1);
        assert_eq!(part_count(100 * MIN_PART, 1), 1);
    }
}
