//! The command-line client: `spillway upload`, `get`, `ls`, `rm`, `url`,
//! `versions` and `restore`, subcommands of the same binary that talk HTTP
//! to a running node.
//!
//! - [`upload`]: one file, several, or a tree (skipping what the node holds,
//!   several at once); resumable uploads over tus 1.0.0 (chunked, retried,
//!   resumed after a crash of the client from a small [`state`] file,
//!   verified with blake3), big files in parallel parts;
//! - [`download`]: streamed downloads, resumed with `Range` + `If-Range`,
//!   verified with blake3 (the current bytes, or a version's);
//! - [`get_tree`]: `get -r`, every dataset below a prefix;
//! - [`catalog`]: `ls` (following `Link` pagination) and `url`;
//! - [`remove`]: `rm`, of a key or (confirmed) of a prefix;
//! - [`config`]: which node, and which token (flags, environment, the
//!   client config file, the working directory's node settings);
//! - [`versions`]: `versions` (a key's versions, paged the same way) and
//!   `restore`;
//! - [`progress`]: an indicatif bar on a terminal, quiet lines otherwise.
//!
//! Errors are `anyhow` chains; [`run`] prints one line, `spillway: ...`, and
//! exits non-zero. Answers of the node that are errors become [`ApiError`],
//! which carries the status and the problem detail's `code` and `detail`
//! (both in `error.rs`, with [`NetworkError`]).

pub mod catalog;
pub mod config;
pub mod download;
mod error;
pub mod get_tree;
pub mod progress;
pub mod remove;
pub mod state;
pub mod upload;
pub mod versions;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::{Method, RequestBuilder, Response, Url};

pub use error::{is_connect_error, is_network_error, ApiError, NetworkError};

use crate::key::{encode_path, Key};

/// The client's subcommands (flattened into the binary's own).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Upload files as datasets: one, several into a prefix, or a tree with
    /// -r (resumable, verified with blake3; same bytes are skipped).
    Upload(upload::UploadArgs),
    /// Download a dataset (or one of its versions), or with -r every dataset
    /// below a prefix (resumable, verified with blake3).
    Get(download::GetArgs),
    /// List datasets, as a table or as JSON.
    Ls(catalog::LsArgs),
    /// Delete a dataset, or with -r every dataset below a prefix (needs an
    /// `admin` token); versions stay unless `--all-versions`.
    Rm(remove::RmArgs),
    /// Print a signed URL that works without a token.
    Url(catalog::UrlArgs),
    /// List a dataset's versions, newest first, as a table or as JSON.
    Versions(versions::VersionsArgs),
    /// Make an older version of a dataset current again (needs `write`).
    Restore(versions::RestoreArgs),
}

/// Where the node is and how to prove who we are (the order is in
/// [`config`]).
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The node's URL (`http://host:port`, or `host:port`). Else, in order:
    /// SPILLWAY_URL, the profile's `url` in the client config file, the node
    /// settings of the working directory (Rocket.toml, SPILLWAY_ADDRESS,
    /// SPILLWAY_PORT), http://127.0.0.1:8000.
    #[arg(long = "url", env = "SPILLWAY_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Bearer token (scopes `read`, `write` or `admin`). Else SPILLWAY_TOKEN,
    /// else the profile's `token`.
    #[arg(long, env = "SPILLWAY_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Profile of the client config file ($SPILLWAY_CONFIG, else
    /// $XDG_CONFIG_HOME/spillway/config.toml, else
    /// ~/.config/spillway/config.toml): a `[NAME]` table with `url` and
    /// `token`.
    #[arg(long, env = "SPILLWAY_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,
}

/// How a transfer (upload or download) behaves.
#[derive(Debug, Clone, clap::Args)]
pub struct Transfer {
    /// Consecutive failed attempts before giving up.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub retries: u32,
    /// Print no progress and no summary.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs one client subcommand and turns its outcome into an exit code: 0 on
/// success, 1 with a one-line reason on stderr otherwise.
pub fn run(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Upload(args) => upload::run(args).await,
            Command::Get(args) if args.recursive => get_tree::run(args).await,
            Command::Get(args) => download::run(args).await,
            Command::Ls(args) => catalog::ls(args).await,
            Command::Rm(args) => remove::rm(args).await,
            Command::Url(args) => catalog::url(args).await,
            Command::Versions(args) => versions::versions(args).await,
            Command::Restore(args) => versions::restore(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `spillway ls | head`: the reader left; that is no failure of ours.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("spillway: {}", one_line(&format!("{e:#}")));
    ExitCode::FAILURE
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Collapses whitespace runs (newlines included) so a reason stays on one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A node to talk to: its base URL, the token, and one HTTP client.
pub struct Node {
    /// The base URL without a trailing slash.
    base: String,
    /// Where the URL came from (see [`config`]), for a failure to connect.
    source: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one read may wait. Generous: the node answers a tus PATCH only
/// after the bytes are fsynced (and the last one after the commit).
const READ_TIMEOUT: Duration = Duration::from_secs(300);

impl Node {
    pub fn new(connection: &Connection) -> Result<Node> {
        let config::Resolved { url: base, token, source } = config::resolve(connection)?;
        let parsed = Url::parse(&base).with_context(|| format!("`{base}` is not a URL (from {source})"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            anyhow::bail!("`{base}` is not an http:// URL (from {source})");
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("spillway/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Node { base, source, token, http })
    }

    /// The node's base URL, as given (no trailing slash).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// An absolute URL for a path (`/datasets`, `/uploads`) below the base.
    pub fn url(&self, path_and_query: &str) -> Result<Url> {
        let text = format!("{}{path_and_query}", self.base);
        Url::parse(&text).with_context(|| format!("`{text}` is not a URL"))
    }

    /// A URL the node sent (a `Location`, a `Link`, a signed URL's path),
    /// resolved against the URL of the request it answered.
    pub fn resolve(against: &Url, reference: &str) -> Result<Url> {
        against.join(reference).with_context(|| format!("the node sent a bad URL reference `{reference}`"))
    }

    /// A request with the token (when there is one).
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Sends a request; an error answer becomes an [`ApiError`], a network
    /// failure an error that names the node.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response> {
        let response = request.send().await.map_err(|e| self.network_error(e))?;
        if response.status().is_success() || response.status().is_redirection() {
            return Ok(response);
        }
        Err(ApiError::from_response(response, self.has_token()).await.into())
    }

    /// A network failure, described by what failed and its innermost cause.
    pub fn network_error(&self, e: reqwest::Error) -> anyhow::Error {
        let what = if e.is_connect() {
            "cannot connect to the node"
        } else if e.is_timeout() {
            "the node did not answer in time"
        } else {
            "the connection to the node failed"
        };
        let mut causes = Vec::new();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let text = cause.to_string();
            if !causes.contains(&text) {
                causes.push(text);
            }
            source = cause.source();
        }
        let cause = causes.last().cloned().unwrap_or_else(|| e.to_string());
        let message = if self.base.starts_with("https:") && causes.iter().any(|c| speaks_plain_http(c)) {
            format!(
                "the node at {} speaks plain HTTP, not HTTPS: use an http:// URL (--url or SPILLWAY_URL; this one \
                 came from {})",
                self.base, self.source
            )
        } else if e.is_connect() {
            format!(
                "{what} at {} ({cause}); is it running there? Give its URL with --url or SPILLWAY_URL (this one \
                 came from {})",
                self.base, self.source
            )
        } else {
            format!("{what} at {} ({cause})", self.base)
        };
        NetworkError::new(message, e).into()
    }

    /// `GET /datasets/{key}`: the record.
    pub async fn record(&self, key: &Key) -> Result<Record> {
        let response = self.send(self.request(Method::GET, self.url(&dataset_path(key))?)).await?;
        let value: serde_json::Value = response.json().await.map_err(|e| self.network_error(e))?;
        Record::from_json(&value)
    }
}

/// Whether a TLS failure's text says the peer answered in plain HTTP.
fn speaks_plain_http(cause: &str) -> bool {
    let cause = cause.to_ascii_lowercase();
    ["corrupt message", "invalidcontenttype", "invalid content type", "wrong version number", "http request"]
        .iter()
        .any(|sign| cause.contains(sign))
}

/// `/datasets/{key}`, percent-encoded.
pub fn dataset_path(key: &Key) -> String {
    format!("/datasets/{}", encode_path(key.as_str()))
}

/// What the client needs of a catalog record.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: String,
    pub size: u64,
    pub blake3: String,
    pub updated_at: String,
}

impl Record {
    pub fn from_json(value: &serde_json::Value) -> Result<Record> {
        let text = |name: &str| value[name].as_str().map(str::to_owned);
        let parsed = (|| {
            Some(Record {
                key: text("key")?,
                size: value["size"].as_u64()?,
                blake3: text("blake3")?,
                updated_at: text("updated_at").unwrap_or_default(),
            })
        })();
        parsed.ok_or_else(|| anyhow::anyhow!("the node sent a record without key, size or blake3: {value}"))
    }
}

/// Parses a key given on the command line, with the node's own rules.
pub fn parse_key(raw: &str) -> Result<Key> {
    Key::parse(raw).map_err(|e| anyhow::anyhow!("`{raw}` is not a valid key: {e}"))
}

/// The hex of an `ETag` header (`"<blake3>"`, quotes and `W/` dropped).
pub fn etag_of(response: &Response) -> Option<String> {
    let value = response.headers().get(reqwest::header::ETAG)?.to_str().ok()?;
    Some(value.trim().trim_start_matches("W/").trim_matches('"').to_ascii_lowercase())
}

/// Sizes for people: bytes below 1 KiB, then KiB, MiB, GiB, TiB with one
/// decimal.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Parses a size flag: plain bytes or with a unit (`8 MiB`, `512KiB`, `1GB`).
pub fn parse_size(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    if let Ok(n) = raw.parse::<u64>() {
        return Ok(n);
    }
    raw.parse::<rocket::data::ByteUnit>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("`{raw}` is not a size (plain bytes, or e.g. `8 MiB`)"))
}

/// Exponential backoff for the `attempt`-th retry (1-based): 0.5 s, 1 s, 2 s,
/// ... capped at 15 s (eight retries span about a minute), with a little
/// jitter so clients do not march in step.
pub fn backoff(attempt: u32) -> Duration {
    let base = 500u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(10)).min(15_000);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let jitter = u64::from(nanos) % (base / 4 + 1);
    Duration::from_millis(base + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(300 * 1024 * 1024), "300.0 MiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("8388608"), Ok(8 << 20));
        assert_eq!(parse_size("8 MiB"), Ok(8 << 20));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert!(parse_size("eight").is_err());
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert!(backoff(1) >= Duration::from_millis(500) && backoff(1) < Duration::from_millis(700));
        assert!(backoff(3) >= Duration::from_secs(2));
        assert!(backoff(30) <= Duration::from_millis(18_750));
    }

    #[test]
    fn error_lines() {
        let e = ApiError {
            status: reqwest::StatusCode::UNAUTHORIZED,
            code: Some("unauthorized".into()),
            detail: Some("unknown token".into()),
            had_token: true,
            retry_after: None,
            upload_offset: None,
        };
        assert_eq!(e.to_string(), "the node refused the token (401): unknown token");
        assert_eq!(one_line("a\n b\t c"), "a b c");
    }
}
