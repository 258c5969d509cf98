//! The local file's side of an upload: the chunks read from it, and the
//! blake3 of the prefix the node holds, which must equal the committed
//! dataset's `ETag` at the end. A resumed upload's prefix was sent by an
//! earlier run, so it is hashed from the file; bytes this run sends are
//! hashed from the chunk in memory, not read twice.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use anyhow::{Context, Result};
use bytes::Bytes;

/// A blake3 of the file's first `at` bytes that can be moved forward.
pub struct PrefixHasher {
    hasher: blake3::Hasher,
    at: u64,
}

impl PrefixHasher {
    pub fn new() -> PrefixHasher {
        PrefixHasher { hasher: blake3::Hasher::new(), at: 0 }
    }

    /// The blake3 of the bytes hashed so far.
    pub fn finalize(&self) -> blake3::Hash {
        self.hasher.finalize()
    }

    /// Hashes up to byte `to`, taking bytes from `chunk` (which starts at
    /// `chunk_start`) where it covers them and reading the file elsewhere.
    /// Moving backwards (the node lost bytes) starts over.
    pub fn advance(&mut self, file: &mut File, to: u64, chunk_start: u64, chunk: &[u8]) -> Result<()> {
        if to < self.at {
            self.hasher.reset();
            self.at = 0;
        }
        let chunk_end = chunk_start + chunk.len() as u64;
        while self.at < to {
            if (chunk_start..chunk_end).contains(&self.at) {
                let end = to.min(chunk_end);
                self.hasher.update(&chunk[(self.at - chunk_start) as usize..(end - chunk_start) as usize]);
                self.at = end;
                continue;
            }
            let end = if self.at < chunk_start { to.min(chunk_start) } else { to };
            file.seek(SeekFrom::Start(self.at))?;
            let mut reader = (&mut *file).take(end - self.at);
            let copied = std::io::copy(&mut reader, &mut self.hasher)?;
            if copied != end - self.at {
                anyhow::bail!("the file got shorter while it was being uploaded");
            }
            self.at = end;
        }
        Ok(())
    }
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
    fn prefix_hasher_mixes_file_and_chunk() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut temp = tempfile::NamedTempFile::new().unwrap();
        temp.write_all(&data).unwrap();
        let mut file = temp.reopen().unwrap();
        let mut h = PrefixHasher::new();
        h.advance(&mut file, 10_000, 0, &[]).unwrap();
        let chunk = &data[20_000..50_000];
        // 10,000..20,000 from the file, 20,000..45,000 from the chunk.
        h.advance(&mut file, 45_000, 20_000, chunk).unwrap();
        h.advance(&mut file, 100_000, 20_000, chunk).unwrap();
        assert_eq!(h.finalize(), blake3::hash(&data));
        // Backwards starts over.
        h.advance(&mut file, 5, 0, &[]).unwrap();
        assert_eq!(h.finalize(), blake3::hash(&data[..5]));
    }
}
