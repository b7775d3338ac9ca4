//! The storage contract: metadata, blobs and the change feed.
//!
//! The sync layer talks only to these traits. Each method is one use case of the store and
//! maps onto one conditional write or one query on either backend (SQLite, or DynamoDB +
//! S3). The invariants every backend keeps are written in ARCHITECTURE.md ("the storage
//! contract") and checked by the contract suite in `tests/storage/`, on each backend.

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use futures::future::BoxFuture;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::{Backend, StorageSettings};
use crate::domain::{
    Change, ChangeKind, Content, FileId, FileName, FileRecord, Metadata, Millis, NameKey,
    PendingUpload, Role, Sha256, SpaceId, SpaceName, SpaceSettings, StoreId, UploadId, UserId,
    VersionRecord,
};

#[cfg(feature = "aws")]
pub mod aws;
pub mod embedded;
mod error;
mod replication;
mod requests;
pub mod url_signing;

pub use error::{BlobError, StoreError};
pub use replication::CopyQueue;
pub use requests::RequestCounter;

/// A space as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    pub id: SpaceId,
    pub name: SpaceName,
    pub created_by: UserId,
    pub created_at: Millis,
    /// The seq of the space's last committed change (0 before the first).
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user: UserId,
    pub role: Role,
}

/// One committed change to publish atomically: the new version, the file's new current
/// state and the space's next seq, all or nothing.
#[derive(Debug, Clone)]
pub struct Publish {
    pub space_id: SpaceId,
    pub file_id: FileId,
    /// `None` creates the file; `Some(n)` requires the file's current version to be `n`.
    pub base_version: Option<u32>,
    pub kind: ChangeKind,
    pub name: FileName,
    /// The name's key in its space (see [`NameKey`]): unique among the live files, and
    /// no live file's key may be a folder of it, nor it a folder of one's.
    pub name_key: NameKey,
    pub content: Content,
    pub metadata: Metadata,
    pub deleted: bool,
    pub actor: UserId,
    pub at: Millis,
    /// The pending upload this change commits; it must still be pending.
    pub upload: Option<UploadId>,
    /// The stores to copy the content to, queued in the same atomic write (see
    /// [`CopyQueue`]): the primary's copy recorded `OK`, the others `PENDING`. Empty for
    /// a change that stores no new content, or when the space does not replicate.
    pub copy_to: Vec<StoreId>,
}

/// What the change feed reports once the store has made a write durable. A notice is a
/// trigger, not the data: the live hub reads the change itself from the store, so a
/// notice that arrives twice, late or out of order does no harm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A space's seq advanced to `seq`.
    Committed { space_id: SpaceId, seq: u64 },
    /// `user`'s role in the space changed, or `user` left it.
    MembershipChanged { space_id: SpaceId, user: UserId },
    /// Notices may have been lost (the stream was trimmed before it was read): every
    /// reader should check the store for what it follows, memberships included.
    Resync,
    /// Commit notices may be late (the replica hears nothing from the stream's reader):
    /// re-read the commit log of every space followed. Cheaper than `Resync`: no
    /// membership is read again (a change committed after a membership change is
    /// checked anyway, by its membership epoch).
    Reread,
}

/// Versioned metadata: spaces, members, files, versions, pending uploads.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Creates a space with `owner` as its first `OWNER`.
    async fn create_space(
        &self,
        id: SpaceId,
        name: SpaceName,
        owner: UserId,
        at: Millis,
    ) -> Result<Space, StoreError>;
    async fn space(&self, id: SpaceId) -> Result<Option<Space>, StoreError>;
    /// The spaces `user` belongs to, with the user's role, ordered by creation time (then
    /// id): at most `limit`, those after the space `after`.
    async fn spaces_of(
        &self,
        user: &UserId,
        after: Option<SpaceId>,
        limit: usize,
    ) -> Result<Vec<(Space, Role)>, StoreError>;
    async fn role(&self, space: SpaceId, user: &UserId) -> Result<Option<Role>, StoreError>;
    /// `user`'s role in `space` together with the space's membership epoch: a counter
    /// that every membership change increments, in the same atomic write. The role read
    /// is no older than the epoch returned, so a change committed at a higher epoch
    /// (`Change::members_epoch`) came after a membership change this role may not
    /// reflect. `None` for the epoch when there is no such space.
    async fn membership(
        &self,
        space: SpaceId,
        user: &UserId,
    ) -> Result<(Option<Role>, Option<u64>), StoreError>;
    /// The space's members ordered by user id: at most `limit`, those after `after`.
    async fn members(
        &self,
        space: SpaceId,
        after: Option<&UserId>,
        limit: usize,
    ) -> Result<Vec<Member>, StoreError>;
    /// The space's settings (defaults until an owner sets them); `None` if no such space.
    async fn space_settings(&self, space: SpaceId) -> Result<Option<SpaceSettings>, StoreError>;
    /// Replaces the space's settings; [`StoreError::NoSuchSpace`] if there is no such
    /// space. With `before_first_change`, only while the space has no change yet
    /// (`false` otherwise, nothing written): how names compare may change only then.
    async fn set_space_settings(
        &self,
        space: SpaceId,
        settings: SpaceSettings,
        before_first_change: bool,
    ) -> Result<bool, StoreError>;
    /// Adds, changes (`Some`) or removes (`None`) a member. Refuses with
    /// [`StoreError::LastOwner`] a change that would leave the space without an owner.
    async fn set_member(
        &self,
        space: SpaceId,
        user: UserId,
        role: Option<Role>,
    ) -> Result<(), StoreError>;

    /// The file's current committed state (a tombstone if deleted).
    async fn file(&self, id: FileId) -> Result<Option<FileRecord>, StoreError>;
    /// The file and `user`'s role in its space, in one round trip: the access check of
    /// every operation on a file.
    async fn file_for(
        &self,
        id: FileId,
        user: &UserId,
    ) -> Result<Option<(FileRecord, Option<Role>)>, StoreError>;
    async fn version(&self, id: FileId, number: u32) -> Result<Option<VersionRecord>, StoreError>;
    /// Committed versions numbered after `after`, oldest first, at most `limit`.
    async fn versions(
        &self,
        id: FileId,
        after: u32,
        limit: usize,
    ) -> Result<Vec<VersionRecord>, StoreError>;
    /// Live (not deleted) files whose name key starts with `key_prefix`, ordered by key,
    /// after the key `after` (exclusive).
    async fn list_files(
        &self,
        space: SpaceId,
        key_prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<FileRecord>, StoreError>;
    /// The live file whose name has this key, if any.
    async fn file_keyed(
        &self,
        space: SpaceId,
        key: &NameKey,
    ) -> Result<Option<FileRecord>, StoreError>;
    /// Files (tombstones included) whose last change has `seq > after_seq`, in seq order.
    async fn changes(
        &self,
        space: SpaceId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<FileRecord>, StoreError>;
    /// The space's commit log: every committed change with `seq > after_seq`, in seq order,
    /// each with the file as that change left it. Only committed changes are ever listed,
    /// and a change with seq `n` is listed only once every change before it is.
    async fn commit_log(
        &self,
        space: SpaceId,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<Change>, StoreError>;

    async fn create_upload(&self, upload: PendingUpload) -> Result<(), StoreError>;
    async fn upload(&self, id: UploadId) -> Result<Option<PendingUpload>, StoreError>;
    /// How many of `user`'s uploads are pending and not yet expired at `now` (may lag a
    /// little behind on backends whose index is eventually consistent).
    async fn pending_uploads_of(&self, user: &UserId, now: Millis) -> Result<usize, StoreError>;
    /// A space's uploads in every state (`PENDING`, `COMMITTED`, `ABANDONED`), newest
    /// first: at most `limit`, those after the upload `after` in that order. For the
    /// owners' inspector; a backend may forget finished uploads after a while (the AWS
    /// backend's TTL drops them a week after they expired).
    async fn uploads_of_space(
        &self,
        space: SpaceId,
        after: Option<UploadId>,
        limit: usize,
    ) -> Result<Vec<PendingUpload>, StoreError>;
    /// Moves a pending upload to `ABANDONED`; `false` if it was not pending (committed or
    /// abandoned meanwhile, perhaps by another replica: only the winner removes content).
    /// The abandoned upload stays on the sweeper's list ([`Self::uploads_to_sweep`]) from
    /// `purge_at` on, until [`Self::upload_purged`] says its content is gone for good: a
    /// crash or a failed delete after the abandon never leaks the object.
    async fn abandon_upload(&self, id: UploadId, purge_at: Millis) -> Result<bool, StoreError>;
    /// What the sweeper must finish, oldest first: pending uploads whose expiry is before
    /// `now`, and abandoned ones whose content is due for removal (`purge_at` before `now`).
    async fn uploads_to_sweep(
        &self,
        now: Millis,
        limit: usize,
    ) -> Result<Vec<PendingUpload>, StoreError>;
    /// The content of an abandoned upload is removed and no URL can write it again: it
    /// leaves the sweeper's list.
    async fn upload_purged(&self, id: UploadId) -> Result<(), StoreError>;

    /// Publishes one change atomically (see [`Publish`]). Fails with
    /// [`StoreError::Conflict`] when the file's current version is not `base_version`,
    /// [`StoreError::NameTaken`] when another live file has the name (its key),
    /// [`StoreError::PathClash`] when another live file is one of its folders or in it, and
    /// [`StoreError::UploadNotPending`] when the upload was committed or abandoned meanwhile.
    async fn publish(&self, change: Publish) -> Result<FileRecord, StoreError>;

    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A stream of body bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// What a stored object is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    /// `None` when the store cannot say (then the commit refuses the object).
    pub sha256: Option<Sha256>,
}

/// A request the client makes itself, straight to storage.
#[derive(Debug, Clone)]
pub struct PresignedRequest {
    pub url: String,
    pub method: &'static str,
    pub headers: Vec<(String, String)>,
    pub form_fields: Vec<(String, String)>,
}

/// What a presigned upload is for: the object key and the pinned length and checksum.
#[derive(Debug, Clone)]
pub struct PutTarget<'a> {
    pub key: &'a str,
    pub size: u64,
    pub sha256: Sha256,
    pub content_type: Option<&'a str>,
    pub expires_at: Millis,
}

/// What a presigned part URL is for: part `number` of a multipart upload, at `offset` in
/// the object, with its pinned length and checksum.
#[derive(Debug, Clone)]
pub struct PartTarget<'a> {
    pub key: &'a str,
    /// The store's id of the multipart upload.
    pub multipart_id: &'a str,
    pub number: u32,
    pub offset: u64,
    pub size: u64,
    pub sha256: Sha256,
    pub expires_at: Millis,
}

/// A part of a multipart upload, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPart {
    pub number: u32,
    pub size: u64,
    /// The part's SHA-256, where the store says (S3 does for uploads begun with it).
    pub sha256: Option<Sha256>,
    /// S3's ETag of the part, which completing the upload names.
    pub etag: Option<String>,
}

/// A byte range of an object, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

/// A `Range: bytes=...` request, before the object's size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// `bytes=first-last`
    Span(u64, u64),
    /// `bytes=first-`
    From(u64),
    /// `bytes=-n`: the last `n` bytes.
    Last(u64),
}

impl RangeRequest {
    /// The bytes this asks for in an object of `total` bytes; `None` if unsatisfiable.
    pub fn resolve(self, total: u64) -> Option<ByteRange> {
        let (first, last) = match self {
            RangeRequest::Span(first, last) if first <= last => {
                (first, last.min(total.checked_sub(1)?))
            }
            RangeRequest::Span(..) => return None,
            RangeRequest::From(first) => (first, total.checked_sub(1)?),
            RangeRequest::Last(0) => return None,
            RangeRequest::Last(n) => (total.saturating_sub(n), total.checked_sub(1)?),
        };
        (first < total).then_some(ByteRange { first, last })
    }
}

/// An object being read: the whole object, or the range asked for.
pub struct BlobRead {
    pub total_size: u64,
    pub range: Option<ByteRange>,
    pub stream: ByteStream,
}

/// Content: immutable objects under server-made keys.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    async fn presign_put(&self, target: PutTarget<'_>) -> Result<PresignedRequest, BlobError>;
    /// A browser form's upload: a `multipart/form-data` POST of `form_fields` and then
    /// the file, whose policy pins the key, the length, the type and the SHA-256, and
    /// expires.
    async fn presign_post(&self, target: PutTarget<'_>) -> Result<PresignedRequest, BlobError>;
    async fn presign_get(
        &self,
        key: &str,
        content_type: Option<&str>,
        expires_at: Millis,
    ) -> Result<String, BlobError>;
    /// Stores `body` under `key`, refusing ([`BlobError::TooLarge`]) more than `limit`
    /// bytes. The object appears whole or not at all.
    async fn put(&self, key: &str, body: ByteStream, limit: u64) -> Result<BlobInfo, BlobError>;
    async fn head(&self, key: &str) -> Result<Option<BlobInfo>, BlobError>;
    /// Reads an object or a range of it; [`BlobError::RangeNotSatisfiable`] when the
    /// range lies outside the object.
    async fn get(
        &self,
        key: &str,
        range: Option<RangeRequest>,
    ) -> Result<Option<BlobRead>, BlobError>;
    /// Marks an object as belonging to a committed version (S3: removes `Status=Pending`).
    /// Idempotent; `false` when there is no such object.
    async fn mark_committed(&self, key: &str) -> Result<bool, BlobError>;
    async fn delete(&self, key: &str) -> Result<(), BlobError>;

    /// Starts a multipart upload of an object of `size` bytes under `key` (pending, like
    /// a presigned PUT's object, until committed); returns the store's id for it.
    async fn create_multipart(
        &self,
        key: &str,
        size: u64,
        content_type: Option<&str>,
    ) -> Result<String, BlobError>;
    /// A URL through which the client sends one part, its length and SHA-256 pinned: the
    /// store refuses other bytes.
    async fn presign_part(&self, target: PartTarget<'_>) -> Result<PresignedRequest, BlobError>;
    /// Stores a part sent through this server (the embedded blob endpoint): the bytes are
    /// durable and their digest checked ([`BlobError::ChecksumMismatch`]) before the part
    /// counts. A part sent again replaces the earlier one; one that fails leaves the part
    /// missing. [`BlobError::NoSuchUpload`] once the upload is completed or aborted.
    async fn put_part(
        &self,
        target: PartTarget<'_>,
        body: ByteStream,
    ) -> Result<StoredPart, BlobError>;
    /// The parts stored so far, by part number; `None` when the store has no such
    /// multipart upload (completed or aborted).
    async fn list_parts(
        &self,
        key: &str,
        multipart_id: &str,
    ) -> Result<Option<Vec<StoredPart>>, BlobError>;
    /// Makes the object of `parts` (as [`Self::list_parts`] gave them) appear under `key`,
    /// whole or not at all. Idempotent: done already is fine; gone without an object is
    /// [`BlobError::NoSuchUpload`].
    async fn complete_multipart(
        &self,
        key: &str,
        multipart_id: &str,
        parts: &[StoredPart],
    ) -> Result<(), BlobError>;
    /// Removes a multipart upload and every part of it; an unknown one is fine.
    async fn abort_multipart(&self, key: &str, multipart_id: &str) -> Result<(), BlobError>;
    /// Makes a POST form's object immune to the form being sent again: where a POST
    /// cannot be made write-once (S3), the object is copied under a key no URL writes
    /// (pending-tagged, like an upload, until committed) and the copy's key, size and
    /// SHA-256 are answered; elsewhere the object as it is. `None` when there is none.
    async fn seal(&self, key: &str) -> Result<Option<(String, BlobInfo)>, BlobError> {
        Ok(self.head(key).await?.map(|info| (key.to_owned(), info)))
    }
    /// The object's size and the SHA-256 of its whole content, read and hashed (streamed,
    /// in bounded memory) where the store does not hold that digest: S3 keeps only a
    /// checksum of part checksums for a multipart object.
    async fn digest(&self, key: &str) -> Result<Option<BlobInfo>, BlobError>;

    /// Stores a copy of committed content: `body` must be exactly `size` bytes hashing to
    /// `sha256`, or nothing is stored ([`BlobError::ChecksumMismatch`]). Streamed, in
    /// bounded memory; never marked pending (a lifecycle rule must not expire it).
    async fn put_copy(
        &self,
        key: &str,
        body: ByteStream,
        size: u64,
        sha256: Sha256,
        content_type: Option<&str>,
    ) -> Result<(), BlobError>;
    /// Copies `key` from `source` inside the object store itself, when both are reached
    /// with the same endpoint and credentials: `Ok(false)` when it cannot (the caller
    /// streams instead). The copy is checked against `sha256` where the store reports it.
    async fn copy_within(
        &self,
        _source: &CopySource,
        _key: &str,
        _size: u64,
        _sha256: Sha256,
    ) -> Result<bool, BlobError> {
        Ok(false)
    }
    /// What a server-side copy from this store needs to know of it; `None`: none can.
    fn copy_source(&self) -> Option<CopySource> {
        None
    }
    /// Checks an object against its size and SHA-256. `deep` reads and hashes it; else the
    /// store's own record of the digest is trusted where it keeps one.
    async fn verify(
        &self,
        key: &str,
        size: u64,
        sha256: Sha256,
        deep: bool,
    ) -> Result<Verdict, BlobError> {
        let info = if deep {
            self.digest(key).await?
        } else {
            match self.head(key).await? {
                Some(info) if info.sha256.is_none() => self.digest(key).await?,
                other => other,
            }
        };
        Ok(Verdict::of(info.as_ref(), size, sha256))
    }
}

/// A store's address for server-side copies: the copy can run inside the object store
/// when the destination reaches it with the same `group` (endpoint and credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySource {
    pub group: String,
    pub bucket: String,
}

/// What a check of one object found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Intact,
    Missing,
    /// Other bytes than the version's (or another size).
    Corrupt,
}

impl Verdict {
    /// What an object of `info` (none: no object) is against the version's size and
    /// SHA-256; an object whose digest the store does not know is taken as corrupt.
    pub fn of(info: Option<&BlobInfo>, size: u64, sha256: Sha256) -> Self {
        match info {
            None => Verdict::Missing,
            Some(info) if info.size == size && info.sha256 == Some(sha256) => Verdict::Intact,
            Some(_) => Verdict::Corrupt,
        }
    }
}

/// The source of notices (embedded: the writer's commit log; AWS: DynamoDB Streams).
pub trait ChangeFeed: Send + Sync + 'static {
    fn subscribe(&self) -> broadcast::Receiver<Notice>;

    /// The feed's own background work (AWS: the stream consumer), until `stop` is
    /// cancelled. The embedded feed has none.
    fn run(&self, stop: CancellationToken) -> BoxFuture<'static, ()> {
        Box::pin(async move { stop.cancelled().await })
    }
}

/// "An object was stored" events from the object store (S3 `ObjectCreated` through SQS).
/// The sync layer commits the pending upload each names, as `commitUpload` would.
#[async_trait]
pub trait StorageEvents: Send + Sync + 'static {
    /// Waits (long-polls) for the next events; an empty batch is fine.
    async fn receive(&self) -> Result<Vec<StorageEvent>, BlobError>;
    /// The event is dealt with: it will not come again. An event never acknowledged comes
    /// again a bounded number of times, then goes to the dead-letter queue.
    async fn acknowledge(&self, receipt: &str) -> Result<(), BlobError>;
}

/// One storage event message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageEvent {
    /// The keys of the objects it says were stored in our bucket, decoded. Empty for a
    /// test event or one about another bucket.
    pub keys: Vec<String>,
    /// Whether the message was understood. A malformed one is never acknowledged, so that
    /// it ends in the dead-letter queue for someone to look at.
    pub understood: bool,
    pub receipt: String,
}

/// The opened backend: one handle per part.
#[derive(Clone)]
pub struct Storage {
    pub meta: Arc<dyn MetadataStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub feed: Arc<dyn ChangeFeed>,
    /// Storage events, where the backend has them (AWS with an events queue).
    pub events: Option<Arc<dyn StorageEvents>>,
    /// Requests made to the services behind the backend (none for the embedded one).
    pub requests: RequestCounter,
    /// The copy queue of replication (kept by the metadata store).
    pub copies: Arc<dyn CopyQueue>,
    /// The replica stores (`replication.stores`), in configuration order.
    pub stores: Vec<ReplicaStore>,
}

/// One replica store, opened.
#[derive(Clone)]
pub struct ReplicaStore {
    pub id: StoreId,
    pub blobs: Arc<dyn BlobStore>,
}

/// What the storage layer needs from the running server to open a backend.
pub struct OpenContext {
    /// Base URL clients reach this server at (for the embedded backend's signed URLs).
    pub public_url: String,
    /// Key for the embedded backend's signed URLs.
    pub url_signer: url_signing::UrlSigner,
}

/// Opens the backend named by the settings.
pub async fn open(settings: &StorageSettings, ctx: OpenContext) -> anyhow::Result<Storage> {
    match settings.backend {
        Backend::Embedded => embedded::open(&settings.data_dir, ctx).await,
        #[cfg(feature = "aws")]
        Backend::Aws => {
            let _ = ctx;
            aws::open(settings).await
        }
        #[cfg(not(feature = "aws"))]
        Backend::Aws => anyhow::bail!(
            "storage backend \"aws\" is not in this build: build with `--features aws`"
        ),
    }
}

/// Opens the replica stores of `replication.stores` (checked by
/// [`crate::config::Settings::check_replication`]).
pub async fn open_stores(
    settings: &crate::config::ReplicationSettings,
    requests: &RequestCounter,
    ctx: &OpenContext,
    registered: &[StoreId],
) -> anyhow::Result<Vec<ReplicaStore>> {
    use anyhow::Context as _;
    let mut stores = Vec::new();
    for store in &settings.stores {
        let id = StoreId::parse(&store.id).map_err(|e| anyhow::anyhow!("{e}"))?;
        let blobs: Arc<dyn BlobStore> = match store.kind {
            crate::config::StoreKind::Folder => {
                let path = store.path.as_ref().context("a folder store needs a path")?;
                mark_folder(path, &id, registered.contains(&id))?;
                Arc::new(
                    embedded::LocalBlobStore::open(
                        path,
                        ctx.public_url.clone(),
                        ctx.url_signer.clone(),
                    )
                    .with_context(|| format!("store {id}: cannot open {}", path.display()))?,
                )
            }
            #[cfg(feature = "aws")]
            crate::config::StoreKind::S3 => Arc::new(
                aws::open_replica_store(store, settings.part_size, requests.clone()).await?,
            ),
            #[cfg(not(feature = "aws"))]
            crate::config::StoreKind::S3 => {
                let _ = requests;
                anyhow::bail!("store {id}: s3 stores need a build with `--features aws`")
            }
        };
        tracing::info!(store = %id, kind = ?store.kind, "replica store opened");
        stores.push(ReplicaStore { id, blobs });
    }
    Ok(stores)
}

/// The marker a folder store carries: its id. A folder marked for another store is
/// refused; so is one without a marker for a store that holds copies already (its disk
/// not mounted, say: it would be filled anew wherever the path now leads). Otherwise an
/// unmarked folder is marked.
fn mark_folder(path: &std::path::Path, id: &StoreId, has_copies: bool) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let marker = path.join("FILESYNC-STORE");
    match std::fs::read_to_string(&marker) {
        Ok(found) if found.trim() == id.as_str() => Ok(()),
        Ok(found) => anyhow::bail!(
            "store {id}: {} belongs to store {:?}; an id is forever, and a folder serves one \
             store",
            path.display(),
            found.trim()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::ensure!(
                !has_copies,
                "store {id}: {} has no marker (FILESYNC-STORE) although the store holds \
                 copies: is its disk mounted? Refusing to fill it anew",
                path.display()
            );
            embedded::private_dir(path)
                .with_context(|| format!("store {id}: cannot create {}", path.display()))?;
            std::fs::write(&marker, format!("{id}\n"))
                .with_context(|| format!("store {id}: cannot write {}", marker.display()))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("store {id}: cannot read {}", marker.display())),
    }
}

/// The least string greater than every string that starts with `prefix`, or `None` when
/// there is none (empty prefix, or a prefix of only U+10FFFF).
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(c as u32 + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_upper_bound;

    #[test]
    fn upper_bounds_cover_exactly_the_prefix() {
        assert_eq!(prefix_upper_bound(""), None);
        assert_eq!(prefix_upper_bound("docs/").as_deref(), Some("docs0"));
        assert_eq!(prefix_upper_bound("a\u{10FFFF}").as_deref(), Some("b"));
        let upper = prefix_upper_bound("caf").unwrap();
        assert!("café" < upper.as_str() && "cag" >= upper.as_str());
    }
}
