//! The use cases of Filesync: spaces and members, the three-phase upload, modifications,
//! reads and incremental sync. Everything here works on the storage traits only, so the
//! same code runs on every backend.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::domain::{Content, FileRecord, Millis, SpaceId, VersionRecord};
use crate::storage::Storage;

mod access;
mod error;
mod live;
mod locks;
mod modify;
mod multipart;
mod read;
mod replication;
mod spaces;
mod storage_events;
mod sweeper;
#[cfg(test)]
mod testing;
mod upload;

pub use error::Error;
pub use live::{HubStats, LiveEvent, LiveStream, SharedChange, lock};
pub use modify::FileUpdate;
pub use multipart::{PartUrl, UploadStatus};
pub use read::{ChangePage, FilePage};
pub use replication::{ReplicationStats, ReplicationStatus, StoreStatus};
pub use upload::{NewUpload, ReceivedUpload, UploadTicket};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The limits and lifetimes the use cases enforce.
#[derive(Debug, Clone)]
pub struct Limits {
    pub url_ttl: Duration,
    pub pending_ttl: Duration,
    pub download_ttl: Duration,
    pub max_file_size: u64,
    pub inline_max_bytes: u64,
    /// Uploads one user may have pending at once.
    pub max_pending_per_user: usize,
    pub max_page_size: usize,
    pub default_page_size: usize,
    /// Changes a live subscriber may have waiting before it is closed as too slow.
    pub subscriber_buffer: usize,
    /// Replay pages one user's subscriptions may hold at once.
    pub replays_per_user: usize,
    /// An upload body silent for this long is cut off.
    pub body_idle_timeout: Duration,
    /// The longest one upload body may take.
    pub body_deadline: Duration,
    pub multipart_threshold: u64,
    pub max_part_urls: usize,
    pub commit_wait: Duration,
    pub replication: crate::config::ReplicationSettings,
}

impl Limits {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            url_ttl: settings.uploads.url_ttl,
            pending_ttl: settings.uploads.pending_ttl,
            download_ttl: settings.uploads.download_ttl,
            max_file_size: settings.uploads.max_file_size,
            inline_max_bytes: settings.uploads.inline_max_bytes,
            max_pending_per_user: settings.uploads.max_pending_per_user,
            max_page_size: settings.graphql.max_page_size,
            default_page_size: settings.graphql.default_page_size,
            subscriber_buffer: settings.subscriptions.buffer,
            replays_per_user: settings.subscriptions.replays_per_user,
            body_idle_timeout: settings.uploads.body_idle_timeout,
            body_deadline: settings.uploads.body_deadline,
            multipart_threshold: settings.uploads.multipart_threshold,
            max_part_urls: settings.uploads.max_part_urls,
            commit_wait: settings.uploads.commit_wait,
            replication: settings.replication.clone(),
        }
    }
}

/// The sync service: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct SyncService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Storage,
    limits: Limits,
    upload_locks: locks::UploadLocks,
    verifications: multipart::Verifications,
    hub: live::Hub,
    replays: live::ReplayPermits,
    replication: replication::Replication,
}

impl SyncService {
    pub fn new(store: Storage, limits: Limits) -> Self {
        let hub = live::Hub::new(&*store.feed, store.meta.clone(), limits.subscriber_buffer);
        let replication = replication::Replication::new(limits.replication.clone(), &store);
        Self {
            inner: Arc::new(Inner {
                replication,
                store,
                replays: live::ReplayPermits::new(limits.replays_per_user),
                limits,
                upload_locks: locks::UploadLocks::default(),
                verifications: multipart::Verifications::default(),
                hub,
            }),
        }
    }

    pub fn storage(&self) -> &Storage {
        &self.inner.store
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Readiness: the metadata store answers.
    pub async fn ready(&self) -> Result<()> {
        self.inner.store.meta.ping().await?;
        Ok(())
    }

    /// A short-lived download URL for a file's content (none for tombstones).
    pub async fn download_url(&self, file: &FileRecord) -> Result<Option<String>> {
        if file.deleted {
            return Ok(None);
        }
        self.content_url(file.space_id, &file.content)
            .await
            .map(Some)
    }

    /// A short-lived download URL for some content of `space`, from a store that holds
    /// it (see `replication`).
    pub async fn content_url(&self, space: SpaceId, content: &Content) -> Result<String> {
        let expires_at = now() + millis(self.inner.limits.download_ttl);
        self.presign_content(space, content, expires_at).await
    }
}

/// A file as it was at one of its versions.
pub fn file_at_version(current: &FileRecord, version: &VersionRecord) -> FileRecord {
    FileRecord {
        id: current.id,
        space_id: current.space_id,
        name: version.name.clone(),
        version: version.number,
        content: version.content.clone(),
        metadata: version.metadata.clone(),
        creator: current.creator.clone(),
        created_at: current.created_at,
        updated_at: version.at,
        deleted: version.deleted,
        seq: version.seq,
    }
}

fn now() -> Millis {
    crate::domain::now_millis()
}

fn millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
