//! Where a download's bytes go: the `.part` file (hashed as written, so a
//! resumed prefix is hashed once from the file) or standard output.

use std::fs::File;
use std::io::{BufWriter, Read, Write};

use anyhow::{Context, Result};

/// Where the bytes go.
pub(super) enum Target<'a> {
    File { writer: BufWriter<File>, hasher: Box<blake3::Hasher> },
    Stdout(BufWriter<std::io::StdoutLock<'a>>),
}

impl Target<'_> {
    pub(super) fn hash_existing(&mut self, len: u64) -> Result<()> {
        if let Target::File { writer, hasher } = self {
            let mut file = writer.get_ref().try_clone()?;
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(0))?;
            let copied = std::io::copy(&mut (&mut file).take(len), hasher.as_mut())?;
            anyhow::ensure!(copied == len, "the .part file got shorter");
            writer.get_mut().seek(std::io::SeekFrom::Start(len))?;
        }
        Ok(())
    }

    /// Starts over from byte 0 (a whole new body is coming).
    pub(super) fn restart(&mut self) -> Result<()> {
        match self {
            Target::File { writer, hasher } => {
                use std::io::Seek;
                writer.flush()?;
                writer.get_mut().set_len(0)?;
                writer.get_mut().seek(std::io::SeekFrom::Start(0))?;
                hasher.reset();
                Ok(())
            }
            Target::Stdout(_) => anyhow::bail!("the dataset was replaced during the download to stdout"),
        }
    }

    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        match self {
            Target::File { writer, hasher } => {
                hasher.update(bytes);
                writer.write_all(bytes).context("cannot write the download")?;
            }
            Target::Stdout(out) => out.write_all(bytes)?,
        }
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        match self {
            Target::File { writer, .. } => writer.flush().context("cannot write the download")?,
            Target::Stdout(out) => out.flush()?,
        }
        Ok(())
    }

    /// The blake3 of what was written to the file (stdout is hashed by
    /// the fetch).
    pub(super) fn hash(&mut self) -> String {
        match self {
            Target::File { hasher, .. } => hasher.finalize().to_hex().to_string(),
            Target::Stdout(_) => unreachable!("stdout is hashed by the fetch"),
        }
    }
}
