//! `spillway rm KEY` and `spillway rm -r PREFIX/`: each dataset removed is
//! said in one line. A removal of a whole prefix is confirmed first: on a
//! terminal by a question, elsewhere only by `--yes` (a script that lists
//! the wrong prefix must not empty it unasked).

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, Result};
use reqwest::Method;

use super::catalog::records_under;
use super::{dataset_path, human_size, one_line, parse_key, Connection, Node};

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The dataset's key, or with -r a prefix ending in `/`.
    pub key: String,
    /// Remove every dataset below the prefix KEY.
    #[arg(short, long)]
    pub recursive: bool,
    /// Do not ask before removing a prefix (needed when standard input is
    /// not a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Remove every kept version as well (without it the versions stay,
    /// restorable, until pruned).
    #[arg(long)]
    pub all_versions: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn rm(args: RmArgs) -> Result<()> {
    if !args.recursive {
        let key = parse_key(&args.key)?;
        let node = Node::new(&args.connection)?;
        remove(&node, key.as_str(), args.all_versions).await?;
        println!("removed {key}");
        return Ok(());
    }
    let prefix = args.key.as_str();
    anyhow::ensure!(prefix.ends_with('/'), "with -r, KEY is a prefix ending in `/` (`spillway rm -r raw/`)");
    let interactive = std::io::stdin().is_terminal();
    if !args.yes && !interactive {
        anyhow::bail!(
            "rm -r asks before removing, and standard input is not a terminal: pass --yes to remove `{prefix}`"
        );
    }
    let node = Node::new(&args.connection)?;
    let records = records_under(&node, prefix).await.with_context(|| format!("cannot list `{prefix}` on the node"))?;
    if records.is_empty() {
        println!("no datasets below `{prefix}`");
        return Ok(());
    }
    if !args.yes {
        let bytes: u64 = records.iter().map(|r| r.size).sum();
        let versions = if args.all_versions { ", with all their versions" } else { "" };
        eprint!("remove {} datasets below `{prefix}` ({}){versions}? [y/N] ", records.len(), human_size(bytes));
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            anyhow::bail!("nothing removed");
        }
    }
    let mut failed = Vec::new();
    for record in &records {
        match remove(&node, &record.key, args.all_versions).await {
            Ok(()) => println!("removed {}", record.key),
            Err(e) => {
                eprintln!("spillway: {}", one_line(&format!("{e:#}")));
                failed.push(record.key.as_str());
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{} of {} removals failed: {}", failed.len(), records.len(), failed.join(", "));
    }
    Ok(())
}

/// `DELETE /datasets/{key}` (`?versions=all` with `--all-versions`).
async fn remove(node: &Node, key: &str, all_versions: bool) -> Result<()> {
    let key = parse_key(key)?;
    let query = if all_versions { "?versions=all" } else { "" };
    node.send(node.request(Method::DELETE, node.url(&format!("{}{query}", dataset_path(&key)))?))
        .await
        .with_context(|| format!("cannot delete `{key}`"))?;
    Ok(())
}
