//! The three-phase upload: begin (a pending version and a presigned URL), the bytes
//! (straight to storage), commit (verify, then publish atomically). Plus the inline path
//! for small files, the storage-event commit and cancellation.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::Digest;

use super::{Error, Result, SyncService, millis, now};
use crate::domain::{
    ChangeKind, Content, FileId, FileName, FileRecord, MAX_SINGLE_UPLOAD, Metadata, MetadataEntry,
    Millis, Multipart, PendingUpload, Sha256, Size, SpaceId, UploadId, UploadMethod, UploadState,
    UserId,
};
use crate::storage::{BlobError, ByteStream, PresignedRequest, Publish, PutTarget, StoreError};

/// `beginUpload`'s input, as the client sent it.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub space_id: SpaceId,
    pub file_id: Option<FileId>,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: Option<String>,
    pub base_version: Option<i32>,
    pub metadata: Option<Vec<MetadataEntry>>,
    /// How the client will send the bytes; `None`: a PUT, or multipart above the
    /// threshold.
    pub method: Option<UploadMethod>,
}

/// What the client needs to send the bytes and commit them.
#[derive(Debug, Clone)]
pub struct UploadTicket {
    pub upload_id: UploadId,
    pub upload_token: String,
    pub file_id: FileId,
    pub version: u32,
    pub request: PresignedRequest,
    pub expires_at: Millis,
    /// A multipart upload's part size and count (its part URLs come from
    /// `uploadPartUrls`; `request` is then empty).
    pub parts: Option<(u64, u32)>,
}

/// The outcome of bytes received by the embedded blob endpoint.
#[derive(Debug)]
pub struct ReceivedUpload {
    pub upload_id: UploadId,
    /// The commit the storage event triggered.
    pub commit: Result<FileRecord>,
}

impl SyncService {
    pub async fn begin_upload(&self, user: &UserId, input: NewUpload) -> Result<UploadTicket> {
        let method = match input.method {
            Some(method) => method,
            None if input.size > self.inner.limits.multipart_threshold => UploadMethod::Multipart,
            None => UploadMethod::Put,
        };
        let (mut upload, token) = self.prepare_upload(user, input).await?;
        upload.method = method;
        if method == UploadMethod::Multipart {
            return self.begin_multipart(upload, token).await;
        }
        if upload.size > MAX_SINGLE_UPLOAD {
            return Err(Error::PayloadTooLarge(format!(
                "one PUT or POST stores at most {MAX_SINGLE_UPLOAD} bytes; use method MULTIPART"
            )));
        }
        // Signed URLs carry whole seconds; the ticket says exactly when the URL stops working.
        let url_expires =
            (now() + millis(self.inner.limits.url_ttl)).min(upload.expires_at) / 1000 * 1000;
        let target = PutTarget {
            key: &upload.blob_key,
            size: upload.size,
            sha256: upload.sha256,
            content_type: upload.content_type.as_deref(),
            expires_at: url_expires,
        };
        let blobs = &self.inner.store.blobs;
        let request = match method {
            UploadMethod::Post => blobs.presign_post(target).await?,
            _ => blobs.presign_put(target).await?,
        };
        self.inner.store.meta.create_upload(upload.clone()).await?;
        tracing::info!(upload = %upload.id, file = %upload.file_id, size = upload.size, "upload begun");
        Ok(UploadTicket {
            upload_id: upload.id,
            upload_token: token,
            file_id: upload.file_id,
            version: upload.target_version(),
            request,
            expires_at: url_expires,
            parts: None,
        })
    }

    /// A multipart ticket: the store's multipart upload exists before the pending upload
    /// names it (an orphan left by a crash in between is removed by the bucket's
    /// lifecycle rule, or at the embedded backend's start).
    async fn begin_multipart(
        &self,
        mut upload: PendingUpload,
        token: String,
    ) -> Result<UploadTicket> {
        let (part_size, part_count) = Multipart::plan(upload.size)?;
        let blobs = &self.inner.store.blobs;
        let store_id = blobs
            .create_multipart(&upload.blob_key, upload.size, Some(pinned_type(&upload)))
            .await
            .map_err(|e| match e {
                BlobError::TooLarge => Error::PayloadTooLarge(
                    "the server's file system cannot hold a file this large".into(),
                ),
                e => e.into(),
            })?;
        upload.multipart = Some(Multipart {
            part_size,
            part_count,
            store_id: store_id.clone(),
        });
        if let Err(e) = self.inner.store.meta.create_upload(upload.clone()).await {
            let _ = blobs.abort_multipart(&upload.blob_key, &store_id).await;
            return Err(e.into());
        }
        tracing::info!(upload = %upload.id, file = %upload.file_id, size = upload.size, part_count, "multipart upload begun");
        Ok(UploadTicket {
            upload_id: upload.id,
            upload_token: token,
            file_id: upload.file_id,
            version: upload.target_version(),
            request: PresignedRequest {
                url: String::new(),
                method: "MULTIPART",
                headers: Vec::new(),
                form_fields: Vec::new(),
            },
            expires_at: upload.expires_at,
            parts: Some((part_size, part_count)),
        })
    }

    /// Small files through GraphQL: the same pending/commit path, bytes through the server.
    pub async fn upload_inline(
        &self,
        user: &UserId,
        input: NewUpload,
        body: ByteStream,
    ) -> Result<FileRecord> {
        let limit = self.inner.limits.inline_max_bytes;
        if input.size > limit {
            return Err(Error::PayloadTooLarge(format!(
                "inline uploads are limited to {limit} bytes; use beginUpload"
            )));
        }
        let (upload, _) = self.prepare_upload(user, input).await?;
        self.inner.store.meta.create_upload(upload.clone()).await?;
        let received = self
            .receive_upload(upload.id, Some(pinned_type(&upload).to_owned()), body)
            .await?;
        received.commit
    }

    /// The embedded blob endpoint's PUT: stores the bytes of a pending upload, then
    /// commits it as a storage event would. Errors concern the bytes; the commit's own
    /// outcome is in [`ReceivedUpload::commit`].
    pub async fn receive_upload(
        &self,
        id: UploadId,
        content_type: Option<String>,
        body: ByteStream,
    ) -> Result<ReceivedUpload> {
        let _guard = self.inner.upload_locks.lock(id).await;
        let upload = self.pending(id).await?;
        // Bytes are taken only for a pending upload: a committed object is never replaced,
        // and bytes for an abandoned one would be stored where no sweeper looks.
        if upload.state == UploadState::Committed {
            return Err(already_committed());
        }
        refuse_if_abandoned(&upload)?;
        if upload.method == UploadMethod::Multipart {
            return Err(Error::bad_input(
                "this is a multipart upload: send its parts to the URLs of uploadPartUrls",
            ));
        }
        // The type is pinned, as in an S3 presigned PUT: the one declared, or the default.
        let pinned = pinned_type(&upload);
        if content_type.as_deref() != Some(pinned) {
            return Err(Error::bad_input(format!(
                "Content-Type must be {pinned:?}, as the upload ticket says"
            )));
        }
        let blobs = &self.inner.store.blobs;
        let info = blobs.put(&upload.blob_key, body, upload.size).await?;
        if info.size != upload.size {
            blobs.delete(&upload.blob_key).await?;
            return Err(Error::UploadIncomplete(format!(
                "received {} of the {} declared bytes",
                info.size, upload.size
            )));
        }
        let commit = self.commit_pending(upload).await;
        Ok(ReceivedUpload {
            upload_id: id,
            commit,
        })
    }

    /// `commitUpload`: idempotent; a repeated commit returns the same version. The token
    /// is only a capability within the upload's life and its space: the caller must be
    /// an editor or owner of the space now (a member, to read a committed one again),
    /// and after the upload's expiry the token is worth nothing.
    pub async fn commit_upload(
        &self,
        user: &UserId,
        id: UploadId,
        token: &str,
    ) -> Result<FileRecord> {
        let _guard = self.inner.upload_locks.lock(id).await;
        let upload = self.pending(id).await?;
        check_token(&upload, token)?;
        self.check_token_holder(user, &upload).await?;
        self.commit_pending(upload).await
    }

    /// Whether `user` may still use an upload's token: within the upload's life, and as a
    /// member of its space (a writer, unless the upload is committed already).
    pub(super) async fn check_token_holder(
        &self,
        user: &UserId,
        upload: &PendingUpload,
    ) -> Result<()> {
        if now() >= upload.expires_at {
            return Err(Error::UploadExpired(
                "the upload and its token have expired".into(),
            ));
        }
        match upload.state {
            UploadState::Committed => self.role_in(user, upload.space_id).await.map(drop),
            _ => self.require_writer(user, upload.space_id).await.map(drop),
        }
    }

    /// `cancelUpload`: abandons a pending upload and deletes its bytes at once. `false`
    /// when it was already abandoned; `BAD_INPUT` when it is committed, even when the
    /// commit won the race on another replica a moment ago (its bytes are then left alone).
    pub async fn cancel_upload(&self, user: &UserId, id: UploadId, token: &str) -> Result<bool> {
        let _guard = self.inner.upload_locks.lock(id).await;
        let upload = self.pending(id).await?;
        check_token(&upload, token)?;
        if upload.state == UploadState::Pending {
            self.require_writer(user, upload.space_id).await?;
        }
        match upload.state {
            UploadState::Committed => Err(already_committed()),
            UploadState::Abandoned => Ok(false),
            UploadState::Pending => {
                let purge_at = self.last_write_at(&upload);
                if !self.inner.store.meta.abandon_upload(id, purge_at).await? {
                    // Another replica (or the storage event) committed or abandoned it
                    // between our read and the conditional write: the content is not
                    // ours to delete.
                    return match self.pending(id).await?.state {
                        UploadState::Committed => Err(already_committed()),
                        _ => Ok(false),
                    };
                }
                self.purge(&upload, purge_at).await;
                Ok(true)
            }
        }
    }

    /// Finishes up to `limit` uploads on the sweeper's list: expired pending ones are
    /// abandoned, and every abandoned one whose content is due for removal has it
    /// deleted. Returns how many were handled. An upload that is busy (its bytes are
    /// arriving, or it is being committed) is skipped until the next sweep.
    pub async fn sweep_uploads(&self, limit: usize) -> Result<usize> {
        // More than `limit`: busy uploads (a trickling body) are skipped, and must not
        // hold up the others.
        let due = self
            .inner
            .store
            .meta
            .uploads_to_sweep(now(), limit.saturating_mul(4))
            .await?;
        let mut swept = 0;
        for upload in due {
            if swept == limit {
                break;
            }
            let Some(_guard) = self.inner.upload_locks.try_lock(upload.id) else {
                continue;
            };
            let purge_at = match upload.state {
                UploadState::Pending => {
                    let purge_at = self.last_write_at(&upload);
                    if !self
                        .inner
                        .store
                        .meta
                        .abandon_upload(upload.id, purge_at)
                        .await?
                    {
                        continue;
                    }
                    purge_at
                }
                // Due for removal: its last write could land before now.
                UploadState::Abandoned => now(),
                UploadState::Committed => continue,
            };
            if self.purge(&upload, purge_at).await {
                swept += 1;
            }
        }
        Ok(swept)
    }

    /// Deletes an abandoned upload's content. Once no URL can write it again
    /// (`purge_at`), the upload leaves the sweeper's list; until then, or when the
    /// delete fails, the sweeper deletes it (again) later. `true` when the content is
    /// gone for good.
    pub(super) async fn purge(&self, upload: &PendingUpload, purge_at: Millis) -> bool {
        self.inner.verifications.forget(upload.id);
        if let Some(m) = &upload.multipart {
            // Again at the purge: S3 may still store a part that was in flight when the
            // upload was aborted.
            if let Err(e) = self
                .inner
                .store
                .blobs
                .abort_multipart(&upload.blob_key, &m.store_id)
                .await
            {
                tracing::warn!(upload = %upload.id, error = ?e, "cannot abort an abandoned multipart upload; the sweeper retries");
                return false;
            }
        }
        if let Err(e) = self.inner.store.blobs.delete(&upload.blob_key).await {
            tracing::warn!(upload = %upload.id, error = ?e, "cannot delete an abandoned upload's content; the sweeper retries");
            return false;
        }
        if now() < purge_at {
            return false;
        }
        match self.inner.store.meta.upload_purged(upload.id).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(upload = %upload.id, error = ?e, "cannot record a purge; the sweeper retries");
                false
            }
        }
    }

    /// When the last write of an upload's content may land: its URL's expiry (a PUT sent
    /// through it after a cancel stores bytes that must be removed again), plus as long
    /// again for a transfer that began just before (S3 checks a presigned URL when the
    /// request starts, not when it ends).
    pub(super) fn last_write_at(&self, upload: &PendingUpload) -> Millis {
        let url_ttl = millis(self.inner.limits.url_ttl);
        if upload.multipart.is_some() {
            // Part URLs are handed out until the upload expires.
            return upload.expires_at + url_ttl;
        }
        (upload.created_at + url_ttl).min(upload.expires_at) + url_ttl
    }

    /// Validates `beginUpload` input and builds the pending upload (not yet stored).
    async fn prepare_upload(
        &self,
        user: &UserId,
        input: NewUpload,
    ) -> Result<(PendingUpload, String)> {
        self.require_writer(user, input.space_id).await?;
        let name = FileName::parse(&input.name)?;
        let size = Size::new(input.size)?.get();
        let max = self.inner.limits.max_file_size;
        if size > max {
            return Err(Error::PayloadTooLarge(format!(
                "files in this space are limited to {max} bytes"
            )));
        }
        let sha256 = Sha256::parse(&input.sha256)?;
        let content_type = input
            .content_type
            .as_deref()
            .map(crate::domain::normalize_content_type)
            .transpose()?;
        let metadata = input.metadata.map(Metadata::parse).transpose()?;
        let settings = self
            .check_space_accepts(input.space_id, &name, content_type.as_deref(), size)
            .await?;
        let limit = self.inner.limits.max_pending_per_user;
        if self
            .inner
            .store
            .meta
            .pending_uploads_of(user, now())
            .await?
            >= limit
        {
            return Err(Error::RateLimited(format!(
                "you have {limit} uploads pending; commit or cancel some before beginning more"
            )));
        }

        let meta = &self.inner.store.meta;
        let (file_id, base_version, metadata) = match input.file_id {
            Some(file_id) => {
                let file = meta
                    .file(file_id)
                    .await?
                    .filter(|f| f.space_id == input.space_id)
                    .ok_or(Error::NotFound("file"))?;
                if file.deleted {
                    return Err(Error::bad_input(
                        "the file is deleted; restore a version of it first",
                    ));
                }
                let base = match input.base_version {
                    Some(v) => u32::try_from(v)
                        .ok()
                        .filter(|v| *v >= 1)
                        .ok_or_else(|| Error::bad_input("baseVersion must be positive"))?,
                    None => file.version,
                };
                if base != file.version {
                    return Err(Error::conflict(file.version));
                }
                (file_id, Some(base), metadata.unwrap_or(file.metadata))
            }
            None => {
                if input.base_version.is_some() {
                    return Err(Error::bad_input("baseVersion needs a fileId"));
                }
                (FileId::new(), None, metadata.unwrap_or_default())
            }
        };
        if let Some(other) = meta
            .file_keyed(input.space_id, &settings.key(&name))
            .await?
            && other.id != file_id
        {
            return Err(StoreError::NameTaken {
                file_id: other.id,
                current: other.version,
            }
            .into());
        }

        let id = UploadId::new();
        let mut token = [0u8; 32];
        rand::rng().fill_bytes(&mut token);
        let token = URL_SAFE_NO_PAD.encode(token);
        let created_at = now();
        let upload = PendingUpload {
            id,
            token_hash: token_hash(&token),
            space_id: input.space_id,
            file_id,
            base_version,
            name,
            size,
            sha256,
            content_type,
            metadata,
            // Keys are made of ids only, never of user-supplied names.
            blob_key: format!("{}/{}", input.space_id, id),
            author: user.clone(),
            created_at,
            expires_at: created_at + millis(self.inner.limits.pending_ttl),
            state: UploadState::Pending,
            committed_version: None,
            method: UploadMethod::Put,
            multipart: None,
        };
        Ok((upload, token))
    }

    /// Verifies the object and publishes it. The caller holds the upload's lock.
    pub(super) async fn commit_locked(&self, id: UploadId) -> Result<FileRecord> {
        let upload = self.pending(id).await?;
        self.commit_pending(upload).await
    }

    /// [`Self::commit_locked`] with the upload as just read under its lock.
    async fn commit_pending(&self, upload: PendingUpload) -> Result<FileRecord> {
        let id = upload.id;
        if upload.state == UploadState::Committed {
            self.inner.verifications.forget(id);
            let file = self.committed_result(&upload).await?;
            // A PUT repeated after the commit (its first response lost) may have tagged
            // the object as pending again: untag it, whoever asks (the client's repeated
            // commit, or the storage event of that PUT), so the lifecycle rule never
            // expires committed content.
            if !self
                .inner
                .store
                .blobs
                .mark_committed(&file.content.blob_key)
                .await?
            {
                tracing::error!(upload = %id, key = %file.content.blob_key, "a committed upload's content is missing");
            }
            return Ok(file);
        }
        refuse_if_abandoned(&upload)?;
        // The author must still be allowed to write when the change is published.
        self.require_writer(&upload.author, upload.space_id).await?;

        let blobs = &self.inner.store.blobs;
        // Where the version's content lives: the upload's key, or (a POST form on S3) a
        // sealed copy of it.
        let mut content_key = upload.blob_key.clone();
        if upload.method == UploadMethod::Multipart {
            let info = self.verify_multipart(&upload).await?;
            if info.size != upload.size || info.sha256 != Some(upload.sha256) {
                return Err(self.refuse_content(&upload).await);
            }
        } else {
            let no_bytes = || Error::UploadIncomplete("no bytes have been uploaded yet".into());
            let info = match upload.method {
                UploadMethod::Post => {
                    let (key, info) = blobs.seal(&upload.blob_key).await?.ok_or_else(no_bytes)?;
                    content_key = key;
                    info
                }
                _ => blobs.head(&upload.blob_key).await?.ok_or_else(no_bytes)?,
            };
            if info.size != upload.size {
                return Err(Error::UploadIncomplete(format!(
                    "the stored object has {} bytes; {} were declared",
                    info.size, upload.size
                )));
            }
            if info.sha256 != Some(upload.sha256) {
                return Err(Error::ChecksumMismatch);
            }
        }
        // Again on the stored bytes (their size; their type is pinned to the declared one)
        // and the space's settings as they are now: an owner may have tightened them
        // since `beginUpload`.
        let settings = self
            .check_space_accepts(
                upload.space_id,
                &upload.name,
                upload.content_type.as_deref(),
                upload.size,
            )
            .await?;
        // Unmark first: if publishing then fails, the upload stays pending and the sweeper
        // deletes the object; the reverse order could expire a committed object.
        if !blobs.mark_committed(&content_key).await? {
            // The object went after it was checked: a cancel or the sweeper on another
            // replica abandoned the upload meanwhile.
            refuse_if_abandoned(&self.pending(id).await?)?;
            return Err(Error::UploadIncomplete(
                "the uploaded bytes are gone; send them again".into(),
            ));
        }

        let change = Publish {
            space_id: upload.space_id,
            file_id: upload.file_id,
            base_version: upload.base_version,
            kind: if upload.base_version.is_some() {
                ChangeKind::Updated
            } else {
                ChangeKind::Created
            },
            name: upload.name.clone(),
            name_key: settings.key(&upload.name),
            content: Content {
                blob_key: content_key.clone(),
                size: upload.size,
                sha256: upload.sha256,
                content_type: upload.content_type.clone(),
            },
            metadata: upload.metadata.clone(),
            deleted: false,
            actor: upload.author.clone(),
            at: now(),
            upload: Some(upload.id),
            copy_to: self.inner.replication.copy_targets(&settings),
        };
        let published = self.inner.store.meta.publish(change).await;
        if !matches!(published, Err(StoreError::Other(_) | StoreError::Full)) {
            // Published, or never to be: the verified result is of no more use.
            self.inner.verifications.forget(id);
        }
        match published {
            Ok(file) => {
                tracing::info!(upload = %id, file = %file.id, version = file.version, seq = file.seq, "upload committed");
                // The copies were queued with the version: the workers take them from
                // here; the commit never waits for a store.
                self.inner.replication.wake_all();
                if content_key != upload.blob_key {
                    // The form's own object is garbage now (a form sent again stores it
                    // anew, pending-tagged: the lifecycle rule's to remove).
                    if let Err(e) = blobs.delete(&upload.blob_key).await {
                        tracing::warn!(upload = %id, error = ?e, "cannot delete a sealed form's object");
                    }
                }
                Ok(file)
            }
            // Another replica (or the storage event) committed it first.
            Err(StoreError::UploadNotPending) => {
                let upload = self.pending(id).await?;
                self.committed_result(&upload).await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The file as a committed upload made it.
    async fn committed_result(&self, upload: &PendingUpload) -> Result<FileRecord> {
        let Some(number) = upload.committed_version else {
            return Err(Error::UploadExpired(
                "the upload was cancelled or has expired".into(),
            ));
        };
        let meta = &self.inner.store.meta;
        let file = meta
            .file(upload.file_id)
            .await?
            .ok_or(Error::NotFound("file"))?;
        let version = meta
            .version(upload.file_id, number)
            .await?
            .ok_or(Error::NotFound("version"))?;
        Ok(super::file_at_version(&file, &version))
    }

    pub(super) async fn pending(&self, id: UploadId) -> Result<PendingUpload> {
        self.inner
            .store
            .meta
            .upload(id)
            .await?
            .ok_or(Error::NotFound("upload"))
    }
}

/// The `Content-Type` an upload's bytes must come with: the declared one, or the default.
fn pinned_type(upload: &PendingUpload) -> &str {
    upload
        .content_type
        .as_deref()
        .unwrap_or(crate::domain::DEFAULT_CONTENT_TYPE)
}

fn already_committed() -> Error {
    Error::bad_input("the upload is already committed")
}

/// `UPLOAD_EXPIRED` for an upload that was abandoned or is past its expiry.
pub(super) fn refuse_if_abandoned(upload: &PendingUpload) -> Result<()> {
    match upload.state {
        UploadState::Abandoned => Err(Error::UploadExpired(
            "the upload was cancelled or has expired".into(),
        )),
        UploadState::Pending if now() >= upload.expires_at => {
            Err(Error::UploadExpired("the upload has expired".into()))
        }
        UploadState::Pending | UploadState::Committed => Ok(()),
    }
}

/// Refuses a token other than the one the upload was begun with.
pub(super) fn check_token(upload: &PendingUpload, token: &str) -> Result<()> {
    // Comparing digests rather than tokens keeps the comparison's timing independent of
    // how much of the secret a guess got right.
    if token_hash(token) != upload.token_hash {
        return Err(Error::forbidden("the upload token does not match"));
    }
    Ok(())
}

fn token_hash(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}
