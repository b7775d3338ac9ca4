//! Replication across stores: the stores a committed object is copied to, and the state of
//! each copy. "Replica" already names a server replica in this code base; here a *store*
//! is a bucket or folder holding objects, and a *copy* is one object in one store.

use std::fmt;

use super::{Content, Invalid, Millis, SpaceId};

/// A store's id, from the configuration (`[[replication.stores]] id`). The primary store
/// (the backend's own bucket or folder) is [`StoreId::primary`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId(String);

impl StoreId {
    const PRIMARY: &'static str = "primary";

    pub fn primary() -> Self {
        Self(Self::PRIMARY.to_owned())
    }

    /// A configured replica store's id: 1 to 32 of `a-z`, `0-9` and `-`, not `primary`.
    pub fn parse(id: &str) -> Result<Self, Invalid> {
        let valid = !id.is_empty()
            && id.len() <= 32
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(Invalid(format!(
                "store id {id:?}: use 1 to 32 characters of a-z, 0-9 and -"
            )));
        }
        if id == Self::PRIMARY {
            return Err(Invalid::new(
                "store id \"primary\" is the backend's own store; pick another",
            ));
        }
        Ok(Self(id.to_owned()))
    }

    /// An id read back from the store (the primary's included).
    pub fn from_stored(id: String) -> Self {
        Self(id)
    }

    pub fn is_primary(&self) -> bool {
        self.0 == Self::PRIMARY
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where one copy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyStatus {
    /// To be copied (or being copied, under a claim).
    Pending,
    /// In the store, verified by size and SHA-256.
    Ok,
    /// The last attempt failed; retried at `due_at`.
    Failed,
    /// The content was removed: the store's object is to be deleted, then the record.
    Removing,
}

impl CopyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyStatus::Pending => "PENDING",
            CopyStatus::Ok => "OK",
            CopyStatus::Failed => "FAILED",
            CopyStatus::Removing => "REMOVING",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "PENDING" => CopyStatus::Pending,
            "OK" => CopyStatus::Ok,
            "FAILED" => CopyStatus::Failed,
            "REMOVING" => CopyStatus::Removing,
            _ => return None,
        })
    }
}

/// One object in one store, as the replication queue records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRecord {
    pub space_id: SpaceId,
    pub store: StoreId,
    /// The object: its key, size, SHA-256 and type (the version's content).
    pub content: Content,
    pub status: CopyStatus,
    /// Failed attempts since the copy was last `OK` (or queued).
    pub attempts: u32,
    pub last_error: Option<String>,
    /// When the version was committed (or, for a backfilled copy, queued).
    pub committed_at: Millis,
    pub updated_at: Millis,
    /// When the copy is next to be worked on (`None` once `OK`). While claimed, the end
    /// of the claim's lease.
    pub due_at: Option<Millis>,
}

/// A copy claimed by one worker until `lease_until`: every write of the worker is
/// conditioned on `claim` still being the record's, so a worker whose lease ran out (and
/// whose copy another worker took over) changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTask {
    pub record: CopyRecord,
    pub claim: String,
    pub lease_until: Millis,
}

/// How a claimed copy ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOutcome {
    /// The object is in the store, verified.
    Copied,
    /// Not this time: `attempts` goes up and the copy is due again at `retry_at`.
    Failed { error: String, retry_at: Millis },
    /// A `REMOVING` copy's object is deleted: the record goes.
    Removed,
}

/// A copy the queue is to hold, unless it has one for that object and store already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCopy {
    pub store: StoreId,
    pub content: Content,
    pub committed_at: Millis,
    /// `OK` for the primary (the commit verified it), `PENDING` elsewhere.
    pub status: CopyStatus,
}

impl NewCopy {
    /// The copy of `content` in `store` as a commit queues it: the primary's is `OK` (the
    /// commit verified it), every other store's `PENDING`.
    pub fn of(store: StoreId, content: &Content, committed_at: Millis) -> Self {
        let status = if store.is_primary() {
            CopyStatus::Ok
        } else {
            CopyStatus::Pending
        };
        Self {
            store,
            content: content.clone(),
            committed_at,
            status,
        }
    }
}

/// A walk over one space's commit log: a backfill queues a copy of every version's object
/// for every store; a repair (`verify`) also checks every copy against its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationJob {
    pub space_id: SpaceId,
    /// The seq walked so far.
    pub cursor_seq: u64,
    /// Also check the copies already `OK` (an owner's `repairSpace`).
    pub verify: bool,
    /// Where the verify pass stands: the last (object key, store) checked.
    pub verify_after: Option<(String, StoreId)>,
    pub started_at: Millis,
    pub done: bool,
}

impl ReplicationJob {
    pub fn new(space_id: SpaceId, verify: bool, now: Millis) -> Self {
        Self {
            space_id,
            cursor_seq: 0,
            verify,
            verify_after: None,
            started_at: now,
            done: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_ids_are_short_lower_case_and_never_primary() {
        assert!(StoreId::parse("backup-eu-1").is_ok());
        for bad in ["", "Backup", "a_b", "primary", &"x".repeat(33), "a/b"] {
            assert!(StoreId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(StoreId::primary().is_primary());
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            CopyStatus::Pending,
            CopyStatus::Ok,
            CopyStatus::Failed,
            CopyStatus::Removing,
        ] {
            assert_eq!(CopyStatus::parse(s.as_str()), Some(s));
        }
    }
}
