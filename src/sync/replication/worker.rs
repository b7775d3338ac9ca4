//! One worker per store per server: claims due copies, copies, verifies, records.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{ResultLabels, StoreLabels, describe};
use crate::domain::{CopyOutcome, CopyRecord, CopyStatus, CopyTask, StoreId};
use crate::storage::{BlobError, BlobStore, Verdict};
use crate::sync::{SyncService, millis, now};

/// Straight failures after which a store is taken as down: it is then probed with one
/// copy at a time, less and less often.
const DOWN_AFTER: u32 = 5;
const PROBE_MAX: Duration = Duration::from_secs(300);

/// A copy from one source failed: the source lacks the object, the destination
/// failed, or the source (or the bytes between them) did.
enum SourceOr {
    Missing,
    Dest(BlobError),
    Blob(BlobError),
}

impl From<BlobError> for SourceOr {
    fn from(e: BlobError) -> Self {
        SourceOr::Blob(e)
    }
}

/// Why a copy could not be made this time.
enum CopyFailure {
    /// The claim was lost (taken over, or the content removed): nothing to record.
    ClaimLost,
    /// The destination store failed: counts towards taking it as down.
    Store(String),
    /// Something else did (no intact source, a source that failed, the metadata store):
    /// recorded, but says nothing of the destination.
    Elsewhere(String),
}

/// How a worked-on copy went, for the store's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Went {
    /// The store did what was asked.
    Well,
    /// The store failed.
    Badly,
    /// Says nothing of the store (claim lost, stopping, not recorded).
    Neither,
}

impl SyncService {
    /// One store's worker: keeps up to `copy_concurrency` copies running, claiming more as
    /// each ends (one slow copy holds one slot, not the others). A store that fails
    /// `DOWN_AFTER` times in a row is taken as down: one probe at a time, less and less
    /// often, and the scrub and repairs leave it alone until a copy succeeds.
    pub(super) async fn run_worker(self, store: StoreId, stop: CancellationToken) {
        let replication = self.replication();
        let settings = replication.settings.clone();
        let wake = replication.wake[&store].clone();
        let mut running: tokio::task::JoinSet<Went> = tokio::task::JoinSet::new();
        let mut straight_failures = 0u32;
        let mut probe_at = tokio::time::Instant::now();
        loop {
            let down = straight_failures >= DOWN_AFTER;
            let capacity = if down { 1 } else { settings.copy_concurrency };
            let free = capacity.saturating_sub(running.len());
            if free > 0 && (!down || tokio::time::Instant::now() >= probe_at) {
                let at = now();
                match self
                    .inner
                    .store
                    .copies
                    .claim_copies(&store, at, at + millis(settings.claim_lease), free)
                    .await
                {
                    Ok(tasks) => {
                        for task in tasks {
                            let (this, stop) = (self.clone(), stop.clone());
                            running.spawn(async move { this.work_on(task, stop).await });
                        }
                    }
                    Err(e) => tracing::warn!(%store, error = %describe(&e), "cannot claim copies"),
                }
            }
            let idle = if down {
                probe_at
                    .saturating_duration_since(tokio::time::Instant::now())
                    .max(settings.poll_interval)
            } else {
                settings.poll_interval
            };
            tokio::select! {
                _ = stop.cancelled() => {
                    while running.join_next().await.is_some() {}
                    return;
                }
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    match joined.unwrap_or(Went::Neither) {
                        Went::Well => {
                            if straight_failures >= DOWN_AFTER {
                                tracing::info!(%store, "store is back");
                            }
                            straight_failures = 0;
                            replication.set_down(&store, false);
                        }
                        Went::Badly => {
                            straight_failures += 1;
                            if straight_failures >= DOWN_AFTER {
                                let pause = Duration::from_secs(5)
                                    .saturating_mul(2u32.saturating_pow((straight_failures - DOWN_AFTER).min(16)))
                                    .min(PROBE_MAX);
                                probe_at = tokio::time::Instant::now() + pause;
                                replication.set_down(&store, true);
                                tracing::warn!(%store, failures = straight_failures, ?pause, "store looks down; probing it with one copy at a time");
                            }
                        }
                        Went::Neither => {}
                    }
                }
                _ = wake.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
        }
    }

    /// Works on one claimed copy and records the outcome.
    async fn work_on(&self, task: CopyTask, stop: CancellationToken) -> Went {
        let replication = self.replication();
        let record = &task.record;
        let store = record.store.as_str().to_owned();
        let Some(dest) = replication.store(&record.store).cloned() else {
            return Went::Neither;
        };
        let started = std::time::Instant::now();
        let work = async {
            if record.status == CopyStatus::Removing {
                // The primary's object is never the queue's to delete.
                if !record.store.is_primary() {
                    dest.delete(&record.content.blob_key)
                        .await
                        .map_err(|e| CopyFailure::Store(self.store_failed(record, &e)))?;
                }
                return Ok(CopyOutcome::Removed);
            }
            self.copy(record, &dest).await.map(|method| {
                tracing::debug!(store = %record.store, key = %record.content.blob_key, method, "copied");
                CopyOutcome::Copied
            })
        };
        let outcome = tokio::select! {
            outcome = work => outcome,
            () = self.keep_claim(&task) => Err(CopyFailure::ClaimLost),
            _ = stop.cancelled() => return Went::Neither,
        };
        let at = now();
        let (outcome, went) = match outcome {
            Ok(outcome) => (outcome, Went::Well),
            Err(CopyFailure::ClaimLost) => {
                self.after_lost_claim(record, &dest).await;
                return Went::Neither;
            }
            Err(CopyFailure::Store(error)) => {
                let retry_at = replication.retry_at(record.attempts, at);
                (CopyOutcome::Failed { error, retry_at }, Went::Badly)
            }
            Err(CopyFailure::Elsewhere(error)) => {
                let retry_at = replication.retry_at(record.attempts, at);
                (CopyOutcome::Failed { error, retry_at }, Went::Neither)
            }
        };
        let label = match &outcome {
            CopyOutcome::Copied => "copied",
            CopyOutcome::Failed { .. } => "failed",
            CopyOutcome::Removed => "removed",
        };
        match self
            .inner
            .store
            .copies
            .finish_copy(&task, outcome.clone(), at)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                self.after_lost_claim(record, &dest).await;
                return Went::Neither;
            }
            Err(e) => {
                // Not recorded: the claim runs out and the copy is done again (harmless).
                tracing::warn!(%store, error = %describe(&e), "cannot record a copy's outcome");
                return Went::Neither;
            }
        }
        let stats = &replication.stats;
        stats
            .copies
            .get_or_create(&ResultLabels {
                store: store.clone(),
                result: label,
            })
            .inc();
        if outcome == CopyOutcome::Copied {
            let labels = StoreLabels {
                store: store.clone(),
            };
            stats
                .bytes
                .get_or_create(&labels)
                .inc_by(record.content.size);
            // From the copy's queueing (the commit; a backfill's or a repair's start).
            let lag = (at - record_queued_at(record)).max(0) as f64 / 1000.0;
            stats.lag.get_or_create(&labels).observe(lag);
            if record.store.is_primary() {
                replication.mark_degraded(&record.content.blob_key, false);
            }
            tracing::debug!(%store, key = %record.content.blob_key, took = ?started.elapsed(), "copy recorded");
        }
        went
    }

    /// A store's failure, logged whole; what owners see of it (`lastError`) names the
    /// kind of failure only: no endpoint, bucket, path or key.
    fn store_failed(&self, record: &CopyRecord, e: &BlobError) -> String {
        tracing::warn!(store = %record.store, key = %record.content.blob_key, attempts = record.attempts + 1, error = %describe(e), "copy failed");
        public_error(e)
    }

    /// Renews the claim every third of its lease; returns when it is lost.
    async fn keep_claim(&self, task: &CopyTask) {
        let lease = self.replication().settings.claim_lease;
        loop {
            tokio::time::sleep(lease / 3).await;
            match self
                .inner
                .store
                .copies
                .renew_copy(task, now() + millis(lease))
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                // The store is unreachable: keep copying; the lease may still hold.
                Err(e) => tracing::warn!(error = %describe(&e), "cannot renew a copy's claim"),
            }
        }
    }

    /// A claim was lost while copying: if the content was removed meanwhile (a read that
    /// shows no copy of this store, or one being removed), what this worker may have
    /// written goes too (the remover may have deleted before it wrote). A failed read
    /// deletes nothing: another worker may have finished this copy.
    async fn after_lost_claim(&self, record: &CopyRecord, dest: &Arc<dyn BlobStore>) {
        if record.store.is_primary() {
            return;
        }
        let Ok(copies) = self
            .inner
            .store
            .copies
            .copies_of(record.space_id, &record.content.blob_key)
            .await
        else {
            return;
        };
        let removed = !copies
            .iter()
            .any(|c| c.store == record.store && c.status != CopyStatus::Removing);
        if removed {
            let _ = dest.delete(&record.content.blob_key).await;
        }
    }

    /// Copies the object into `dest` from a store whose copy is `OK` (the primary first),
    /// inside the object store where both allow it, else streamed; verified either way.
    async fn copy(
        &self,
        record: &CopyRecord,
        dest: &Arc<dyn BlobStore>,
    ) -> Result<&'static str, CopyFailure> {
        let replication = self.replication();
        let meta = &self.inner.store.copies;
        let content = &record.content;
        let key = content.blob_key.as_str();
        let copies = meta.copies_of(record.space_id, key).await.map_err(|e| {
            tracing::warn!(error = %describe(&e), "cannot read the copies");
            CopyFailure::Elsewhere("the metadata store failed".into())
        })?;
        if !copies.iter().any(|c| c.store == record.store) {
            return Err(CopyFailure::ClaimLost);
        }
        // Already there, intact (a copy whose outcome a crash kept from being recorded;
        // an object put back by hand): nothing to copy, nothing overwritten. A destination
        // that cannot even be checked is not written (a copy inside S3 would overwrite
        // before it could be checked).
        match dest.verify(key, content.size, content.sha256, false).await {
            Ok(Verdict::Intact) => return Ok("already there"),
            Ok(_) => {}
            Err(e) => return Err(CopyFailure::Store(self.store_failed(record, &e))),
        }
        let mut sources: Vec<&StoreId> = copies
            .iter()
            .filter(|c| c.status == CopyStatus::Ok && c.store != record.store)
            .map(|c| &c.store)
            .filter(|id| replication.store(id).is_some())
            .collect();
        sources.sort_by_key(|id| !id.is_primary());
        let mut errors = Vec::new();
        for source_id in sources {
            let source = replication.store(source_id).expect("filtered above");
            let into_primary = record.store.is_primary();
            match self
                .copy_from(source.as_ref(), dest.as_ref(), content, into_primary)
                .await
            {
                Ok(method) => return Ok(method),
                Err(SourceOr::Missing) => {
                    self.found_bad(record.space_id, key, source_id, Verdict::Missing)
                        .await;
                    errors.push(format!("from {source_id}: the object is missing there"));
                }
                Err(SourceOr::Dest(e)) => {
                    return Err(CopyFailure::Store(self.store_failed(record, &e)));
                }
                Err(SourceOr::Blob(e)) => {
                    // Bytes that did not match: the source's own copy may be what is
                    // wrong. Checked (read whole) only then, never for a store that is
                    // down.
                    if matches!(e, BlobError::ChecksumMismatch) {
                        let verdict = source
                            .verify(key, content.size, content.sha256, true)
                            .await
                            .unwrap_or(Verdict::Intact);
                        self.found_bad(record.space_id, key, source_id, verdict)
                            .await;
                    }
                    errors.push(format!(
                        "from {source_id}: {}",
                        self.store_failed(record, &e)
                    ));
                }
            }
        }
        if errors.is_empty() {
            return Err(CopyFailure::Elsewhere(
                "no store holds an intact copy to copy from".into(),
            ));
        }
        Err(CopyFailure::Elsewhere(errors.join("; ")))
    }

    async fn copy_from(
        &self,
        source: &dyn BlobStore,
        dest: &dyn BlobStore,
        content: &crate::domain::Content,
        into_primary: bool,
    ) -> Result<&'static str, SourceOr> {
        let key = content.blob_key.as_str();
        // Never a server-side copy onto the primary: it writes before it can be checked.
        // A stream is checked before the object is put in place.
        if !into_primary
            && self.replication().settings.server_copy
            && let Some(from) = source.copy_source()
            && dest
                .copy_within(&from, key, content.size, content.sha256)
                .await
                .map_err(|e| match e {
                    // Copied, but not the version's bytes: the source's doing.
                    BlobError::ChecksumMismatch => SourceOr::Blob(e),
                    e => SourceOr::Dest(e),
                })?
        {
            return Ok("inside the store");
        }
        let Some(read) = source.get(key, None).await? else {
            return Err(SourceOr::Missing);
        };
        dest.put_copy(
            key,
            read.stream,
            content.size,
            content.sha256,
            content.content_type.as_deref(),
        )
        .await
        .map_err(|e| match e {
            // Other bytes than the version's, or a source that failed mid-stream.
            BlobError::ChecksumMismatch | BlobError::BodyInterrupted(_) => SourceOr::Blob(e),
            e => SourceOr::Dest(e),
        })?;
        Ok("streamed")
    }

    /// A copy found missing or corrupt: queued to be copied again (the primary's also
    /// takes reads elsewhere meanwhile).
    pub(super) async fn found_bad(
        &self,
        space: crate::domain::SpaceId,
        key: &str,
        store: &StoreId,
        verdict: Verdict,
    ) {
        let replication = self.replication();
        let reason = match verdict {
            Verdict::Missing => "the object was missing",
            Verdict::Corrupt => "the object did not match its checksum",
            Verdict::Intact => return,
        };
        tracing::warn!(%space, %key, %store, reason, "copy found bad; copying it again");
        replication
            .stats
            .found_bad
            .get_or_create(&ResultLabels {
                store: store.to_string(),
                result: if verdict == Verdict::Missing {
                    "missing"
                } else {
                    "corrupt"
                },
            })
            .inc();
        if store.is_primary() {
            replication.mark_degraded(key, true);
        }
        match self
            .inner
            .store
            .copies
            .requeue_copy(space, key, store, reason, now())
            .await
        {
            Ok(_) => {
                if let Some(wake) = replication.wake.get(store) {
                    wake.notify_one();
                }
            }
            Err(e) => tracing::warn!(error = %describe(&e), "cannot queue a copy again"),
        }
    }
}

/// When a copy was queued: its record's `updated_at` while it was never OK. The lag of a
/// backfilled copy counts from the backfill, not from its version's old commit.
fn record_queued_at(record: &CopyRecord) -> crate::domain::Millis {
    if record.attempts == 0 {
        record.updated_at
    } else {
        record.committed_at
    }
}

/// What owners may see of a store's failure: its kind, and S3's error code where there
/// is one.
fn public_error(e: &BlobError) -> String {
    match e {
        BlobError::StorageFull => "the store is full".into(),
        BlobError::ChecksumMismatch => "the bytes read did not match the version's SHA-256".into(),
        BlobError::Other(cause) => {
            let text = format!("{cause:#}");
            const CODES: [&str; 12] = [
                "NoSuchBucket",
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "SlowDown",
                "ServiceUnavailable",
                "InternalError",
                "RequestTimeout",
                "BadDigest",
                "InvalidDigest",
                "EntityTooLarge",
                "NoSuchUpload",
            ];
            if let Some(code) = CODES.iter().find(|c| text.contains(*c)) {
                return format!("the store refused the request ({code})");
            }
            if text.contains("dispatch failure")
                || text.contains("timed out")
                || text.contains("connect")
            {
                return "the store could not be reached".into();
            }
            "the store failed (the server's log has the details)".into()
        }
        _ => "the copy failed (the server's log has the details)".into(),
    }
}
