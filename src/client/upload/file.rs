//! The local file's side of an upload: the chunks read from it, and its
//! blake3, hashed as the bytes go out, which the node checks before it
//! commits and which must equal the committed dataset's `ETag`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::Stream;

/// The bytes a streamed body reads from the file at a time: one hop to the
/// blocking pool each, and the progress bar's step.
const PIECE: usize = 1024 * 1024;

/// The blake3 of a file's first `at` bytes.
#[derive(Clone, Default)]
pub struct Prefix {
    hasher: blake3::Hasher,
    at: u64,
}

impl Prefix {
    /// Takes the file's next bytes (those at `at`).
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.at += bytes.len() as u64;
    }

    pub fn hex(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }

    /// The blake3 of the first `to` bytes of `file`, reading only what this
    /// one has not hashed yet (from the start when it has gone past `to`,
    /// as after a request the node kept only part of). Blocking.
    pub fn advance(mut self, file: &File, to: u64) -> Result<Prefix> {
        if self.at > to {
            self = Prefix::default();
        }
        let mut file = file;
        file.seek(SeekFrom::Start(self.at))?;
        let mut rest = file.take(to - self.at);
        self.hasher.update_reader(&mut rest)?;
        anyhow::ensure!(rest.limit() == 0, "the file got shorter while it was being uploaded");
        self.at = to;
        Ok(self)
    }
}

/// Bytes `offset..end` of `file` as a request body, read a piece at a time
/// on the blocking pool and hashed into `prefix` on the way while it is at
/// the piece's start. The request owns the stream and may drop it part way;
/// what was hashed by then is left in `prefix`.
pub fn hashed_stream(
    file: File,
    (offset, end): (u64, u64),
    prefix: Arc<Mutex<Option<Prefix>>>,
) -> impl Stream<Item = std::io::Result<Bytes>> {
    let file = Arc::new(file);
    futures_util::stream::try_unfold(offset, move |at| {
        let (file, prefix) = (file.clone(), prefix.clone());
        async move {
            if at >= end {
                return Ok(None);
            }
            let want = (end - at).min(PIECE as u64) as usize;
            let piece = tokio::task::spawn_blocking(move || {
                let mut buffer = vec![0u8; want];
                file.read_exact_at(&mut buffer, at)?;
                if let Some(p) = prefix.lock().expect("the prefix lock").as_mut().filter(|p| p.at == at) {
                    p.update(&buffer);
                }
                Ok::<_, std::io::Error>(Bytes::from(buffer))
            })
            .await??;
            Ok(Some((piece, at + want as u64)))
        }
    })
}

/// Where the last piece of a file of `size` bytes starts, sent apart with
/// the whole file's blake3: a multiple of `chunk` (the node's part size by
/// default, so an object store keeps no tail between the two requests).
pub fn last_piece(size: u64, chunk: u64) -> u64 {
    size.saturating_sub(1) / chunk * chunk
}

/// The blake3 (hex) of the file at `path` (`shown` names it in errors).
pub fn blake3_of(path: &std::path::Path, shown: &str) -> Result<String> {
    let mut hasher = blake3::Hasher::new();
    let file = File::open(path).with_context(|| format!("cannot open {shown}"))?;
    hasher.update_reader(file).with_context(|| format!("cannot read {shown}"))?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Reads bytes `start..end` of the file.
pub fn read_chunk(file: &mut File, start: u64, end: u64) -> Result<Bytes> {
    let mut buffer = vec![0u8; (end - start) as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut buffer).context("the file got shorter while it was being uploaded")?;
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn blake3_of_a_file_and_a_chunk_of_it() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut temp = tempfile::NamedTempFile::new().unwrap();
        temp.write_all(&data).unwrap();
        assert_eq!(blake3_of(temp.path(), "the file").unwrap(), blake3::hash(&data).to_hex().to_string());
        let mut file = temp.reopen().unwrap();
        assert_eq!(&read_chunk(&mut file, 20_000, 50_000).unwrap()[..], &data[20_000..50_000]);
        let half = Prefix::default().advance(&file, 50_000).unwrap();
        assert_eq!(half.hex(), blake3::hash(&data[..50_000]).to_hex().to_string());
        // Forward from where it is, and back (from the start).
        assert_eq!(half.clone().advance(&file, 100_000).unwrap().hex(), blake3_of(temp.path(), "").unwrap());
        assert_eq!(half.advance(&file, 10).unwrap().hex(), blake3::hash(&data[..10]).to_hex().to_string());
    }

    #[test]
    fn the_last_piece_is_never_empty() {
        assert_eq!(last_piece(1, 8), 0);
        assert_eq!(last_piece(8, 8), 0);
        assert_eq!(last_piece(9, 8), 8);
        assert_eq!(last_piece(16, 8), 8);
        assert_eq!(last_piece(17, 8), 16);
    }

    #[tokio::test]
    async fn a_stream_hashes_what_it_reads() {
        use futures_util::TryStreamExt;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let mut temp = tempfile::NamedTempFile::new().unwrap();
        temp.write_all(&data).unwrap();
        let file = temp.reopen().unwrap();
        let prefix = Arc::new(Mutex::new(Some(Prefix::default().advance(&file, 1000).unwrap())));
        let pieces: Vec<Bytes> = hashed_stream(file, (1000, 2_500_000), prefix.clone()).try_collect().await.unwrap();
        assert_eq!(pieces.concat(), &data[1000..2_500_000]);
        let hashed = prefix.lock().unwrap().take().unwrap();
        assert_eq!((hashed.at, hashed.hex()), (2_500_000, blake3::hash(&data[..2_500_000]).to_hex().to_string()));
    }
}
