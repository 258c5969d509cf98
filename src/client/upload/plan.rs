//! Which local files go to which keys, decided (and refused) before
//! anything is sent.
//!
//! `upload FILE [KEY]`; `upload PATH... DEST/` (each file as `DEST/` + its
//! name); `upload -r DIR... DEST/` (each file below DIR as `DEST/` + its
//! path relative to DIR). More than one PATH needs a DEST that ends in `/`:
//! `spillway upload two/*.csv` with two matches would otherwise take the
//! second file for a key and store the first file's bytes under its name.
//!
//! Symbolic links below a DIR are followed only to regular files inside
//! that DIR (uploaded under the link's own path); a link that leaves DIR,
//! dangles, or names a directory is skipped, and said so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::client::parse_key;

/// A file to upload.
#[derive(Debug, Clone)]
pub struct Item {
    /// The file as the user would name it, for messages.
    pub shown: String,
    /// Its canonical path (what the state file remembers).
    pub path: PathBuf,
    pub key: String,
    pub size: u64,
}

/// What to upload, and what a run over it should know.
#[derive(Debug, Default)]
pub struct Plan {
    pub items: Vec<Item>,
    /// The keys all start with this (what to list to learn what the node
    /// already holds).
    pub prefix: String,
    /// Symbolic links left out, each with why.
    pub skipped_links: Vec<String>,
}

/// Splits `PATH... [DEST]` and walks the trees; every refusal comes here,
/// before any request.
pub fn plan(args: &[String], recursive: bool) -> Result<Plan> {
    let (sources, dest) = match args {
        [] => anyhow::bail!("name a file to upload"),
        [one] => (std::slice::from_ref(one), None),
        [sources @ .., dest] => (sources, Some(dest.as_str())),
    };
    let prefix = match dest {
        Some(dest) if dest.ends_with('/') => Some(if dest == "/" { String::new() } else { dest.to_string() }),
        Some(dest) if std::fs::symlink_metadata(dest).is_ok() => anyhow::bail!(
            "the last argument `{dest}` names a local file, not a key: to upload several files give a \
             destination prefix ending in `/` (`spillway upload a.csv b.csv raw/`); for one file, \
             `spillway upload FILE [KEY]`"
        ),
        Some(dest) if sources.len() > 1 || recursive => anyhow::bail!(
            "`{dest}` is one key but there are several files: give a destination prefix ending in `/` (`{dest}/`)"
        ),
        _ => None,
    };
    if recursive && prefix.is_none() {
        anyhow::bail!("-r needs a destination prefix ending in `/` (`spillway upload -r DIR raw/`)");
    }
    let mut plan = Plan { prefix: prefix.clone().unwrap_or_default(), ..Plan::default() };
    let mut keys: BTreeMap<String, String> = BTreeMap::new();
    for source in sources {
        let meta = std::fs::metadata(source).with_context(|| format!("cannot open {source}"))?;
        let found = if meta.is_dir() {
            if !recursive {
                anyhow::bail!("{source} is a directory: pass -r to upload every file below it");
            }
            walk(Path::new(source), &mut plan.skipped_links)?
        } else if meta.is_file() {
            let name = Path::new(source)
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{source} has no UTF-8 file name; give a KEY"))?;
            vec![(PathBuf::from(source), name.to_string(), meta.len())]
        } else {
            anyhow::bail!("{source} is not a regular file");
        };
        for (path, relative, size) in found {
            let key = match (&prefix, dest) {
                (Some(prefix), _) => format!("{prefix}{relative}"),
                (None, Some(key)) => key.to_string(),
                (None, None) => relative,
            };
            let key = parse_key(&key)?.to_string();
            let shown = path.display().to_string();
            if let Some(other) = keys.insert(key.clone(), shown.clone()) {
                anyhow::bail!("{other} and {shown} would both be stored as `{key}`");
            }
            let path = std::fs::canonicalize(&path).with_context(|| format!("cannot open {shown}"))?;
            plan.items.push(Item { shown, path, key, size });
        }
    }
    if prefix.is_none() {
        // One file to one key: list just that key.
        plan.prefix = plan.items.first().map(|i| i.key.clone()).unwrap_or_default();
    }
    Ok(plan)
}

/// Every regular file below `dir`, with its path relative to `dir` as a key
/// suffix (`/`-separated) and its size, in a stable order.
fn walk(dir: &Path, skipped: &mut Vec<String>) -> Result<Vec<(PathBuf, String, u64)>> {
    let root = std::fs::canonicalize(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(false).sort_by_file_name() {
        let entry = entry.with_context(|| format!("cannot read below {}", dir.display()))?;
        let path = entry.path();
        let file_type = entry.file_type();
        let size = if file_type.is_symlink() {
            match std::fs::canonicalize(path) {
                Ok(target) if !target.starts_with(&root) => {
                    skipped.push(format!("{} (a link out of {})", path.display(), dir.display()));
                    continue;
                }
                Ok(target) => match std::fs::metadata(&target) {
                    Ok(meta) if meta.is_file() => meta.len(),
                    _ => {
                        skipped.push(format!("{} (a link to a directory)", path.display()));
                        continue;
                    }
                },
                Err(_) => {
                    skipped.push(format!("{} (a dangling link)", path.display()));
                    continue;
                }
            }
        } else if file_type.is_file() {
            entry.metadata().with_context(|| format!("cannot read {}", path.display()))?.len()
        } else {
            continue;
        };
        let relative = path.strip_prefix(dir).expect("walkdir stays below its root");
        let parts: Option<Vec<&str>> = relative.components().map(|c| c.as_os_str().to_str()).collect();
        let relative = parts.with_context(|| format!("{} has no UTF-8 name", path.display()))?.join("/");
        found.push((path.to_path_buf(), relative, size));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn several_files_need_a_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.csv");
        let b = dir.path().join("b.csv");
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "bb").unwrap();
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        let e = plan(&args(&[a, b]), false).unwrap_err().to_string();
        assert!(e.contains("names a local file"), "{e}");
        let e = plan(&args(&[a, b, "raw/x.csv"]), false).unwrap_err().to_string();
        assert!(e.contains("ending in `/`"), "{e}");
        let p = plan(&args(&[a, b, "raw/"]), false).unwrap();
        let keys: Vec<_> = p.items.iter().map(|i| (i.key.as_str(), i.size)).collect();
        assert_eq!(keys, [("raw/a.csv", 1), ("raw/b.csv", 2)]);
        assert_eq!(p.prefix, "raw/");
        let p = plan(&args(&[a, "raw/one.csv"]), false).unwrap();
        assert_eq!((p.items[0].key.as_str(), p.prefix.as_str()), ("raw/one.csv", "raw/one.csv"));
    }

    #[test]
    fn trees_keep_relative_keys_and_skip_links_out() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("x/y")).unwrap();
        std::fs::write(dir.path().join("x/y/z.bin"), "zzz").unwrap();
        std::fs::write(dir.path().join("top"), "t").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("leak")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("top"), dir.path().join("alias")).unwrap();
        let root = dir.path().to_str().unwrap();
        let p = plan(&args(&[root, "d/"]), true).unwrap();
        let keys: Vec<_> = p.items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["d/alias", "d/top", "d/x/y/z.bin"]);
        assert_eq!(p.skipped_links.len(), 1, "{:?}", p.skipped_links);
        assert!(plan(&args(&[root, "d"]), true).is_err());
        assert!(plan(&args(&[root, "d/"]), false).unwrap_err().to_string().contains("-r"));
    }
}
