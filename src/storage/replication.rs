//! The storage contract of replication: the copy queue, kept in the metadata store
//! beside the versions it copies (ARCHITECTURE.md, "Replication").
//!
//! A commit that stores new content queues its copies in the same atomic write as the
//! version ([`super::Publish::copy_to`]): a committed version always has its copies
//! queued. Workers claim copies with a lease, and every write of a worker is conditioned on
//! its claim, so two servers never finish one copy and a worker that died is replaced
//! once its lease ends.

use async_trait::async_trait;

use super::StoreError;
use crate::domain::{
    CopyOutcome, CopyRecord, CopyTask, Millis, NewCopy, ReplicationJob, SpaceId, StoreId,
};

#[async_trait]
pub trait CopyQueue: Send + Sync + 'static {
    /// Claims up to `limit` copies of `store` that are due at `now` (pending, failed and
    /// due for a retry, or removing), each until `lease_until`.
    async fn claim_copies(
        &self,
        store: &StoreId,
        now: Millis,
        lease_until: Millis,
        limit: usize,
    ) -> Result<Vec<CopyTask>, StoreError>;
    /// Extends a claim; `false` when it was lost (taken over after its lease ended, or
    /// the content was removed meanwhile).
    async fn renew_copy(&self, task: &CopyTask, lease_until: Millis) -> Result<bool, StoreError>;
    /// Records how a claimed copy ended; `false`, and nothing written, when the claim was
    /// lost.
    async fn finish_copy(
        &self,
        task: &CopyTask,
        outcome: CopyOutcome,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// A copy found missing or corrupt (by a read, the scrub or a repair) is to be copied
    /// again: `OK` or `FAILED` becomes `PENDING`, due at once. `false` when there is no
    /// such copy or it is being copied or removed already.
    async fn requeue_copy(
        &self,
        space: SpaceId,
        blob_key: &str,
        store: &StoreId,
        reason: &str,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Queues the copies that the queue does not hold yet (a backfill); answers how many
    /// it added. Idempotent.
    async fn ensure_copies(
        &self,
        space: SpaceId,
        copies: &[NewCopy],
        now: Millis,
    ) -> Result<usize, StoreError>;
    /// The content is gone for good (no version uses its key any more): every replica
    /// store's copy becomes `REMOVING`, due once any claim on it has run out, so the stores
    /// delete their objects. The primary's object is the remover's own to delete.
    async fn remove_copies(
        &self,
        space: SpaceId,
        blob_key: &str,
        now: Millis,
    ) -> Result<(), StoreError>;
    /// Every copy of one object, by store.
    async fn copies_of(
        &self,
        space: SpaceId,
        blob_key: &str,
    ) -> Result<Vec<CopyRecord>, StoreError>;
    /// A space's copies ordered by (object key, store), after `after`, at most `limit`.
    async fn copies_page(
        &self,
        space: SpaceId,
        after: Option<(String, StoreId)>,
        limit: usize,
    ) -> Result<Vec<CopyRecord>, StoreError>;
    /// Copies of `store` that are not `OK` (due, claimed, failed or removing), at most
    /// `limit`, in no particular order: for the primary, the objects reads must not be
    /// sent to.
    async fn unsettled_copies(
        &self,
        store: &StoreId,
        limit: usize,
    ) -> Result<Vec<CopyRecord>, StoreError>;

    /// Every space, a page at a time: from the start (`None`) or where the last page's
    /// cursor says; the next cursor is `None` after the last page. A page may be empty
    /// with more to come.
    async fn spaces_page(
        &self,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<(Vec<SpaceId>, Option<String>), StoreError>;
    /// Starts (or starts over) the space's replication job.
    async fn put_job(&self, job: &ReplicationJob) -> Result<(), StoreError>;
    /// The space's job, if it has one.
    async fn job(&self, space: SpaceId) -> Result<Option<ReplicationJob>, StoreError>;
    /// Claims one unfinished job whose claim (if any) ran out, until `lease_until`.
    async fn claim_job(
        &self,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Option<(ReplicationJob, String)>, StoreError>;
    /// Saves a claimed job's progress and extends its claim; `false` when the claim was
    /// lost (or the job was started over meanwhile).
    async fn advance_job(
        &self,
        job: &ReplicationJob,
        claim: &str,
        lease_until: Millis,
    ) -> Result<bool, StoreError>;
    /// Records `stores` as replicated to (at once: every server with replication
    /// configured queues copies for every recorded store) and forgets `retired` ones;
    /// answers which of `stores` have not been backfilled yet, and whether the server
    /// default is on and its backfill not done (with `default_on` false, that backfill
    /// is forgotten: turning it on again backfills again).
    async fn stores_to_backfill(
        &self,
        stores: &[StoreId],
        retired: &[StoreId],
        default_on: bool,
    ) -> Result<(Vec<StoreId>, bool), StoreError>;
    /// Every space's backfill is queued for `stores` (and the default, with
    /// `default_on`): they are not reported again.
    async fn stores_backfilled(
        &self,
        stores: &[StoreId],
        default_on: bool,
    ) -> Result<(), StoreError>;
    /// Every store recorded as replicated to.
    async fn registered_stores(&self) -> Result<Vec<StoreId>, StoreError>;
    /// Takes or renews the named cluster-wide lease for `owner` until `until`, if it is
    /// free, run out or already `owner`'s. The lease's `payload` (a cursor) is kept with
    /// it and answered to the new holder.
    async fn take_lease(
        &self,
        name: &str,
        owner: &str,
        now: Millis,
        until: Millis,
        payload: Option<&str>,
    ) -> Result<Option<Option<String>>, StoreError>;
}
