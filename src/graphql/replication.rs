//! The GraphQL view of replication: per-copy status on files, per-store counts on spaces,
//! and the owners' repair (DESIGN.md §8).

use async_graphql::{Enum, ID, SimpleObject};
use chrono::{DateTime, Utc};

use super::types::datetime;
use crate::domain::{self, CopyRecord};
use crate::sync;

/// Where one store's copy of a version's content stands.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ReplicaStatus {
    /// Queued, or being copied.
    Pending,
    /// In the store, verified by size and SHA-256.
    Ok,
    /// The last attempt failed; it is retried with backoff, without anyone asking.
    Failed,
    /// The content was removed; the store's object is being deleted.
    Removing,
}

impl From<domain::CopyStatus> for ReplicaStatus {
    fn from(s: domain::CopyStatus) -> Self {
        match s {
            domain::CopyStatus::Pending => ReplicaStatus::Pending,
            domain::CopyStatus::Ok => ReplicaStatus::Ok,
            domain::CopyStatus::Failed => ReplicaStatus::Failed,
            domain::CopyStatus::Removing => ReplicaStatus::Removing,
        }
    }
}

/// Whether a space copies its content to the replica stores.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ReplicationMode {
    /// As the server's `replication.default` says.
    Default,
    On,
    Off,
}

impl ReplicationMode {
    pub fn of(setting: Option<bool>) -> Self {
        match setting {
            None => ReplicationMode::Default,
            Some(true) => ReplicationMode::On,
            Some(false) => ReplicationMode::Off,
        }
    }

    pub fn setting(self) -> Option<bool> {
        match self {
            ReplicationMode::Default => None,
            ReplicationMode::On => Some(true),
            ReplicationMode::Off => Some(false),
        }
    }
}

/// One store's copy of a version's content.
#[derive(SimpleObject)]
pub struct Replica {
    /// The store's id (`primary`: the server's own bucket or folder).
    pub store: String,
    pub primary: bool,
    pub status: ReplicaStatus,
    /// Failed attempts since the copy was queued (or last found bad).
    pub attempts: u32,
    /// Why the last attempt failed, or why the copy was queued again.
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

impl From<CopyRecord> for Replica {
    fn from(c: CopyRecord) -> Self {
        Self {
            store: c.store.to_string(),
            primary: c.store.is_primary(),
            status: c.status.into(),
            attempts: c.attempts,
            last_error: c.last_error,
            updated_at: datetime(c.updated_at),
        }
    }
}

/// One store's copies of a space, counted.
#[derive(SimpleObject)]
pub struct StoreReplicationStatus {
    pub store: String,
    pub primary: bool,
    /// False for a store taken out of the configuration (its records are kept).
    pub configured: bool,
    pub pending: u64,
    pub failed: u64,
    pub ok: u64,
    pub removing: u64,
    /// When the oldest version not yet copied here was committed.
    pub oldest_pending_at: Option<DateTime<Utc>>,
    /// Seconds since then (0 when everything is copied).
    pub lag_seconds: f64,
}

#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ReplicationJobKind {
    /// Queues the copies a space's versions lack (a new store, replication turned on).
    Backfill,
    /// A backfill that also checks every copy against its checksum (`repairSpace`).
    Repair,
}

/// A walk over a space's versions.
#[derive(SimpleObject)]
pub struct ReplicationJob {
    pub kind: ReplicationJobKind,
    pub started_at: DateTime<Utc>,
    pub done: bool,
}

/// Where a space's replication stands (owners only).
#[derive(SimpleObject)]
pub struct ReplicationStatus {
    pub space_id: ID,
    /// Whether new content of the space is copied to the replica stores.
    pub replicated: bool,
    pub stores: Vec<StoreReplicationStatus>,
    /// The space's last backfill or repair, if any.
    pub job: Option<ReplicationJob>,
}

impl From<sync::ReplicationStatus> for ReplicationStatus {
    fn from(s: sync::ReplicationStatus) -> Self {
        Self {
            space_id: ID(s.space_id.to_string()),
            replicated: s.replicated,
            stores: s
                .stores
                .into_iter()
                .map(|st| StoreReplicationStatus {
                    lag_seconds: st
                        .oldest_pending_at
                        .map_or(0.0, |at| ((s.at - at).max(0)) as f64 / 1000.0),
                    oldest_pending_at: st.oldest_pending_at.map(datetime),
                    store: st.store,
                    primary: st.primary,
                    configured: st.configured,
                    pending: st.pending,
                    failed: st.failed,
                    ok: st.ok,
                    removing: st.removing,
                })
                .collect(),
            job: s.job.map(|j| ReplicationJob {
                kind: if j.verify {
                    ReplicationJobKind::Repair
                } else {
                    ReplicationJobKind::Backfill
                },
                started_at: datetime(j.started_at),
                done: j.done,
            }),
        }
    }
}
