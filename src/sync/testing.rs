//! For the sync layer's unit tests: a metadata store that behaves like a real one (it is
//! the embedded backend underneath) but fails or misbehaves on demand, the way a remote
//! store does under load: errors on some reads, reads that are not snapshots.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::domain::{
    Change, FileId, FileRecord, Millis, NameKey, PendingUpload, Role, SpaceId, SpaceName,
    SpaceSettings, UploadId, UserId, VersionRecord,
};
use crate::storage::url_signing::UrlSigner;
use crate::storage::{Member, MetadataStore, OpenContext, Publish, Space, Storage, StoreError};

/// What the store does wrong, changed by the test as it goes.
#[derive(Default)]
pub struct Faults {
    /// Reads of these spaces' commit logs fail.
    pub commit_log_fails: HashSet<SpaceId>,
    /// Role reads fail.
    pub role_fails: bool,
    /// The next `n` commit-log reads of `space` that cover `seq` leave it out, as a read that passed
    /// its item a moment before it was committed would.
    pub hidden: Option<(SpaceId, u64, usize)>,
    /// `space()` reports this head for every space, as a read made a moment earlier.
    pub stale_head: Option<u64>,
    /// `changes()` also lists this file (a change committed while the listing ran).
    pub extra_change: Option<FileRecord>,
}

pub struct FaultyStore {
    inner: Arc<dyn MetadataStore>,
    pub faults: Mutex<Faults>,
}

/// An embedded backend whose metadata store is a [`FaultyStore`]; keep the directory.
pub async fn faulty_storage() -> (Storage, Arc<FaultyStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ctx = OpenContext {
        public_url: "http://127.0.0.1:9".into(),
        url_signer: UrlSigner::derive(b"sync tests"),
    };
    let mut storage = crate::storage::embedded::open(dir.path(), ctx)
        .await
        .expect("embedded backend");
    let faulty = Arc::new(FaultyStore {
        inner: storage.meta.clone(),
        faults: Mutex::new(Faults::default()),
    });
    storage.meta = faulty.clone();
    (storage, faulty, dir)
}

fn injected() -> StoreError {
    StoreError::Other(anyhow::anyhow!("injected store failure"))
}

impl FaultyStore {
    pub fn set(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.faults.lock().unwrap());
    }
}

#[async_trait]
impl MetadataStore for FaultyStore {
    async fn create_space(
        &self,
        id: SpaceId,
        name: SpaceName,
        owner: UserId,
        at: Millis,
    ) -> Result<Space, StoreError> {
        self.inner.create_space(id, name, owner, at).await
    }
    async fn space(&self, id: SpaceId) -> Result<Option<Space>, StoreError> {
        let stale = self.faults.lock().unwrap().stale_head;
        let space = self.inner.space(id).await?;
        Ok(space.map(|s| Space {
            seq: stale.unwrap_or(s.seq),
            ..s
        }))
    }
    async fn spaces_of(
        &self,
        user: &UserId,
        after: Option<SpaceId>,
        limit: usize,
    ) -> Result<Vec<(Space, Role)>, StoreError> {
        self.inner.spaces_of(user, after, limit).await
    }
    async fn role(&self, space: SpaceId, user: &UserId) -> Result<Option<Role>, StoreError> {
        if self.faults.lock().unwrap().role_fails {
            return Err(injected());
        }
        self.inner.role(space, user).await
    }
    async fn membership(
        &self,
        space: SpaceId,
        user: &UserId,
    ) -> Result<(Option<Role>, Option<u64>), StoreError> {
        if self.faults.lock().unwrap().role_fails {
            return Err(injected());
        }
        self.inner.membership(space, user).await
    }
    async fn members(
        &self,
        space: SpaceId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<Member>, StoreError> {
        self.inner.members(space, after, limit).await
    }
    async fn space_settings(&self, space: SpaceId) -> Result<Option<SpaceSettings>, StoreError> {
        self.inner.space_settings(space).await
    }
    async fn set_space_settings(
        &self,
        space: SpaceId,
        settings: SpaceSettings,
        before_first_change: bool,
    ) -> Result<bool, StoreError> {
        self.inner
            .set_space_settings(space, settings, before_first_change)
            .await
    }
    async fn set_member(
        &self,
        space: SpaceId,
        user: UserId,
        role: Option<Role>,
    ) -> Result<(), StoreError> {
        self.inner.set_member(space, user, role).await
    }
    async fn file(&self, id: FileId) -> Result<Option<FileRecord>, StoreError> {
        self.inner.file(id).await
    }
    async fn file_for(
        &self,
        id: FileId,
        user: &UserId,
    ) -> Result<Option<(FileRecord, Option<Role>)>, StoreError> {
        self.inner.file_for(id, user).await
    }
    async fn version(&self, id: FileId, number: u32) -> Result<Option<VersionRecord>, StoreError> {
        self.inner.version(id, number).await
    }
    async fn versions(
        &self,
        id: FileId,
        after: u32,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, StoreError> {
        self.inner.versions(id, after, limit).await
    }
    async fn list_files(
        &self,
        space: SpaceId,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FileRecord>, StoreError> {
        self.inner.list_files(space, prefix, after, limit).await
    }
    async fn file_keyed(
        &self,
        space: SpaceId,
        key: &NameKey,
    ) -> Result<Option<FileRecord>, StoreError> {
        self.inner.file_keyed(space, key).await
    }
    async fn changes(
        &self,
        space: SpaceId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<FileRecord>, StoreError> {
        let mut files = self.inner.changes(space, after_seq, limit).await?;
        if let Some(extra) = self.faults.lock().unwrap().extra_change.clone() {
            files.push(extra);
            files.truncate(limit);
        }
        Ok(files)
    }
    async fn commit_log(
        &self,
        space: SpaceId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError> {
        let hidden = {
            let mut faults = self.faults.lock().unwrap();
            if faults.commit_log_fails.contains(&space) {
                return Err(injected());
            }
            match &mut faults.hidden {
                Some((s, seq, reads)) if *s == space && *reads > 0 && after_seq < *seq => {
                    *reads -= 1;
                    Some(*seq)
                }
                _ => None,
            }
        };
        let mut log = self.inner.commit_log(space, after_seq, limit).await?;
        log.retain(|c| Some(c.file.seq) != hidden);
        Ok(log)
    }
    async fn create_upload(&self, upload: PendingUpload) -> Result<(), StoreError> {
        self.inner.create_upload(upload).await
    }
    async fn upload(&self, id: UploadId) -> Result<Option<PendingUpload>, StoreError> {
        self.inner.upload(id).await
    }
    async fn pending_uploads_of(&self, user: &UserId, now: Millis) -> Result<usize, StoreError> {
        self.inner.pending_uploads_of(user, now).await
    }
    async fn uploads_of_space(
        &self,
        space: SpaceId,
        after: Option<UploadId>,
        limit: usize,
    ) -> Result<Vec<PendingUpload>, StoreError> {
        self.inner.uploads_of_space(space, after, limit).await
    }
    async fn abandon_upload(&self, id: UploadId, purge_at: Millis) -> Result<bool, StoreError> {
        self.inner.abandon_upload(id, purge_at).await
    }
    async fn uploads_to_sweep(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<PendingUpload>, StoreError> {
        self.inner.uploads_to_sweep(now, limit).await
    }
    async fn upload_purged(&self, id: UploadId) -> Result<(), StoreError> {
        self.inner.upload_purged(id).await
    }
    async fn publish(&self, change: Publish) -> Result<FileRecord, StoreError> {
        self.inner.publish(change).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}
