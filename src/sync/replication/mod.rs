//! Replication across stores (DESIGN.md §8; ARCHITECTURE.md "Replication").
//!
//! A commit of new content queues a copy of its object for every replica store, in the same
//! atomic write as the version (`Publish::copy_to`), and wakes the workers: it never waits
//! for a store. One worker per store per server claims due copies with a lease, copies
//! (inside S3 where it can, streaming otherwise), verifies and records the outcome. The
//! primary store is one more store: a copy of it found missing or corrupt is queued
//! again and copied back from a replica, while reads go to a store whose copy is intact.
//! A scrub (one server at a time, at a bounded rate) checks every copy; jobs walk a
//! space's commit log to backfill a new store or repair a space on an owner's request.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Error, Result, SyncService, millis, now};
use crate::config::ReplicationSettings;
use crate::domain::{
    Content, CopyRecord, CopyStatus, Millis, ReplicationJob, Role, SpaceId, SpaceSettings, StoreId,
    UserId,
};
use crate::storage::{BlobStore, ReplicaStore, Storage};

mod jobs;
mod read;
mod scrub;
mod worker;

/// The replication side of the sync service.
pub(super) struct Replication {
    settings: ReplicationSettings,
    /// The primary first, then the replica stores.
    stores: Vec<ReplicaStore>,
    wake: HashMap<StoreId, Arc<Notify>>,
    /// Wakes this server's job runner (a job was started here).
    wake_jobs: Notify,
    /// Objects the primary store lacks (its copy is not `OK`): reads go elsewhere.
    degraded: RwLock<HashSet<String>>,
    /// Stores this server's workers found down: the scrub and repairs leave them alone.
    down: RwLock<HashSet<StoreId>>,
    /// Stores some server replicates to (the metadata store's record), refreshed with the
    /// degraded set: a commit queues copies for these too, so that a server not yet
    /// configured with a new store still queues its copies.
    registered: RwLock<Vec<StoreId>>,
    /// Bytes of downloads held in memory to be hashed before they are served.
    read_budget: Arc<tokio::sync::Semaphore>,
    /// `replication.retired_stores`: never queued for.
    retired: Vec<StoreId>,
    pub(super) stats: Arc<ReplicationStats>,
    /// This server's name in cluster-wide leases.
    owner: String,
    /// When the next check of the scrub or a repair may start (their shared pace).
    next_check: tokio::sync::Mutex<tokio::time::Instant>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub store: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub store: String,
    pub result: &'static str,
}

/// Replication's metrics, registered by the HTTP layer's `/metrics`.
pub struct ReplicationStats {
    /// Copies finished, by store and result (`copied`, `failed`, `removed`).
    pub copies: Family<ResultLabels, Counter>,
    pub bytes: Family<StoreLabels, Counter>,
    /// From a version's commit to its copy being `OK` in a store.
    pub lag: Family<StoreLabels, Histogram>,
    /// Copies the scrub, a repair or a read found missing or corrupt.
    pub found_bad: Family<ResultLabels, Counter>,
    /// Copies checked by the scrub and repairs.
    pub checked: Family<StoreLabels, Counter>,
    /// Objects the primary store lacks (reads go to a replica meanwhile).
    pub degraded_objects: Gauge,
    /// 1 for a store this server's worker takes as down.
    pub store_down: Family<StoreLabels, Gauge>,
}

impl Default for ReplicationStats {
    fn default() -> Self {
        Self {
            copies: Family::default(),
            bytes: Family::default(),
            lag: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.01, 2.0, 20))
            }),
            found_bad: Family::default(),
            checked: Family::default(),
            degraded_objects: Gauge::default(),
            store_down: Family::default(),
        }
    }
}

impl Replication {
    pub(super) fn new(settings: ReplicationSettings, storage: &Storage) -> Self {
        let mut stores = vec![ReplicaStore {
            id: StoreId::primary(),
            blobs: storage.blobs.clone(),
        }];
        stores.extend(storage.stores.iter().cloned());
        let wake = stores
            .iter()
            .map(|s| (s.id.clone(), Arc::new(Notify::new())))
            .collect();
        let retired = settings
            .retired_stores
            .iter()
            .filter_map(|id| StoreId::parse(id).ok())
            .collect();
        Self {
            settings,
            stores,
            wake,
            wake_jobs: Notify::new(),
            degraded: RwLock::new(HashSet::new()),
            down: RwLock::new(HashSet::new()),
            registered: RwLock::new(Vec::new()),
            read_budget: Arc::new(tokio::sync::Semaphore::new(READ_BUDGET)),
            retired,
            stats: Arc::new(ReplicationStats::default()),
            owner: uuid::Uuid::new_v4().simple().to_string(),
            next_check: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Waits for the next check's turn: `scrub.objects_per_second`, and for checks that
    /// read the object (`hashes`) `scrub.bytes_per_second` as well.
    async fn pace(&self, size: u64, hashes: bool) {
        let scrub = &self.settings.scrub;
        let mut cost = Duration::from_secs_f64(1.0 / scrub.objects_per_second.max(0.001));
        if hashes {
            cost = cost.max(Duration::from_secs_f64(
                size as f64 / scrub.bytes_per_second.max(1) as f64,
            ));
        }
        let mut next = self.next_check.lock().await;
        tokio::time::sleep_until(*next).await;
        *next = tokio::time::Instant::now() + cost;
    }

    /// Whether any replica store is configured.
    pub(super) fn active(&self) -> bool {
        self.stores.len() > 1
    }

    fn set_down(&self, store: &StoreId, down: bool) {
        self.stats
            .store_down
            .get_or_create(&StoreLabels {
                store: store.to_string(),
            })
            .set(i64::from(down));
        let mut set = self.down.write().expect("down set poisoned");
        if down {
            set.insert(store.clone());
        } else {
            set.remove(store);
        }
    }

    fn is_down(&self, store: &StoreId) -> bool {
        self.down.read().expect("down set poisoned").contains(store)
    }

    fn store(&self, id: &StoreId) -> Option<&Arc<dyn BlobStore>> {
        self.stores.iter().find(|s| &s.id == id).map(|s| &s.blobs)
    }

    fn replica_ids(&self) -> Vec<StoreId> {
        self.stores.iter().map(|s| s.id.clone()).collect()
    }

    /// Whether a space with these settings replicates.
    pub(super) fn replicates(&self, settings: &SpaceSettings) -> bool {
        self.active() && settings.replication.unwrap_or(self.settings.default)
    }

    /// The stores a commit of new content in a space with these settings copies to: the
    /// primary, this server's stores, and the stores other servers registered.
    pub(super) fn copy_targets(&self, settings: &SpaceSettings) -> Vec<StoreId> {
        if !self.replicates(settings) {
            return Vec::new();
        }
        let registered = self.registered.read().expect("registry poisoned").clone();
        self.targets_with(&registered)
    }

    /// The primary, this server's stores and `registered` ones, less the retired.
    fn targets_with(&self, registered: &[StoreId]) -> Vec<StoreId> {
        let mut targets = self.replica_ids();
        for store in registered {
            if !targets.contains(store)
                && !self.retired.contains(store)
                && targets.len() <= MAX_REPLICA_STORES
            {
                targets.push(store.clone());
            }
        }
        targets
    }

    pub(super) fn wake_all(&self) {
        for notify in self.wake.values() {
            notify.notify_one();
        }
    }

    fn is_degraded(&self, key: &str) -> bool {
        self.degraded
            .read()
            .expect("degraded set poisoned")
            .contains(key)
    }

    fn mark_degraded(&self, key: &str, degraded: bool) {
        let mut set = self.degraded.write().expect("degraded set poisoned");
        if degraded {
            set.insert(key.to_owned());
        } else {
            set.remove(key);
        }
        self.stats
            .degraded_objects
            .set(i64::try_from(set.len()).unwrap_or(i64::MAX));
    }

    /// When a failed copy is tried again: twice as long each time, up to `retry_max`,
    /// less a random part of it so that copies failed together spread out.
    fn retry_at(&self, attempts: u32, now: Millis) -> Millis {
        let base = self
            .settings
            .retry_initial
            .saturating_mul(2u32.saturating_pow(attempts.min(30)))
            .min(self.settings.retry_max);
        let jitter = rand::random::<f64>() * 0.5 + 0.5;
        now + millis(base.mul_f64(jitter))
    }
}

/// Replica stores at most (the configuration refuses more): a commit's copies stay
/// within DynamoDB's 100 items per transaction.
const MAX_REPLICA_STORES: usize = 8;
/// Bytes all downloads being hashed before they are served may hold at once; past it, a
/// download is hashed as it streams.
const READ_BUDGET: usize = 64 << 20;

/// A store's copies of a space, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStatus {
    pub store: String,
    pub primary: bool,
    /// Whether the store is in this server's configuration (a store taken out keeps its
    /// records).
    pub configured: bool,
    pub pending: u64,
    pub failed: u64,
    pub ok: u64,
    pub removing: u64,
    /// When the oldest version not yet `OK` here was committed.
    pub oldest_pending_at: Option<Millis>,
}

/// `replicationStatus`: where a space's copies stand.
#[derive(Debug, Clone)]
pub struct ReplicationStatus {
    pub space_id: SpaceId,
    pub replicated: bool,
    pub stores: Vec<StoreStatus>,
    pub job: Option<ReplicationJob>,
    pub at: Millis,
}

/// A job asked for again after this long starts over (it may be stuck on a store).
const JOB_RESTART_AFTER: Duration = Duration::from_secs(3600);

/// How many of a space's copies `replicationStatus` counts at most (it reads them all).
const STATUS_PAGE: usize = 500;

impl SyncService {
    fn replication(&self) -> &Replication {
        &self.inner.replication
    }

    pub fn replication_stats(&self) -> Arc<ReplicationStats> {
        self.replication().stats.clone()
    }

    /// Starts replication's background work (workers, jobs, the scrub, the degraded
    /// set); returns at once when no replica store is configured.
    pub async fn run_replication(self, stop: CancellationToken) {
        let replication = self.replication();
        if !replication.active() {
            return;
        }
        let mut tasks = tokio::task::JoinSet::new();
        let (this, until) = (self.clone(), stop.clone());
        tasks.spawn(async move {
            tokio::select! {
                registered = this.register_stores() => if let Err(e) = registered {
                    tracing::error!(error = %describe(&e), "cannot record the replica stores; a new store's backfill starts at the next start");
                },
                _ = until.cancelled() => {}
            }
        });
        for store in &replication.stores {
            tasks.spawn(self.clone().run_worker(store.id.clone(), stop.clone()));
        }
        tasks.spawn(self.clone().run_jobs(stop.clone()));
        tasks.spawn(self.clone().run_scrub(stop.clone()));
        tasks.spawn(self.clone().run_degraded_refresh(stop.clone()));
        while tasks.join_next().await.is_some() {}
    }

    /// Records the configured stores (at once: every server then queues their copies
    /// too); a store not yet backfilled (or the server default, turned on) starts a
    /// backfill of every space, and is marked backfilled only once every space's job is
    /// queued: a crash in between queues them again.
    async fn register_stores(&self) -> Result<()> {
        let replication = self.replication();
        let replicas: Vec<StoreId> = replication
            .stores
            .iter()
            .skip(1)
            .map(|s| s.id.clone())
            .collect();
        let copies = &self.inner.store.copies;
        let default_on = replication.settings.default;
        let (pending, default_pending) = copies
            .stores_to_backfill(&replicas, &replication.retired, default_on)
            .await?;
        self.refresh_registry().await;
        if pending.is_empty() && !default_pending {
            return Ok(());
        }
        // Servers not configured with a new store learn of it at their next refresh: the
        // jobs (walked again `job_grace` after they start) wait for that.
        tokio::time::sleep(replication.settings.degraded_refresh).await;
        tracing::info!(new_stores = ?pending, default_on = default_pending, "backfilling every space");
        let mut cursor = None;
        loop {
            let (spaces, next) = copies.spaces_page(cursor, 500).await?;
            for space in spaces {
                self.start_job(space, false).await?;
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        copies.stores_backfilled(&pending, default_pending).await?;
        Ok(())
    }

    /// What replication needs before the first request: the stores recorded by any
    /// server (as start-up read them), for which a commit queues copies too.
    pub fn prepare_replication(&self, registered: Vec<StoreId>) {
        *self
            .replication()
            .registered
            .write()
            .expect("registry poisoned") = registered;
    }

    /// Re-reads the stores recorded by any server.
    async fn refresh_registry(&self) {
        match self.inner.store.copies.registered_stores().await {
            Ok(stores) => {
                *self
                    .replication()
                    .registered
                    .write()
                    .expect("registry poisoned") = stores
            }
            Err(e) => tracing::warn!(error = %describe(&e), "cannot read the registered stores"),
        }
    }

    /// Starts a space's backfill, or its repair (`verify`). A repair asked for while one
    /// runs is that one (unless it has run for an hour: then it may be stuck, and starts
    /// over); anything else starts the walk over from the log's start, as a repair if
    /// either the running job or the request is one.
    pub(super) async fn start_job(&self, space: SpaceId, verify: bool) -> Result<ReplicationJob> {
        let copies = &self.inner.store.copies;
        let running = copies.job(space).await?.filter(|job| !job.done);
        if let Some(job) = &running
            && verify
            && job.verify
            && job.started_at + millis(JOB_RESTART_AFTER) > now()
        {
            return Ok(job.clone());
        }
        let verify = verify || running.is_some_and(|job| job.verify);
        let job = ReplicationJob::new(space, verify, now());
        copies.put_job(&job).await?;
        self.replication().wake_jobs.notify_one();
        Ok(job)
    }

    /// The space's settings changed: turning replication on backfills what it holds.
    pub(super) async fn replication_setting_changed(
        &self,
        space: SpaceId,
        before: &SpaceSettings,
        after: &SpaceSettings,
    ) -> Result<()> {
        let replication = self.replication();
        if replication.replicates(after) && !replication.replicates(before) {
            self.start_job(space, false).await?;
        }
        Ok(())
    }

    async fn require_owner(&self, user: &UserId, space: SpaceId) -> Result<()> {
        if self.role_in(user, space).await? != Role::Owner {
            return Err(Error::forbidden(
                "only an owner may see or repair the space's replication",
            ));
        }
        Ok(())
    }

    /// Every store's copy of some content of `space` (owners only).
    pub async fn replicas(
        &self,
        user: &UserId,
        space: SpaceId,
        content: &Content,
    ) -> Result<Vec<CopyRecord>> {
        self.require_owner(user, space).await?;
        Ok(self
            .inner
            .store
            .copies
            .copies_of(space, &content.blob_key)
            .await?)
    }

    /// Where a space's copies stand, store by store (owners only). Reads every copy
    /// record of the space.
    pub async fn replication_status(
        &self,
        user: &UserId,
        space: SpaceId,
    ) -> Result<ReplicationStatus> {
        self.require_owner(user, space).await?;
        self.status_of(space).await
    }

    /// Starts a repair of the space (owners only): every version's copies are queued where
    /// missing and every copy is checked against its checksum; what is missing or corrupt
    /// is copied again. Asking again while one runs answers that one.
    pub async fn repair_space(&self, user: &UserId, space: SpaceId) -> Result<ReplicationStatus> {
        self.require_owner(user, space).await?;
        self.start_job(space, true).await?;
        tracing::info!(%space, by = %user, "space repair started");
        self.status_of(space).await
    }

    async fn status_of(&self, space: SpaceId) -> Result<ReplicationStatus> {
        let replication = self.replication();
        let settings = self.settings_of(space).await?;
        let copies = &self.inner.store.copies;
        let mut stores: Vec<StoreStatus> = replication
            .stores
            .iter()
            .map(|s| StoreStatus {
                store: s.id.to_string(),
                primary: s.id.is_primary(),
                configured: true,
                ..Default::default()
            })
            .collect();
        let mut after = None;
        loop {
            let page = copies.copies_page(space, after.take(), STATUS_PAGE).await?;
            for copy in &page {
                let index = match stores.iter().position(|s| s.store == copy.store.as_str()) {
                    Some(i) => i,
                    None => {
                        stores.push(StoreStatus {
                            store: copy.store.to_string(),
                            primary: copy.store.is_primary(),
                            configured: false,
                            ..Default::default()
                        });
                        stores.len() - 1
                    }
                };
                let entry = &mut stores[index];
                match copy.status {
                    CopyStatus::Ok => entry.ok += 1,
                    CopyStatus::Pending => entry.pending += 1,
                    CopyStatus::Failed => entry.failed += 1,
                    CopyStatus::Removing => entry.removing += 1,
                }
                if matches!(copy.status, CopyStatus::Pending | CopyStatus::Failed) {
                    let oldest = entry.oldest_pending_at.get_or_insert(copy.committed_at);
                    *oldest = (*oldest).min(copy.committed_at);
                }
            }
            if page.len() < STATUS_PAGE {
                break;
            }
            after = page
                .last()
                .map(|c| (c.content.blob_key.clone(), c.store.clone()));
        }
        Ok(ReplicationStatus {
            space_id: space,
            replicated: replication.replicates(&settings),
            stores,
            job: copies.job(space).await?,
            at: now(),
        })
    }

    /// Keeps the set of objects the primary lacks fresh (another server may have found
    /// one, or repaired it).
    async fn run_degraded_refresh(self, stop: CancellationToken) {
        let every = self.replication().settings.degraded_refresh;
        loop {
            match self
                .inner
                .store
                .copies
                .unsettled_copies(&StoreId::primary(), 10_000)
                .await
            {
                Ok(copies) => {
                    let keys: HashSet<String> =
                        copies.into_iter().map(|c| c.content.blob_key).collect();
                    let replication = self.replication();
                    replication
                        .stats
                        .degraded_objects
                        .set(i64::try_from(keys.len()).unwrap_or(i64::MAX));
                    *replication.degraded.write().expect("degraded set poisoned") = keys;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot read the primary's unsettled copies")
                }
            }
            self.refresh_registry().await;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// Waits for `every`, or returns `true` if `stop` came first.
async fn stopped_during(stop: &CancellationToken, every: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(every) => false,
    }
}

/// An error, briefly, for a copy's `lastError`: its chain of causes, no backtrace.
fn describe(e: impl std::fmt::Display) -> String {
    let mut text = format!("{e:#}");
    if text.len() > 500 {
        let mut cut = 500;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}
