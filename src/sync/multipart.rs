//! Multipart uploads: parts sent in parallel and in any order through URLs handed out in
//! batches (`uploadPartUrls`), each pinning its part's length and SHA-256; the parts
//! stored so far (`uploadStatus`), so a client that crashed sends only what is missing;
//! and the commit, which completes the object from the parts as the store lists them
//! (never as the client claims), hashes the whole content, and publishes only when it is
//! the declared SHA-256.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};

use super::{Error, Result, SyncService, millis, now};
use crate::domain::{Millis, PendingUpload, Sha256, UploadId, UploadMethod, UploadState, UserId};
use crate::storage::{BlobError, BlobInfo, ByteStream, PartTarget, PresignedRequest, StoredPart};

/// A part URL, and what it pins.
#[derive(Debug, Clone)]
pub struct PartUrl {
    pub number: u32,
    pub size: u64,
    pub request: PresignedRequest,
    pub expires_at: Millis,
}

/// A multipart upload as the store holds it now.
#[derive(Debug, Clone)]
pub struct UploadStatus {
    pub upload: PendingUpload,
    /// The parts stored, by number (empty for a PUT or POST upload).
    pub parts: Vec<StoredPart>,
    /// The part numbers still to send.
    pub missing: Vec<u32>,
    /// The whole content is being hashed (a commit is under way).
    pub verifying: bool,
}

/// The whole-content checks under way in this process, one per upload however many
/// commits wait for it: a spawned task, so a commit that gives up waiting (or a client
/// that goes away) never cancels it.
pub(super) struct Verifications {
    running: Mutex<HashMap<UploadId, Verification>>,
    /// Whole-object hashes at once: each reads an object from end to end.
    permits: Arc<tokio::sync::Semaphore>,
}

/// Verifications running at once per process; more wait (their commits answer
/// `UPLOAD_VERIFYING`).
const CONCURRENT_VERIFICATIONS: usize = 4;

impl Default for Verifications {
    fn default() -> Self {
        Self {
            running: Mutex::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_VERIFICATIONS)),
        }
    }
}

type Verification =
    Shared<BoxFuture<'static, Arc<std::result::Result<Option<BlobInfo>, BlobError>>>>;

impl Verifications {
    pub(super) fn get(&self, id: UploadId) -> Option<Verification> {
        self.running
            .lock()
            .expect("verifications poisoned")
            .get(&id)
            .cloned()
    }

    fn start(&self, id: UploadId, job: impl FnOnce() -> Verification) -> Verification {
        self.running
            .lock()
            .expect("verifications poisoned")
            .entry(id)
            .or_insert_with(job)
            .clone()
    }

    pub(super) fn forget(&self, id: UploadId) {
        self.running
            .lock()
            .expect("verifications poisoned")
            .remove(&id);
    }
}

impl SyncService {
    /// `uploadPartUrls`: presigned URLs for the parts named, each pinning the part's
    /// length (from the upload's plan) and the SHA-256 the client says it has.
    pub async fn upload_part_urls(
        &self,
        user: &UserId,
        id: UploadId,
        token: &str,
        parts: Vec<(u32, String)>,
    ) -> Result<Vec<PartUrl>> {
        let max = self.inner.limits.max_part_urls;
        if parts.is_empty() || parts.len() > max {
            return Err(Error::bad_input(format!(
                "ask for 1 to {max} part URLs at a time"
            )));
        }
        let upload = self.pending(id).await?;
        super::upload::check_token(&upload, token)?;
        self.check_token_holder(user, &upload).await?;
        let multipart = self.taking_parts(&upload)?;
        let mut seen = std::collections::HashSet::new();
        let mut checked = Vec::with_capacity(parts.len());
        for (number, sha256) in parts {
            let (offset, size) = multipart.part_range(upload.size, number).ok_or_else(|| {
                Error::bad_input(format!(
                    "part {number} is not a part of this upload: parts are numbered 1 to {}",
                    multipart.part_count
                ))
            })?;
            if !seen.insert(number) {
                return Err(Error::bad_input(format!(
                    "part {number} is asked for twice"
                )));
            }
            let sha256 = Sha256::parse(&sha256)
                .map_err(|e| Error::bad_input(format!("part {number}: {}", e.0)))?;
            checked.push((number, offset, size, sha256));
        }
        // Whole seconds, as the URLs carry them; never past the upload's own life.
        let expires_at =
            (now() + millis(self.inner.limits.url_ttl)).min(upload.expires_at) / 1000 * 1000;
        let mut urls = Vec::with_capacity(checked.len());
        for (number, offset, size, sha256) in checked {
            let request = self
                .inner
                .store
                .blobs
                .presign_part(PartTarget {
                    key: &upload.blob_key,
                    multipart_id: &multipart.store_id,
                    number,
                    offset,
                    size,
                    sha256,
                    expires_at,
                })
                .await?;
            urls.push(PartUrl {
                number,
                size,
                request,
                expires_at,
            });
        }
        Ok(urls)
    }

    /// `uploadStatus`: the upload and, for a multipart one, the parts stored so far.
    pub async fn upload_status(
        &self,
        user: &UserId,
        id: UploadId,
        token: &str,
    ) -> Result<UploadStatus> {
        let upload = self.pending(id).await?;
        super::upload::check_token(&upload, token)?;
        if upload.state == UploadState::Pending {
            self.check_token_holder(user, &upload).await?;
        } else {
            // A committed or abandoned upload still says so to its uploader, while a
            // member of the space.
            self.role_in(user, upload.space_id).await?;
        }
        let mut verifying =
            upload.state == UploadState::Pending && self.inner.verifications.get(id).is_some();
        let blobs = &self.inner.store.blobs;
        let (parts, missing) = match (&upload.multipart, upload.state) {
            (Some(m), UploadState::Pending) if !verifying => {
                match blobs.list_parts(&upload.blob_key, &m.store_id).await? {
                    Some(parts) => {
                        let missing = missing_parts(&upload, &parts);
                        (parts, missing)
                    }
                    // Completed into the object by a commit (here or on another
                    // replica) that has yet to publish: nothing is missing, commit.
                    None if blobs
                        .head(&upload.blob_key)
                        .await?
                        .is_some_and(|o| o.size == upload.size) =>
                    {
                        verifying = true;
                        (Vec::new(), Vec::new())
                    }
                    // Aborted behind the server's back (a lifecycle rule): every part.
                    None => (Vec::new(), missing_parts(&upload, &[])),
                }
            }
            _ => (Vec::new(), Vec::new()),
        };
        Ok(UploadStatus {
            upload,
            parts,
            missing,
            verifying,
        })
    }

    /// The embedded blob endpoint's part PUT: stores one part of a pending multipart
    /// upload. The URL's signature vouches for `size` and `sha256`; they must also be the
    /// upload's plan for that part.
    pub async fn receive_part(
        &self,
        id: UploadId,
        number: u32,
        size: u64,
        sha256: Sha256,
        body: ByteStream,
    ) -> Result<StoredPart> {
        let upload = self.pending(id).await?;
        let multipart = self.taking_parts(&upload)?;
        let Some((offset, planned)) = multipart.part_range(upload.size, number) else {
            return Err(Error::bad_input(format!(
                "part {number} is not a part of this upload"
            )));
        };
        if planned != size {
            return Err(Error::bad_input(format!(
                "part {number} has {planned} bytes, not {size}"
            )));
        }
        // In a task of its own: a request dropped mid-part (a reset HTTP/2 stream) must not
        // cancel the write halfway, where the store could not wait for the write still in
        // flight before letting a completion read the file.
        let blobs = self.inner.store.blobs.clone();
        let key = upload.blob_key.clone();
        let store_id = multipart.store_id.clone();
        let expires_at = upload.expires_at;
        let stored = tokio::spawn(async move {
            blobs
                .put_part(
                    PartTarget {
                        key: &key,
                        multipart_id: &store_id,
                        number,
                        offset,
                        size,
                        sha256,
                        expires_at,
                    },
                    body,
                )
                .await
        })
        .await
        .map_err(|e| Error::Internal(anyhow::anyhow!("the part's write stopped: {e}")))?
        .map_err(|e| match e {
            BlobError::NoSuchUpload => Error::UploadExpired(
                "the upload takes no more parts: it is committed, cancelled or expired".into(),
            ),
            other => other.into(),
        })?;
        Ok(stored)
    }

    /// The multipart plan of an upload that takes parts now (pending, multipart, not
    /// being committed), or why it does not.
    fn taking_parts<'u>(&self, upload: &'u PendingUpload) -> Result<&'u crate::domain::Multipart> {
        if upload.state == UploadState::Committed {
            return Err(Error::bad_input("the upload is already committed"));
        }
        super::upload::refuse_if_abandoned(upload)?;
        let multipart = match (&upload.multipart, upload.method) {
            (Some(m), UploadMethod::Multipart) => m,
            _ => {
                return Err(Error::bad_input(
                    "this is not a multipart upload: send its bytes to the ticket's URL",
                ));
            }
        };
        if self.inner.verifications.get(upload.id).is_some() {
            return Err(Error::bad_input(
                "the upload is being committed: it takes no more parts",
            ));
        }
        Ok(multipart)
    }

    /// The object of a multipart upload, complete and hashed whole: what
    /// `commit_pending` checks against the declared size and SHA-256. The caller holds
    /// the upload's lock.
    pub(super) async fn verify_multipart(&self, upload: &PendingUpload) -> Result<BlobInfo> {
        let multipart = upload
            .multipart
            .as_ref()
            .ok_or_else(|| Error::Internal(anyhow::anyhow!("not a multipart upload")))?;
        let blobs = &self.inner.store.blobs;
        let id = upload.id;
        let job = match self.inner.verifications.get(id) {
            Some(job) => job,
            None => {
                // The parts as the store has them: completing with anything else is not
                // an option (a client's list could name parts never sent).
                let parts = match blobs
                    .list_parts(&upload.blob_key, &multipart.store_id)
                    .await?
                {
                    Some(parts) => {
                        let missing = missing_parts(upload, &parts);
                        if missing.is_empty() {
                            parts
                        } else if blobs
                            .head(&upload.blob_key)
                            .await?
                            .is_some_and(|o| o.size == upload.size)
                        {
                            // Completed already, by a store that lists a completed
                            // upload's parts as none (S3 answers NoSuchUpload).
                            Vec::new()
                        } else {
                            return Err(Error::PartsMissing {
                                count: missing.len(),
                                missing,
                            });
                        }
                    }
                    // Completed already (by a commit that crashed or answered
                    // UPLOAD_VERIFYING on another replica): only the hash is left. With
                    // no object either, it was aborted (a lifecycle rule): every part is
                    // missing.
                    None if blobs.head(&upload.blob_key).await?.is_some() => Vec::new(),
                    None => {
                        let missing = missing_parts(upload, &[]);
                        return Err(Error::PartsMissing {
                            count: missing.len(),
                            missing,
                        });
                    }
                };
                let blobs = blobs.clone();
                let key = upload.blob_key.clone();
                let store_id = multipart.store_id.clone();
                let permits = self.inner.verifications.permits.clone();
                let service = self.clone();
                self.inner.verifications.start(id, move || {
                    let task = tokio::spawn(async move {
                        let result = async {
                            blobs.complete_multipart(&key, &store_id, &parts).await?;
                            // The permit bounds the whole-object reads (S3's digest),
                            // not the wait for parts still arriving before completion.
                            let _permit = permits.acquire_owned().await;
                            blobs.digest(&key).await
                        }
                        .await;
                        if result.is_err() {
                            // A failure is not kept (whether or not a commit still waits
                            // for it): the next commit tries again.
                            service.inner.verifications.forget(id);
                        }
                        result
                    });
                    async move {
                        Arc::new(task.await.unwrap_or_else(|e| {
                            Err(BlobError::Other(anyhow::anyhow!(
                                "verification failed: {e}"
                            )))
                        }))
                    }
                    .boxed()
                    .shared()
                })
            }
        };
        let wait = self.inner.limits.commit_wait;
        let Ok(result) = tokio::time::timeout(wait, job).await else {
            return Err(Error::Verifying {
                retry_after_ms: 1000,
            });
        };
        // A verified object's result is kept until the upload is published or purged: a
        // commit refused after it (a conflict, say) and asked again reads no object twice.
        if let Ok(Some(info)) = &*result {
            return Ok(info.clone());
        }
        self.inner.verifications.forget(id);
        match &*result {
            Ok(Some(_)) => unreachable!("returned above"),
            Ok(None) => Err(Error::UploadIncomplete(
                "the upload's object is gone; begin the upload again".into(),
            )),
            // Completed by a commit on another replica that has yet to make the object
            // visible, or aborted by a cancel: the next commit tells which.
            Err(BlobError::NoSuchUpload) => Err(Error::Verifying {
                retry_after_ms: 1000,
            }),
            Err(BlobError::PartsChanged) => Err(BlobError::PartsChanged.into()),
            Err(BlobError::StorageFull) => Err(Error::StorageFull),
            Err(e) => Err(Error::Internal(anyhow::anyhow!("{e:#}"))),
        }
    }

    /// Content that is not what was declared can never commit: the upload is abandoned
    /// and the object deleted (by the sweeper, if not now).
    pub(super) async fn refuse_content(&self, upload: &PendingUpload) -> Error {
        let purge_at = self.last_write_at(upload);
        match self
            .inner
            .store
            .meta
            .abandon_upload(upload.id, purge_at)
            .await
        {
            Ok(true) => {
                self.purge(upload, purge_at).await;
            }
            Ok(false) => {}
            Err(e) => return e.into(),
        }
        Error::ChecksumMismatch
    }
}

/// The part numbers not stored with their planned size.
fn missing_parts(upload: &PendingUpload, parts: &[StoredPart]) -> Vec<u32> {
    let Some(m) = &upload.multipart else {
        return Vec::new();
    };
    let stored: HashMap<u32, u64> = parts.iter().map(|p| (p.number, p.size)).collect();
    (1..=m.part_count)
        .filter(|&n| {
            let planned = m.part_range(upload.size, n).map(|(_, len)| len);
            stored.get(&n).copied() != planned
        })
        .collect()
}
