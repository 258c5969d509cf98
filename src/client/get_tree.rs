//! `spillway get -r PREFIX/ [DIR]`: every dataset below a prefix, each
//! through the single-file download (its `.part` file resumed, its blake3
//! checked), `--parallel` at once, into DIR at its key relative to the
//! prefix. A file that already holds the dataset's bytes (size, then
//! blake3) is left alone, so a re-run fetches only what is missing.

use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use futures_util::StreamExt;

use super::catalog::records_under;
use super::download::{fetch_one, GetArgs, GetOptions};
use super::{human_size, one_line, parse_key, Node, Record};

pub async fn run(args: GetArgs) -> Result<()> {
    let node = &Node::new(&args.connection)?;
    let prefix = args.key.as_str();
    anyhow::ensure!(
        prefix.ends_with('/') || prefix.is_empty(),
        "with -r, KEY is a prefix ending in `/` (`spillway get -r raw/ ./raw`)"
    );
    let dir = args.out.clone().unwrap_or_else(|| PathBuf::from("."));
    anyhow::ensure!(dir.as_os_str() != "-", "-r writes files into a directory, not to standard output");
    let records = records_under(node, prefix).await.with_context(|| format!("cannot list `{prefix}` on the node"))?;
    let options = GetOptions { force: args.force, retries: args.transfer.retries, quiet: true };
    let say = !args.transfer.quiet && !args.json;
    let results: Vec<(Record, PathBuf, Result<&'static str>)> =
        futures_util::stream::iter(records.into_iter().map(|record| {
            let out = local_path(&dir, prefix, &record.key);
            let options = &options;
            async move {
                match out {
                    Ok(out) => {
                        let result = one(node, &record, out.clone(), options).await;
                        (record, out, result)
                    }
                    Err(e) => (record, PathBuf::new(), Err(e)),
                }
            }
        }))
        .buffer_unordered(usize::from(args.parallel))
        .inspect(|(record, out, result)| match result {
            Ok("skipped") if say => println!("skipped {}: {} holds the same bytes", record.key, out.display()),
            Ok(_) if say => println!(
                "downloaded {} to {} ({}, blake3 {})",
                record.key,
                out.display(),
                human_size(record.size),
                record.blake3
            ),
            Err(e) if !args.json => eprintln!("spillway: {} failed: {}", record.key, one_line(&format!("{e:#}"))),
            _ => {}
        })
        .collect()
        .await;
    let failed: Vec<&str> = results.iter().filter(|(_, _, r)| r.is_err()).map(|(r, _, _)| r.key.as_str()).collect();
    if args.json {
        let files: Vec<serde_json::Value> = results
            .iter()
            .map(|(record, out, result)| {
                serde_json::json!({
                    "key": record.key, "path": out.display().to_string(), "size": record.size,
                    "blake3": record.blake3,
                    "outcome": match result { Ok(o) => *o, Err(_) => "failed" },
                    "error": result.as_ref().err().map(|e| one_line(&format!("{e:#}"))),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"files": files, "failed": failed.len()}))?);
    } else if say {
        let bytes: u64 = results.iter().filter(|(_, _, r)| matches!(r, Ok("downloaded"))).map(|(r, _, _)| r.size).sum();
        eprintln!(
            "downloaded {} of {} datasets below `{prefix}` ({}), failed {}",
            results.iter().filter(|(_, _, r)| matches!(r, Ok("downloaded"))).count(),
            results.len(),
            human_size(bytes),
            failed.len()
        );
    }
    if !failed.is_empty() {
        anyhow::bail!("{} of {} downloads failed: {}", failed.len(), results.len(), failed.join(", "));
    }
    Ok(())
}

/// One dataset: left alone when the file holds its bytes already.
async fn one(node: &Node, record: &Record, out: PathBuf, options: &GetOptions) -> Result<&'static str> {
    if std::fs::metadata(&out).is_ok_and(|m| m.is_file() && m.len() == record.size) {
        let path = out.clone();
        let local = tokio::task::spawn_blocking(move || -> Result<String> {
            let mut hasher = blake3::Hasher::new();
            hasher.update_reader(std::fs::File::open(path)?)?;
            Ok(hasher.finalize().to_hex().to_string())
        })
        .await??;
        if local == record.blake3 {
            return Ok("skipped");
        }
    }
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let key = parse_key(&record.key)?;
    fetch_one(node, &key, record, None, Some(out), options).await?;
    Ok("downloaded")
}

/// `dir` joined with the key's path below `prefix`, refused if any part of
/// it could climb out of `dir`.
fn local_path(dir: &Path, prefix: &str, key: &str) -> Result<PathBuf> {
    let relative = Path::new(key.strip_prefix(prefix).unwrap_or(key));
    anyhow::ensure!(
        relative.components().all(|c| matches!(c, Component::Normal(_))),
        "the key `{key}` does not make a file name below {}",
        dir.display()
    );
    Ok(dir.join(relative))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_stay_below_the_directory() {
        assert_eq!(local_path(Path::new("out"), "raw/", "raw/a/b.csv").unwrap(), PathBuf::from("out/a/b.csv"));
        assert!(local_path(Path::new("out"), "raw/", "raw/../x").is_err());
    }
}
