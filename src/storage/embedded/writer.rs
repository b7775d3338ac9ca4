//! The single SQLite writer, with group commit.
//!
//! SQLite allows one writer at a time and a durable commit costs an fsync. Rather than
//! give up durability, every write runs on one thread that drains all queued operations
//! into one transaction: each operation runs in its own savepoint (so one failing
//! operation rolls back alone), then a single COMMIT makes the whole batch durable with
//! one fsync. Callers get their result only after that commit, and commit notices are
//! sent to the change feed only then.

use std::sync::mpsc;
use std::thread;

use rusqlite::Connection;
use tokio::sync::{broadcast, oneshot};

use crate::storage::{Notice, StoreError};

/// Most operations in one transaction; bounds the latency one batch adds to the next.
const MAX_BATCH: usize = 512;

/// Runs one operation inside the batch's transaction (or, `None`, does not: the batch
/// failed before its turn); `true` if it succeeded. The returned closure delivers the
/// result once the commit outcome is known.
type Job = Box<dyn FnOnce(Option<(&Connection, &mut Vec<Notice>)>) -> (bool, Finish) + Send>;
type Finish = Box<dyn FnOnce(Outcome) + Send>;

/// How a batch ended.
#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Committed,
    /// Rolled back; `full` when for want of disk space.
    Failed {
        full: bool,
    },
}

#[derive(Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    pub(super) fn start(
        conn: Connection,
        feed: broadcast::Sender<Notice>,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel::<Job>();
        thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, queue, feed))?;
        Ok(Self { jobs })
    }

    /// Runs `op` in the next batch; resolves after that batch is durably committed.
    pub(super) async fn write<R, F>(&self, op: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection, &mut Vec<Notice>) -> Result<R, StoreError> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |run| {
            let outcome = run.map(|(conn, notices)| op(conn, notices));
            let ok = matches!(outcome, Some(Ok(_)));
            let finish: Finish = Box::new(move |batch| {
                let outcome = match (outcome, batch) {
                    (Some(Err(e)), _) => Err(e),
                    (Some(Ok(done)), Outcome::Committed) => Ok(done),
                    (_, Outcome::Failed { full: true }) => Err(StoreError::Full),
                    _ => Err(StoreError::Other(anyhow::anyhow!(
                        "the transaction could not be committed"
                    ))),
                };
                let _ = reply.send(outcome);
            });
            (ok, finish)
        });
        self.jobs
            .send(job)
            .map_err(|_| anyhow::anyhow!("the database writer has stopped"))?;
        result
            .await
            .map_err(|_| anyhow::anyhow!("the database writer dropped an operation"))?
    }
}

fn run(conn: Connection, queue: mpsc::Receiver<Job>, feed: broadcast::Sender<Notice>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut notices = Vec::new();
        let committed = run_batch(&conn, batch, &mut notices);
        if committed {
            for notice in notices {
                // No receiver is fine: nobody is subscribed.
                let _ = feed.send(notice);
            }
        }
    }
}

/// Runs a batch in one transaction and delivers every result; `true` if it committed.
fn run_batch(conn: &Connection, batch: Vec<Job>, notices: &mut Vec<Notice>) -> bool {
    let mut finishes = Vec::with_capacity(batch.len());
    let mut full = false;
    let mut step = |sql: &str| {
        let done = exec_cached(conn, sql);
        if let Err(e) = &done {
            full |= super::rows::is_disk_full(e);
        }
        done.is_ok()
    };
    let mut healthy = step("BEGIN IMMEDIATE");
    for job in batch {
        // Once the transaction is unusable the remaining jobs are not run; they are told
        // why with the rest.
        if !healthy || !step("SAVEPOINT op") {
            healthy = false;
            finishes.push(job(None).1);
            continue;
        }
        let mark = notices.len();
        let (ok, finish) = job(Some((conn, notices)));
        let closed = if ok {
            step("RELEASE op")
        } else {
            notices.truncate(mark);
            step("ROLLBACK TO op") && step("RELEASE op")
        };
        healthy &= closed;
        finishes.push(finish);
    }
    let committed = healthy && step("COMMIT");
    if !committed {
        if full {
            tracing::warn!("the disk is full: a sqlite batch was rolled back");
        } else {
            tracing::error!("sqlite batch could not be committed; rolling back");
        }
        let _ = conn.execute_batch("ROLLBACK");
        notices.clear();
    }
    let outcome = if committed {
        Outcome::Committed
    } else {
        Outcome::Failed { full }
    };
    for finish in finishes {
        finish(outcome);
    }
    committed
}

/// Runs a statement kept prepared across batches (these run several times per batch).
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}
