//! The folder's state, in SQLite at `.filesync/state.db`: the base tree, the cursor,
//! remote changes not yet applied, hashes of files not yet synced, the last pass's
//! problems and the conflict copies made. Every write is its own transaction (WAL,
//! `synchronous=NORMAL`: a crash of the process loses nothing recorded; a power cut may
//! lose the last records but never their order).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};

use crate::paths::RelPath;
use crate::tree::{BaseFile, FileId, Fingerprint, RemoteFile};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS base (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    version INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    local_size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    recorded_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS base_path ON base (path);
CREATE TABLE IF NOT EXISTS pending (
    id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    version INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    deleted INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hashes (
    path TEXT PRIMARY KEY,
    local_size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS problems (
    path TEXT PRIMARY KEY,
    message TEXT NOT NULL,
    at_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS conflicts (
    path TEXT PRIMARY KEY,
    original TEXT NOT NULL,
    at_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS uploads (
    path TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    file_id TEXT,
    base_version INTEGER,
    ticket TEXT NOT NULL
);
";

/// A multipart upload under way: the ticket, and what it uploads (a later run resumes
/// it only for the same content, file and base).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedUpload {
    pub sha256: String,
    pub size: u64,
    pub file_id: Option<String>,
    pub base_version: Option<i64>,
    /// The `beginUpload` answer, as JSON.
    pub ticket: String,
}

/// A handle on the state database, shared by the tasks of a pass.
#[derive(Clone)]
pub struct State {
    conn: Arc<Mutex<Connection>>,
}

/// A failure of the state database (a disk error, a database another version made).
#[derive(Debug, thiserror::Error)]
#[error("the state database in .filesync/ failed: {0}")]
pub struct StateError(#[from] rusqlite::Error);

impl StateError {
    /// The disk holding the folder (and its `.filesync/`) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(&self.0, rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::DiskFull)
    }
}

type Result<T> = std::result::Result<T, StateError>;

impl State {
    /// Opens (creating if needed) the state database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // WAL with NORMAL: a power cut may lose the last transactions, never reorder
        // them. Losing a step's record is harmless (the next pass finds the step done:
        // same bytes on both sides), and the cursor is written last, so a cursor that
        // survives implies everything recorded before it did.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        Ok(f(&mut conn)?)
    }

    pub fn get(&self, key: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
                .optional()
        })
    }

    pub fn set(&self, key: &str, value: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [key, value],
            )
            .map(drop)
        })
    }

    pub fn base(&self) -> Result<HashMap<FileId, BaseFile>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, path, version, sha256, size, local_size, mtime_ns, ctime_ns,
                        inode, recorded_ns FROM base",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(BaseFile {
                    id: r.get(0)?,
                    path: path_column(r, 1)?,
                    version: r.get(2)?,
                    sha256: r.get(3)?,
                    size: r.get::<_, i64>(4)? as u64,
                    local: Fingerprint {
                        size: r.get::<_, i64>(5)? as u64,
                        mtime_ns: r.get(6)?,
                        ctime_ns: r.get(7)?,
                        inode: r.get::<_, i64>(8)? as u64,
                    },
                    recorded_ns: r.get(9)?,
                })
            })?;
            rows.map(|b| b.map(|b| (b.id.clone(), b))).collect()
        })
    }

    pub fn base_file(&self, id: &str) -> Result<Option<BaseFile>> {
        Ok(self.base()?.remove(id))
    }

    /// Records an agreement (replacing what was known of the file). A base path is where
    /// the file is on disk, and a disk holds one file per path: an older record of
    /// another file there is stale and goes.
    pub fn put_base(&self, b: &BaseFile) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM base WHERE path = ?1 AND id <> ?2",
                params![b.path.as_str(), b.id],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO base (id, path, version, sha256, size, local_size,
                     mtime_ns, ctime_ns, inode, recorded_ns)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    b.id,
                    b.path.as_str(),
                    b.version,
                    b.sha256,
                    b.size as i64,
                    b.local.size as i64,
                    b.local.mtime_ns,
                    b.local.ctime_ns,
                    b.local.inode as i64,
                    b.recorded_ns
                ],
            )?;
            tx.execute("DELETE FROM hashes WHERE path = ?1", [b.path.as_str()])?;
            tx.commit()
        })
    }

    /// Drops the base of a file the server still has, keeping the server's side as a
    /// pending change: the next pass fetches it again.
    pub fn forget_to_pending(&self, id: &str) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT OR REPLACE INTO pending (id, path, version, sha256, size, deleted)
                 SELECT id, path, version, sha256, size, 0 FROM base WHERE id = ?1",
                [id],
            )?;
            tx.execute("DELETE FROM base WHERE id = ?1", [id])?;
            tx.commit()
        })
    }

    pub fn forget(&self, id: &str) -> Result<()> {
        self.with(|c| c.execute("DELETE FROM base WHERE id = ?1", [id]).map(drop))
    }

    /// Remote changes fetched but not yet applied.
    pub fn pending(&self) -> Result<Vec<RemoteFile>> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT id, path, version, sha256, size, deleted FROM pending")?;
            let rows = stmt.query_map([], |r| {
                Ok(RemoteFile {
                    id: r.get(0)?,
                    path: path_column(r, 1)?,
                    version: r.get(2)?,
                    sha256: r.get(3)?,
                    size: r.get::<_, i64>(4)? as u64,
                    deleted: r.get(5)?,
                    download_url: None,
                })
            })?;
            rows.collect()
        })
    }

    /// Moves the cursor to `cursor` in one transaction with what is still to apply of
    /// the changes it covers: `unapplied` replaces the pending set, and `settled` ids
    /// leave it.
    pub fn advance(
        &self,
        cursor: Option<&str>,
        unapplied: &[RemoteFile],
        settled: &[FileId],
        ignore_digest: Option<&str>,
    ) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            for id in settled {
                tx.execute("DELETE FROM pending WHERE id = ?1", [id])?;
            }
            for r in unapplied {
                tx.execute(
                    "INSERT OR REPLACE INTO pending (id, path, version, sha256, size, deleted)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        r.id,
                        r.path.as_str(),
                        r.version,
                        r.sha256,
                        r.size as i64,
                        r.deleted
                    ],
                )?;
            }
            for (key, value) in [("cursor", cursor), ("ignore_digest", ignore_digest)] {
                if let Some(value) = value {
                    tx.execute(
                        "INSERT INTO meta (key, value) VALUES (?1, ?2)
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        [key, value],
                    )?;
                }
            }
            tx.commit()
        })
    }

    /// A hash computed for a file not yet in the base, if the file still looks the same.
    pub fn cached_hash(&self, path: &RelPath, fp: &Fingerprint) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT sha256 FROM hashes WHERE path = ?1 AND local_size = ?2
                   AND mtime_ns = ?3 AND ctime_ns = ?4 AND inode = ?5",
                params![
                    path.as_str(),
                    fp.size as i64,
                    fp.mtime_ns,
                    fp.ctime_ns,
                    fp.inode as i64
                ],
                |r| r.get(0),
            )
            .optional()
        })
    }

    pub fn cache_hash(&self, path: &RelPath, fp: &Fingerprint, sha256: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO hashes (path, local_size, mtime_ns, ctime_ns, inode, sha256)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    path.as_str(),
                    fp.size as i64,
                    fp.mtime_ns,
                    fp.ctime_ns,
                    fp.inode as i64,
                    sha256
                ],
            )
            .map(drop)
        })
    }

    /// Replaces the recorded problems with this pass's.
    pub fn set_problems(&self, problems: &[(String, String)], at_ns: i64) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM problems", [])?;
            for (path, message) in problems {
                tx.execute(
                    "INSERT OR REPLACE INTO problems (path, message, at_ns) VALUES (?1, ?2, ?3)",
                    params![path, message, at_ns],
                )?;
            }
            tx.commit()
        })
    }

    pub fn problems(&self) -> Result<Vec<(String, String)>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached("SELECT path, message FROM problems ORDER BY path")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    pub fn add_conflict(&self, copy: &RelPath, original: &RelPath, at_ns: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO conflicts (path, original, at_ns) VALUES (?1, ?2, ?3)",
                params![copy.as_str(), original.as_str(), at_ns],
            )
            .map(drop)
        })
    }

    /// Conflict copies made, oldest first: `(copy, original, when)`.
    pub fn saved_upload(&self, path: &RelPath) -> Result<Option<SavedUpload>> {
        self.with(|c| {
            c.query_row(
                "SELECT sha256, size, file_id, base_version, ticket FROM uploads WHERE path = ?1",
                [path.as_str()],
                |r| {
                    Ok(SavedUpload {
                        sha256: r.get(0)?,
                        size: r.get::<_, i64>(1)? as u64,
                        file_id: r.get(2)?,
                        base_version: r.get(3)?,
                        ticket: r.get(4)?,
                    })
                },
            )
            .optional()
        })
    }

    pub fn save_upload(&self, path: &RelPath, u: &SavedUpload) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO uploads (path, sha256, size, file_id, base_version, ticket)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    path.as_str(),
                    u.sha256,
                    u.size as i64,
                    u.file_id,
                    u.base_version,
                    u.ticket
                ],
            )
            .map(drop)
        })
    }

    pub fn drop_upload(&self, path: &RelPath) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM uploads WHERE path = ?1", [path.as_str()])
                .map(drop)
        })
    }

    pub fn conflicts(&self) -> Result<Vec<(String, String, i64)>> {
        self.with(|c| {
            let mut stmt =
                c.prepare_cached("SELECT path, original, at_ns FROM conflicts ORDER BY at_ns")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
    }

    pub fn drop_conflict(&self, copy: &str) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM conflicts WHERE path = ?1", [copy])
                .map(drop)
        })
    }
}

fn path_column(r: &rusqlite::Row, i: usize) -> rusqlite::Result<RelPath> {
    let s: String = r.get(i)?;
    RelPath::parse(&s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    })
}
