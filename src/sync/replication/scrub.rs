//! The scrub: one server at a time (the holder of the `scrub` lease, whose payload is
//! where the pass stands) checks every copy of every space against its checksum, at
//! `replication.scrub`'s pace, then rests for `pass_interval`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::jobs::CHECK_PAGE;
use super::{describe, stopped_during};
use crate::domain::{Millis, SpaceId, StoreId};
use crate::sync::{SyncService, millis, now};

const LEASE_NAME: &str = "scrub";
const LEASE: Duration = Duration::from_secs(60);

/// Where a pass stands, kept with the lease so that the next holder goes on from there.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Pass {
    /// No pass before this (the rest after a full pass).
    next_pass_at: Millis,
    spaces_cursor: Option<String>,
    listed_all: bool,
    started: bool,
    queue: Vec<String>,
    space: Option<String>,
    after: Option<(String, String)>,
}

impl SyncService {
    pub(super) async fn run_scrub(self, stop: CancellationToken) {
        if !self.replication().settings.scrub.enabled {
            return;
        }
        loop {
            match self.hold_scrub(&stop).await {
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %describe(&e), "scrub interrupted"),
            }
            if stopped_during(&stop, LEASE / 2).await {
                return;
            }
        }
    }

    /// Takes the lease and scrubs while it holds it; returns when it is held elsewhere.
    async fn hold_scrub(&self, stop: &CancellationToken) -> crate::sync::Result<()> {
        let replication = self.replication();
        let copies = &self.inner.store.copies;
        let owner = replication.owner.as_str();
        let at = now();
        let Some(payload) = copies
            .take_lease(LEASE_NAME, owner, at, at + millis(LEASE), None)
            .await?
        else {
            return Ok(());
        };
        let mut pass: Pass = payload
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default();
        let mut renewed_at = std::time::Instant::now();
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let at = now();
            if at < pass.next_pass_at {
                let rest = Duration::from_millis((pass.next_pass_at - at) as u64).min(LEASE / 3);
                if stopped_during(stop, rest).await {
                    return Ok(());
                }
            } else if !self.scrub_step(&mut pass, &mut renewed_at).await? {
                return Ok(());
            }
            if renewed_at.elapsed() >= LEASE / 6 || at < pass.next_pass_at {
                if !self.renew_scrub(&pass).await? {
                    return Ok(());
                }
                renewed_at = std::time::Instant::now();
            }
        }
    }

    /// Renews the lease with where the pass stands; `false` when it is held elsewhere.
    async fn renew_scrub(&self, pass: &Pass) -> crate::sync::Result<bool> {
        let payload = serde_json::to_string(pass).expect("a pass serialises");
        let at = now();
        Ok(self
            .inner
            .store
            .copies
            .take_lease(
                LEASE_NAME,
                &self.replication().owner,
                at,
                at + millis(LEASE),
                Some(&payload),
            )
            .await?
            .is_some())
    }

    /// One page of the pass: a page of spaces listed, or a page of a space's copies
    /// checked (the lease renewed between checks as needed); `false` when the lease was
    /// lost meanwhile.
    async fn scrub_step(
        &self,
        pass: &mut Pass,
        renewed_at: &mut std::time::Instant,
    ) -> crate::sync::Result<bool> {
        let copies = &self.inner.store.copies;
        let Some(space) = pass
            .space
            .as_deref()
            .and_then(|s| s.parse::<SpaceId>().ok())
        else {
            if let Some(next) = pass.queue.pop() {
                pass.space = Some(next);
                pass.after = None;
                return Ok(true);
            }
            if pass.started && pass.listed_all {
                tracing::info!("scrub pass done");
                *pass = Pass {
                    next_pass_at: now() + millis(self.replication().settings.scrub.pass_interval),
                    ..Pass::default()
                };
                return Ok(true);
            }
            let (spaces, next) = copies.spaces_page(pass.spaces_cursor.take(), 100).await?;
            pass.started = true;
            pass.listed_all = next.is_none();
            pass.spaces_cursor = next;
            pass.queue = spaces.iter().map(ToString::to_string).collect();
            return Ok(true);
        };
        let after = pass
            .after
            .clone()
            .map(|(k, s)| (k, StoreId::from_stored(s)));
        let page = copies.copies_page(space, after, CHECK_PAGE).await?;
        for copy in &page {
            self.check_copy(copy).await;
            if renewed_at.elapsed() >= LEASE / 6 {
                if !self.renew_scrub(pass).await? {
                    return Ok(false);
                }
                *renewed_at = std::time::Instant::now();
            }
        }
        match page.last() {
            Some(last) if page.len() == CHECK_PAGE => {
                pass.after = Some((last.content.blob_key.clone(), last.store.to_string()));
            }
            _ => {
                pass.space = None;
                pass.after = None;
            }
        }
        Ok(true)
    }
}
