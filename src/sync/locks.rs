//! Per-upload mutual exclusion inside one process.
//!
//! On the embedded backend the bytes of an upload arrive through this server, so a late
//! PUT could replace an object just after a commit verified it. Receiving bytes and
//! committing take the upload's lock, and receiving refuses uploads that are no longer
//! pending, so a committed object is never replaced. (On S3 the presigned PUT pins the
//! checksum, so a second PUT can only write the same bytes.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::domain::UploadId;

#[derive(Default)]
pub(super) struct UploadLocks {
    // A std Mutex: it is held only to look up an entry, never across an await.
    locks: Mutex<HashMap<UploadId, Arc<AsyncMutex<()>>>>,
}

pub(super) struct UploadGuard<'a> {
    owner: &'a UploadLocks,
    id: UploadId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl UploadLocks {
    /// The upload's lock, or `None` when someone holds it now (work that can wait, such
    /// as the sweeper, never queues behind a slow upload body).
    pub(super) fn try_lock(&self, id: UploadId) -> Option<UploadGuard<'_>> {
        let lock = self
            .locks
            .lock()
            .expect("upload locks poisoned")
            .entry(id)
            .or_default()
            .clone();
        let guard = lock.try_lock_owned().ok();
        // Built even on failure, so that its drop forgets an entry nobody else uses.
        let guard = UploadGuard {
            owner: self,
            id,
            guard,
        };
        guard.guard.is_some().then_some(guard)
    }

    pub(super) async fn lock(&self, id: UploadId) -> UploadGuard<'_> {
        let lock = self
            .locks
            .lock()
            .expect("upload locks poisoned")
            .entry(id)
            .or_default()
            .clone();
        UploadGuard {
            owner: self,
            id,
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for UploadGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.owner.locks.lock().expect("upload locks poisoned");
        // Forget the entry when nobody else holds or waits for it.
        if locks
            .get(&self.id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.id);
        }
    }
}
