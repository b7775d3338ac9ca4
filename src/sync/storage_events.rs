//! The storage-event worker: commits the pending upload behind each "object stored" event,
//! so that an upload whose client vanished after sending the bytes is still published.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Error, SyncService};
use crate::domain::UploadId;
use crate::storage::{StorageEvent, StorageEvents};

impl SyncService {
    /// Runs until `stop` is cancelled (returns at once when the backend has no events).
    pub async fn run_storage_events(self, stop: CancellationToken) {
        let Some(events) = self.inner.store.events.clone() else {
            return;
        };
        let mut failures = 0u32;
        loop {
            let received = tokio::select! {
                () = stop.cancelled() => return,
                received = events.receive() => received,
            };
            match received {
                Ok(batch) => {
                    failures = 0;
                    for event in batch {
                        self.handle_storage_event(&*events, event).await;
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = ?e, "cannot receive storage events; retrying");
                    let wait = Duration::from_millis(200) * 2u32.pow(failures.min(5));
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    async fn handle_storage_event(&self, events: &dyn StorageEvents, event: StorageEvent) {
        if !event.understood {
            // Left unacknowledged: after the queue's bounded receives it goes to the DLQ.
            tracing::warn!("a storage event message is not an S3 notification");
            return;
        }
        for key in &event.keys {
            if let Err(e) = self.commit_stored(key).await {
                // Comes again after the visibility timeout; the commit is idempotent.
                tracing::warn!(key, error = ?e, "storage event not handled; it will come again");
                return;
            }
        }
        if let Err(e) = events.acknowledge(&event.receipt).await {
            tracing::warn!(error = ?e, "cannot acknowledge a storage event");
        }
    }

    /// Commits the upload whose object `key` is, as `commitUpload` would. `Err` only when
    /// trying again later could help; an upload that cannot commit (expired, conflicting,
    /// wrong bytes, not ours) is left for its client's own `commitUpload` to report.
    pub async fn commit_stored(&self, key: &str) -> Result<(), Error> {
        let Some(id) = upload_of_key(key) else {
            tracing::info!(key, "storage event for an object that is not an upload");
            return Ok(());
        };
        // A multipart object appears only when a commit completes it, and that commit
        // verifies and publishes it (or answers UPLOAD_VERIFYING and is asked again):
        // its event would only hash the object a second time.
        if let Ok(upload) = self.pending(id).await
            && upload.method == crate::domain::UploadMethod::Multipart
        {
            return Ok(());
        }
        let _guard = self.inner.upload_locks.lock(id).await;
        match self.commit_locked(id).await {
            Ok(file) => {
                tracing::info!(upload = %id, file = %file.id, version = file.version, "storage event committed an upload");
                Ok(())
            }
            Err(e @ Error::Internal(_)) => Err(e),
            Err(e) => {
                tracing::info!(upload = %id, code = e.code(), "storage event did not commit the upload");
                Ok(())
            }
        }
    }
}

/// Upload keys are `<space id>/<upload id>`.
fn upload_of_key(key: &str) -> Option<UploadId> {
    let (space, upload) = key.split_once('/')?;
    space.parse::<uuid::Uuid>().ok()?;
    upload.parse().ok()
}
