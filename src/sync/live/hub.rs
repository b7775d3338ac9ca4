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
//! ([`Ended::Lagged`]) and the others carry on. Nor on a space: a store error while
//! delivering one space, or rechecking one member, is retried later for that space or
//! member alone (with backoff), while every other delivery of the batch goes ahead.
//!
//! A subscription registers before it replays (see `live/mod.rs`), so that a removal is
//! noticed at once even while it replays: the hub feeds it changes only once it goes live,
//! but ends it with [`Ended::Forbidden`] as soon as the store says its user left.

use std::collections::{HashMap, HashSet};
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
/// First wait before work that failed (a store error, or a read that did not show the
/// announced change yet) is tried again; doubles up to [`MAX_RETRY`] while it keeps
/// failing, for each space or member on its own.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Attempts at reading an announced seq that the store never shows (a phantom notice)
/// before the hub stops looking for it (any later notice of the space reads it again).
const MAX_TARGET_ATTEMPTS: u32 = 12;

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
    /// Deliveries or membership rechecks that failed on a store error (and are retried).
    pub failures: AtomicU64,
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
    /// Every change up to this seq has been handed to the live subscribers below.
    delivered: u64,
    subscribers: Vec<Subscriber>,
}

impl SpaceSubscribers {
    fn any_live(&self) -> bool {
        self.subscribers.iter().any(|s| s.live)
    }
}

struct Subscriber {
    id: u64,
    user: UserId,
    mailbox: Arc<Mailbox<Arc<SharedChange>>>,
    /// Fed changes; until then (while its subscription replays) only watched for removal.
    live: bool,
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

    /// Registers a subscription of `user` to `space`. From here on a removal of `user`
    /// ends it ([`Ended::Forbidden`]); it is fed changes once it goes live
    /// ([`Attachment::go_live`]).
    pub fn attach(&self, space: SpaceId, user: UserId) -> Attachment {
        let mailbox = Arc::new(Mailbox::default());
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        if self.shared.stopped.is_cancelled() {
            mailbox.end(Ended::Stopped);
        } else {
            lock(&self.shared.spaces)
                .entry(space)
                .or_insert_with(|| SpaceSubscribers {
                    delivered: 0,
                    subscribers: Vec::new(),
                })
                .subscribers
                .push(Subscriber {
                    id,
                    user,
                    mailbox: mailbox.clone(),
                    live: false,
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
    /// attachment with [`Ended::Stopped`]. Runs once per hub. Work that failed on a store
    /// error waits in `retry` and is tried again after a backoff, merged with whatever
    /// came meanwhile.
    pub async fn run(self, stop: CancellationToken) {
        let Some(mut feed) = lock(&self.shared.feed).take() else {
            tracing::error!("the live hub was started twice");
            return;
        };
        let mut retries = Retries::default();
        loop {
            let due = retries.next_due();
            let retry_at = tokio::time::sleep_until(
                due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600)),
            );
            let first = tokio::select! {
                notice = feed.recv() => Some(notice),
                () = retry_at, if due.is_some() => None,
                () = stop.cancelled() => break,
            };
            let mut batch = Batch::default();
            match first {
                Some(Ok(notice)) => batch.add(notice),
                Some(Err(broadcast::error::RecvError::Lagged(_))) => batch.lagged = true,
                Some(Err(broadcast::error::RecvError::Closed)) => break,
                None => {}
            }
            while batch.len < MAX_BATCH {
                match feed.try_recv() {
                    Ok(notice) => batch.add(notice),
                    Err(broadcast::error::TryRecvError::Lagged(_)) => batch.lagged = true,
                    Err(_) => break,
                }
            }
            retries.add_due_to(&mut batch, tokio::time::Instant::now());
            let tried = batch.keys();
            let failed = self.deliver(batch).await;
            retries.settle(tried, failed, tokio::time::Instant::now());
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

    /// Does what a batch of notices asks for; returns what failed, to be tried again.
    async fn deliver(&self, mut batch: Batch) -> Batch {
        if batch.lagged || batch.resync || batch.reread {
            // Which notices were lost is unknown: read every followed space to its end,
            // and (unless only commits were late) recheck every follower's membership.
            let recheck = batch.lagged || batch.resync;
            let spaces = lock(&self.shared.spaces);
            for (space, subs) in spaces.iter() {
                if recheck {
                    for s in &subs.subscribers {
                        batch.recheck(*space, s.user.clone());
                    }
                }
                batch.committed.insert(*space, None);
            }
        }
        let mut failed = Batch::default();
        // Removals first: a change committed after a removal must not reach the removed
        // member because both notices came in one batch.
        for (space, user) in batch.membership {
            if let Err(e) = self.recheck_member(space, &user).await {
                self.failed(&e, "recheck a member");
                failed.recheck(space, user);
            }
        }
        for (space, target) in batch.committed {
            match self.deliver_space(space, target).await {
                Ok(true) => {}
                // The store does not show the announced change yet: look again soon.
                Ok(false) => failed.announce(space, target),
                Err(e) => {
                    self.failed(&e, "read the commit log");
                    failed.announce(space, target);
                }
            }
        }
        failed
    }

    fn failed(&self, error: &StoreError, what: &str) {
        self.shared.stats.failures.fetch_add(1, Ordering::Relaxed);
        // The changes stay in the store; this space (or member) is tried again later.
        tracing::warn!(error = ?error, "live hub could not {what}; retrying");
    }

    /// Reads the commit log of `space` from the last delivered seq up to `target` (or to
    /// its end) and hands every change to every live subscriber of the space. `false`
    /// when the store did not show the change `target` announced (yet).
    async fn deliver_space(&self, space: SpaceId, target: Option<u64>) -> Result<bool, StoreError> {
        loop {
            let from = match lock(&self.shared.spaces).get(&space) {
                Some(s) if s.any_live() && target.is_none_or(|t| s.delivered < t) => s.delivered,
                _ => return Ok(true),
            };
            let mut changes = self.shared.store.commit_log(space, from, LOG_PAGE).await?;
            self.shared
                .stats
                .store_reads
                .fetch_add(1, Ordering::Relaxed);
            // Nothing past a hole goes out: the hole is read again first.
            let read = changes.len();
            changes.truncate(crate::domain::contiguous_len(from, &changes));
            let whole = changes.len() == read;
            let Some(last) = changes.last().map(|c| c.file.seq) else {
                return Ok(whole && target.is_none_or(|t| t <= from));
            };
            let changes: Vec<Arc<SharedChange>> = changes
                .into_iter()
                .map(|c| Arc::new(SharedChange::new(c)))
                .collect();
            let mut spaces = lock(&self.shared.spaces);
            let Some(subs) = spaces.get_mut(&space) else {
                return Ok(true);
            };
            let stats = &self.shared.stats;
            let fresh = &changes[changes.partition_point(|c| c.file.seq <= subs.delivered)..];
            if !fresh.is_empty() {
                subs.subscribers.retain(|s| {
                    if !s.live {
                        return true;
                    }
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
            if read < LOG_PAGE || !whole {
                return Ok(whole && target.is_none_or(|t| t <= last));
            }
        }
    }

    /// A member of `space` changed: ends `user`'s subscriptions there if the store says
    /// they are no longer a member.
    async fn recheck_member(&self, space: SpaceId, user: &UserId) -> Result<(), StoreError> {
        let follows = lock(&self.shared.spaces)
            .get(&space)
            .is_some_and(|s| s.subscribers.iter().any(|sub| sub.user == *user));
        if !follows || self.shared.store.role(space, user).await?.is_some() {
            return Ok(());
        }
        let mut spaces = lock(&self.shared.spaces);
        if let Some(subs) = spaces.get_mut(&space) {
            subs.subscribers.retain(|s| {
                if s.user != *user {
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
    /// Starts feeding this subscription the changes committed after `seq` (some earlier
    /// ones may come too; the subscriber skips what it has). From here on, every
    /// committed change of the space reaches it.
    pub fn go_live(&self, seq: u64) {
        let mut spaces = lock(&self.shared.spaces);
        let Some(subs) = spaces.get_mut(&self.space) else {
            return; // ended already (removed, or the hub stopped)
        };
        // The first live subscriber starts the space's deliveries where it stands; later
        // ones catch up from the store themselves.
        if !subs.any_live() {
            subs.delivered = seq;
        }
        if let Some(me) = subs.subscribers.iter_mut().find(|s| s.id == self.id) {
            me.live = true;
        }
    }

    /// Why the hub stopped feeding this subscription, if it has: checked between the
    /// changes a subscription sends on its own (its replay), so that a removal ends it at
    /// once.
    pub fn ended(&self) -> Option<Ended> {
        self.mailbox.ended()
    }

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

/// What a batch tried: its spaces and its membership rechecks.
type Tried = (Vec<SpaceId>, Vec<(SpaceId, UserId)>);

/// Work that failed, each space and member with its own backoff.
#[derive(Default)]
struct Retries {
    spaces: HashMap<SpaceId, Retry<Option<u64>>>,
    members: HashMap<(SpaceId, UserId), Retry<()>>,
}

struct Retry<T> {
    what: T,
    attempts: u32,
    due: tokio::time::Instant,
}

impl<T> Retry<T> {
    fn again(what: T, attempts: u32, now: tokio::time::Instant) -> Self {
        let wait =
            (FIRST_RETRY * 2u32.saturating_pow(attempts.saturating_sub(1).min(10))).min(MAX_RETRY);
        Self {
            what,
            attempts,
            due: now + wait,
        }
    }
}

impl Retries {
    fn next_due(&self) -> Option<tokio::time::Instant> {
        let spaces = self.spaces.values().map(|r| r.due);
        spaces.chain(self.members.values().map(|r| r.due)).min()
    }

    /// Puts the work that is due into `batch`.
    fn add_due_to(&self, batch: &mut Batch, now: tokio::time::Instant) {
        for (space, retry) in &self.spaces {
            if retry.due <= now {
                batch.announce(*space, retry.what);
            }
        }
        for (key, retry) in &self.members {
            if retry.due <= now {
                batch.recheck(key.0, key.1.clone());
            }
        }
    }

    /// After a batch: what it did is done, what failed waits its own next turn.
    fn settle(&mut self, (spaces, members): Tried, failed: Batch, now: tokio::time::Instant) {
        for space in spaces {
            if !failed.committed.contains_key(&space) {
                self.spaces.remove(&space);
            }
        }
        for key in members {
            if !failed.membership.contains(&key) {
                self.members.remove(&key);
            }
        }
        for (space, target) in failed.committed {
            let attempts = self.spaces.get(&space).map_or(0, |r| r.attempts) + 1;
            if target.is_some() && attempts > MAX_TARGET_ATTEMPTS {
                tracing::warn!(%space, ?target, "the store never showed an announced seq; giving up on it");
                self.spaces.remove(&space);
            } else {
                self.spaces
                    .insert(space, Retry::again(target, attempts, now));
            }
        }
        for key in failed.membership {
            let attempts = self.members.get(&key).map_or(0, |r| r.attempts) + 1;
            self.members.insert(key, Retry::again((), attempts, now));
        }
    }
}

/// Notices taken off the feed in one go (or work left over from a failed attempt).
#[derive(Default)]
struct Batch {
    /// Spaces to read, each up to the highest seq announced (`None`: to its end).
    committed: HashMap<SpaceId, Option<u64>>,
    membership: HashSet<(SpaceId, UserId)>,
    /// Notices were lost on this side of the feed: recheck and re-read everything.
    lagged: bool,
    /// Notices were lost before the feed: the same.
    resync: bool,
    /// Commit notices may be late: re-read every space followed.
    reread: bool,
    len: usize,
}

impl Batch {
    fn add(&mut self, notice: Notice) {
        self.len += 1;
        match notice {
            Notice::Committed { space_id, seq } => self.announce(space_id, Some(seq)),
            Notice::MembershipChanged { space_id, user } => self.recheck(space_id, user),
            Notice::Resync => self.resync = true,
            Notice::Reread => self.reread = true,
        }
    }

    fn announce(&mut self, space: SpaceId, seq: Option<u64>) {
        let target = self.committed.entry(space).or_insert(seq);
        *target = match (*target, seq) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }

    fn recheck(&mut self, space: SpaceId, user: UserId) {
        self.membership.insert((space, user));
    }

    /// The spaces and members a batch names (before lags and resyncs add more).
    fn keys(&self) -> Tried {
        (
            self.committed.keys().copied().collect(),
            self.membership.iter().cloned().collect(),
        )
    }
}
