//! Replication jobs: a backfill walks a space's commit log and queues every version's
//! copies that are missing; a repair then also checks every copy. One job per space,
//! claimed with a lease like a copy, its progress saved page by page (a crash repeats a
//! page, and queueing is idempotent).

use std::collections::HashSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::describe;
use crate::domain::{CopyRecord, CopyStatus, NewCopy, ReplicationJob};
use crate::storage::Verdict;
use crate::sync::{Error, Result, SyncService, millis, now};

/// Changes read from the commit log per page.
const LOG_PAGE: usize = 200;
/// Copies checked per page of a repair or the scrub.
pub(super) const CHECK_PAGE: usize = 50;

impl SyncService {
    pub(super) async fn run_jobs(self, stop: CancellationToken) {
        let settings = self.replication().settings.clone();
        loop {
            let at = now();
            match self
                .inner
                .store
                .copies
                .claim_job(at, at + millis(settings.claim_lease))
                .await
            {
                Ok(Some((job, claim))) => {
                    let space = job.space_id;
                    match self.run_job(job, &claim, &stop).await {
                        Ok(()) => {}
                        Err(e) => {
                            tracing::warn!(%space, error = %describe(&e), "replication job failed; it is taken up again once its claim runs out")
                        }
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %describe(&e), "cannot claim a replication job"),
            }
            // Jobs are rare: looked for now and then, and at once when one starts here.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.replication().wake_jobs.notified() => {}
                _ = tokio::time::sleep(settings.poll_interval.max(Duration::from_secs(1)) * 5) => {}
            }
        }
    }

    async fn run_job(
        &self,
        mut job: ReplicationJob,
        claim: &str,
        stop: &CancellationToken,
    ) -> Result<()> {
        let replication = self.replication();
        let lease = replication.settings.claim_lease;
        let copies = &self.inner.store.copies;
        let space = job.space_id;
        let advance = |job: &ReplicationJob| {
            let job = job.clone();
            async move { copies.advance_job(&job, claim, now() + millis(lease)).await }
        };
        // The stores as recorded now (not as this server last refreshed them): a store
        // recorded by another server just before it queued this job is in.
        let registered = copies.registered_stores().await?;
        let targets = match self.settings_of(space).await {
            Ok(settings) if replication.replicates(&settings) => {
                replication.targets_with(&registered)
            }
            Ok(_) => Vec::new(),
            // The space is gone: nothing to do.
            Err(Error::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        tracing::info!(%space, verify = job.verify, from_seq = job.cursor_seq, "replication job running");
        if !targets.is_empty() {
            loop {
                if stop.is_cancelled() {
                    return Ok(());
                }
                let page = self
                    .inner
                    .store
                    .meta
                    .commit_log(space, job.cursor_seq, LOG_PAGE)
                    .await?;
                let Some(last) = page.last() else { break };
                let mut seen = HashSet::new();
                let mut new = Vec::new();
                for change in &page {
                    let content = &change.file.content;
                    if seen.insert(content.blob_key.as_str()) {
                        for store in &targets {
                            new.push(NewCopy::of(store.clone(), content, change.file.updated_at));
                        }
                    }
                }
                if copies.ensure_copies(space, &new, now()).await? > 0 {
                    replication.wake_all();
                }
                job.cursor_seq = last.file.seq;
                if !advance(&job).await? {
                    return Ok(()); // started over, or taken over: the other run goes on
                }
            }
        }
        if job.verify {
            loop {
                if stop.is_cancelled() {
                    return Ok(());
                }
                let page = copies
                    .copies_page(space, job.verify_after.clone(), CHECK_PAGE)
                    .await?;
                // Checks may take long (whole objects read at the scrub's pace): the claim
                // is renewed between them.
                let mut renewed = std::time::Instant::now();
                for copy in &page {
                    self.check_copy(copy).await;
                    if renewed.elapsed() >= lease / 3 {
                        if !advance(&job).await? {
                            return Ok(());
                        }
                        renewed = std::time::Instant::now();
                    }
                }
                let Some(last) = page.last() else { break };
                job.verify_after = Some((last.content.blob_key.clone(), last.store.clone()));
                if !advance(&job).await? {
                    return Ok(());
                }
                if page.len() < CHECK_PAGE {
                    break;
                }
            }
        }
        // A commit that read the space's settings (or its server's stores) before the job
        // began may publish after the walk: the log is walked once more after
        // `job_grace`, and the job is done only then.
        let settle_at = job.started_at + millis(replication.settings.job_grace);
        if now() < settle_at {
            copies.advance_job(&job, claim, settle_at).await?;
            return Ok(());
        }
        job.done = true;
        advance(&job).await?;
        tracing::info!(%space, verify = job.verify, "replication job done");
        Ok(())
    }

    /// Checks one copy against its checksum, at the scrub's pace: an `OK` one found
    /// missing or corrupt is queued to be copied again; a `FAILED` one found intact (put
    /// back by hand, or copied by a worker whose outcome was lost) is queued so that a
    /// worker records it `OK`. Copies in a store this server found down are skipped.
    pub(super) async fn check_copy(&self, copy: &CopyRecord) {
        let replication = self.replication();
        // A replica store this server found down is left alone; the primary never is (its
        // copies are what reads and repairs need to know about).
        if !matches!(copy.status, CopyStatus::Ok | CopyStatus::Failed)
            || (!copy.store.is_primary() && replication.is_down(&copy.store))
        {
            return;
        }
        let Some(store) = replication.store(&copy.store) else {
            return;
        };
        let content = &copy.content;
        let (key, size, sha256) = (&content.blob_key, content.size, content.sha256);
        // One HEAD answers for an S3 object whose SHA-256 the store keeps. Otherwise the
        // check reads the whole object (folders always: their sidecar could not tell
        // bytes overwritten in place; S3 objects sent in parts), paced by bytes too.
        let checked = match store.copy_source() {
            None => {
                replication.pace(size, true).await;
                store.verify(key, size, sha256, true).await
            }
            Some(_) => match store.head(key).await {
                Ok(Some(info)) if info.sha256.is_none() && info.size == size => {
                    replication.pace(size, true).await;
                    store.verify(key, size, sha256, true).await
                }
                Ok(info) => {
                    replication.pace(size, false).await;
                    Ok(Verdict::of(info.as_ref(), size, sha256))
                }
                Err(e) => Err(e),
            },
        };
        match checked {
            Ok(Verdict::Intact) if copy.status == CopyStatus::Failed => {
                let requeued = self
                    .inner
                    .store
                    .copies
                    .requeue_copy(
                        copy.space_id,
                        &content.blob_key,
                        &copy.store,
                        "found intact",
                        now(),
                    )
                    .await;
                if requeued.unwrap_or(false)
                    && let Some(wake) = replication.wake.get(&copy.store)
                {
                    wake.notify_one();
                }
            }
            Ok(Verdict::Intact) => {}
            Ok(_) if copy.status == CopyStatus::Failed => {}
            Ok(verdict) => {
                self.found_bad(copy.space_id, &content.blob_key, &copy.store, verdict)
                    .await
            }
            Err(e) => {
                tracing::warn!(store = %copy.store, key = %content.blob_key, error = %describe(&e), "cannot check a copy")
            }
        }
        replication
            .stats
            .checked
            .get_or_create(&super::StoreLabels {
                store: copy.store.to_string(),
            })
            .inc();
    }
}
