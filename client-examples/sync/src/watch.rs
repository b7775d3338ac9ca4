//! `watch`: stays running and keeps the folder in sync as either side changes.
//!
//! Remote changes come from the `changes` subscription, resumed from the stored cursor
//! (so a change made while the client was down, or while its connection was, arrives on
//! reconnection); local ones from a filesystem watcher, batched for a short quiet
//! moment, plus a rescan of the whole folder every `--rescan` (watchers miss events:
//! queue overflows, network file systems, changes made while the client was down).
//!
//! A file that disappears is deleted on the server only once it has stayed missing for
//! a moment: a rename reported as two events in two batches is then still seen as one
//! rename. The server unreachable: passes are tried again with backoff; the token or
//! the membership gone: the run ends with its exit code.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::api::ApiError;
use crate::api::live::{LiveEvent, Subscription, subscribe};
use crate::failure::Failure;
use crate::pass::{Remote, Scope, Syncer};
use crate::paths::RelPath;
use crate::scan::rules::STATE_DIR;
use crate::tree::RemoteFile;

#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// How often the whole folder is rescanned.
    pub rescan: Duration,
    /// How long events are gathered before a pass.
    pub quiet: Duration,
    /// How long a vanished file must stay missing before its deletion is synced.
    pub hold: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            rescan: Duration::from_secs(60),
            quiet: Duration::from_millis(100),
            hold: Duration::from_millis(1500),
        }
    }
}

/// What the next pass covers.
#[derive(Default)]
struct Batch {
    paths: HashSet<RelPath>,
    full: bool,
    remote: Vec<RemoteFile>,
    cursor: Option<String>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.paths.is_empty() && !self.full && self.remote.is_empty() && self.cursor.is_none()
    }
}

/// Backoff for retries: 1 s doubling to 30 s.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_secs(1))
    }
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(30));
        wait
    }
    fn reset(&mut self) {
        self.0 = Duration::from_secs(1);
    }
}

/// Runs until `stop` resolves (then finishes the pass in progress) or a failure that
/// retrying cannot mend.
pub async fn watch(
    mut syncer: Syncer,
    options: WatchOptions,
    stop: impl Future<Output = ()>,
) -> Result<(), Failure> {
    tokio::pin!(stop);
    let root = syncer.folder.root.clone();
    let (fs_tx, mut fs_rx) = mpsc::unbounded_channel();
    // Links are not followed: what is behind one is outside the folder.
    let mut watcher = notify::RecommendedWatcher::new(
        move |event| {
            let _ = fs_tx.send(event);
        },
        notify::Config::default().with_follow_symlinks(false),
    )
    .map_err(|e| Failure::Other(format!("the folder cannot be watched: {e}")))?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|e| Failure::Other(format!("the folder cannot be watched: {e}")))?;

    let mut batch = Batch {
        full: true,
        ..Batch::default()
    };
    let mut subscription: Option<Subscription> = None;
    let mut connect_at = Instant::now();
    let mut connect_backoff = Backoff::new();
    let mut pass_backoff = Backoff::new();
    let mut pass_at = Some(Instant::now());
    let mut retry_wait = Duration::from_millis(300);
    let mut settle_wait = syncer.options.settle + Duration::from_millis(30);
    // Whether anything new came in since the last pass.
    let mut news = true;
    // The watcher's channel, while it is open (after that, rescans only).
    let mut watching = true;
    let mut rescan_at = Instant::now() + options.rescan;
    let mut missing_since: HashMap<RelPath, Instant> = HashMap::new();
    let mut fetch_first = true;
    syncer
        .report
        .line(format_args!("watching {}", root.display()));
    loop {
        // Connect (again) once the first pass has run and the backoff allows.
        if subscription.is_none() && !fetch_first && Instant::now() >= connect_at {
            let cursor = syncer.folder.state.get("cursor")?;
            match subscribe(&syncer.folder.api, &syncer.folder.space, cursor.as_deref()).await {
                Ok(s) => subscription = Some(s),
                Err(e) => {
                    fatal_or(&e)?;
                    connect_at = Instant::now() + connect_backoff.next();
                }
            }
        }
        let wake = [
            Some(rescan_at),
            pass_at,
            subscription.is_none().then_some(connect_at),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("the rescan is always due some time");
        tokio::select! {
            () = &mut stop => {
                syncer.report.line("stopping");
                return Ok(());
            }
            event = fs_rx.recv(), if watching => {
                news = true;
                match event {
                    Some(Ok(event)) => {
                        if event.need_rescan() {
                            batch.full = true;
                        }
                        for path in &event.paths {
                            if let Ok(rel) = RelPath::from_local(&root, path)
                                && !rel.is_within(STATE_DIR)
                            {
                                batch.paths.insert(rel);
                            }
                        }
                    }
                    Some(Err(_)) => batch.full = true,
                    None => {
                        syncer.report.problem(
                            "",
                            "the filesystem watcher stopped; changes are found by the rescans",
                        );
                        watching = false;
                        batch.full = true;
                    }
                }
                if !batch.is_empty() {
                    pass_at.get_or_insert(Instant::now() + options.quiet);
                }
            }
            event = next_event(&mut subscription) => {
                news = true;
                match event {
                    Some(Ok(LiveEvent::Change { cursor, file })) => {
                        batch.remote.extend(file);
                        batch.cursor = Some(cursor);
                    }
                    Some(Ok(LiveEvent::Ready { cursor })) => {
                        connect_backoff.reset();
                        batch.cursor = Some(cursor);
                    }
                    Some(Err(ApiError::CursorExpired)) => {
                        subscription = None;
                        fetch_first = true;
                        batch.full = true;
                    }
                    Some(Err(e)) => {
                        fatal_or(&e)?;
                        subscription = None;
                        connect_at = Instant::now() + connect_backoff.next();
                    }
                    None => subscription = None,
                }
                if !batch.is_empty() {
                    pass_at.get_or_insert(Instant::now() + options.quiet);
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if now >= rescan_at {
            batch.full = true;
            rescan_at = now + options.rescan;
            pass_at.get_or_insert(now);
        }
        if pass_at.is_none_or(|at| now < at) {
            continue;
        }
        pass_at = None;
        let work = std::mem::take(&mut batch);
        let fresh = std::mem::replace(&mut news, false);
        // Ignore rules changed: the next pass compares a full listing (a file a removed
        // rule hid must arrive), and the subscription resumes after it.
        let (rules, _) = crate::scan::rules::Rules::load(&root);
        if !fetch_first
            && syncer.folder.state.get("ignore_digest")?.as_deref() != Some(&rules.digest)
        {
            fetch_first = true;
            subscription = None;
        }
        let remote = if fetch_first {
            Remote::Fetch
        } else {
            Remote::Events {
                files: work.remote.clone(),
                cursor: work.cursor.clone(),
            }
        };
        let hold = held_deletions(&syncer, &work, &mut missing_since, options.hold);
        if !hold.is_empty() {
            // Looked at again once the hold is over.
            batch.paths.extend(hold.iter().cloned());
            pass_at = Some(now + options.hold / 2);
        }
        let scope = if work.full || fetch_first {
            Scope::Full
        } else {
            let mut paths = work.paths.clone();
            paths.extend(work.remote.iter().map(|r| r.path.clone()));
            let base = syncer.folder.state.base()?;
            paths.extend(
                work.remote
                    .iter()
                    .filter_map(|r| base.get(&r.id).map(|b| b.path.clone())),
            );
            Scope::Paths(paths)
        };
        match syncer.pass(remote, scope, &hold).await {
            Ok(report) => {
                fetch_first = false;
                pass_backoff.reset();
                if !report.changing.is_empty() {
                    // Files being written, deletions on hold: looked at again once they
                    // may have settled; less often while the same files keep changing
                    // with nothing else happening (a log, a database).
                    settle_wait = if fresh || report.done > 0 {
                        syncer.options.settle + Duration::from_millis(30)
                    } else {
                        (settle_wait * 2).min(Duration::from_secs(10))
                    };
                    batch.paths.extend(report.changing.iter().cloned());
                    let at = Instant::now() + settle_wait;
                    pass_at = Some(pass_at.map_or(at, |p| p.min(at)));
                }
                if report.retry {
                    // A change under the plan: again soon, then less often while passes
                    // make no progress.
                    retry_wait = if report.done > 0 {
                        Duration::from_millis(300)
                    } else {
                        (retry_wait * 2).min(Duration::from_secs(10))
                    };
                    let at = Instant::now() + retry_wait;
                    batch.full |= report.changing.is_empty();
                    pass_at = Some(pass_at.map_or(at, |p| p.min(at)));
                }
            }
            Err(Failure::Unreachable(why)) => {
                syncer.report.problem(
                    "",
                    format_args!("the server cannot be reached ({why}); trying again"),
                );
                // Whatever the batch covered is looked at again.
                batch.full = true;
                if work.cursor.is_some() || !work.remote.is_empty() {
                    // The events are replayed on reconnection.
                    subscription = None;
                }
                pass_at = Some(Instant::now() + pass_backoff.next());
            }
            Err(other) => return Err(other),
        }
    }
}

async fn next_event(
    subscription: &mut Option<Subscription>,
) -> Option<Result<LiveEvent, ApiError>> {
    match subscription {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Ends the run for errors retrying cannot mend.
fn fatal_or(e: &ApiError) -> Result<(), Failure> {
    match e {
        ApiError::Unauthenticated(why) => Err(Failure::Unauthenticated(why.clone())),
        ApiError::Forbidden(why) | ApiError::NotFound(why) => Err(Failure::NoAccess(why.clone())),
        _ => Ok(()),
    }
}

/// The base files missing on disk for less than `hold`: their deletion waits.
fn held_deletions(
    syncer: &Syncer,
    work: &Batch,
    missing_since: &mut HashMap<RelPath, Instant>,
    hold: Duration,
) -> HashSet<RelPath> {
    let Ok(base) = syncer.folder.state.base() else {
        return HashSet::new();
    };
    let root = &syncer.folder.root;
    let now = Instant::now();
    let mut held = HashSet::new();
    let mut still_missing = HashSet::new();
    for b in base.values() {
        let in_scope = work.full || work.paths.iter().any(|p| b.path.is_within(p.as_str()));
        if !in_scope && !missing_since.contains_key(&b.path) {
            continue;
        }
        if std::fs::symlink_metadata(b.path.to_local(root)).is_ok() {
            continue;
        }
        still_missing.insert(b.path.clone());
        let since = *missing_since.entry(b.path.clone()).or_insert(now);
        if now.duration_since(since) < hold {
            held.insert(b.path.clone());
        }
    }
    missing_since.retain(|p, _| still_missing.contains(p));
    held
}
