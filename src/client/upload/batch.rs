//! A run over the files of a [`Plan`]: `--parallel` files at once, each
//! skipped when its key already holds the same bytes (size from one listing
//! of the prefix, then the local blake3 when the sizes agree), and a summary
//! at the end. A re-run after an interruption so sends only what is missing
//! (and resumes a big file where the node is).

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use serde::Serialize;

use super::parts::part_count;
use super::plan::{Item, Plan};
use super::put::{Put, PutRequest};
use super::resumable::Resumable;
use super::{worth_retrying, UploadArgs};
use crate::client::catalog::records_under;
use crate::client::progress::{rate, Overall, Progress};
use crate::client::state::StateFile;
use crate::client::{backoff, human_size, one_line, parse_key, Node, Record};

/// How one file ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Created,
    Replaced,
    /// The key already held the same bytes.
    Skipped,
    /// `--no-clobber` and the key was taken.
    SkippedExists,
    Failed,
}

/// One file's line of the report (`--json` prints them all).
#[derive(Debug, Serialize)]
pub struct FileReport {
    pub path: String,
    pub key: String,
    pub outcome: Outcome,
    pub size: u64,
    /// Bytes this run sent (a resumed upload's earlier bytes are not).
    pub sent: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole run, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    files: &'a [FileReport],
    created: usize,
    replaced: usize,
    skipped: usize,
    skipped_exists: usize,
    failed: usize,
    /// Bytes sent by this run.
    bytes: u64,
    seconds: f64,
    bytes_per_second: u64,
}

struct Batch<'a> {
    node: &'a Node,
    args: &'a UploadArgs,
    state: Option<StateFile>,
    existing: HashMap<String, Record>,
    overall: Overall,
    /// One file to one key: its own bar and no summary, as always.
    single: bool,
}

pub async fn run(node: &Node, args: &UploadArgs, plan: Plan) -> Result<()> {
    let existing: HashMap<String, Record> = records_under(node, &plan.prefix)
        .await
        .with_context(|| format!("cannot list `{}` on the node", plan.prefix))?
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    let single = plan.items.len() == 1 && !plan.prefix.ends_with('/');
    let quiet = args.transfer.quiet || args.json;
    let total: u64 = plan.items.iter().map(|i| i.size).sum();
    let label = format!("upload {} files", plan.items.len());
    let overall = Overall::new(&label, total, quiet || single);
    if !quiet {
        for link in &plan.skipped_links {
            overall.note(&format!("skipped the symbolic link {link}"));
        }
    }
    let state = match StateFile::locate() {
        Ok(state) => Some(state),
        Err(e) => {
            eprintln!("spillway: warning: {e:#}; uploads cannot resume after a crash");
            None
        }
    };
    let batch = Batch { node, args, state, existing, overall, single };
    let started = Instant::now();
    let mut reports: Vec<FileReport> = futures_util::stream::iter(plan.items.iter().map(|item| batch.one(item)))
        .buffer_unordered(usize::from(args.parallel))
        .inspect(|report| batch.say(report))
        .collect()
        .await;
    batch.overall.finish();
    reports.sort_by(|a, b| a.key.cmp(&b.key));
    let elapsed = started.elapsed();
    let count = |o: Outcome| reports.iter().filter(|r| r.outcome == o).count();
    let bytes: u64 = reports.iter().map(|r| r.sent).sum();
    let summary = Summary {
        files: &reports,
        created: count(Outcome::Created),
        replaced: count(Outcome::Replaced),
        skipped: count(Outcome::Skipped),
        skipped_exists: count(Outcome::SkippedExists),
        failed: count(Outcome::Failed),
        bytes,
        seconds: elapsed.as_secs_f64(),
        bytes_per_second: rate(bytes, elapsed),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else if !args.transfer.quiet && !single {
        eprintln!(
            "uploaded {} ({} created, {} replaced), skipped {} ({} same bytes, {} existing), failed {}; \
             {} in {:.1} s ({}/s)",
            summary.created + summary.replaced,
            summary.created,
            summary.replaced,
            summary.skipped + summary.skipped_exists,
            summary.skipped,
            summary.skipped_exists,
            summary.failed,
            human_size(bytes),
            elapsed.as_secs_f64(),
            human_size(summary.bytes_per_second)
        );
    }
    let failed: Vec<&FileReport> = reports.iter().filter(|r| r.outcome == Outcome::Failed).collect();
    match failed.as_slice() {
        [] => Ok(()),
        // One file: its own reason is the message.
        [one] if single => Err(anyhow::anyhow!("{}", one.error.as_deref().unwrap_or("failed"))),
        many => {
            let named: Vec<&str> = many.iter().map(|r| r.path.as_str()).collect();
            anyhow::bail!("{} of {} files failed: {}", many.len(), reports.len(), named.join(", "))
        }
    }
}

impl Batch<'_> {
    /// Says how a file ended, as it ends.
    fn say(&self, report: &FileReport) {
        if self.args.json {
            return;
        }
        let line = match report.outcome {
            Outcome::Created | Outcome::Replaced => format!(
                "uploaded {} as {} ({}, blake3 {})",
                report.path,
                report.key,
                human_size(report.size),
                report.blake3.as_deref().unwrap_or("")
            ),
            Outcome::Skipped => format!("skipped {}: {} holds the same bytes", report.path, report.key),
            Outcome::SkippedExists => {
                format!("skipped {}: {} exists (--no-clobber)", report.path, report.key)
            }
            Outcome::Failed => {
                // Failures go to stderr, and are named again at the end.
                if !self.single {
                    let error = report.error.as_deref().unwrap_or("failed");
                    self.overall.note(&format!("spillway: {} failed: {error}", report.path));
                }
                return;
            }
        };
        if !self.args.transfer.quiet {
            self.overall.println(&line);
        }
    }

    async fn one(&self, item: &Item) -> FileReport {
        let mut report = FileReport {
            path: item.shown.clone(),
            key: item.key.clone(),
            outcome: Outcome::Failed,
            size: item.size,
            sent: 0,
            blake3: None,
            error: None,
        };
        match self.send(item, &mut report).await {
            Ok(outcome) => report.outcome = outcome,
            Err(e) => {
                self.overall.forget(item.size.saturating_sub(report.sent));
                report.error = Some(one_line(&format!("{e:#}")));
            }
        }
        report
    }

    async fn send(&self, item: &Item, report: &mut FileReport) -> Result<Outcome> {
        let existing = self.existing.get(&item.key);
        if existing.is_some() && self.args.no_clobber {
            self.overall.forget(item.size);
            return Ok(Outcome::SkippedExists);
        }
        if let Some(record) = existing.filter(|r| r.size == item.size) {
            let local = hash_file(item).await?;
            if local == record.blake3 {
                self.overall.forget(item.size);
                report.blake3 = Some(local);
                return Ok(Outcome::Skipped);
            }
        }
        let replaced = if existing.is_some() { Outcome::Replaced } else { Outcome::Created };
        let content_type = self.args.content_type.clone().or_else(|| guess_content_type(&item.key));
        let label = format!("upload {}", item.key);
        let progress = match self.single {
            true => Progress::new(&label, item.size, 0, self.args.transfer.quiet || self.args.json),
            false => self.overall.file(&label, item.size),
        };
        let small = item.size <= self.args.chunk_size && self.args.name.is_none() && self.args.description.is_none();
        if small {
            let (bytes, blake3) = read_small(item).await?;
            let key = parse_key(&item.key)?;
            let put = PutRequest {
                node: self.node,
                key: &key,
                content_type: content_type.as_deref(),
                no_clobber: self.args.no_clobber,
            };
            let mut failures = 0;
            let outcome = loop {
                match put.bytes(bytes.clone(), &blake3).await {
                    Ok(outcome) => break outcome,
                    Err(e) if failures < self.args.transfer.retries && worth_retrying(&e) => {
                        failures += 1;
                        tokio::time::sleep(backoff(failures)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            progress.finish();
            report.blake3 = Some(blake3);
            return Ok(match outcome {
                Put::Exists => Outcome::SkippedExists,
                Put::Created => {
                    report.sent = item.size;
                    Outcome::Created
                }
                Put::Replaced => {
                    report.sent = item.size;
                    Outcome::Replaced
                }
            });
        }
        let resumable = Resumable {
            node: self.node,
            args: self.args,
            state: self.state.as_ref(),
            shown: item.shown.clone(),
            path: &item.path,
            key: item.key.clone(),
            content_type,
        };
        let sent = match part_count(item.size, self.args.parts) {
            1 => resumable.send(progress).await?,
            parts => resumable.send_in_parts(parts, progress).await?,
        };
        report.sent = item.size - sent.resumed_from;
        report.blake3 = Some(sent.blake3);
        Ok(replaced)
    }
}

/// The content type a key's extension suggests, if any.
pub fn guess_content_type(key: &str) -> Option<String> {
    mime_guess::from_path(key).first().map(|m| m.essence_str().to_string())
}

async fn hash_file(item: &Item) -> Result<String> {
    let path = item.path.clone();
    let shown = item.shown.clone();
    tokio::task::spawn_blocking(move || super::file::blake3_of(&path, &shown)).await?
}

/// A small file's bytes and blake3 (it fits in one chunk).
async fn read_small(item: &Item) -> Result<(bytes::Bytes, String)> {
    let path = item.path.clone();
    let shown = item.shown.clone();
    let expected = item.size;
    tokio::task::spawn_blocking(move || {
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {shown}"))?;
        anyhow::ensure!(bytes.len() as u64 == expected, "{shown} changed while it was being uploaded");
        let blake3 = blake3::hash(&bytes).to_hex().to_string();
        Ok((bytes::Bytes::from(bytes), blake3))
    })
    .await?
}
