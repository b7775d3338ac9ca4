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

/// Runs one operation inside the batch's transaction; `true` if it succeeded. The
/// returned closure delivers the result once the commit outcome is known.
type Job = Box<dyn FnOnce(&Connection, &mut Vec<Notice>) -> (bool, Finish) + Send>;
type Finish = Box<dyn FnOnce(bool) + Send>;

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
        let job: Job = Box::new(move |conn, notices| {
            let outcome = op(conn, notices);
            let ok = outcome.is_ok();
            let finish: Finish = Box::new(move |committed| {
                let outcome = match outcome {
                    Ok(_) if !committed => Err(StoreError::Other(anyhow::anyhow!(
                        "the transaction could not be committed"
                    ))),
                    other => other,
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
    let mut healthy = exec_cached(conn, "BEGIN IMMEDIATE").is_ok();
    for job in batch {
        // Once the transaction is unusable the remaining jobs are dropped unrun; dropping
        // a job drops its reply sender, which its caller sees as an internal error.
        if !healthy || exec_cached(conn, "SAVEPOINT op").is_err() {
            healthy = false;
            continue;
        }
        let mark = notices.len();
        let (ok, finish) = job(conn, notices);
        let closed = if ok {
            exec_cached(conn, "RELEASE op")
        } else {
            notices.truncate(mark);
            exec_cached(conn, "ROLLBACK TO op").and_then(|()| exec_cached(conn, "RELEASE op"))
        };
        healthy &= closed.is_ok();
        finishes.push(finish);
    }
    let committed = healthy && exec_cached(conn, "COMMIT").is_ok();
    if !committed {
        tracing::error!("sqlite batch could not be committed; rolling back");
        let _ = conn.execute_batch("ROLLBACK");
        notices.clear();
    }
    for finish in finishes {
        finish(committed);
    }
    committed
}

/// Runs a statement kept prepared across batches (these run several times per batch).
fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}
