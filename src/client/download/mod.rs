//! `spillway get KEY [OUT] [--version N]`: a streamed, resumable, verified
//! download.
//!
//! The bytes go to `OUT.part`, which is renamed to `OUT` once complete and
//! verified. The ETag (blake3) of the version being fetched is remembered
//! in the [state file](super::state) beside the `.part` file's path, so a
//! later run (after a crash, a kill or a dropped connection) asks for the
//! rest with `Range: bytes=N-` and `If-Range: "<etag>"`: the node answers
//! `206` with the rest of that version, or `200` with the whole new version
//! if the dataset was replaced since (then the `.part` file starts over).
//! The blake3 of every byte, the resumed prefix included (hashed from the
//! `.part` file first), must equal the ETag of what was served.
//!
//! With `--version N` the bytes are those of version N
//! (`GET /data/{key}?version=N`), whose size and blake3 come from the
//! versions listing; a version never changes, so what was served must also
//! hash to the listed blake3.

use std::fs::OpenOptions;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, IF_RANGE, RANGE};
use reqwest::{Method, Response, StatusCode};

use super::progress::Progress;
use super::state::{unix_now, DownloadEntry, StateFile};
use super::versions::{self, parse_version};
use super::{
    backoff, etag_of, human_size, is_network_error, one_line, parse_key, ApiError, Connection, Node, Transfer,
};
use crate::key::Key;
use target::Target;

mod target;

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// The dataset's key.
    pub key: String,
    /// Where to write it: a file, a directory, or `-` for stdout (default:
    /// the key's last segment, in the current directory).
    pub out: Option<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(short, long)]
    pub force: bool,
    /// Download this version (see `spillway versions KEY`), also of a
    /// deleted dataset whose versions are kept.
    #[arg(long, value_parser = parse_version, value_name = "N", conflicts_with = "recursive")]
    pub version: Option<i64>,
    /// KEY is a prefix ending in `/`: download every dataset below it into
    /// the directory OUT (default: the current one), paths relative to the
    /// prefix; files that already hold the same bytes are skipped.
    #[arg(short, long)]
    pub recursive: bool,
    /// Files fetched at once (with -r).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64), value_name = "N")]
    pub parallel: u16,
    /// Print a JSON report (key, path, size, blake3) instead of lines.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transfer: Transfer,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn run(args: GetArgs) -> Result<()> {
    let node = Node::new(&args.connection)?;
    let key = parse_key(&args.key)?;
    let record = match args.version {
        Some(number) => versions::find(&node, &key, number).await?.record(&key),
        None => node.record(&key).await?,
    };
    let last_segment = key.as_str().rsplit('/').next().unwrap_or(key.as_str()).to_string();
    let out = match &args.out {
        Some(out) if out.as_os_str() == "-" => None,
        Some(out) if out.is_dir() => Some(out.join(&last_segment)),
        Some(out) => Some(out.clone()),
        None => Some(PathBuf::from(&last_segment)),
    };
    let options =
        GetOptions { force: args.force, retries: args.transfer.retries, quiet: args.transfer.quiet || args.json };
    let blake3 = fetch_one(&node, &key, &record, args.version, out.clone(), &options).await?;
    if args.json {
        let path = out.map_or_else(|| "-".to_string(), |p| p.display().to_string());
        let report = serde_json::json!({
            "key": key.as_str(), "path": path, "size": record.size, "blake3": blake3, "version": args.version,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// How one download behaves.
pub struct GetOptions {
    /// Replace an existing file.
    pub force: bool,
    pub retries: u32,
    /// No progress and no lines.
    pub quiet: bool,
}

/// Downloads `record` (of `key`, or its `version`) to `out` (stdout when
/// `None`), resuming its `.part` file; returns the blake3 of what was
/// written, which it checked.
pub async fn fetch_one(
    node: &Node,
    key: &Key,
    record: &super::Record,
    version: Option<i64>,
    out: Option<PathBuf>,
    options: &GetOptions,
) -> Result<String> {
    let quiet = options.quiet || out.is_none();
    let mut fetch = Fetch { node, key, version, record, retries: options.retries, quiet, progress: None };
    let what = fetch.what();
    let Some(out) = out else {
        // Stdout: no `.part` file and no resume across runs; the fetch
        // verifies what it wrote.
        let stdout = std::io::stdout();
        let mut target = Target::Stdout(BufWriter::with_capacity(1 << 20, stdout.lock()));
        let blake3 = fetch.run(&mut target, 0, None, None).await?;
        fetch.check_version(&blake3)?;
        return Ok(blake3);
    };
    if out.exists() && !options.force {
        anyhow::bail!("{} exists; pass --force to replace it", out.display());
    }
    let part = part_path(&out);
    let part_abs = std::path::absolute(&part).unwrap_or_else(|_| part.clone());
    let part_name = part_abs.to_string_lossy().into_owned();
    let state = match StateFile::locate() {
        Ok(state) => Some(state),
        Err(e) => {
            eprintln!("spillway: warning: {e:#}; this download cannot resume after a crash");
            None
        }
    };

    // What the `.part` file holds, if we know.
    let remembered = match &state {
        Some(state) => state.find_download(&part_name, node.base(), key.as_str())?,
        None => None,
    };
    let existing = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let (have, etag) = match remembered {
        Some(entry) if existing > 0 && entry.etag == record.blake3 => (existing, Some(entry.etag)),
        Some(_) if existing > 0 => {
            if !quiet {
                match version {
                    Some(_) => eprintln!("get {what}: {} holds other bytes; starting over", part.display()),
                    None => {
                        eprintln!("get {key}: the dataset changed since {} was started; starting over", part.display())
                    }
                }
            }
            (0, None)
        }
        _ => (0, None),
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&part)
        .with_context(|| format!("cannot write {}", part.display()))?;
    file.set_len(have)?;
    let mut target = Target::File { writer: BufWriter::with_capacity(1 << 20, file), hasher: Box::default() };
    if have > 0 {
        target.hash_existing(have).with_context(|| format!("cannot read {}", part.display()))?;
        if !quiet {
            eprintln!(
                "get {what}: resuming at {} of {} ({})",
                human_size(have),
                human_size(record.size),
                part.display()
            );
        }
    }
    let remember = |etag: &str| {
        if let Some(state) = &state {
            let entry = DownloadEntry {
                part: part_name.clone(),
                server: node.base().to_string(),
                key: key.to_string(),
                etag: etag.to_string(),
                created_at: unix_now(),
            };
            if let Err(e) = state.remember_download(&entry) {
                eprintln!("spillway: warning: {e:#}; this download cannot resume after a crash");
            }
        }
    };
    let blake3 = fetch.run(&mut target, have, etag, Some(&remember)).await;
    let blake3 = match blake3 {
        Ok(blake3) => blake3,
        Err(e) => {
            if let Some(progress) = &fetch.progress {
                progress.abandon();
            }
            return Err(e);
        }
    };
    let local = target.hash();
    let forget = || {
        if let Some(state) = &state {
            if let Err(e) = state.forget_download(&part_name) {
                eprintln!("spillway: warning: {e:#}");
            }
        }
    };
    if let Err(e) = check(&blake3, &local, key).and_then(|()| fetch.check_version(&blake3)) {
        // The `.part` file is worthless: start over next time.
        let _ = std::fs::remove_file(&part);
        forget();
        return Err(e);
    }
    let Target::File { writer, .. } = target else { unreachable!("a file target") };
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&part, &out).with_context(|| format!("cannot rename {} to {}", part.display(), out.display()))?;
    forget();
    if let Some(progress) = &fetch.progress {
        progress.finish();
    }
    if !quiet {
        let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        println!("downloaded {what} to {} ({}, blake3 {blake3})", out.display(), human_size(size));
    }
    if blake3 != record.blake3 && !quiet {
        // (A version's bytes never change: check_version refused that.)
        eprintln!("get {key}: the dataset was replaced while it was fetched; this is the newer version");
    }
    Ok(blake3)
}

fn check(node: &str, local: &str, key: &Key) -> Result<()> {
    if node != local {
        anyhow::bail!("blake3 mismatch: the node serves {node} for `{key}`, the bytes received hash to {local}");
    }
    Ok(())
}

/// `OUT.part`.
fn part_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    out.with_file_name(name)
}

/// The transfer loop, shared by files and stdout.
struct Fetch<'a> {
    node: &'a Node,
    key: &'a Key,
    /// The version asked for (`?version=N`), or the current bytes.
    version: Option<i64>,
    /// The record read before the download (of the version, if one).
    record: &'a super::Record,
    retries: u32,
    quiet: bool,
    progress: Option<Progress>,
}

impl Fetch<'_> {
    /// How messages name what is fetched: the key, and the version if one.
    fn what(&self) -> String {
        match self.version {
            Some(number) => format!("{} version {number}", self.key),
            None => self.key.to_string(),
        }
    }

    /// A version's bytes are those the listing named: anything else is an
    /// error, not a newer dataset.
    fn check_version(&self, served: &str) -> Result<()> {
        match self.version {
            Some(number) if served != self.record.blake3 => anyhow::bail!(
                "blake3 mismatch: version {number} of `{}` is listed as {}, the node served {served}",
                self.key,
                self.record.blake3
            ),
            _ => Ok(()),
        }
    }

    /// Fetches into `target` from byte `have` (of the version `etag`, when
    /// resuming) to the end; returns the ETag (blake3) of what was served.
    /// `on_etag` learns each version that starts being written.
    async fn run(
        &mut self,
        target: &mut Target<'_>,
        mut have: u64,
        mut etag: Option<String>,
        on_etag: Option<&dyn Fn(&str)>,
    ) -> Result<String> {
        if have == self.record.size && etag.as_deref() == Some(self.record.blake3.as_str()) {
            // Complete already (the rename did not happen): just verify.
            return Ok(self.record.blake3.clone());
        }
        // Stdout is hashed here (a file target hashes as it writes).
        let mut stdout_hasher = blake3::Hasher::new();
        let mut remembered: Option<String> = etag.clone();
        let mut failures = 0u32;
        let url = match self.version {
            Some(number) => self.node.url(&format!("{}?version={number}", self.key.url_path()))?,
            None => self.node.url(&self.key.url_path())?,
        };
        loop {
            let mut request = self.node.request(Method::GET, url.clone());
            if let (true, Some(etag)) = (have > 0, &etag) {
                request = request.header(RANGE, format!("bytes={have}-")).header(IF_RANGE, format!("\"{etag}\""));
            }
            let attempt = async {
                let response = self.node.send(request).await?;
                let (start, total) = span(&response)?;
                let served = etag_of(&response).context("the node sent no ETag: the download cannot be verified")?;
                if start != have || etag.as_deref().is_some_and(|e| e != served && start > 0) {
                    // A whole body (the dataset was replaced, or no range
                    // was asked for): start over.
                    target.restart()?;
                    stdout_hasher.reset();
                    have = 0;
                    anyhow::ensure!(start == 0, "the node sent bytes from {start}, not from 0");
                }
                etag = Some(served.clone());
                if remembered.as_deref() != Some(&served) {
                    if let Some(on_etag) = on_etag {
                        on_etag(&served);
                    }
                    remembered = Some(served.clone());
                }
                let progress = self.progress(total, have);
                self.stream(response, target, &mut stdout_hasher, &mut have, &progress).await?;
                anyhow::ensure!(have == total, "the body ended at {have} of {total} bytes");
                Ok(served)
            }
            .await;
            let e = match attempt {
                Ok(served) => {
                    target.flush()?;
                    if let Target::Stdout(_) = target {
                        let local = stdout_hasher.finalize().to_hex().to_string();
                        check(&served, &local, self.key)?;
                    }
                    return Ok(served);
                }
                Err(e) => e,
            };
            target.flush()?;
            let api = e.downcast_ref::<ApiError>();
            let retry_after = match api {
                // The `.part` file is longer than the version served:
                // it is not a prefix of it; start over.
                Some(api) if api.is(416) && have > 0 => {
                    target.restart()?;
                    have = 0;
                    None
                }
                Some(api) if matches!(api.status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504) => api.retry_after,
                Some(_) => return Err(e),
                None if is_network_error(&e) => None,
                None => return Err(e),
            };
            failures += 1;
            if failures > self.retries {
                return Err(e.context(format!("giving up after {failures} failed attempts")));
            }
            let wait = retry_after.map_or_else(|| backoff(failures), |s| std::time::Duration::from_secs(s.min(60)));
            let message = format!(
                "get {}: {}; retrying in {:.1} s ({failures} of {})",
                self.what(),
                one_line(&format!("{e:#}")),
                wait.as_secs_f64(),
                self.retries
            );
            match &self.progress {
                Some(progress) => progress.note(&message),
                None => eprintln!("{message}"),
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The progress display for `total` bytes (a new one if the total changed).
    fn progress(&mut self, total: u64, have: u64) -> Progress {
        match &self.progress {
            Some(progress) if progress.total() == total => {
                progress.set(have);
                progress.clone()
            }
            _ => {
                let progress = Progress::new(&format!("get {}", self.what()), total, have, self.quiet);
                self.progress = Some(progress.clone());
                progress
            }
        }
    }

    async fn stream(
        &self,
        mut response: Response,
        target: &mut Target<'_>,
        stdout_hasher: &mut blake3::Hasher,
        have: &mut u64,
        progress: &Progress,
    ) -> Result<()> {
        while let Some(chunk) = response.chunk().await.map_err(|e| self.node.network_error(e))? {
            target.write(&chunk)?;
            if let Target::Stdout(_) = target {
                stdout_hasher.update(&chunk);
            }
            *have += chunk.len() as u64;
            progress.set(*have);
        }
        Ok(())
    }
}

/// Where the body starts and the whole length: from `Content-Range` for a
/// `206`, from `Content-Length` for a `200`.
fn span(response: &Response) -> Result<(u64, u64)> {
    let header = |name| response.headers().get(name).and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok());
    if response.status() == StatusCode::PARTIAL_CONTENT {
        let range = header(CONTENT_RANGE).context("a 206 without Content-Range")?;
        let parsed = (|| {
            let rest = range.trim().strip_prefix("bytes ")?;
            let (span, total) = rest.split_once('/')?;
            let (start, _end) = span.split_once('-')?;
            Some((start.trim().parse().ok()?, total.trim().parse().ok()?))
        })();
        return parsed.with_context(|| format!("the node sent a bad Content-Range `{range}`"));
    }
    anyhow::ensure!(response.status() == StatusCode::OK, "the node answered {} to a download", response.status());
    let length = header(CONTENT_LENGTH)
        .and_then(|v| v.trim().parse().ok())
        .context("the node sent no Content-Length: the download cannot be checked for completeness")?;
    Ok((0, length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_paths() {
        assert_eq!(part_path(Path::new("a/b.csv")), PathBuf::from("a/b.csv.part"));
        assert_eq!(part_path(Path::new("b")), PathBuf::from("b.part"));
    }
}
