//! The local file's side of an upload: the chunks read from it, and its
//! blake3, which the node checks before it commits and which must equal
//! the committed dataset's `ETag`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use anyhow::{Context, Result};
use bytes::Bytes;

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
    }
}
