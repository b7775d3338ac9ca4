//! The fan-out hub: one per server process, between the storage change feed and every live
//! subscription.
//!
//! The feed only says "space S reached seq N" (or "a member of S changed"). For each space
//! that has subscribers the hub keeps the last seq it delivered, reads what came after it
//! from the store's commit log (one read per batch of notices, shared by every subscriber
//! of the space) and hands each change to each subscriber's bounded buffer. The store is
//! the truth: a notice that comes twice, late or out of order only makes the hub read
//! nothing new, and a lost one is made up by the next read, which starts at the last seq
//! delivered rather than at the notice.
//!
//! Nobody ever waits on a subscriber: a full buffer ends that subscription
//! ([`Ended::Lagged`]) and the others carry on.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::mailbox::Mailbox;
use super::{SharedChange, lock};
use crate::domain::{SpaceId, UserId};
use crate::storage::{ChangeFeed, MetadataStore, Notice, StoreError};

/// Commit-log entries read per store round trip.
const LOG_PAGE: usize = 512;
/// Notices taken off the feed before the hub delivers what they announce.
const MAX_BATCH: usize = 1024;

/// Why the hub stopped feeding a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The subscriber is no longer a member of the space.
    Forbidden,
    /// The subscriber's buffer was full: it fell behind.
    Lagged,
    /// The hub stopped (the server is shutting down).
    Stopped,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct HubStats {
    pub attached: AtomicU64,
    pub detached: AtomicU64,
    pub lagged: AtomicU64,
    pub forbidden: AtomicU64,
    pub delivered: AtomicU64,
    pub store_reads: AtomicU64,
}

/// The process-wide hub. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn MetadataStore>,
    spaces: Mutex<HashMap<SpaceId, SpaceSubscribers>>,
    /// Taken by [`Hub::run`]; subscribed at construction so that no notice sent after the
    /// hub exists is missed.
    feed: Mutex<Option<broadcast::Receiver<Notice>>>,
    buffer: usize,
    next_id: AtomicU64,
    stopped: CancellationToken,
    stats: HubStats,
}

struct SpaceSubscribers {
    /// Every change up to this seq has been handed to the subscribers below.
    delivered: u64,
    subscribers: Vec<Subscriber>,
}

struct Subscriber {
    id: u64,
    user: UserId,
    mailbox: Arc<Mailbox<Arc<SharedChange>>>,
}

impl Hub {
    /// A hub over `feed`; `buffer` is each subscriber's buffer, in changes.
    pub fn new(feed: &dyn ChangeFeed, store: Arc<dyn MetadataStore>, buffer: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                spaces: Mutex::new(HashMap::new()),
                feed: Mutex::new(Some(feed.subscribe())),
                buffer: buffer.max(1),
                next_id: AtomicU64::new(0),
                stopped: CancellationToken::new(),
                stats: HubStats::default(),
            }),
        }
    }

    pub fn stats(&self) -> &HubStats {
        &self.shared.stats
    }

    /// Live subscriptions attached right now.
    pub fn attached(&self) -> u64 {
        let s = &self.shared.stats;
        s.attached.load(Ordering::Relaxed) - s.detached.load(Ordering::Relaxed)
    }

    /// Starts feeding `user` the changes of `space` committed after `seq` (some earlier
    /// ones may come too; the subscriber skips what it has). Attaching is what "listening"
    /// means: from here on, every committed change of the space reaches the attachment.
    pub fn attach(&self, space: SpaceId, user: UserId, seq: u64) -> Attachment {
        let mailbox = Arc::new(Mailbox::default());
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        if self.shared.stopped.is_cancelled() {
            mailbox.end(Ended::Stopped);
        } else {
            let mut spaces = lock(&self.shared.spaces);
            spaces
                .entry(space)
                .or_insert_with(|| SpaceSubscribers {
                    delivered: seq,
                    subscribers: Vec::new(),
                })
                .subscribers
                .push(Subscriber {
                    id,
                    user,
                    mailbox: mailbox.clone(),
                });
        }
        self.shared.stats.attached.fetch_add(1, Ordering::Relaxed);
        Attachment {
            shared: self.shared.clone(),
            space,
            id,
            mailbox,
        }
    }

    /// Delivers notices until `stop` is cancelled or the feed closes, then ends every
    /// attachment with [`Ended::Stopped`]. Runs once per hub.
    pub async fn run(self, stop: CancellationToken) {
        let Some(mut feed) = lock(&self.shared.feed).take() else {
            tracing::error!("the live hub was started twice");
            return;
        };
        loop {
            let first = tokio::select! {
                notice = feed.recv() => notice,
                () = stop.cancelled() => break,
            };
            let mut batch = Batch::default();
            match first {
                Ok(notice) => batch.add(notice),
                Err(broadcast::error::RecvError::Lagged(_)) => batch.lagged = true,
                Err(broadcast::error::RecvError::Closed) => break,
            }
            while batch.len < MAX_BATCH {
                match feed.try_recv() {
                    Ok(notice) => batch.add(notice),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => batch.lagged = true,
                    Err(_) => break,
                }
            }
            if let Err(e) = self.deliver(batch).await {
                // The changes stay in the store; the next notice reads them again.
                tracing::error!(error = ?e, "live hub could not read the commit log");
            }
        }
        self.stop();
    }

    /// Ends every attachment with [`Ended::Stopped`] and refuses new ones.
    pub fn stop(&self) {
        self.shared.stopped.cancel();
        let spaces = std::mem::take(&mut *lock(&self.shared.spaces));
        for subscriber in spaces.into_values().flat_map(|s| s.subscribers) {
            subscriber.mailbox.end(Ended::Stopped);
        }
    }

    async fn deliver(&self, mut batch: Batch) -> Result<(), StoreError> {
        if batch.resync {
            batch.lagged = true;
            let followers: Vec<(SpaceId, UserId)> = lock(&self.shared.spaces)
                .iter()
                .flat_map(|(space, subs)| subs.subscribers.iter().map(|s| (*space, s.user.clone())))
                .collect();
            for follower in followers {
                if !batch.membership.contains(&follower) {
                    batch.membership.push(follower);
                }
            }
        }
        let spaces: Vec<SpaceId> = if batch.lagged {
            // Which notices were lost is unknown: look at every space someone follows.
            lock(&self.shared.spaces).keys().copied().collect()
        } else {
            batch.committed.keys().copied().collect()
        };
        for space in spaces {
            let target = if batch.lagged {
                None
            } else {
                batch.committed.get(&space).copied()
            };
            self.deliver_space(space, target).await?;
        }
        for (space, user) in batch.membership {
            self.recheck_member(space, user).await?;
        }
        Ok(())
    }

    /// Reads the commit log of `space` from the last delivered seq up to `target` (or to
    /// its end) and hands every change to every subscriber of the space.
    async fn deliver_space(&self, space: SpaceId, target: Option<u64>) -> Result<(), StoreError> {
        loop {
            let from = match lock(&self.shared.spaces).get(&space) {
                Some(s) if target.is_none_or(|t| s.delivered < t) => s.delivered,
                _ => return Ok(()),
            };
            let changes = self.shared.store.commit_log(space, from, LOG_PAGE).await?;
            self.shared
                .stats
                .store_reads
                .fetch_add(1, Ordering::Relaxed);
            let Some(last) = changes.last().map(|c| c.file.seq) else {
                return Ok(());
            };
            let changes: Vec<Arc<SharedChange>> = changes
                .into_iter()
                .map(|c| Arc::new(SharedChange::new(c)))
                .collect();
            let mut spaces = lock(&self.shared.spaces);
            let Some(subs) = spaces.get_mut(&space) else {
                return Ok(());
            };
            let stats = &self.shared.stats;
            let fresh = &changes[changes.partition_point(|c| c.file.seq <= subs.delivered)..];
            if !fresh.is_empty() {
                subs.subscribers.retain(|s| {
                    let kept = s.mailbox.offer(fresh, self.shared.buffer);
                    if kept {
                        stats
                            .delivered
                            .fetch_add(fresh.len() as u64, Ordering::Relaxed);
                    } else {
                        stats.lagged.fetch_add(1, Ordering::Relaxed);
                    }
                    kept
                });
            }
            subs.delivered = subs.delivered.max(last);
            if subs.subscribers.is_empty() {
                spaces.remove(&space);
            }
            if changes.len() < LOG_PAGE {
                return Ok(());
            }
        }
    }

    /// A member of `space` changed: ends `user`'s subscriptions there if the store says
    /// they are no longer a member.
    async fn recheck_member(&self, space: SpaceId, user: UserId) -> Result<(), StoreError> {
        let follows = lock(&self.shared.spaces)
            .get(&space)
            .is_some_and(|s| s.subscribers.iter().any(|sub| sub.user == user));
        if !follows || self.shared.store.role(space, &user).await?.is_some() {
            return Ok(());
        }
        let mut spaces = lock(&self.shared.spaces);
        if let Some(subs) = spaces.get_mut(&space) {
            subs.subscribers.retain(|s| {
                if s.user != user {
                    return true;
                }
                s.mailbox.end(Ended::Forbidden);
                self.shared.stats.forbidden.fetch_add(1, Ordering::Relaxed);
                false
            });
            if subs.subscribers.is_empty() {
                spaces.remove(&space);
            }
        }
        Ok(())
    }
}

/// One subscription's end of the hub. Dropping it detaches.
pub struct Attachment {
    shared: Arc<Shared>,
    space: SpaceId,
    id: u64,
    mailbox: Arc<Mailbox<Arc<SharedChange>>>,
}

impl Attachment {
    /// The next change, or why there are no more. A removed member gets
    /// [`Ended::Forbidden`] at once; a lagging one first gets what its buffer holds.
    pub async fn next(&mut self) -> Result<Arc<SharedChange>, Ended> {
        poll_fn(|cx| self.mailbox.poll_next(cx)).await
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.shared.stats.detached.fetch_add(1, Ordering::Relaxed);
        let mut spaces = lock(&self.shared.spaces);
        if let Some(subs) = spaces.get_mut(&self.space) {
            subs.subscribers.retain(|s| s.id != self.id);
            if subs.subscribers.is_empty() {
                spaces.remove(&self.space);
            }
        }
    }
}

/// Notices taken off the feed in one go.
#[derive(Default)]
struct Batch {
    /// The highest seq announced per space.
    committed: HashMap<SpaceId, u64>,
    membership: Vec<(SpaceId, UserId)>,
    /// Notices were lost on this side of the feed: re-read every space followed.
    lagged: bool,
    /// Notices were lost before the feed: also recheck every follower's membership.
    resync: bool,
    len: usize,
}

impl Batch {
    fn add(&mut self, notice: Notice) {
        self.len += 1;
        match notice {
            Notice::Committed { space_id, seq } => {
                let max = self.committed.entry(space_id).or_default();
                *max = (*max).max(seq);
            }
            Notice::MembershipChanged { space_id, user } => {
                if !self.membership.contains(&(space_id, user.clone())) {
                    self.membership.push((space_id, user));
                }
            }
            Notice::Resync => self.resync = true,
        }
    }
}
