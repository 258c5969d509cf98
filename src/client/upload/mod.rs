//! `spillway upload FILE [KEY]`, `upload PATH... DEST/`, `upload -r DIR
//! DEST/`, `upload - KEY`. Which files go to which keys is decided first
//! ([`plan`]); a run over them ([`batch`]) skips what the node already
//! holds and sends the rest, `--parallel` at once: a file of one chunk or
//! less in one `PUT` ([`put`], as is standard input), a bigger one as a
//! resumable upload over tus 1.0.0 ([`resumable`]):
//!
//! 1. The upload URL of an unfinished upload of the same file (canonical
//!    path, size, mtime), node and key is looked up in the [state
//!    file](super::state); the node's `HEAD` tells how far it got (and the
//!    file's first bytes up to there are hashed). Otherwise `POST /uploads`
//!    creates one (`Upload-Length`, `Upload-Metadata` with `key`, `name`,
//!    `description`, `filetype`) and its URL is remembered.
//! 2. All but the file's last piece (`--chunk-size`) goes in one `PATCH`
//!    (`Upload-Offset`), streamed from the file and hashed with blake3 on
//!    the way: the node fsyncs once and keeps what arrived if the request
//!    breaks off. The last piece follows with the whole file's blake3
//!    (`X-Blake3`), and the node commits only bytes that have it, so no
//!    checksum per request is needed and the file is read once.
//! 3. Network errors and `5xx`/`408`/`409`/`423`/`460` answers are retried
//!    with exponential backoff (bounded by `--retries` consecutive
//!    failures); after each, a `HEAD` learns the node's offset, since a
//!    broken-off `PATCH` keeps what arrived. An upload the node no longer
//!    knows (`404`/`410`) starts again.
//! 4. The last `PATCH` answers with `ETag: "<blake3>"` of the committed
//!    dataset; it must equal the local blake3, or the command fails.
//!
//! With `--parts N`, a file of 64 MiB or more goes as N tus partial uploads at once,
//! concatenated on the node ([`parts`]). The state machine that drives a
//! resumable upload (or part) through those steps is in [`resumable`]; the requests and what their answers say in [`tus`]; the
//! chunks read from the file and its hash in [`file`].

use anyhow::Result;

use super::{human_size, is_network_error, parse_key, parse_size, ApiError, Connection, Node, Transfer};

mod batch;
mod file;
mod parts;
mod plan;
mod put;
mod resumable;
mod tus;

use put::{Put, PutRequest};

/// Chunk sizes outside this range are refused (a chunk is held in memory).
const MIN_CHUNK: u64 = 1024;
const MAX_CHUNK: u64 = 1024 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct UploadArgs {
    /// The files, then where they go: `FILE [KEY]` (KEY defaults to the
    /// file's name), `PATH... DEST/` (each file as DEST/NAME), `-r DIR
    /// DEST/` (keys relative to DIR), or `- KEY` (standard input).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    /// Upload every file below each DIR (symbolic links only to files
    /// inside DIR; others are skipped and named).
    #[arg(short, long)]
    pub recursive: bool,
    /// Files sent at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64), value_name = "N")]
    pub parallel: u16,
    /// A file of 64 MiB or more goes as up to N tus parts sent at once
    /// (each at least 32 MiB), joined on the node (1: one upload). Worth it
    /// only where one connection is slower than the node's disk: the node
    /// copies the parts into one file at the end.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64), value_name = "N")]
    pub parts: u16,
    /// Never replace a dataset: a key that is taken is skipped
    /// (`If-None-Match: *`).
    #[arg(long)]
    pub no_clobber: bool,
    /// Print a JSON report (each file's outcome, key, size, blake3, and the
    /// totals) instead of lines.
    #[arg(long)]
    pub json: bool,
    /// Display name of the dataset.
    #[arg(long)]
    pub name: Option<String>,
    /// Description of the dataset.
    #[arg(long)]
    pub description: Option<String>,
    /// Content type to store with the dataset (default: guessed from the
    /// key's extension).
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
    /// Files this small or smaller go in one PUT (plain bytes or e.g.
    /// `8 MiB`); also the bytes per PATCH of a part (`--parts`), held in
    /// memory.
    #[arg(long, default_value = "8 MiB", value_parser = parse_chunk_size, value_name = "SIZE")]
    pub chunk_size: u64,
    #[command(flatten)]
    pub transfer: Transfer,
    #[command(flatten)]
    pub connection: Connection,
}

fn parse_chunk_size(raw: &str) -> Result<u64, String> {
    let size = parse_size(raw)?;
    if !(MIN_CHUNK..=MAX_CHUNK).contains(&size) {
        return Err(format!("the chunk size must be between {} and {}", human_size(MIN_CHUNK), human_size(MAX_CHUNK)));
    }
    Ok(size)
}

pub async fn run(args: UploadArgs) -> Result<()> {
    if args.paths.first().is_some_and(|p| p == "-") {
        return from_stdin(args).await;
    }
    // Every refusal (a glob's second file taken for a key, say) comes
    // before the first request.
    let plan = plan::plan(&args.paths, args.recursive)?;
    let node = Node::new(&args.connection)?;
    batch::run(&node, &args, plan).await
}

/// Failures a request is sent again for (after a wait).
fn worth_retrying(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<ApiError>() {
        Some(api) => matches!(api.status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504),
        None => is_network_error(e),
    }
}

/// `upload - KEY`: standard input, streamed in one PUT (nothing to resume).
async fn from_stdin(args: UploadArgs) -> Result<()> {
    let key = match args.paths.as_slice() {
        [_, key] if !key.ends_with('/') => parse_key(key)?,
        _ => anyhow::bail!("standard input needs one KEY: `spillway upload - KEY`"),
    };
    let node = Node::new(&args.connection)?;
    let content_type = args.content_type.clone().or_else(|| batch::guess_content_type(key.as_str()));
    let request =
        PutRequest { node: &node, key: &key, content_type: content_type.as_deref(), no_clobber: args.no_clobber };
    let (put, size, blake3) = request.stdin().await?;
    let outcome = match put {
        Put::Created => "created",
        Put::Replaced => "replaced",
        Put::Exists => "skipped-exists",
    };
    if args.json {
        let report =
            serde_json::json!({"path": "-", "key": key.as_str(), "outcome": outcome, "size": size, "blake3": blake3});
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if !args.transfer.quiet {
        match put {
            Put::Exists => println!("skipped standard input: {key} exists (--no-clobber)"),
            _ => println!("uploaded standard input as {key} ({}, blake3 {blake3})", human_size(size)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size("8 MiB"), Ok(8 << 20));
        assert!(parse_chunk_size("10").is_err());
    }
}
