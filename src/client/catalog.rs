//! `spillway ls` and `spillway url`, and the listing of a prefix that
//! `upload`, `get -r` and `rm -r` start from.

use std::io::Write;

use anyhow::{Context, Result};
use reqwest::header::{HeaderMap, LINK};
use reqwest::{Method, Url};

use super::{dataset_path, human_size, parse_key, parse_size, Connection, Node, Record};
use crate::key::encode_query_value;

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// Only keys starting with this prefix (e.g. `sales/2024/`).
    pub prefix: Option<String>,
    /// Print the records as a JSON array (as the node sends them).
    #[arg(long)]
    pub json: bool,
    /// Records asked for per request (the node caps it at 10000); every page
    /// is fetched, following `Link: rel="next"`.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..), value_name = "N")]
    pub page_size: u64,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("method").required(true).args(["upload", "download"])))]
pub struct UrlArgs {
    /// The dataset's key.
    pub key: String,
    /// A URL to PUT the dataset to (needs a `write` token to mint).
    #[arg(long)]
    pub upload: bool,
    /// A URL to GET the dataset from (needs a `read` token to mint).
    #[arg(long)]
    pub download: bool,
    /// Seconds the URL stays valid (the node's default: one hour).
    #[arg(long, value_name = "SECONDS")]
    pub expires: Option<u64>,
    /// Largest body the upload URL accepts (plain bytes or e.g. `1 GiB`).
    #[arg(long, conflicts_with = "download", value_parser = parse_size, value_name = "SIZE")]
    pub max_size: Option<u64>,
    /// A download URL for this version (see `spillway versions KEY`).
    #[arg(long, conflicts_with = "upload", value_parser = parse_version, value_name = "N")]
    pub version: Option<i64>,
    /// Print `{url, method, expires_at}` as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// `ls`: every page, streamed to stdout as it arrives (a JSON array, or a
/// table with the key last so that no column needs the widest key).
pub async fn ls(args: LsArgs) -> Result<()> {
    let node = Node::new(&args.connection)?;
    let mut query = format!("limit={}", args.page_size);
    if let Some(prefix) = args.prefix.as_deref().filter(|p| !p.is_empty()) {
        query = format!("prefix={}&{query}", encode_query_value(prefix));
    }
    let first = node.url(&format!("/datasets?{query}"))?;
    let count = print_pages(&node, first, args.json, "catalog page", |out, value, first| {
        let record = Record::from_json(value)?;
        if first {
            writeln!(out, "{:>10}  {:<20}  {:<12}  KEY", "SIZE", "UPDATED", "BLAKE3")?;
        }
        let short = record.blake3.get(..12).unwrap_or(&record.blake3);
        writeln!(out, "{:>10}  {:<20}  {:<12}  {}", human_size(record.size), record.updated_at, short, record.key)?;
        Ok(())
    })
    .await?;
    if count == 0 && !args.json {
        match args.prefix.as_deref().filter(|p| !p.is_empty()) {
            Some(prefix) => println!("no datasets below `{prefix}`"),
            None => println!("no datasets"),
        }
    }
    Ok(())
}

/// Every record whose key starts with `prefix` (all pages).
pub async fn records_under(node: &Node, prefix: &str) -> Result<Vec<Record>> {
    let mut query = "limit=10000".to_string();
    if !prefix.is_empty() {
        query = format!("prefix={}&{query}", encode_query_value(prefix));
    }
    let mut records = Vec::new();
    let mut next = Some(node.url(&format!("/datasets?{query}"))?);
    while let Some(url) = next.take() {
        let response = node.send(node.request(Method::GET, url.clone())).await?;
        next = next_link(&url, response.headers())?;
        let page: serde_json::Value = response.json().await.map_err(|e| node.network_error(e))?;
        let items = page.as_array().context("the node's catalog page is not a JSON array")?;
        if items.is_empty() {
            break;
        }
        for value in items {
            records.push(Record::from_json(value)?);
        }
    }
    Ok(records)
}

/// Every page from `first` on, following `Link: rel="next"`, streamed to
/// stdout as it arrives: one JSON array of the items, or (`table_row`,
/// told whether it writes the first row) a table.
pub(super) async fn print_pages(
    node: &Node,
    first: Url,
    json: bool,
    what: &str,
    mut table_row: impl FnMut(&mut dyn Write, &serde_json::Value, bool) -> Result<()>,
) -> Result<usize> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut count = 0usize;
    let mut next = Some(first);
    while let Some(url) = next.take() {
        let response = node.send(node.request(Method::GET, url.clone())).await?;
        next = next_link(&url, response.headers())?;
        let page: serde_json::Value = response.json().await.map_err(|e| node.network_error(e))?;
        let items = page.as_array().with_context(|| format!("the node's {what} is not a JSON array"))?;
        for value in items {
            if json {
                out.write_all(if count == 0 { b"[\n  " } else { b",\n  " })?;
                serde_json::to_writer(&mut out, value)?;
            } else {
                table_row(&mut out, value, count == 0)?;
            }
            count += 1;
        }
        if items.is_empty() {
            // A page that is empty ends the listing whatever the links say.
            break;
        }
    }
    if json {
        out.write_all(if count == 0 { b"[]\n" } else { b"\n]\n" })?;
    }
    out.flush()?;
    Ok(count)
}

/// Highest version number the client accepts: the node's are `i64`, and
/// looking one up asks for those below `N + 1`.
const MAX_VERSION: i64 = i64::MAX - 1;

/// Parses a version number given on the command line: a positive whole number.
pub fn parse_version(raw: &str) -> Result<i64, String> {
    match raw.trim().parse::<i64>() {
        Ok(n) if (1..=MAX_VERSION).contains(&n) => Ok(n),
        _ => Err(format!("`{raw}` is not a version number (1, 2, 3...)")),
    }
}

/// The `Link: <...>; rel="next"` target, resolved against the page's URL.
pub(super) fn next_link(page: &Url, headers: &HeaderMap) -> Result<Option<Url>> {
    for value in headers.get_all(LINK) {
        let Ok(value) = value.to_str() else { continue };
        for link in value.split(',') {
            let mut parts = link.split(';');
            let target = parts.next().unwrap_or("").trim();
            let is_next = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=").is_some_and(|rel| rel.trim_matches('"').split_whitespace().any(|r| r == "next"))
            });
            if is_next && target.starts_with('<') && target.ends_with('>') {
                return Node::resolve(page, &target[1..target.len() - 1]).map(Some);
            }
        }
    }
    Ok(None)
}

/// `url KEY --upload|--download`: mints a signed URL and prints it absolute.
pub async fn url(args: UrlArgs) -> Result<()> {
    let node = Node::new(&args.connection)?;
    let key = parse_key(&args.key)?;
    let action = if args.upload { "upload-url" } else { "download-url" };
    let endpoint = node.url(&format!("{}/{action}", dataset_path(&key)))?;
    let mut body = serde_json::Map::new();
    if let Some(expires) = args.expires {
        body.insert("expires_in".into(), expires.into());
    }
    if let Some(max_size) = args.max_size {
        body.insert("max_size".into(), max_size.into());
    }
    if let Some(version) = args.version {
        body.insert("version".into(), version.into());
    }
    let response = node.send(node.request(Method::POST, endpoint.clone()).json(&body)).await?;
    let answer: serde_json::Value = response.json().await.map_err(|e| node.network_error(e))?;
    let url = answer["url"].as_str().context("the node's answer has no `url`")?;
    let url = Node::resolve(&endpoint, url)?;
    if args.json {
        let method = answer["method"].as_str().unwrap_or(if args.upload { "PUT" } else { "GET" });
        let report = serde_json::json!({"url": url.as_str(), "method": method, "expires_at": answer["expires_at"]});
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{url}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_with_link(link: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(LINK, link.parse().unwrap());
        headers
    }

    #[test]
    fn follows_next_links() {
        let page = Url::parse("http://n:1/datasets?limit=2").unwrap();
        let r = response_with_link("</datasets?limit=2&after=b>; rel=\"next\"");
        assert_eq!(next_link(&page, &r).unwrap().unwrap().as_str(), "http://n:1/datasets?limit=2&after=b");
        let r = response_with_link("<http://o/prev>; rel=prev, </x?after=c>; rel=\"next\"");
        assert_eq!(next_link(&page, &r).unwrap().unwrap().as_str(), "http://n:1/x?after=c");
        let r = response_with_link("</x>; rel=\"prev\"");
        assert!(next_link(&page, &r).unwrap().is_none());
    }
}
