//! Group commit for SQLite. SQLite takes one writer at a time and every
//! transaction ends in an fsync of the write-ahead log, so commits queued
//! behind each other would each pay a whole fsync. Instead one thread
//! writes: it takes every job waiting, runs each in a savepoint of one
//! transaction (a job that fails rolls back alone), commits once, and only
//! then answers each job, so a caller still hears `Ok` only once its rows
//! are durable. While one batch's fsync runs, the next batch gathers.

use std::any::Any;
use std::sync::{mpsc, Arc, Mutex};

use rusqlite::TransactionBehavior;

use super::db::Db;
use super::sqlite::{Lite, Sqlite};
use crate::error::{Error, Result};

/// The most jobs in one transaction: bounds what one failed commit undoes
/// and how long the writer holds SQLite's lock.
const MAX_BATCH: usize = 64;

type Output = Box<dyn Any + Send>;
type Work = Box<dyn FnOnce(&mut dyn Db) -> Result<Output> + Send>;

struct Job {
    work: Work,
    reply: mpsc::SyncSender<Result<Output>>,
}

/// The handle of the writer thread, shared by the clones of an index.
#[derive(Clone)]
pub(super) struct Batcher(Arc<Writer>);

struct Writer {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Writer {
    /// Waits for the thread to end, and with it its connection: whoever
    /// drops the last clone of an index may move the database file next
    /// (reindex renames a rebuilt one into place), which must not leave
    /// committed rows in a write-ahead log beside the old name.
    fn drop(&mut self) {
        drop(self.jobs.lock().expect("the writer's queue").take());
        if let Some(thread) = self.thread.lock().expect("the writer's thread").take() {
            let _ = thread.join();
        }
    }
}

impl Batcher {
    pub(super) fn start(sqlite: Sqlite) -> Result<Batcher> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("spillway-index-writer".into())
            .spawn(move || write_batches(&sqlite, &queue))
            .map_err(|e| Error::internal(format!("starting the index writer: {e}")))?;
        Ok(Batcher(Arc::new(Writer { jobs: Mutex::new(Some(jobs)), thread: Mutex::new(Some(thread)) })))
    }

    /// Runs `f` in the next batch; returns once that batch is committed.
    pub(super) fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.run_while(f, || ()).0
    }

    /// Like [`Batcher::run`], and runs `during` on this thread while the
    /// writer commits the batch: both are done when it returns.
    pub(super) fn run_while<T: Send + 'static, U>(
        &self,
        f: impl FnOnce(&mut dyn Db) -> Result<T> + Send + 'static,
        during: impl FnOnce() -> U,
    ) -> (Result<T>, U) {
        let (reply, answer) = mpsc::sync_channel(1);
        let work: Work = Box::new(move |db| f(db).map(|out| Box::new(out) as Output));
        let jobs = self.0.jobs.lock().expect("the writer's queue").clone();
        let sent = jobs.map(|jobs| jobs.send(Job { work, reply }));
        let during = during();
        if !matches!(sent, Some(Ok(()))) {
            return (Err(Error::internal("the index writer has stopped")), during);
        }
        let out = match answer.recv() {
            Ok(out) => out,
            Err(_) => return (Err(Error::internal("the index writer stopped during a commit")), during),
        };
        (out.map(|out| *out.downcast::<T>().expect("a job's output has the job's type")), during)
    }
}

fn write_batches(sqlite: &Sqlite, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let replies: Vec<_> = jobs.iter().map(|job| job.reply.clone()).collect();
        match write_batch(sqlite, jobs) {
            Ok(outs) => {
                for (reply, out) in replies.into_iter().zip(outs) {
                    let _ = reply.send(out);
                }
            }
            Err(e) => {
                log::warn!("a batch of {} index writes failed: {}", replies.len(), e.cause());
                let message = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(same_error(&e, &message)));
                }
            }
        }
    }
}

/// Each job's own result, once the batch is committed.
/// The connection goes back to the pool (clearing cached rows) before the
/// caller answers the jobs.
fn write_batch(sqlite: &Sqlite, jobs: Vec<Job>) -> Result<Vec<Result<Output>>> {
    let mut conn = sqlite.conn()?;
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outs = Vec::with_capacity(jobs.len());
    for job in jobs {
        let savepoint = tx.savepoint()?;
        let out = (job.work)(&mut Lite(&savepoint));
        if out.is_ok() {
            savepoint.commit()?;
        }
        // Dropped without a commit, a savepoint rolls back.
        outs.push(out);
    }
    crate::failpoint::hold("index.batch.before_commit");
    tx.commit()?;
    Ok(outs)
}

/// The batch's failure, for each of its jobs: a full disk stays a full
/// disk (507), anything else is an internal error.
fn same_error(e: &Error, message: &str) -> Error {
    match e {
        Error::InsufficientStorage(detail) => Error::InsufficientStorage(detail.clone()),
        _ => Error::internal(message.to_string()),
    }
}
