//! The live path against a store that fails or misbehaves on demand
//! ([`crate::sync::testing`]): errors on one space, holes in reads, lost notices.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::hub::{Ended, Hub};
use super::{LiveEvent, LiveStream};
use crate::config::Settings;
use crate::domain::{Role, SpaceId, UserId};
use crate::storage::{ChangeFeed, MetadataStore, Notice, Storage};
use crate::sync::testing::{FaultyStore, faulty_storage};
use crate::sync::{Error, FileUpdate, Limits, NewUpload, SyncService};

const PATIENCE: Duration = Duration::from_secs(10);

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

struct Fixture {
    service: SyncService,
    store: Arc<FaultyStore>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A service over a faulty embedded store, its hub running; `feed` replaces the store's
/// own change feed when given.
async fn fixture(feed: Option<Arc<dyn ChangeFeed>>) -> Fixture {
    let (mut storage, store, dir) = faulty_storage().await;
    if let Some(feed) = feed {
        storage.feed = feed;
    }
    fixture_on(storage, store, dir)
}

fn fixture_on(storage: Storage, store: Arc<FaultyStore>, dir: tempfile::TempDir) -> Fixture {
    let service = SyncService::new(storage, Limits::from_settings(&Settings::default()));
    let stop = CancellationToken::new();
    tokio::spawn(service.clone().run_live_hub(stop.clone()));
    Fixture {
        service,
        store,
        stop,
        _dir: dir,
    }
}

impl Fixture {
    async fn space(&self, owner: &str) -> SpaceId {
        self.service
            .create_space(&user(owner), "Team")
            .await
            .unwrap()
            .id
    }

    /// A new file in `space`, written by `owner`; its id.
    async fn file(&self, owner: &str, space: SpaceId, name: &str) -> crate::domain::FileId {
        let body: crate::storage::ByteStream = Box::pin(futures::stream::once(async {
            Ok(bytes::Bytes::from_static(b"x"))
        }));
        let input = NewUpload {
            space_id: space,
            file_id: None,
            name: name.into(),
            size: 1,
            sha256: "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881".into(),
            content_type: None,
            base_version: None,
            metadata: None,
            method: None,
        };
        self.service
            .upload_inline(&user(owner), input, body)
            .await
            .unwrap()
            .id
    }

    /// A metadata change of `file` at `version`; the change's seq.
    async fn touch(&self, owner: &str, file: crate::domain::FileId, version: i32) -> u64 {
        let update = FileUpdate {
            name: None,
            metadata: Some(vec![crate::domain::MetadataEntry {
                key: "v".into(),
                value: version.to_string(),
            }]),
        };
        self.service
            .update_file(&user(owner), file, version, update)
            .await
            .unwrap()
            .seq
    }

    async fn subscribe(&self, who: &str, space: SpaceId, since: Option<u64>) -> LiveStream {
        let since = since.map(|seq| crate::domain::Cursor::new(space, seq).encode());
        self.service
            .subscribe_changes(&user(who), space, since.as_deref(), None)
            .await
            .unwrap()
    }
}

/// The seqs a subscription sends until `READY`.
async fn until_ready(live: &mut LiveStream) -> Vec<u64> {
    let mut seqs = Vec::new();
    loop {
        match next(live).await {
            Ok(LiveEvent::Ready(_)) => return seqs,
            Ok(LiveEvent::Change(c)) => seqs.push(c.file.seq),
            Err(e) => panic!("ended before READY: {e}"),
        }
    }
}

async fn next(live: &mut LiveStream) -> crate::sync::Result<LiveEvent> {
    tokio::time::timeout(PATIENCE, live.next())
        .await
        .expect("an event within the patience")
        .expect("the stream goes on")
}

async fn next_seq(live: &mut LiveStream) -> u64 {
    match next(live).await {
        Ok(LiveEvent::Change(c)) => c.file.seq,
        other => panic!("expected a change, got {other:?}"),
    }
}

async fn quiet(live: &mut LiveStream) -> bool {
    tokio::time::timeout(Duration::from_millis(300), live.next())
        .await
        .is_err()
}

#[tokio::test]
async fn a_space_whose_reads_fail_holds_up_no_other_and_is_delivered_once_it_recovers() {
    let f = fixture(None).await;
    let mut spaces = Vec::new();
    for _ in 0..8 {
        let space = f.space("alice").await;
        let file = f.file("alice", space, "a.txt").await;
        let mut live = f.subscribe("alice", space, None).await;
        until_ready(&mut live).await;
        spaces.push((space, file, live));
    }
    // Seven spaces' commit logs fail; the eighth is healthy.
    f.store.set(|faults| {
        faults.commit_log_fails = spaces[..7].iter().map(|(s, _, _)| *s).collect();
    });
    let mut seqs = Vec::new();
    for (_, file, _) in &spaces {
        seqs.push(f.touch("alice", *file, 1).await);
    }
    let (_, _, healthy) = spaces.last_mut().unwrap();
    assert_eq!(
        next_seq(healthy).await,
        seqs[7],
        "the healthy space is delivered"
    );
    assert!(quiet(&mut spaces[0].2).await, "a failing space waits");

    // Once the store answers, every failed space is delivered, with no new notice.
    f.store.set(|faults| faults.commit_log_fails.clear());
    for (i, (_, _, live)) in spaces[..7].iter_mut().enumerate() {
        assert_eq!(next_seq(live).await, seqs[i], "space {i} after its retry");
    }
}

#[tokio::test]
async fn a_membership_recheck_that_fails_is_tried_again() {
    let f = fixture(None).await;
    let space = f.space("alice").await;
    f.service
        .set_member(&user("alice"), space, "bob", Some(Role::Viewer))
        .await
        .unwrap();
    let mut live = f.subscribe("bob", space, None).await;
    until_ready(&mut live).await;
    f.store.set(|faults| faults.role_fails = true);
    f.store.set_member(space, user("bob"), None).await.unwrap();
    assert!(
        quiet(&mut live).await,
        "nothing is decided while the store fails"
    );
    f.store.set(|faults| faults.role_fails = false);
    let ended = next(&mut live).await;
    assert!(
        matches!(ended, Err(Error::Forbidden(_))),
        "the removal ends it once the recheck works: {ended:?}"
    );
}

/// A feed the test writes notices into itself.
struct ManualFeed(broadcast::Sender<Notice>);

impl ChangeFeed for ManualFeed {
    fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.0.subscribe()
    }
}

#[tokio::test]
async fn a_lagging_hub_rechecks_every_followers_membership() {
    let (storage, _store, _dir) = faulty_storage().await;
    let (sender, _) = broadcast::channel(2);
    let feed = ManualFeed(sender.clone());
    let hub = Hub::new(&feed, storage.meta.clone(), 64);
    let space = storage
        .meta
        .create_space(
            SpaceId::new(),
            crate::domain::SpaceName::parse("Team").unwrap(),
            user("alice"),
            0,
        )
        .await
        .unwrap()
        .id;
    storage
        .meta
        .set_member(space, user("bob"), Some(Role::Viewer))
        .await
        .unwrap();
    let mut attachment = hub.attach(space, user("bob"));
    attachment.go_live(0);
    // Bob leaves; the notice of it is among those the hub misses.
    storage
        .meta
        .set_member(space, user("bob"), None)
        .await
        .unwrap();
    for seq in 1..=10 {
        let _ = sender.send(Notice::Committed {
            space_id: space,
            seq,
        });
    }
    let stop = CancellationToken::new();
    tokio::spawn(hub.clone().run(stop.clone()));
    let ended = tokio::time::timeout(PATIENCE, attachment.next()).await;
    stop.cancel();
    assert_eq!(ended.expect("ended in time").err(), Some(Ended::Forbidden));
}

#[tokio::test]
async fn a_change_after_an_unannounced_removal_is_not_sent() {
    // Notices come only when the test sends them: the hub never hears of the removal.
    let (sender, _) = broadcast::channel(64);
    let f = fixture(Some(Arc::new(ManualFeed(sender.clone())))).await;
    let space = f.space("alice").await;
    let file = f.file("alice", space, "a.txt").await;
    f.service
        .set_member(&user("alice"), space, "bob", Some(Role::Viewer))
        .await
        .unwrap();
    let mut live = f.subscribe("bob", space, None).await;
    until_ready(&mut live).await;
    f.service
        .set_member(&user("alice"), space, "bob", None)
        .await
        .unwrap();
    let seq = f.touch("alice", file, 1).await;
    let _ = sender.send(Notice::Committed {
        space_id: space,
        seq,
    });
    let ended = next(&mut live).await;
    assert!(
        matches!(ended, Err(Error::Forbidden(_))),
        "the change committed after the removal is refused: {ended:?}"
    );
}

#[tokio::test]
async fn a_hole_in_a_read_is_read_again_and_every_change_goes_out_once() {
    let f = fixture(None).await;
    let space = f.space("alice").await;
    let file = f.file("alice", space, "a.txt").await;
    // A first subscriber keeps the hub's deliveries ahead of the second one.
    let mut first = f.subscribe("alice", space, None).await;
    until_ready(&mut first).await;
    let head = f.touch("alice", file, 1).await;
    let hole = f.touch("alice", file, 2).await;
    let after = f.touch("alice", file, 3).await;
    for seq in [head, hole, after] {
        assert_eq!(next_seq(&mut first).await, seq);
    }
    // The second subscriber's reads miss `hole` three times: its replay, its catch-up
    // and its first gap fill all see `after` without it.
    f.store.set(|faults| faults.hidden = Some((space, hole, 3)));
    let mut second = f.subscribe("alice", space, Some(head)).await;
    let mut seqs = until_ready(&mut second).await;
    let last = f.touch("alice", file, 4).await;
    while seqs.last() != Some(&last) {
        seqs.push(next_seq(&mut second).await);
    }
    assert_eq!(
        seqs,
        [hole, after, last],
        "each once, in order, none skipped"
    );
}

#[tokio::test]
async fn a_changes_page_never_passes_the_head_it_read_first() {
    let f = fixture(None).await;
    let space = f.space("alice").await;
    let file = f.file("alice", space, "a.txt").await;
    let head = f.touch("alice", file, 1).await;
    let other = f.file("alice", space, "b.txt").await;
    let later = f.touch("alice", other, 1).await;
    // The head was read just before `later` committed; the listing shows `later`.
    f.store.set(|faults| faults.stale_head = Some(head));
    let page = f
        .service
        .changes(&user("alice"), space, None, None)
        .await
        .unwrap();
    assert!(page.files.iter().all(|file| file.seq <= head));
    assert!(page.has_more, "the client must ask again");
    assert_eq!(page.next_cursor.seq, head);
    f.store.set(|faults| faults.stale_head = None);
    let rest = f
        .service
        .changes(
            &user("alice"),
            space,
            Some(&page.next_cursor.encode()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        rest.files.iter().map(|f| f.seq).collect::<Vec<_>>(),
        [later]
    );
}
