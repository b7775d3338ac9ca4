//! Live subscriptions: every committed change of a space, in seq order, each once, resumable
//! from any cursor.
//!
//! A subscription registers with the hub first (so that a removal of its user ends it at
//! once, whatever phase it is in), confirms that the caller is a member, then goes
//! through three phases:
//!
//! 1. **Replay**: the commit log after `since`, page by page, at whatever pace the client
//!    reads. The hub does not feed it meanwhile: however long it takes, it costs the hub
//!    nothing and fills no buffer.
//! 2. **Go live, then catch up**: from now on every new change reaches its buffer; it
//!    reads the commit log once more for what was committed during phase 1. Then `READY`
//!    with the cursor of the last change seen: from here on the client misses nothing.
//! 3. **Live**: changes from the hub. One at or before the last seq already sent is a
//!    duplicate of the catch-up and is skipped; one past a hole fills the hole from the
//!    store first (notices may come late or out of order on some backends).
//!
//! Every change is authorised when it is sent: the hub ends the subscription when its
//! user leaves the space, and a change committed after a membership change the
//! subscription has not yet confirmed (its `members_epoch` is higher than the one the
//! caller's membership was last read at) is sent only after the membership is read again.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use async_stream::try_stream;
use futures::Stream;
use tokio_util::sync::CancellationToken;

use super::read::refuse_future_cursor;
use super::{Error, Result, SyncService};
use crate::domain::{Change, Cursor, FileId, SpaceId, UserId};

mod hub;
mod mailbox;
#[cfg(test)]
mod tests;

use hub::Ended;
pub(super) use hub::Hub;
pub use hub::HubStats;

/// Commit-log entries read per store round trip during replay.
const REPLAY_PAGE: usize = 256;

/// Renderings a shared change keeps (distinct subscription shapes, in practice a few).
const MAX_RENDERINGS: usize = 16;

/// What a subscription emits.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// Replay is done and the subscription is attached: from here on nothing is missed.
    /// Carries the cursor of the last change the subscription has seen.
    Ready(Cursor),
    /// One committed change (shared by every subscriber it reaches).
    Change(Arc<SharedChange>),
}

/// A change as the hub hands it to every subscriber of its space, with a memo of its
/// renderings: a thousand subscriptions asking for the same fields render it once. The
/// memo is keyed by whatever identifies a rendering for the layer that renders (for
/// GraphQL: a hash of the selection) and holds the text that layer sends.
pub struct SharedChange {
    pub change: Change,
    renderings: Mutex<Vec<(u128, Arc<str>)>>,
}

impl SharedChange {
    pub fn new(change: Change) -> Self {
        Self {
            change,
            renderings: Mutex::new(Vec::new()),
        }
    }

    /// The rendering remembered under `key`, if any.
    pub fn rendering(&self, key: u128) -> Option<Arc<str>> {
        let renderings = lock(&self.renderings);
        let (_, found) = renderings.iter().find(|(k, _)| *k == key)?;
        Some(found.clone())
    }

    /// Remembers a rendering (the first one of a key wins; past a few keys, none is kept).
    pub fn remember(&self, key: u128, rendering: Arc<str>) {
        let mut renderings = lock(&self.renderings);
        if renderings.len() < MAX_RENDERINGS && renderings.iter().all(|(k, _)| *k != key) {
            renderings.push((key, rendering));
        }
    }
}

impl std::ops::Deref for SharedChange {
    type Target = Change;

    fn deref(&self) -> &Change {
        &self.change
    }
}

impl std::fmt::Debug for SharedChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.change.fmt(f)
    }
}

/// Per user, how many replays may hold a page of changes at once: however many
/// subscriptions a user opens from old cursors (and however slowly they read), their
/// replays hold at most `per_user` pages.
pub(crate) struct ReplayPermits {
    per_user: usize,
    users: Mutex<HashMap<UserId, Arc<tokio::sync::Semaphore>>>,
}

impl ReplayPermits {
    pub(crate) fn new(per_user: usize) -> Self {
        Self {
            per_user: per_user.max(1),
            users: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for one of `user`'s replay permits.
    async fn acquire(&self, user: &UserId) -> tokio::sync::OwnedSemaphorePermit {
        let semaphore = {
            let mut users = lock(&self.users);
            if users.len() > 1024 {
                // Forget users nobody holds a permit or a reference for.
                users.retain(|_, s| Arc::strong_count(s) > 1);
            }
            users
                .entry(user.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_user)))
                .clone()
        };
        semaphore
            .acquire_owned()
            .await
            .expect("replay semaphores are never closed")
    }
}

/// Locks a mutex of the live machinery. Each guards in-memory work only, never held
/// across an await; a panic while holding one cannot leave it half-updated in a way that
/// matters, so poisoning is ignored rather than spread to every subscriber.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The events of one subscription, ending with an error when the server ends it.
pub type LiveStream = Pin<Box<dyn Stream<Item = Result<LiveEvent>> + Send>>;

impl SyncService {
    /// Runs the process's live hub until `stop` is cancelled; subscriptions still open then
    /// end with `SHUTTING_DOWN`.
    pub async fn run_live_hub(self, stop: CancellationToken) {
        self.inner.hub.clone().run(stop).await;
    }

    /// Counters of the live hub, for `/metrics`.
    pub fn live_stats(&self) -> &HubStats {
        self.inner.hub.stats()
    }

    /// Live subscriptions attached to the hub right now.
    pub fn live_subscriptions(&self) -> u64 {
        self.inner.hub.attached()
    }

    /// `subscription changes`: every change of `space` after `since` (from now when
    /// `None`), only those of `files` when given.
    pub async fn subscribe_changes(
        &self,
        user: &UserId,
        space: SpaceId,
        since: Option<&str>,
        files: Option<Vec<FileId>>,
    ) -> Result<LiveStream> {
        self.role_in(user, space).await?;
        let from = self.resume_point(space, since).await?;
        Ok(self.live(user.clone(), space, from, files.map(HashSet::from_iter)))
    }

    /// `subscription fileChanged`: the changes of one file after `since` (from now when
    /// `None`).
    pub async fn subscribe_file(
        &self,
        user: &UserId,
        id: FileId,
        since: Option<&str>,
    ) -> Result<LiveStream> {
        let (file, _) = self.visible_file(user, id).await?;
        let from = self.resume_point(file.space_id, since).await?;
        Ok(self.live(user.clone(), file.space_id, from, Some(HashSet::from([id]))))
    }

    /// The seq to replay from: the cursor's, or the space's head when there is none.
    async fn resume_point(&self, space: SpaceId, since: Option<&str>) -> Result<u64> {
        let head = self.head_seq(space).await?;
        let Some(cursor) = since else {
            return Ok(head);
        };
        let seq = Cursor::decode_for(cursor, space)?.seq;
        refuse_future_cursor(seq, head)?;
        Ok(seq)
    }

    /// The error a subscription ends with when the hub stops feeding it.
    fn ended(&self, why: Ended) -> Error {
        match why {
            Ended::Forbidden => Error::forbidden("you are no longer a member of this space"),
            Ended::Lagged => Error::SlowSubscriber(self.inner.limits.subscriber_buffer),
            Ended::Stopped => Error::ShuttingDown,
        }
    }

    fn live(
        &self,
        user: UserId,
        space: SpaceId,
        from: u64,
        files: Option<HashSet<FileId>>,
    ) -> LiveStream {
        let service = self.clone();
        let wanted = move |c: &Change| files.as_ref().is_none_or(|f| f.contains(&c.file.id));
        Box::pin(try_stream! {
            let meta = &service.inner.store.meta;
            let mut last = from;
            // Registered before the membership read: a removal committed after the read
            // reaches the hub's recheck, which ends the attachment.
            let mut attachment = service.inner.hub.attach(space, user.clone());
            let mut access = Access {
                service: &service,
                space,
                user: &user,
                epoch: 0,
            };
            access.confirm().await?;

            // 1. Replay, then 2. go live and catch up.
            for live in [false, true] {
                if live {
                    attachment.go_live(last);
                }
                for n in 0.. {
                    if n > 0 {
                        // A removal whose notice is late or lost still ends a long
                        // replay within a page.
                        access.confirm().await?;
                    }
                    // Held while this page is sent: a user's replays hold few pages.
                    let _permit = service.inner.replays.acquire(&user).await;
                    let page = meta.commit_log(space, last, REPLAY_PAGE).await?;
                    let full = page.len() == REPLAY_PAGE;
                    for change in take_page(&mut last, page, &wanted) {
                        if let Some(why) = attachment.ended() {
                            Err(service.ended(why))?;
                        }
                        access.allow(&change).await?;
                        yield LiveEvent::Change(change);
                    }
                    if !full {
                        break;
                    }
                }
            }
            yield LiveEvent::Ready(Cursor::new(space, last));

            // 3. Live.
            loop {
                let change = attachment.next().await.map_err(|e| service.ended(e))?;
                let seq = change.file.seq;
                if seq <= last {
                    continue;
                }
                if last + 1 < seq {
                    // A hole: what the hub skipped is in the store.
                    for earlier in fill_hole(meta.as_ref(), space, &mut last, seq, &wanted).await? {
                        access.allow(&earlier).await?;
                        yield LiveEvent::Change(earlier);
                    }
                }
                last = seq;
                if wanted(&change) {
                    access.allow(&change).await?;
                    yield LiveEvent::Change(change);
                }
            }
        })
    }
}

/// A subscriber's right to see its space's changes, as last confirmed.
struct Access<'a> {
    service: &'a SyncService,
    space: SpaceId,
    user: &'a UserId,
    /// The membership epoch the caller's membership was last confirmed at.
    epoch: u64,
}

impl Access<'_> {
    /// Reads the caller's membership again; `FORBIDDEN` if they are no longer a member.
    async fn confirm(&mut self) -> Result<()> {
        match self
            .service
            .inner
            .store
            .meta
            .membership(self.space, self.user)
            .await?
        {
            (Some(_), Some(epoch)) => {
                self.epoch = epoch;
                Ok(())
            }
            _ => Err(self.service.ended(Ended::Forbidden)),
        }
    }

    /// Whether `change` may be sent: a change committed after a membership change this
    /// subscription has not confirmed yet waits for the membership to be read again.
    async fn allow(&mut self, change: &Change) -> Result<()> {
        if change.members_epoch > self.epoch {
            self.confirm().await?;
        }
        Ok(())
    }
}

/// A page of the commit log as the changes to send (those `wanted`); `last` moves to the
/// end of the page, or to just before its first hole (the rest of the page is not used:
/// it is read again). Shared before they are sent, so that a subscription holds a
/// pointer, not a change, while it waits for its client.
fn take_page(
    last: &mut u64,
    mut page: Vec<Change>,
    wanted: impl Fn(&Change) -> bool,
) -> Vec<Arc<SharedChange>> {
    page.truncate(crate::domain::contiguous_len(*last, &page));
    if let Some(end) = page.last() {
        *last = end.file.seq;
    }
    page.into_iter()
        .filter(|change| wanted(change))
        .map(|change| Arc::new(SharedChange::new(change)))
        .collect()
}

/// Reads of a hole that the store does not show yet before the subscription gives up.
const HOLE_ATTEMPTS: u32 = 8;

/// The changes between `last` and `seq` (exclusive), from the store; `last` moves to
/// `seq - 1`. Every seq below one the hub delivered is committed, so a store that does not
/// show one yet is asked again (with backoff); a hole that stays is an error, never a
/// skipped change: the client resumes from its last cursor.
async fn fill_hole(
    meta: &dyn crate::storage::MetadataStore,
    space: SpaceId,
    last: &mut u64,
    seq: u64,
    wanted: impl Fn(&Change) -> bool,
) -> Result<Vec<Arc<SharedChange>>> {
    let mut filled = Vec::new();
    let mut attempts = 0;
    while *last + 1 < seq {
        let gap = usize::try_from(seq - 1 - *last).unwrap_or(usize::MAX);
        let mut page = meta.commit_log(space, *last, gap.min(REPLAY_PAGE)).await?;
        // The page may reach past the hole, to `seq` itself: take only the hole.
        page.retain(|c| c.file.seq < seq);
        let before = *last;
        filled.extend(take_page(last, page, &wanted));
        if *last == before {
            attempts += 1;
            if attempts == HOLE_ATTEMPTS {
                return Err(Error::Internal(anyhow::anyhow!(
                    "space {space}: the store does not show seq {} though it shows {seq}",
                    *last + 1
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(10 << attempts)).await;
        }
    }
    Ok(filled)
}
