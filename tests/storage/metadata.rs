//! `MetadataStore`: spaces and members, atomic publishes with gap-free seqs, history, the
//! commit log, pending uploads.

use std::collections::BTreeSet;

use filesync::domain::{
    ChangeKind, Content, FileId, FileName, Metadata, MetadataEntry, Multipart, PendingUpload, Role,
    Sha256, SpaceId, SpaceName, UploadId, UploadMethod, UploadState, UserId,
};
use filesync::storage::{MetadataStore, Publish, StoreError};

use crate::backend;

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn content(tag: u8) -> Content {
    Content {
        blob_key: format!("blob-{tag}"),
        size: u64::from(tag),
        sha256: Sha256([tag; 32]),
        content_type: Some("text/plain".to_owned()),
    }
}

async fn new_space(meta: &dyn MetadataStore, at: i64) -> SpaceId {
    let id = SpaceId::new();
    meta.create_space(id, SpaceName::parse("Team").unwrap(), user("alice"), at)
        .await
        .unwrap();
    id
}

/// A change of `file` in `space`: created (`base` None) or made on top of `base`.
fn change(space: SpaceId, file: FileId, base: Option<u32>, name: &str, tag: u8) -> Publish {
    Publish {
        space_id: space,
        file_id: file,
        base_version: base,
        kind: if base.is_some() {
            ChangeKind::Updated
        } else {
            ChangeKind::Created
        },
        name: FileName::parse(name).unwrap(),
        name_key: FileName::parse(name).unwrap().key(false),
        content: content(tag),
        metadata: Metadata::parse(vec![MetadataEntry {
            key: "tag".to_owned(),
            value: tag.to_string(),
        }])
        .unwrap(),
        deleted: false,
        actor: user("alice"),
        at: 1_000 + i64::from(tag),
        upload: None,
        copy_to: Vec::new(),
    }
}

fn pending(space: SpaceId, name: &str, expires_at: i64) -> PendingUpload {
    PendingUpload {
        id: UploadId::new(),
        token_hash: [7; 32],
        space_id: space,
        file_id: FileId::new(),
        base_version: None,
        name: FileName::parse(name).unwrap(),
        size: 3,
        sha256: Sha256([3; 32]),
        content_type: None,
        metadata: Metadata::default(),
        blob_key: format!("{space}/{}", UploadId::new()),
        author: user("alice"),
        created_at: expires_at - 10,
        expires_at,
        state: UploadState::Pending,
        committed_version: None,
        method: UploadMethod::Put,
        multipart: None,
    }
}

#[tokio::test]
async fn spaces_have_members_and_always_an_owner() {
    let store = backend().await;
    let meta = &*store.meta;
    let first = new_space(meta, 1).await;
    let second = new_space(meta, 2).await;

    let space = meta.space(first).await.unwrap().expect("created");
    assert_eq!((space.seq, space.created_by.as_str()), (0, "alice"));
    assert!(meta.space(SpaceId::new()).await.unwrap().is_none());
    let listed: Vec<_> = meta.spaces_of(&user("alice"), None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|(s, r)| (s.id, *r)).collect::<Vec<_>>(),
        [(first, Role::Owner), (second, Role::Owner)],
        "by creation time"
    );
    // Paged: at most `limit`, after a space.
    let page = meta.spaces_of(&user("alice"), None, 1).await.unwrap();
    assert_eq!(page.iter().map(|(s, _)| s.id).collect::<Vec<_>>(), [first]);
    let rest = meta
        .spaces_of(&user("alice"), Some(first), 10)
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|(s, _)| s.id).collect::<Vec<_>>(), [second]);

    meta.set_member(first, user("bob"), Some(Role::Editor))
        .await
        .unwrap();
    assert_eq!(
        meta.role(first, &user("bob")).await.unwrap(),
        Some(Role::Editor)
    );
    assert_eq!(meta.role(second, &user("bob")).await.unwrap(), None);
    assert_eq!(
        meta.spaces_of(&user("bob"), None, 10).await.unwrap().len(),
        1
    );
    let after_alice = meta.members(first, Some(&user("alice")), 10).await.unwrap();
    assert_eq!(
        after_alice
            .iter()
            .map(|m| m.user.as_str())
            .collect::<Vec<_>>(),
        ["bob"],
        "paged by user id"
    );
    let mut members: Vec<_> = meta
        .members(first, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.user.as_str().to_owned(), m.role))
        .collect();
    members.sort();
    assert_eq!(
        members,
        [
            ("alice".to_owned(), Role::Owner),
            ("bob".to_owned(), Role::Editor)
        ]
    );

    let last = meta.set_member(first, user("alice"), None).await;
    assert!(matches!(last, Err(StoreError::LastOwner)), "{last:?}");
    let demoted = meta
        .set_member(first, user("alice"), Some(Role::Viewer))
        .await;
    assert!(matches!(demoted, Err(StoreError::LastOwner)), "{demoted:?}");
    meta.set_member(first, user("bob"), Some(Role::Owner))
        .await
        .unwrap();
    meta.set_member(first, user("alice"), None).await.unwrap();
    assert_eq!(meta.role(first, &user("alice")).await.unwrap(), None);
    meta.set_member(first, user("bob"), None)
        .await
        .expect_err("bob is the last owner now");
}

#[tokio::test]
async fn a_publish_moves_the_file_its_history_and_the_seq_together() {
    let store = backend().await;
    let meta = &*store.meta;
    let space = new_space(meta, 1).await;
    let file = FileId::new();

    let created = meta
        .publish(change(space, file, None, "docs/a.txt", 1))
        .await
        .unwrap();
    assert_eq!((created.version, created.seq), (1, 1));
    let updated = meta
        .publish(change(space, file, Some(1), "docs/a.txt", 2))
        .await
        .unwrap();
    assert_eq!((updated.version, updated.seq), (2, 2));
    assert_eq!(updated.content, content(2));
    assert_eq!(updated.created_at, created.created_at, "created once");

    assert_eq!(meta.file(file).await.unwrap(), Some(updated.clone()));
    let (seen, role) = meta.file_for(file, &user("alice")).await.unwrap().unwrap();
    assert_eq!((seen.version, role), (2, Some(Role::Owner)));
    let (_, role) = meta.file_for(file, &user("eve")).await.unwrap().unwrap();
    assert_eq!(role, None);
    assert_eq!(meta.space(space).await.unwrap().unwrap().seq, 2);
    let history = meta.versions(file, 0, 100).await.unwrap();
    assert_eq!(
        meta.versions(file, 1, 100).await.unwrap(),
        history[1..],
        "after a version"
    );
    assert_eq!(
        meta.versions(file, 0, 1).await.unwrap(),
        history[..1],
        "at most limit"
    );
    assert_eq!(
        history
            .iter()
            .map(|v| (v.number, v.seq, v.kind))
            .collect::<Vec<_>>(),
        [(1, 1, ChangeKind::Created), (2, 2, ChangeKind::Updated)]
    );
    assert_eq!(
        meta.version(file, 1).await.unwrap().unwrap().content,
        content(1)
    );
    assert!(meta.version(file, 3).await.unwrap().is_none());

    // A stale base is a conflict that names the current version, and changes nothing.
    let stale = meta
        .publish(change(space, file, Some(1), "docs/a.txt", 3))
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { current: 2 })),
        "{stale:?}"
    );
    // A live name is taken.
    let other = FileId::new();
    let taken = meta
        .publish(change(space, other, None, "docs/a.txt", 4))
        .await;
    match taken {
        Err(StoreError::NameTaken { file_id, current }) => {
            assert_eq!((file_id, current), (file, 2));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        meta.space(space).await.unwrap().unwrap().seq,
        2,
        "no seq spent"
    );
    assert_eq!(meta.versions(file, 0, 100).await.unwrap().len(), 2);
    assert!(meta.file(other).await.unwrap().is_none());

    // A rename frees the old name; a delete leaves a tombstone and frees its name.
    let renamed = meta
        .publish(change(space, file, Some(2), "docs/b.txt", 5))
        .await
        .unwrap();
    let name = |n: &str| FileName::parse(n).unwrap().key(false);
    assert!(
        meta.file_keyed(space, &name("docs/a.txt"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        meta.file_keyed(space, &name("docs/b.txt")).await.unwrap(),
        Some(renamed)
    );
    let mut delete = change(space, file, Some(3), "docs/b.txt", 6);
    delete.kind = ChangeKind::Deleted;
    delete.deleted = true;
    let tombstone = meta.publish(delete).await.unwrap();
    assert!(tombstone.deleted);
    assert_eq!((tombstone.version, tombstone.seq), (4, 4));
    assert!(
        meta.file_keyed(space, &name("docs/b.txt"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        meta.list_files(space, "", None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let changed = meta.changes(space, 0, 10).await.unwrap();
    assert_eq!(changed, [tombstone], "tombstones are changes");
    meta.publish(change(space, other, None, "docs/b.txt", 7))
        .await
        .expect("the name is free again");
}

#[tokio::test]
async fn listing_is_by_name_and_the_commit_log_by_seq() {
    let store = backend().await;
    let meta = &*store.meta;
    let space = new_space(meta, 1).await;
    let names = ["b/2.txt", "a/1.txt", "b/1.txt", "c.txt", "b/3.txt"];
    let mut files = Vec::new();
    for (tag, name) in (1..).zip(names) {
        let file = FileId::new();
        meta.publish(change(space, file, None, name, tag))
            .await
            .unwrap();
        files.push(file);
    }
    // Touch the first file again: it moves to the end of `changes`.
    meta.publish(change(space, files[0], Some(1), "b/2.txt", 9))
        .await
        .unwrap();

    let listed = |page: Vec<filesync::domain::FileRecord>| {
        page.into_iter()
            .map(|f| f.name.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        listed(meta.list_files(space, "b/", None, 2).await.unwrap()),
        ["b/1.txt", "b/2.txt"]
    );
    assert_eq!(
        listed(
            meta.list_files(space, "b/", Some("b/2.txt"), 2)
                .await
                .unwrap()
        ),
        ["b/3.txt"]
    );
    assert_eq!(
        meta.list_files(space, "", None, 100).await.unwrap().len(),
        5
    );

    let seqs =
        |page: &[filesync::domain::FileRecord]| page.iter().map(|f| f.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(&meta.changes(space, 0, 100).await.unwrap()),
        [2, 3, 4, 5, 6]
    );
    assert_eq!(seqs(&meta.changes(space, 3, 2).await.unwrap()), [4, 5]);
    assert!(meta.changes(space, 6, 10).await.unwrap().is_empty());

    let log = meta.commit_log(space, 0, 4).await.unwrap();
    assert_eq!(
        log.iter().map(|c| c.file.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    let rest = meta.commit_log(space, 4, 100).await.unwrap();
    assert_eq!(
        rest.iter()
            .map(|c| (c.file.seq, c.file.version, c.kind))
            .collect::<Vec<_>>(),
        [(5, 1, ChangeKind::Created), (6, 2, ChangeKind::Updated)],
        "each entry is the file as that change left it"
    );
    let other = new_space(meta, 2).await;
    assert!(
        meta.commit_log(other, 0, 10).await.unwrap().is_empty(),
        "spaces never mix"
    );
}

/// Concurrent publishes: every seq is used exactly once (no gap, no duplicate), and of
/// writers racing on one base version exactly one wins.
#[tokio::test]
async fn concurrent_publishes_take_every_seq_once() {
    let store = backend().await;
    let space = new_space(&*store.meta, 1).await;
    const WRITERS: u8 = 12;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|n| {
            let meta = store.meta.clone();
            tokio::spawn(async move {
                let file = FileId::new();
                let name = format!("f{n}.txt");
                meta.publish(change(space, file, None, &name, n))
                    .await
                    .unwrap();
                meta.publish(change(space, file, Some(1), &name, n))
                    .await
                    .unwrap();
                file
            })
        })
        .collect();
    let mut files = Vec::new();
    for task in tasks {
        files.push(task.await.unwrap());
    }
    let log = store.meta.commit_log(space, 0, 1000).await.unwrap();
    let total = u64::from(WRITERS) * 2;
    assert_eq!(
        log.iter().map(|c| c.file.seq).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    assert_eq!(store.meta.space(space).await.unwrap().unwrap().seq, total);

    let racers: Vec<_> = (0..6)
        .map(|n| {
            let meta = store.meta.clone();
            let file = files[0];
            tokio::spawn(async move {
                meta.publish(change(space, file, Some(2), "f0.txt", 100 + n))
                    .await
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(file) => {
                won += 1;
                assert_eq!((file.version, file.seq), (3, total + 1));
            }
            Err(StoreError::Conflict { current: 3 }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(
        store.meta.versions(files[0], 0, 100).await.unwrap().len(),
        3
    );
}

#[tokio::test]
async fn an_upload_is_published_once_or_abandoned() {
    let store = backend().await;
    let meta = &*store.meta;
    let space = new_space(meta, 1).await;
    let upload = pending(space, "u.txt", 5_000);
    meta.create_upload(upload.clone()).await.unwrap();
    assert_eq!(meta.upload(upload.id).await.unwrap(), Some(upload.clone()));
    assert!(meta.upload(UploadId::new()).await.unwrap().is_none());
    // A multipart upload keeps its plan and the object store's id for it, through an
    // abandon too.
    let mut parts = pending(space, "big.bin", 5_000);
    parts.size = 20 << 30;
    parts.method = UploadMethod::Multipart;
    parts.multipart = Some(Multipart {
        part_size: 8 << 20,
        part_count: 2_560,
        store_id: "store-id.with~odd_chars".into(),
    });
    meta.create_upload(parts.clone()).await.unwrap();
    assert_eq!(meta.upload(parts.id).await.unwrap(), Some(parts.clone()));
    assert!(meta.abandon_upload(parts.id, 5_500).await.unwrap());
    let abandoned = meta.upload(parts.id).await.unwrap().unwrap();
    assert_eq!(
        (abandoned.method, abandoned.multipart),
        (UploadMethod::Multipart, parts.multipart)
    );
    meta.upload_purged(parts.id).await.unwrap();

    let mut publish = change(space, upload.file_id, None, "u.txt", 1);
    publish.upload = Some(upload.id);
    let file = meta.publish(publish.clone()).await.unwrap();
    let committed = meta.upload(upload.id).await.unwrap().unwrap();
    assert_eq!(
        (committed.state, committed.committed_version),
        (UploadState::Committed, Some(1))
    );
    publish.base_version = Some(1);
    let again = meta.publish(publish).await;
    assert!(
        matches!(again, Err(StoreError::UploadNotPending)),
        "{again:?}"
    );
    assert!(!meta.abandon_upload(upload.id, 0).await.unwrap());
    assert_eq!(meta.file(file.id).await.unwrap().unwrap().version, 1);

    let dropped = pending(space, "v.txt", 6_000);
    meta.create_upload(dropped.clone()).await.unwrap();
    assert!(meta.abandon_upload(dropped.id, 6_500).await.unwrap());
    assert!(
        !meta.abandon_upload(dropped.id, 6_500).await.unwrap(),
        "once"
    );
    let mut late = change(space, dropped.file_id, None, "v.txt", 2);
    late.upload = Some(dropped.id);
    let refused = meta.publish(late).await;
    assert!(
        matches!(refused, Err(StoreError::UploadNotPending)),
        "{refused:?}"
    );
    assert!(meta.file(dropped.file_id).await.unwrap().is_none());
    assert_eq!(meta.space(space).await.unwrap().unwrap().seq, 1);

    // The sweeper's list: expired pending uploads, and the abandoned one whose content
    // is due for removal (from 6,500 on), oldest expiry first, up to the limit.
    let ids: Vec<_> = [9_000, 7_000, 8_000, 20_000]
        .into_iter()
        .map(|at| pending(space, "w.txt", at))
        .collect();
    for upload in &ids {
        meta.create_upload(upload.clone()).await.unwrap();
    }
    let expiries = |due: Vec<PendingUpload>| due.iter().map(|u| u.expires_at).collect::<Vec<_>>();
    let due = meta.uploads_to_sweep(10_000, 10).await.unwrap();
    assert_eq!(expiries(due), [6_000, 7_000, 8_000, 9_000]);
    let early = meta.uploads_to_sweep(6_400, 10).await.unwrap();
    assert!(early.is_empty(), "not due before its purge time: {early:?}");
    assert_eq!(meta.uploads_to_sweep(10_000, 2).await.unwrap().len(), 2);
    // Its content removed for good, the abandoned upload leaves the list.
    meta.upload_purged(dropped.id).await.unwrap();
    let due = meta.uploads_to_sweep(10_000, 10).await.unwrap();
    assert_eq!(expiries(due), [7_000, 8_000, 9_000]);
    assert_eq!(
        meta.upload(dropped.id).await.unwrap().unwrap().state,
        UploadState::Abandoned
    );
    // Pending and unexpired, per author: the two of the four still pending after 8,500.
    assert_eq!(
        meta.pending_uploads_of(&user("alice"), 8_500)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        meta.pending_uploads_of(&user("alice"), 30_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(meta.pending_uploads_of(&user("bob"), 0).await.unwrap(), 0);
    let all: BTreeSet<_> = meta
        .uploads_to_sweep(i64::MAX, 100)
        .await
        .unwrap()
        .iter()
        .map(|u| u.id)
        .collect();
    assert!(
        !all.contains(&upload.id),
        "a committed upload is never swept"
    );
    assert!(
        !all.contains(&dropped.id),
        "a purged upload is not swept again"
    );
}

#[tokio::test]
async fn space_settings_are_kept_whole_and_apart() {
    use filesync::domain::SpaceSettings;
    let store = backend().await;
    let meta = &*store.meta;
    let (space, other) = (new_space(meta, 1).await, new_space(meta, 2).await);
    assert_eq!(
        meta.space_settings(space).await.unwrap(),
        Some(SpaceSettings::default())
    );
    assert_eq!(meta.space_settings(SpaceId::new()).await.unwrap(), None);
    let settings =
        SpaceSettings::parse(Some(5), vec!["image/*".into()], vec!["png".into()], false).unwrap();
    assert!(
        meta.set_space_settings(space, settings.clone(), true)
            .await
            .unwrap()
    );
    assert_eq!(meta.space_settings(space).await.unwrap(), Some(settings));
    assert_eq!(
        meta.space_settings(other).await.unwrap(),
        Some(SpaceSettings::default())
    );
    // A publish (which moves the space's seq) keeps them.
    meta.publish(change(space, FileId::new(), None, "a.png", 1))
        .await
        .unwrap();
    assert_eq!(
        meta.space_settings(space)
            .await
            .unwrap()
            .unwrap()
            .max_file_size,
        Some(5)
    );
    // Once the space has a change, a change that must come before any is refused.
    assert!(
        !meta
            .set_space_settings(space, SpaceSettings::default(), true)
            .await
            .unwrap()
    );
    assert!(
        meta.set_space_settings(space, SpaceSettings::default(), false)
            .await
            .unwrap()
    );
    let missing = meta
        .set_space_settings(SpaceId::new(), SpaceSettings::default(), false)
        .await;
    assert!(
        matches!(missing, Err(StoreError::NoSuchSpace)),
        "{missing:?}"
    );
}

/// Names are unique by their key (case and look-alikes folded), a file is never a folder
/// of another live file, and listings go by key.
#[tokio::test]
async fn names_are_unique_by_key_and_never_clash_with_folders() {
    let store = backend().await;
    let meta = &*store.meta;
    let space = new_space(meta, 1).await;
    let readme = FileId::new();
    meta.publish(change(space, readme, None, "README.md", 1))
        .await
        .unwrap();
    let refused = meta
        .publish(change(space, FileId::new(), None, "readme.md", 2))
        .await;
    assert!(
        matches!(refused, Err(StoreError::NameTaken { file_id, .. }) if file_id == readme),
        "{refused:?}"
    );
    // A file where a folder must be, and a folder where a file is.
    let doc = FileId::new();
    meta.publish(change(space, doc, None, "docs/a.txt", 3))
        .await
        .unwrap();
    for clash in ["docs", "DOCS", "docs/a.txt/b", "Docs/A.TXT/deeper/c"] {
        let result = meta
            .publish(change(space, FileId::new(), None, clash, 4))
            .await;
        assert!(
            matches!(result, Err(StoreError::PathClash { .. })),
            "{clash}: {result:?}"
        );
    }
    // The clash ends with the file: once `docs/a.txt` is renamed away, `docs` is free.
    meta.publish(change(space, doc, Some(1), "notes.txt", 5))
        .await
        .unwrap();
    let docs = FileId::new();
    meta.publish(change(space, docs, None, "docs", 6))
        .await
        .expect("no file is under docs any more");
    // A file may move into a folder named as itself was: `docs` to `docs/docs`.
    meta.publish(change(space, docs, Some(1), "docs/docs", 7))
        .await
        .expect("a file moving under its own old name");
    meta.publish(change(space, docs, Some(2), "docs", 8))
        .await
        .expect("and back onto the folder it alone was in");
    assert_eq!(meta.space(space).await.unwrap().unwrap().seq, 6);
    // Listings go by key, and a key prefix.
    let keys: Vec<String> = meta
        .list_files(space, "", None, 10)
        .await
        .unwrap()
        .iter()
        .map(|f| f.name.as_str().to_owned())
        .collect();
    assert_eq!(keys, ["docs", "notes.txt", "README.md"]);
    let under = meta
        .list_files(
            space,
            &FileName::parse("READ").unwrap().key(false).to_string(),
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(under.len(), 1);
}

/// A file and a folder of the same name, created at the same moment: never both.
#[tokio::test]
async fn a_file_and_a_folder_of_one_name_never_both_win_a_race() {
    let store = backend().await;
    let meta = &*store.meta;
    let space = new_space(meta, 1).await;
    for round in 0..10u8 {
        let folder = format!("r{round}");
        let inside = format!("r{round}/x.txt");
        let (a, b) = tokio::join!(
            meta.publish(change(space, FileId::new(), None, &folder, round)),
            meta.publish(change(space, FileId::new(), None, &inside, round)),
        );
        let won = [a.is_ok(), b.is_ok()];
        assert_eq!(
            won.iter().filter(|w| **w).count(),
            1,
            "round {round}: {a:?} {b:?}"
        );
        for lost in [a, b].into_iter().filter_map(Result::err) {
            assert!(
                matches!(lost, StoreError::PathClash { .. }),
                "round {round}: {lost:?}"
            );
        }
    }
}
