//! `spillway versions` and `spillway restore`: a key's versions (every
//! commit to a key is one, numbered 1, 2, 3...) and making an old one
//! current again.

use anyhow::{Context, Result};
use reqwest::Method;

pub use super::catalog::parse_version;
use super::catalog::print_pages;
use super::{dataset_path, human_size, parse_key, Connection, Node, Record};
use crate::key::{encode_path, Key};

#[derive(Debug, clap::Args)]
pub struct VersionsArgs {
    /// The dataset's key (also of a deleted dataset whose versions are kept).
    pub key: String,
    /// Print the versions as a JSON array (as the node sends them).
    #[arg(long)]
    pub json: bool,
    /// Versions asked for per request (the node caps it at 10000); every
    /// page is fetched, following `Link: rel="next"`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub page_size: u64,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The dataset's key (also of a deleted dataset whose versions are kept).
    pub key: String,
    /// The version to make current again (see `spillway versions KEY`).
    #[arg(value_parser = parse_version, value_name = "VERSION")]
    pub version: i64,
    #[command(flatten)]
    pub connection: Connection,
}

/// One version, as `GET /versions/{key}` lists it.
#[derive(Debug, Clone)]
pub struct Version {
    pub version: i64,
    pub size: u64,
    pub blake3: String,
    pub created_at: String,
    pub uploaded_by: Option<String>,
    pub current: bool,
}

impl Version {
    pub fn from_json(value: &serde_json::Value) -> Result<Version> {
        let text = |name: &str| value[name].as_str().map(str::to_owned);
        let parsed = (|| {
            Some(Version {
                version: value["version"].as_i64()?,
                size: value["size"].as_u64()?,
                blake3: text("blake3")?,
                created_at: text("created_at").unwrap_or_default(),
                uploaded_by: text("uploaded_by"),
                current: value["current"].as_bool().unwrap_or(false),
            })
        })();
        parsed.ok_or_else(|| anyhow::anyhow!("the node sent a version without version, size or blake3: {value}"))
    }

    /// What a download of this version needs: its size and blake3.
    pub fn record(&self, key: &Key) -> Record {
        Record {
            key: key.to_string(),
            size: self.size,
            blake3: self.blake3.clone(),
            updated_at: self.created_at.clone(),
        }
    }
}

/// `/versions/{key}?limit=N`, percent-encoded.
fn versions_path(key: &Key, limit: u64) -> String {
    format!("/versions/{}?limit={limit}", encode_path(key.as_str()))
}

/// Version `number` of `key`, from the listing: the one page of the single
/// version below `number + 1`.
pub async fn find(node: &Node, key: &Key, number: i64) -> Result<Version> {
    let url = node.url(&format!("{}&after={}", versions_path(key, 1), number.saturating_add(1)))?;
    let response = node.send(node.request(Method::GET, url)).await?;
    let page: serde_json::Value = response.json().await.map_err(|e| node.network_error(e))?;
    let first = page.as_array().context("the node's list of versions is not a JSON array")?.first();
    match first.map(Version::from_json).transpose()? {
        Some(version) if version.version == number => Ok(version),
        _ => anyhow::bail!("`{key}` has no version {number} (see `spillway versions {key}`)"),
    }
}

/// `versions KEY`: every page, newest first, streamed to stdout as it
/// arrives (a JSON array, or a table with the uploader last).
pub async fn versions(args: VersionsArgs) -> Result<()> {
    let node = Node::new(&args.connection)?;
    let key = parse_key(&args.key)?;
    let first = node.url(&versions_path(&key, args.page_size))?;
    print_pages(&node, first, args.json, "list of versions", |out, value, first| {
        let v = Version::from_json(value)?;
        if first {
            writeln!(
                out,
                "{:>7}  {:<7}  {:>10}  {:<20}  {:<12}  UPLOADED BY",
                "VERSION", "CURRENT", "SIZE", "CREATED", "BLAKE3"
            )?;
        }
        let short = v.blake3.get(..12).unwrap_or(&v.blake3);
        writeln!(
            out,
            "{:>7}  {:<7}  {:>10}  {:<20}  {:<12}  {}",
            v.version,
            if v.current { "*" } else { "" },
            human_size(v.size),
            v.created_at,
            short,
            v.uploaded_by.as_deref().unwrap_or("-")
        )?;
        Ok(())
    })
    .await?;
    Ok(())
}

/// `restore KEY N`: `POST /datasets/{key}/action/restore`, then one line
/// naming the version the restore made.
pub async fn restore(args: RestoreArgs) -> Result<()> {
    let node = Node::new(&args.connection)?;
    let key = parse_key(&args.key)?;
    let endpoint = node.url(&format!("{}/action/restore", dataset_path(&key)))?;
    let body = serde_json::json!({ "version": args.version });
    let response = node
        .send(node.request(Method::POST, endpoint).json(&body))
        .await
        .with_context(|| format!("cannot restore version {} of `{key}`", args.version))?;
    let value: serde_json::Value = response.json().await.map_err(|e| node.network_error(e))?;
    let record = Record::from_json(&value)?;
    // The record does not say its version number: the newest version is
    // the restore's, unless another commit came in between.
    let newest = async {
        let url = node.url(&versions_path(&key, 1))?;
        let page: serde_json::Value = node.send(node.request(Method::GET, url)).await?.json().await?;
        page.as_array().and_then(|p| p.first()).map(Version::from_json).transpose()
    };
    match newest.await {
        Ok(Some(v)) if v.current && v.blake3 == record.blake3 && v.version > args.version => {
            println!("restored {key} version {} as version {}", args.version, v.version);
        }
        _ => println!("restored {key} version {} (blake3 {})", args.version, record.blake3),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_parse() {
        assert_eq!(parse_version("3"), Ok(3));
        assert_eq!(parse_version(" 12 "), Ok(12));
        assert!(parse_version("0").is_err());
        assert!(parse_version("-1").is_err());
        assert!(parse_version("v2").is_err());
        assert!(parse_version(&i64::MAX.to_string()).is_err());
    }

    #[test]
    fn versions_read_from_json() {
        let value = serde_json::json!({
            "version": 2, "blake3": "ab", "size": 5, "content_type": "text/plain",
            "created_at": "2026-11-28T08:00:00Z", "current": true
        });
        let v = Version::from_json(&value).unwrap();
        assert_eq!((v.version, v.size, v.current, v.uploaded_by), (2, 5, true, None));
        assert!(Version::from_json(&serde_json::json!({"version": 1})).is_err());
    }
}
