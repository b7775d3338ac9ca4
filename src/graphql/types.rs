//! GraphQL object, input and enum types, as thin views over domain records.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, TimeZone, Utc};

use super::error::IntoGql;
use super::file_list::FileList;
use super::scalars::{Cursor, Size};
use super::{service, viewer};
use crate::domain::{self, FileRecord, Millis, VersionRecord};
use crate::storage;
use crate::sync;

pub fn datetime(ms: Millis) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Role {
    Owner,
    Editor,
    Viewer,
}

impl From<domain::Role> for Role {
    fn from(r: domain::Role) -> Self {
        match r {
            domain::Role::Owner => Role::Owner,
            domain::Role::Editor => Role::Editor,
            domain::Role::Viewer => Role::Viewer,
        }
    }
}

impl From<Role> for domain::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Owner => domain::Role::Owner,
            Role::Editor => domain::Role::Editor,
            Role::Viewer => domain::Role::Viewer,
        }
    }
}

/// What a change did. `READY` is a subscription marker: replay is done and the live
/// listener is attached.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ChangeKind {
    Ready,
    Created,
    Updated,
    Deleted,
    Restored,
}

impl From<domain::ChangeKind> for ChangeKind {
    fn from(k: domain::ChangeKind) -> Self {
        match k {
            domain::ChangeKind::Created => ChangeKind::Created,
            domain::ChangeKind::Updated => ChangeKind::Updated,
            domain::ChangeKind::Deleted => ChangeKind::Deleted,
            domain::ChangeKind::Restored => ChangeKind::Restored,
        }
    }
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum VersionState {
    Pending,
    Committed,
    Abandoned,
}

impl From<domain::UploadState> for VersionState {
    fn from(s: domain::UploadState) -> Self {
        match s {
            domain::UploadState::Pending => VersionState::Pending,
            domain::UploadState::Committed => VersionState::Committed,
            domain::UploadState::Abandoned => VersionState::Abandoned,
        }
    }
}

/// The authenticated caller.
pub struct User {
    pub id: domain::UserId,
}

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }
}

#[derive(SimpleObject)]
pub struct Member {
    pub user_id: ID,
    pub role: Role,
}

/// A shared collection of files.
pub struct Space {
    pub space: storage::Space,
    pub role: Option<domain::Role>,
}

#[Object]
impl Space {
    async fn id(&self) -> ID {
        ID(self.space.id.to_string())
    }

    async fn name(&self) -> &str {
        self.space.name.as_str()
    }

    /// The caller's role in this space.
    async fn role(&self) -> Option<Role> {
        self.role.map(Role::from)
    }

    async fn created_by(&self) -> ID {
        ID(self.space.created_by.to_string())
    }

    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.space.created_at)
    }

    /// The cursor of the space's latest change: `changes(since: headCursor)` is empty now.
    async fn head_cursor(&self) -> Cursor {
        domain::Cursor::new(self.space.id, self.space.seq).into()
    }

    /// The members, by user id: at most `first` (default 100), those after the user
    /// `after`.
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
    async fn members(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Vec<Member>> {
        let members = service(ctx)
            .members(viewer(ctx)?, self.space.id, first, after.as_deref())
            .await
            .gql()?;
        Ok(members
            .into_iter()
            .map(|m| Member {
                user_id: ID(m.user.to_string()),
                role: m.role.into(),
            })
            .collect())
    }

    /// The owners' inspector: the space's uploads as the metadata store holds them
    /// (`PENDING`, then `COMMITTED` or `ABANDONED`), newest first, each beside the object
    /// the blob store holds for it now. At most `first` (default 100), those after the
    /// upload `after`. Owners only (`FORBIDDEN` otherwise). The AWS backend forgets a
    /// finished upload a week after it expired.
    #[graphql(complexity = "super::page_cost(first, child_complexity)")]
    async fn uploads(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<ID>,
    ) -> async_graphql::Result<Vec<UploadRecord>> {
        let after = after.as_ref().map(super::parse_id).transpose()?;
        let uploads = service(ctx)
            .uploads(viewer(ctx)?, self.space.id, first, after)
            .await
            .gql()?;
        Ok(uploads
            .into_iter()
            .map(|(upload, object)| UploadRecord {
                object: object.map(|o| StoredObject {
                    key: upload.blob_key.clone(),
                    size: Size(o.size),
                    sha256: o.sha256.map(|h| h.to_hex()),
                }),
                upload,
            })
            .collect())
    }

    /// What files the space accepts (members may read it; owners change it with
    /// `updateSpaceSettings`).
    async fn settings(&self, ctx: &Context<'_>) -> async_graphql::Result<SpaceSettings> {
        let settings = service(ctx)
            .space_settings(viewer(ctx)?, self.space.id)
            .await
            .gql()?;
        Ok(SpaceSettings::from(settings))
    }
}

/// An upload as the metadata store holds it, beside its stored object.
pub struct UploadRecord {
    upload: domain::PendingUpload,
    object: Option<StoredObject>,
}

#[Object]
impl UploadRecord {
    async fn upload_id(&self) -> ID {
        ID(self.upload.id.to_string())
    }

    async fn file_id(&self) -> ID {
        ID(self.upload.file_id.to_string())
    }

    /// The version this upload becomes (or became) when committed.
    async fn version(&self) -> u32 {
        self.upload
            .committed_version
            .unwrap_or_else(|| self.upload.target_version())
    }

    async fn name(&self) -> &str {
        self.upload.name.as_str()
    }

    /// The declared size.
    async fn size(&self) -> Size {
        Size(self.upload.size)
    }

    /// The declared SHA-256 (hex).
    async fn sha256(&self) -> String {
        self.upload.sha256.to_hex()
    }

    async fn content_type(&self) -> Option<&str> {
        self.upload.content_type.as_deref()
    }

    async fn author(&self) -> ID {
        ID(self.upload.author.to_string())
    }

    async fn state(&self) -> VersionState {
        self.upload.state.into()
    }

    /// How the bytes are sent.
    async fn method(&self) -> super::upload_types::UploadMethod {
        self.upload.method.into()
    }

    /// A multipart upload's number of parts.
    async fn part_count(&self) -> Option<u32> {
        self.upload.multipart.as_ref().map(|m| m.part_count)
    }

    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.upload.created_at)
    }

    /// When the upload's URL stops working (a pending upload is abandoned after it).
    async fn expires_at(&self) -> DateTime<Utc> {
        datetime(self.upload.expires_at)
    }

    /// The object stored under the upload's key; null when there is none (not yet sent,
    /// or removed).
    async fn object(&self) -> Option<&StoredObject> {
        self.object.as_ref()
    }
}

/// An object in the blob store.
#[derive(SimpleObject)]
pub struct StoredObject {
    pub key: String,
    pub size: Size,
    /// Its SHA-256 (hex), when the store can say.
    pub sha256: Option<String>,
}

/// The limits a space puts on its files. Empty lists accept everything.
#[derive(SimpleObject)]
pub struct SpaceSettings {
    /// Largest file in bytes; null: only the server's own limit.
    pub max_file_size: Option<Size>,
    /// Accepted media types (`image/png`) and type ranges (`image/*`).
    pub allowed_content_types: Vec<String>,
    /// Accepted extensions of a file name's last segment, without the dot (`md`).
    pub allowed_extensions: Vec<String>,
    /// Whether names that differ only in case are different files (`README.md` beside
    /// `readme.md`). Off by default: names are unique ignoring case and look-alike
    /// characters, so that the space maps onto a folder on every common file system.
    pub case_sensitive_names: bool,
    /// Whether new content is copied to the server's replica stores (`DEFAULT`: as the
    /// server's `replication.default` says; `replicationStatus` tells which).
    pub replication: super::replication::ReplicationMode,
}

impl From<domain::SpaceSettings> for SpaceSettings {
    fn from(s: domain::SpaceSettings) -> Self {
        Self {
            max_file_size: s.max_file_size.map(Size),
            allowed_content_types: s.allowed_content_types,
            allowed_extensions: s.allowed_extensions,
            case_sensitive_names: s.case_sensitive_names,
            replication: super::replication::ReplicationMode::of(s.replication),
        }
    }
}

/// New settings for a space; they replace the old ones whole. Checked at `beginUpload`,
/// again at commit against the stored bytes, and on renames.
#[derive(InputObject)]
pub struct SpaceSettingsInput {
    /// Largest file in bytes (at most the server's limit); null: no limit of the space's own.
    pub max_file_size: Option<Size>,
    /// Accepted media types and type ranges; empty or null: any (uploads then need no type).
    pub allowed_content_types: Option<Vec<String>>,
    /// Accepted extensions; empty or null: any.
    pub allowed_extensions: Option<Vec<String>>,
    /// Names that differ only in case are different files; null: as it is now. Can change
    /// only before the space's first file.
    pub case_sensitive_names: Option<bool>,
    /// Whether new content is copied to the replica stores; null: as it is now. Turning
    /// it on copies the files already there too.
    pub replication: Option<super::replication::ReplicationMode>,
}

#[derive(SimpleObject, Clone)]
pub struct MetadataEntry {
    pub key: String,
    pub value: String,
}

#[derive(InputObject, Clone)]
pub struct MetadataEntryInput {
    pub key: String,
    pub value: String,
}

fn metadata(m: &domain::Metadata) -> Vec<MetadataEntry> {
    m.entries()
        .iter()
        .map(|e| MetadataEntry {
            key: e.key.clone(),
            value: e.value.clone(),
        })
        .collect()
}

pub fn metadata_input(
    entries: Option<Vec<MetadataEntryInput>>,
) -> Option<Vec<domain::MetadataEntry>> {
    entries.map(|entries| {
        entries
            .into_iter()
            .map(|e| domain::MetadataEntry {
                key: e.key,
                value: e.value,
            })
            .collect()
    })
}

/// A file at its latest committed version, or at the version asked for.
pub struct File(pub FileRecord);

// Serial: every field is computed locally, and resolving a page of 1,000 files field by
// field in order costs far less than a concurrent future set per file.
#[Object(serial)]
impl File {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }
    async fn space_id(&self) -> ID {
        ID(self.0.space_id.to_string())
    }
    async fn name(&self) -> &str {
        self.0.name.as_str()
    }
    async fn version(&self) -> u32 {
        self.0.version
    }
    async fn size(&self) -> Size {
        Size(self.0.content.size)
    }
    /// Hex SHA-256 of the content.
    async fn sha256(&self) -> String {
        self.0.content.sha256.to_hex()
    }
    async fn content_type(&self) -> Option<&str> {
        self.0.content.content_type.as_deref()
    }
    /// The user who inserted the file.
    async fn creator(&self) -> ID {
        ID(self.0.creator.to_string())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.0.created_at)
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        datetime(self.0.updated_at)
    }
    async fn deleted(&self) -> bool {
        self.0.deleted
    }
    /// The cursor of this file's last change.
    async fn cursor(&self) -> Cursor {
        domain::Cursor::new(self.0.space_id, self.0.seq).into()
    }
    /// A short-lived URL to GET the content; null for tombstones.
    async fn download_url(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        service(ctx).download_url(&self.0).await.gql()
    }
    /// User metadata (at most 64 entries; counted as 64 in the complexity limit).
    #[graphql(complexity = "64usize.saturating_mul(child_complexity)")]
    async fn metadata(&self) -> Vec<MetadataEntry> {
        metadata(&self.0.metadata)
    }
    /// Each store's copy of this version's content (owners only; empty when the space
    /// does not replicate). Counted as a page of 10 in the complexity limit.
    #[graphql(complexity = "10usize.saturating_mul(child_complexity)")]
    async fn replicas(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<super::replication::Replica>> {
        replicas(ctx, self.0.space_id, &self.0.content).await
    }
}

async fn replicas(
    ctx: &Context<'_>,
    space: domain::SpaceId,
    content: &domain::Content,
) -> async_graphql::Result<Vec<super::replication::Replica>> {
    Ok(service(ctx)
        .replicas(viewer(ctx)?, space, content)
        .await
        .gql()?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// One immutable version in a file's history.
pub struct FileVersion(pub VersionRecord);

#[Object(serial)]
impl FileVersion {
    async fn file_id(&self) -> ID {
        ID(self.0.file_id.to_string())
    }
    async fn version(&self) -> u32 {
        self.0.number
    }
    async fn kind(&self) -> ChangeKind {
        self.0.kind.into()
    }
    /// Only committed versions are ever listed.
    async fn state(&self) -> VersionState {
        VersionState::Committed
    }
    async fn name(&self) -> &str {
        self.0.name.as_str()
    }
    async fn size(&self) -> Size {
        Size(self.0.content.size)
    }
    async fn sha256(&self) -> String {
        self.0.content.sha256.to_hex()
    }
    async fn content_type(&self) -> Option<&str> {
        self.0.content.content_type.as_deref()
    }
    async fn author(&self) -> ID {
        ID(self.0.author.to_string())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        datetime(self.0.at)
    }
    async fn deleted(&self) -> bool {
        self.0.deleted
    }
    async fn cursor(&self) -> Cursor {
        domain::Cursor::new(self.0.space_id, self.0.seq).into()
    }
    /// User metadata (at most 64 entries; counted as 64 in the complexity limit).
    #[graphql(complexity = "64usize.saturating_mul(child_complexity)")]
    async fn metadata(&self) -> Vec<MetadataEntry> {
        metadata(&self.0.metadata)
    }
    async fn download_url(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<String>> {
        if self.0.deleted {
            return Ok(None);
        }
        service(ctx)
            .content_url(self.0.space_id, &self.0.content)
            .await
            .map(Some)
            .gql()
    }
    /// Each store's copy of this version's content (owners only).
    #[graphql(complexity = "10usize.saturating_mul(child_complexity)")]
    async fn replicas(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<super::replication::Replica>> {
        replicas(ctx, self.0.space_id, &self.0.content).await
    }
}

/// One page of incremental sync.
#[derive(SimpleObject)]
pub struct ChangePage {
    /// Changed files, each once in its latest state (tombstones included), in seq order.
    pub files: FileList,
    /// Pass as `since` to get what changed after this page.
    pub next_cursor: Cursor,
    pub has_more: bool,
}

#[derive(SimpleObject)]
pub struct HttpField {
    pub name: String,
    pub value: String,
}

/// How to send the bytes of an upload, and how to commit it.
#[derive(SimpleObject)]
pub struct UploadTicket {
    pub upload_id: ID,
    /// Secret proving a commit or cancel comes from the uploader.
    pub upload_token: String,
    pub file_id: ID,
    /// The version this upload becomes when committed.
    pub version: u32,
    /// Where to send the bytes; empty for a multipart upload (its parts go to the URLs
    /// of `uploadPartUrls`).
    pub url: String,
    /// `PUT`, `POST` (a form: `formFields`, then the file), or `MULTIPART`.
    pub method: String,
    /// Headers the request must carry exactly.
    pub headers: Vec<HttpField>,
    /// Form fields of a presigned POST (empty for PUT).
    pub form_fields: Vec<HttpField>,
    /// When `url` stops working (a multipart upload: when the upload expires).
    pub expires_at: DateTime<Utc>,
    /// A multipart upload's part size: every part but the last has exactly this many
    /// bytes.
    pub part_size: Option<Size>,
    /// A multipart upload's number of parts (1 to 10,000).
    pub part_count: Option<u32>,
}

/// Name-value pairs as GraphQL fields.
pub fn http_fields(v: Vec<(String, String)>) -> Vec<HttpField> {
    v.into_iter()
        .map(|(name, value)| HttpField { name, value })
        .collect()
}

impl From<sync::UploadTicket> for UploadTicket {
    fn from(t: sync::UploadTicket) -> Self {
        let fields = http_fields;
        Self {
            upload_id: ID(t.upload_id.to_string()),
            upload_token: t.upload_token,
            file_id: ID(t.file_id.to_string()),
            version: t.version,
            url: t.request.url,
            method: t.request.method.to_owned(),
            headers: fields(t.request.headers),
            form_fields: fields(t.request.form_fields),
            expires_at: datetime(t.expires_at),
            part_size: t.parts.map(|(size, _)| Size(size)),
            part_count: t.parts.map(|(_, count)| count),
        }
    }
}

#[derive(InputObject)]
pub struct BeginUploadInput {
    pub space_id: ID,
    /// Set to upload a new version of an existing file; omit to create a file.
    pub file_id: Option<ID>,
    pub name: String,
    pub size: Size,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    pub content_type: Option<String>,
    /// The version this upload replaces; defaults to the current one.
    pub base_version: Option<i32>,
    /// Replaces the metadata; omit to keep the current metadata.
    pub metadata: Option<Vec<MetadataEntryInput>>,
    /// How the bytes will be sent; omit for a PUT up to the server's multipart
    /// threshold (64 MiB unless configured) and `MULTIPART` above it.
    pub method: Option<super::upload_types::UploadMethod>,
}

#[derive(InputObject)]
pub struct UpdateFileInput {
    /// New name (a rename); omit to keep it.
    pub name: Option<String>,
    /// Replaces the metadata; omit to keep it.
    pub metadata: Option<Vec<MetadataEntryInput>>,
}
