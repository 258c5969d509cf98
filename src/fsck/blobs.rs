//! fsck of versions and blobs: every version's bytes have a blob row, every
//! blob row its file (the inode the row names, the size it says), every
//! file in `blobs/` a row, and every blob a version that refers to it.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use walkdir::WalkDir;

use super::{Finding, Report};
use crate::datadir::Layout;
use crate::error::{Error, Result};
use crate::index::{Blob, Index};

pub(super) fn check(index: &Index, layout: &Layout, report: &mut Report) -> Result<()> {
    for (key, number) in index.versions_without_blob()? {
        report.findings.push(Finding::VersionWithoutBlob { key, number });
    }
    let mut after: Option<Blob> = None;
    loop {
        let page = index.blobs_after(after.as_ref(), 1000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.clone());
        for blob in page {
            let file = layout.open_blob(&blob.blake3, blob.size)?;
            let meta = file.map(|f| f.metadata()).transpose().map_err(Error::internal)?;
            let right = meta.is_some_and(|m| m.ino().to_string() == blob.version && m.len() == blob.size);
            if !right {
                report.findings.push(Finding::MissingBlob { blake3: blob.blake3, size: blob.size });
            }
        }
    }
    for blob in index.unreferenced_blobs()? {
        report.findings.push(Finding::UnreferencedBlob { blake3: blob.blake3, size: blob.size });
    }
    for path in stray_blob_files(index, layout)? {
        report.findings.push(Finding::StrayBlob { path });
    }
    Ok(())
}

/// Files in `blobs/` that no blob row names (by name and inode): a crash
/// between a blob's link and its row, or a file put there by hand.
fn stray_blob_files(index: &Index, layout: &Layout) -> Result<Vec<PathBuf>> {
    let mut stray = Vec::new();
    for entry in WalkDir::new(&layout.blobs).min_depth(2).max_depth(2).sort_by_file_name() {
        let entry = entry.map_err(Error::internal)?;
        if !entry.file_type().is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let known = match name.rsplit_once('.') {
            Some((blake3, size)) => match size.parse::<u64>() {
                Ok(size) => index.blob(blake3, size)?.or(index.doomed_blob(blake3, size)?),
                Err(_) => None,
            },
            None => None,
        };
        let inode = entry.metadata().map_err(Error::internal)?.ino().to_string();
        if known.is_none_or(|b| b.version != inode) {
            stray.push(entry.into_path());
        }
    }
    Ok(stray)
}

/// Repairs what is safe: a stray blob file goes, and so does an
/// unreferenced blob (its row doomed, its file removed, its row dropped).
pub(super) fn repair(index: &Index, layout: &Layout, finding: &Finding) -> Result<bool> {
    match finding {
        Finding::StrayBlob { path } => std::fs::remove_file(path).map_err(Error::internal)?,
        Finding::UnreferencedBlob { blake3, size } => {
            let Some(blob) = index.blob(blake3, *size)? else { return Ok(false) };
            index.doom_blob(&blob)?;
            layout.remove_blob(&blob.blake3, blob.size, &blob.version)?;
            index.forget_blob(&blob)?;
        }
        // Versions whose bytes are gone can never be served: they go, and
        // so does the blob, unless a current version still names it (its
        // file is then a finding of its own).
        Finding::MissingBlob { blake3, size } => {
            let Some(blob) = index.blob(blake3, *size)? else { return Ok(false) };
            if index.drop_versions_of_blob(&blob)? {
                return Ok(false);
            }
            index.doom_blob(&blob)?;
            layout.remove_blob(&blob.blake3, blob.size, &blob.version)?;
            index.forget_blob(&blob)?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}
