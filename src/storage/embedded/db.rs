//! The SQLite database: one writer thread (see `writer`) and a pool of read connections.
//! WAL mode lets readers run while the writer commits.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::broadcast;

use super::writer::Writer;
use crate::storage::{Notice, StoreError};

const SCHEMA_VERSION: i64 = 9;
/// Idle read connections kept open; more are opened under load and closed after.
const IDLE_READERS: usize = 8;
/// Reads running on blocking threads at once. More would only add threads (each with its
/// stack and allocator heap) and connections waiting for the same few cores: a burst of
/// subscriptions replaying at once once spawned a thread each.
const MAX_BLOCKING_READS: usize = IDLE_READERS;
/// Address space each connection may map (not memory it uses).
const MMAP_BYTES: u64 = 1 << 30;
/// How often the WAL is checkpointed into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(1000);

pub struct Db {
    pub(super) writer: Writer,
    readers: Arc<ReaderPool>,
    blocking_reads: tokio::sync::Semaphore,
    /// Dropping it stops the checkpointer thread.
    _checkpointer: mpsc::Sender<()>,
    /// Held for the life of the process: the data dir's exclusive lock.
    _lock: File,
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Db {
    pub fn open(path: &Path, feed: broadcast::Sender<Notice>, lock: File) -> anyhow::Result<Self> {
        make_private(path)?;
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        // WAL + synchronous=FULL: every commit is fsynced before it is acknowledged.
        // Savepoint journals stay in memory (one per operation of a group commit).
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 5000;
             PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -65536;
             PRAGMA mmap_size = {MMAP_BYTES};
             PRAGMA wal_autocheckpoint = 0;"
        ))?;
        migrate(&conn)?;
        let writer = Writer::start(conn, feed)?;
        let checkpointer = start_checkpointer(path)?;
        Ok(Self {
            writer,
            _checkpointer: checkpointer,
            readers: Arc::new(ReaderPool {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
            }),
            blocking_reads: tokio::sync::Semaphore::new(MAX_BLOCKING_READS),
            _lock: lock,
        })
    }

    /// Runs a point lookup (a handful of pages) on a pooled connection, right here.
    ///
    /// In WAL mode a reader never waits for the writer, and a lookup served from SQLite's
    /// page cache takes microseconds: less than the hand-off to a blocking thread and back,
    /// which measurably cut update throughput. Scans and pages use [`Db::read`].
    pub(super) fn lookup<R>(
        &self,
        op: impl FnOnce(&Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let conn = self.readers.take()?;
        let result = op(&conn);
        self.readers.give_back(conn);
        result
    }

    /// Runs a read that may touch many rows on a pooled connection, off the async runtime.
    pub(super) async fn read<R, F>(&self, op: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let _slot = self
            .blocking_reads
            .acquire()
            .await
            .map_err(|e| anyhow::anyhow!("read slots closed: {e}"))?;
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.take()?;
            let result = op(&conn);
            pool.give_back(conn);
            result
        })
        .await
        .map_err(|e| anyhow::anyhow!("read task failed: {e}"))?
    }
}

impl ReaderPool {
    fn take(&self) -> Result<Connection, StoreError> {
        if let Some(conn) = self.idle.lock().expect("reader pool poisoned").pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .context("cannot open a read connection")?;
        // Readers map the database instead of copying pages in: after every commit a WAL
        // reader's page cache is stale, and re-reading through pread was a visible cost.
        conn.execute_batch(&format!(
            "PRAGMA busy_timeout = 5000; PRAGMA mmap_size = {MMAP_BYTES};"
        ))
        .context("cannot configure a read connection")?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("reader pool poisoned");
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }
}

/// Computes the name key of every file (spaces made before keys compared names
/// ignoring case: that is the default).
fn fill_name_keys(conn: &Connection) -> anyhow::Result<()> {
    let names: Vec<(String, String)> = conn
        .prepare("SELECT id, name FROM files")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut update = conn.prepare("UPDATE files SET name_key = ?2 WHERE id = ?1")?;
    for (id, name) in names {
        let key = crate::domain::FileName::from_stored(name).key(false);
        update.execute(rusqlite::params![id, key.as_str()])?;
    }
    // Names that clash under the new rules stay as they are (each keeps its key); say so.
    let mut clashes = conn.prepare(
        "SELECT space_id, name_key, COUNT(*) FROM files WHERE deleted = 0
         GROUP BY space_id, name_key HAVING COUNT(*) > 1",
    )?;
    let clashes = clashes.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for clash in clashes {
        let (space, key, count) = clash?;
        tracing::warn!(%space, name = %key, files = count, "live files whose names differ only in case; rename all but one");
    }
    Ok(())
}

/// Creates the database file with mode 0600 before SQLite opens it (SQLite gives its
/// journal and WAL files the database's mode), and makes an existing one and its files
/// private too.
fn make_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create database {}", path.display()))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot make {file:?} private"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checkpoints the WAL from a thread of its own.
///
/// SQLite's automatic checkpoint runs inside the COMMIT that crosses the threshold, so every
/// operation of that batch (and every batch queued behind it) waited for the database file
/// to be written back and fsynced: stalls of hundreds of milliseconds in the benchmark. A
/// PASSIVE checkpoint on another connection never blocks the writer; once readers have
/// moved past the old frames, the writer starts the WAL over from the beginning.
fn start_checkpointer(path: &Path) -> anyhow::Result<mpsc::Sender<()>> {
    let conn = Connection::open(path).context("cannot open the checkpoint connection")?;
    conn.execute_batch("PRAGMA busy_timeout = 5000;")?;
    let (stop, stopped) = mpsc::channel::<()>();
    thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            // Runs until the Db (the only sender) is dropped.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY)
            {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
                }
            }
        })?;
    Ok(stop)
}

/// Brings the schema up to date, one version at a time (a new database goes through
/// every step, so each step runs in every test); refuses a database from a newer release.
fn migrate(conn: &Connection) -> anyhow::Result<()> {
    loop {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let step = match version {
            0 => include_str!("schema.sql"),
            // 2: per-space settings (JSON).
            1 => "ALTER TABLE spaces ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';",
            // 3: a user's pending uploads, counted against the per-user limit.
            2 => {
                "CREATE INDEX uploads_pending_by_author ON uploads(author, expires_at) \
                  WHERE state = 'PENDING';"
            }
            // 4: abandoned uploads whose content the sweeper has yet to remove.
            3 => {
                "ALTER TABLE uploads ADD COLUMN purge_at INTEGER; \
                 CREATE INDEX uploads_to_purge ON uploads(purge_at) WHERE purge_at IS NOT NULL;"
            }
            // 5: the membership epoch of each space, and of each change when committed.
            4 => {
                "ALTER TABLE spaces ADD COLUMN members_epoch INTEGER NOT NULL DEFAULT 0; \
                 ALTER TABLE versions ADD COLUMN members_epoch INTEGER NOT NULL DEFAULT 0;"
            }
            // 6: each file's name key (names compare ignoring case and look-alikes), for
            // uniqueness, folder clashes and listings; filled in below.
            5 => {
                "ALTER TABLE files ADD COLUMN name_key TEXT NOT NULL DEFAULT ''; \
                 CREATE INDEX files_live_key ON files(space_id, name_key) WHERE deleted = 0;"
            }
            // 7: a space's uploads, newest first, for the owners' inspector.
            6 => "CREATE INDEX uploads_by_space ON uploads(space_id, created_at, id);",
            // 8: how an upload's bytes are sent, and a multipart upload's parts.
            7 => {
                "ALTER TABLE uploads ADD COLUMN method TEXT NOT NULL DEFAULT 'PUT'; \
                 ALTER TABLE uploads ADD COLUMN part_size INTEGER; \
                 ALTER TABLE uploads ADD COLUMN part_count INTEGER; \
                 ALTER TABLE uploads ADD COLUMN multipart_id TEXT;"
            }
            // 9: replication: the copy queue (one row per object per store), the jobs
            // that walk a space (backfill, repair), the stores seen, cluster leases.
            8 => {
                "CREATE TABLE copies (
                   space_id TEXT NOT NULL, blob_key TEXT NOT NULL, store TEXT NOT NULL,
                   size INTEGER NOT NULL, sha256 BLOB NOT NULL, content_type TEXT,
                   status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
                   committed_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
                   due_at INTEGER, claim TEXT,
                   PRIMARY KEY (space_id, blob_key, store)) WITHOUT ROWID;
                 CREATE INDEX copies_due ON copies(store, due_at) WHERE due_at IS NOT NULL;
                 CREATE TABLE replication_jobs (
                   space_id TEXT PRIMARY KEY, cursor_seq INTEGER NOT NULL,
                   verify INTEGER NOT NULL, verify_after_key TEXT, verify_after_store TEXT,
                   started_at INTEGER NOT NULL, done INTEGER NOT NULL,
                   claim TEXT, lease_until INTEGER);
                 CREATE TABLE replication_stores (id TEXT PRIMARY KEY, added_at INTEGER NOT NULL,
                   backfilled INTEGER NOT NULL DEFAULT 0);
                 CREATE TABLE leases (name TEXT PRIMARY KEY, owner TEXT NOT NULL,
                   until INTEGER NOT NULL, payload TEXT);"
            }
            SCHEMA_VERSION => return Ok(()),
            newer => anyhow::bail!(
                "database schema version {newer} is newer than this release understands \
                 ({SCHEMA_VERSION}); upgrade filesync"
            ),
        };
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(step)?;
        if version == 5 {
            fill_name_keys(&tx)?;
        }
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}
