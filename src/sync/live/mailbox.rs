//! A subscriber's bounded buffer between the hub and its subscription.
//!
//! A channel would do, but every subscription of a busy server holds one, so it is worth
//! being small: one allocation of a few words, where tokio's bounded channel takes about
//! 800 bytes of cache-padded state and a first block of slots. It also carries why the hub
//! stopped feeding it, and takes a batch of changes with one lock and one wake-up.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use super::hub::Ended;
use super::lock;

/// Capacity an empty queue keeps; a larger one (after a burst) is given back.
const KEEP_CAPACITY: usize = 8;

pub(super) struct Mailbox<T>(Mutex<Inner<T>>);

struct Inner<T> {
    queue: VecDeque<T>,
    ended: Option<Ended>,
    waker: Option<Waker>,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self(Mutex::new(Inner {
            queue: VecDeque::new(),
            ended: None,
            waker: None,
        }))
    }
}

impl<T: Clone> Mailbox<T> {
    /// Hub side: adds `changes` in order while fewer than `capacity` wait. When not all
    /// of them fit, the mailbox ends with [`Ended::Lagged`] after the ones that did.
    /// Returns whether all of them went in (false when it lagged, or had ended already).
    pub(super) fn offer(&self, changes: &[T], capacity: usize) -> bool {
        let mut inner = lock(&self.0);
        if inner.ended.is_some() {
            return false;
        }
        let room = capacity.saturating_sub(inner.queue.len());
        let taken = changes.len().min(room);
        inner.queue.extend(changes[..taken].iter().cloned());
        if taken < changes.len() {
            inner.ended = Some(Ended::Lagged);
        }
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
        taken == changes.len()
    }

    /// Hub side: no more changes will come, for this reason (the first reason given stands).
    pub(super) fn end(&self, why: Ended) {
        let mut inner = lock(&self.0);
        inner.ended.get_or_insert(why);
        let waker = inner.waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Subscription side: why the hub stopped feeding it, if it has (queued changes may
    /// still wait).
    pub(super) fn ended(&self) -> Option<Ended> {
        lock(&self.0).ended
    }

    /// Subscription side: the next change, or why there are no more. A removed member gets
    /// [`Ended::Forbidden`] at once; otherwise what is queued comes first.
    pub(super) fn poll_next(&self, cx: &mut Context<'_>) -> Poll<Result<T, Ended>> {
        let mut inner = lock(&self.0);
        if inner.ended == Some(Ended::Forbidden) {
            return Poll::Ready(Err(Ended::Forbidden));
        }
        if let Some(change) = inner.queue.pop_front() {
            if inner.queue.is_empty() && inner.queue.capacity() > KEEP_CAPACITY {
                inner.queue.shrink_to(KEEP_CAPACITY);
            }
            return Poll::Ready(Ok(change));
        }
        if let Some(why) = inner.ended {
            return Poll::Ready(Err(why));
        }
        if !inner
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            inner.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn changes(n: u64) -> Vec<u64> {
        (1..=n).collect()
    }

    fn next(mailbox: &Mailbox<u64>) -> Poll<Result<u64, Ended>> {
        mailbox.poll_next(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_full_mailbox_keeps_what_fit_then_ends_lagged() {
        let mailbox = Mailbox::default();
        assert_eq!(next(&mailbox), Poll::Pending);
        assert!(mailbox.offer(&changes(2), 3));
        assert!(!mailbox.offer(&changes(2), 3), "only one more fits");
        assert!(!mailbox.offer(&changes(1), 3), "ended already");
        for seq in [1, 2, 1] {
            assert_eq!(next(&mailbox), Poll::Ready(Ok(seq)));
        }
        assert_eq!(next(&mailbox), Poll::Ready(Err(Ended::Lagged)));
    }

    #[test]
    fn forbidden_ends_at_once_and_the_first_reason_stands() {
        let mailbox = Mailbox::default();
        mailbox.offer(&changes(2), 8);
        mailbox.end(Ended::Forbidden);
        mailbox.end(Ended::Stopped);
        assert_eq!(next(&mailbox), Poll::Ready(Err(Ended::Forbidden)));

        let stopped = Mailbox::default();
        stopped.offer(&changes(1), 8);
        stopped.end(Ended::Stopped);
        assert_eq!(
            next(&stopped),
            Poll::Ready(Ok(1)),
            "queued changes come first"
        );
        assert_eq!(next(&stopped), Poll::Ready(Err(Ended::Stopped)));
    }
}
