//! The embedded backend: SQLite (WAL) for metadata, a local folder for content, and the
//! writer's own commit log as the change feed. One process owns a data dir at a time.

use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::broadcast;

use super::{ChangeFeed, Notice, OpenContext, Storage};

mod blobs;
mod copies;
mod db;
mod metadata;
mod multipart;
mod rows;
mod writer;

pub use blobs::{LocalBlobStore, PostPolicy};
pub use db::Db;

/// How many commit notices a slow feed reader may fall behind before it is told it lagged.
const FEED_CAPACITY: usize = 4096;

/// The commit log feed: the writer thread sends a notice after each durable commit.
pub struct CommitLog {
    sender: broadcast::Sender<Notice>,
}

impl ChangeFeed for CommitLog {
    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.sender.subscribe()
    }
}

/// Opens (creating if needed) the embedded backend in `data_dir`. The data dir and
/// everything in it are its owner's only (0700 folders, 0600 files).
pub async fn open(data_dir: &Path, ctx: OpenContext) -> anyhow::Result<Storage> {
    private_dir(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let lock = lock_data_dir(data_dir)?;
    let (sender, _) = broadcast::channel(FEED_CAPACITY);
    let db = Arc::new(Db::open(
        &data_dir.join("filesync.db"),
        sender.clone(),
        lock,
    )?);
    let blobs = LocalBlobStore::open(data_dir, ctx.public_url, ctx.url_signer)?;
    // A crash between creating a multipart upload and recording it leaves parts no
    // upload names: only the pending uploads' parts are kept (an abandoned upload's are
    // the sweeper's to remove, and removing them here is as good).
    let keep = db
        .read(|conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT multipart_id FROM uploads \
                     WHERE state = 'PENDING' AND multipart_id IS NOT NULL",
                )
                .map_err(rows::internal)?;
            let ids = stmt
                .query_map([], |row| row.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<std::collections::HashSet<_>, _>>())
                .map_err(rows::internal)?;
            Ok(ids)
        })
        .await?;
    blobs.remove_multipart_orphans(&keep).await;
    Ok(Storage {
        meta: db.clone(),
        copies: db,
        blobs: Arc::new(blobs),
        feed: Arc::new(CommitLog { sender }),
        events: None,
        requests: Default::default(),
        stores: Vec::new(),
    })
}

/// Makes `dir` (and its parents) if needed, and makes it its owner's only.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Two servers on one data dir would each believe they own the single SQLite writer and
/// the blob folder; an exclusive lock makes the second one fail at start-up instead.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("LOCK");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.try_lock().map_err(|_| {
        anyhow::anyhow!(
            "data dir {} is in use by another filesync process",
            data_dir.display()
        )
    })?;
    Ok(file)
}
