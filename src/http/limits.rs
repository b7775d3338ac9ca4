//! Abuse limits per user: a token bucket on mutations, and a cap on open websockets.
//! (Subscriptions per connection are capped by the connection itself.) Both are per
//! process: behind a load balancer each replica applies them to the requests it sees.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_graphql::{ErrorExtensionValues, ServerError, Value};

use crate::config::LimitSettings;
use crate::domain::UserId;
use crate::sync::lock;

/// Past this many users tracked, buckets that have filled up again are dropped.
const SWEEP_AT: usize = 10_000;

pub struct Limits {
    settings: LimitSettings,
    buckets: Mutex<HashMap<UserId, Bucket>>,
    sockets: Arc<Mutex<HashMap<UserId, usize>>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Self {
        Self {
            settings,
            buckets: Mutex::new(HashMap::new()),
            sockets: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn subscriptions_per_connection(&self) -> usize {
        self.settings.subscriptions_per_connection
    }

    /// Takes a token for one mutation by `user`, or says how long until one is free.
    pub fn mutation(&self, user: &UserId) -> Result<(), Duration> {
        let rate = self.settings.mutations_per_second;
        let burst = self.settings.mutation_burst.max(1) as f64;
        if rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, b| b.tokens + b.at.elapsed().as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(user.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }

    /// Registers one more websocket of `user`; `None` when the user has as many open as
    /// allowed. The registration ends when the returned guard is dropped.
    pub fn websocket(&self, user: &UserId) -> Option<SocketGuard> {
        let mut sockets = lock(&self.sockets);
        let open = sockets.entry(user.clone()).or_default();
        if *open >= self.settings.websockets_per_user {
            if *open == 0 {
                sockets.remove(user);
            }
            return None;
        }
        *open += 1;
        Some(SocketGuard {
            sockets: self.sockets.clone(),
            user: user.clone(),
        })
    }
}

/// One open websocket of a user, counted until dropped.
pub struct SocketGuard {
    sockets: Arc<Mutex<HashMap<UserId, usize>>>,
    user: UserId,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let mut sockets = lock(&self.sockets);
        if let Some(open) = sockets.get_mut(&self.user) {
            *open -= 1;
            if *open == 0 {
                sockets.remove(&self.user);
            }
        }
    }
}

/// `RATE_LIMITED`, with when to try again (whole seconds, at least 1).
pub fn rate_limited(message: &str, retry_after: Duration) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = ErrorExtensionValues::default();
    extensions.set("code", Value::from("RATE_LIMITED"));
    extensions.set("retryAfterSeconds", Value::from(retry_seconds(retry_after)));
    error.extensions = Some(extensions);
    error
}

pub fn retry_seconds(retry_after: Duration) -> u64 {
    retry_after.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits_of(rate: f64, burst: usize, sockets: usize) -> Limits {
        Limits::new(LimitSettings {
            mutations_per_second: rate,
            mutation_burst: burst,
            websockets_per_user: sockets,
            ..Default::default()
        })
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let limits = limits_of(10.0, 3, 1);
        let (alice, bob) = (
            UserId::parse("alice").unwrap(),
            UserId::parse("bob").unwrap(),
        );
        for _ in 0..3 {
            limits.mutation(&alice).unwrap();
        }
        let wait = limits.mutation(&alice).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        limits.mutation(&bob).expect("buckets are per user");
        std::thread::sleep(wait);
        limits.mutation(&alice).expect("refilled");
        assert!(
            limits_of(0.0, 1, 1).mutation(&alice).is_ok(),
            "0 turns the limit off"
        );
    }

    #[test]
    fn websockets_are_counted_until_closed() {
        let limits = limits_of(1.0, 1, 2);
        let alice = UserId::parse("alice").unwrap();
        let first = limits.websocket(&alice).unwrap();
        let _second = limits.websocket(&alice).unwrap();
        assert!(limits.websocket(&alice).is_none());
        drop(first);
        assert!(limits.websocket(&alice).is_some());
    }
}
