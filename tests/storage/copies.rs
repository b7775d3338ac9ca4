//! `CopyQueue`: replication's queue of copies, kept beside the versions it copies.

use filesync::domain::{
    ChangeKind, Content, CopyOutcome, CopyStatus, FileId, FileName, Metadata, NewCopy,
    ReplicationJob, Sha256, SpaceId, SpaceName, StoreId, UserId,
};
use filesync::storage::{MetadataStore, Publish, StoreError};

use crate::backend;

fn store(id: &str) -> StoreId {
    StoreId::parse(id).unwrap()
}

fn content(space: SpaceId, tag: u8) -> Content {
    Content {
        blob_key: format!("{space}/{}", uuid::Uuid::from_bytes([tag; 16])),
        size: 100 + u64::from(tag),
        sha256: Sha256([tag; 32]),
        content_type: Some("text/plain".into()),
    }
}

async fn new_space(meta: &dyn MetadataStore) -> SpaceId {
    let id = SpaceId::new();
    meta.create_space(
        id,
        SpaceName::parse("Copies").unwrap(),
        UserId::parse("alice").unwrap(),
        1,
    )
    .await
    .unwrap();
    id
}

fn publish(
    space: SpaceId,
    file: FileId,
    base: Option<u32>,
    c: Content,
    copy_to: &[StoreId],
) -> Publish {
    let name = FileName::parse(&format!("f-{file}.txt")).unwrap();
    Publish {
        space_id: space,
        file_id: file,
        base_version: base,
        kind: if base.is_some() {
            ChangeKind::Updated
        } else {
            ChangeKind::Created
        },
        name_key: name.key(false),
        name,
        content: c,
        metadata: Metadata::default(),
        deleted: false,
        actor: UserId::parse("alice").unwrap(),
        at: 5_000,
        upload: None,
        copy_to: copy_to.to_vec(),
    }
}

#[tokio::test]
async fn a_publish_queues_its_copies_with_the_version_and_only_then() {
    let b = backend().await;
    let space = new_space(&*b.meta).await;
    let targets = [StoreId::primary(), store("a"), store("b")];
    let file = FileId::new();
    let first = content(space, 1);
    b.meta
        .publish(publish(space, file, None, first.clone(), &targets))
        .await
        .unwrap();
    let copies = b.copies.copies_of(space, &first.blob_key).await.unwrap();
    let by_store: Vec<(&str, CopyStatus, bool)> = copies
        .iter()
        .map(|c| (c.store.as_str(), c.status, c.due_at.is_some()))
        .collect();
    assert_eq!(
        by_store,
        [
            ("a", CopyStatus::Pending, true),
            ("b", CopyStatus::Pending, true),
            ("primary", CopyStatus::Ok, false),
        ]
    );
    assert!(
        copies
            .iter()
            .all(|c| c.content == first && c.committed_at == 5_000)
    );

    // A refused publish (a conflict) queues nothing; nor does one without new content.
    let refused = content(space, 2);
    let err = b
        .meta
        .publish(publish(space, file, Some(7), refused.clone(), &targets))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert!(
        b.copies
            .copies_of(space, &refused.blob_key)
            .await
            .unwrap()
            .is_empty()
    );
    b.meta
        .publish(publish(space, file, Some(1), first.clone(), &[]))
        .await
        .unwrap();
    assert_eq!(
        b.copies
            .copies_of(space, &first.blob_key)
            .await
            .unwrap()
            .len(),
        3
    );

    // Pages run by (object, store), resumable after any copy.
    let second = content(space, 3);
    b.meta
        .publish(publish(
            space,
            FileId::new(),
            None,
            second.clone(),
            &targets,
        ))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = b.copies.copies_page(space, after.take(), 2).await.unwrap();
        seen.extend(
            page.iter()
                .map(|c| (c.content.blob_key.clone(), c.store.clone())),
        );
        match page.last() {
            Some(last) if page.len() == 2 => {
                after = Some((last.content.blob_key.clone(), last.store.clone()))
            }
            _ => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen.len(), 6);
    assert_eq!(seen, sorted, "pages are ordered and do not repeat");
}

#[tokio::test]
async fn a_claim_is_exclusive_until_its_lease_ends_and_outcomes_need_it() {
    let b = backend().await;
    let space = new_space(&*b.meta).await;
    let c = content(space, 1);
    b.meta
        .publish(publish(
            space,
            FileId::new(),
            None,
            c.clone(),
            &[StoreId::primary(), store("a")],
        ))
        .await
        .unwrap();
    let q = &b.copies;
    let a = store("a");
    let t = 10_000;
    assert!(
        q.claim_copies(&a, 4_000, 4_500, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    let first = q.claim_copies(&a, t, t + 1_000, 10).await.unwrap();
    assert_eq!(first.len(), 1);
    assert!(
        q.claim_copies(&a, t + 10, t + 1_010, 10)
            .await
            .unwrap()
            .is_empty(),
        "claimed"
    );
    assert!(
        q.claim_copies(&StoreId::primary(), t, t + 1_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(q.renew_copy(&first[0], t + 1_500).await.unwrap());
    // The lease ran out: another worker takes the copy over, and the first one's claim
    // is good for nothing any more.
    let second = q.claim_copies(&a, t + 1_600, t + 2_600, 10).await.unwrap();
    assert_eq!(second.len(), 1);
    assert!(!q.renew_copy(&first[0], t + 3_000).await.unwrap());
    assert!(
        !q.finish_copy(&first[0], CopyOutcome::Copied, t + 1_700)
            .await
            .unwrap()
    );

    // Failed: attempts and the error kept, due again at the retry time only.
    let failed = CopyOutcome::Failed {
        error: "endpoint down".into(),
        retry_at: t + 5_000,
    };
    assert!(q.finish_copy(&second[0], failed, t + 1_800).await.unwrap());
    let record = q.copies_of(space, &c.blob_key).await.unwrap().remove(0);
    assert_eq!((record.status, record.attempts), (CopyStatus::Failed, 1));
    assert_eq!(record.last_error.as_deref(), Some("endpoint down"));
    assert!(
        q.claim_copies(&a, t + 4_000, t + 5_000, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let third = q.claim_copies(&a, t + 5_000, t + 6_000, 10).await.unwrap();
    assert_eq!(third[0].record.attempts, 1);
    assert!(
        q.finish_copy(&third[0], CopyOutcome::Copied, t + 5_100)
            .await
            .unwrap()
    );
    let record = q.copies_of(space, &c.blob_key).await.unwrap().remove(0);
    assert_eq!(
        (record.status, record.due_at, record.last_error),
        (CopyStatus::Ok, None, None)
    );
    assert_eq!(record.updated_at, t + 5_100);

    // Found bad: queued again, due at once, and listed as unsettled.
    assert!(
        q.requeue_copy(space, &c.blob_key, &a, "missing", t + 6_000)
            .await
            .unwrap()
    );
    assert!(
        !q.requeue_copy(space, &c.blob_key, &a, "missing", t + 6_000)
            .await
            .unwrap()
    );
    let unsettled = q.unsettled_copies(&a, 100).await.unwrap();
    assert!(unsettled.iter().any(|r| r.content.blob_key == c.blob_key));
    let record = q.copies_of(space, &c.blob_key).await.unwrap().remove(0);
    assert_eq!((record.status, record.attempts), (CopyStatus::Pending, 0));
}

#[tokio::test]
async fn removal_wins_over_a_copy_in_flight_and_backfills_are_idempotent() {
    let b = backend().await;
    let space = new_space(&*b.meta).await;
    let c = content(space, 1);
    let a = store("a");
    b.meta
        .publish(publish(
            space,
            FileId::new(),
            None,
            c.clone(),
            &[StoreId::primary(), a.clone()],
        ))
        .await
        .unwrap();
    let q = &b.copies;
    let t = 10_000;
    let in_flight = q.claim_copies(&a, t, t + 1_000, 10).await.unwrap();
    q.remove_copies(space, &c.blob_key, t + 100).await.unwrap();
    assert!(
        !q.finish_copy(&in_flight[0], CopyOutcome::Copied, t + 200)
            .await
            .unwrap()
    );
    let statuses: Vec<(String, CopyStatus)> = q
        .copies_of(space, &c.blob_key)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.store.to_string(), r.status))
        .collect();
    // The primary's object is the remover's own: its copy is left alone.
    assert_eq!(
        statuses,
        [
            ("a".to_owned(), CopyStatus::Removing),
            ("primary".to_owned(), CopyStatus::Ok)
        ]
    );
    // Due only once the claim in flight has run out.
    assert!(
        q.claim_copies(&a, t + 500, t + 1_500, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let removal = q.claim_copies(&a, t + 1_000, t + 2_000, 10).await.unwrap();
    assert_eq!(removal[0].record.status, CopyStatus::Removing);
    assert!(
        q.finish_copy(&removal[0], CopyOutcome::Removed, t + 1_100)
            .await
            .unwrap()
    );
    let left: Vec<String> = q
        .copies_of(space, &c.blob_key)
        .await
        .unwrap()
        .iter()
        .map(|r| r.store.to_string())
        .collect();
    assert_eq!(left, ["primary"]);

    // A backfill adds what is missing, once.
    let other = content(space, 2);
    let wanted = |s: &StoreId| NewCopy::of(s.clone(), &other, 3_000);
    let all = [wanted(&StoreId::primary()), wanted(&a), wanted(&store("b"))];
    assert_eq!(q.ensure_copies(space, &all[..2], t).await.unwrap(), 2);
    assert_eq!(q.ensure_copies(space, &all, t).await.unwrap(), 1);
    assert_eq!(q.ensure_copies(space, &all, t).await.unwrap(), 0);
    let statuses: Vec<CopyStatus> = q
        .copies_of(space, &other.blob_key)
        .await
        .unwrap()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses,
        [CopyStatus::Pending, CopyStatus::Pending, CopyStatus::Ok]
    );
}

#[tokio::test]
async fn jobs_stores_leases_and_the_list_of_spaces() {
    let b = backend().await;
    let q = &b.copies;
    let spaces = [
        new_space(&*b.meta).await,
        new_space(&*b.meta).await,
        new_space(&*b.meta).await,
    ];
    let mut listed = Vec::new();
    let mut cursor = None;
    for _ in 0..1000 {
        let (page, next) = q.spaces_page(cursor.take(), 2).await.unwrap();
        listed.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    for space in spaces {
        assert_eq!(
            listed.iter().filter(|s| **s == space).count(),
            1,
            "{space} once"
        );
    }

    // Jobs: one claim at a time, progress saved under the claim, a restart voids it.
    let t = 10_000;
    let job = ReplicationJob::new(spaces[0], false, t);
    q.put_job(&job).await.unwrap();
    let (mut claimed, claim) = q.claim_job(t, t + 1_000).await.unwrap().expect("due");
    assert!(q.claim_job(t + 10, t + 1_010).await.unwrap().is_none());
    claimed.cursor_seq = 42;
    assert!(q.advance_job(&claimed, &claim, t + 2_000).await.unwrap());
    assert_eq!(q.job(spaces[0]).await.unwrap().unwrap().cursor_seq, 42);
    q.put_job(&ReplicationJob::new(spaces[0], true, t + 100))
        .await
        .unwrap();
    assert!(!q.advance_job(&claimed, &claim, t + 2_000).await.unwrap());
    let (mut repair, claim) = q.claim_job(t + 200, t + 1_200).await.unwrap().expect("due");
    assert!(repair.verify && repair.cursor_seq == 0);
    repair.done = true;
    repair.verify_after = Some(("k".into(), store("a")));
    assert!(q.advance_job(&repair, &claim, t + 300).await.unwrap());
    assert!(q.claim_job(t + 5_000, t + 6_000).await.unwrap().is_none());
    let stored = q.job(spaces[0]).await.unwrap().unwrap();
    assert!(stored.done && stored.verify_after == Some(("k".into(), store("a"))));

    // Stores: recorded at once (for every server's commits), reported until their
    // backfill is queued, never forgotten unless retired; the default's backfill is
    // forgotten when a server runs with it off (turning it on again backfills again).
    let (a, c) = (store("a"), store("c"));
    let one = std::slice::from_ref(&a);
    let both = [a.clone(), c.clone()];
    assert_eq!(
        q.stores_to_backfill(one, &[], false).await.unwrap(),
        (vec![a.clone()], false)
    );
    assert_eq!(q.registered_stores().await.unwrap(), vec![a.clone()]);
    assert_eq!(
        q.stores_to_backfill(one, &[], false).await.unwrap(),
        (vec![a.clone()], false)
    );
    q.stores_backfilled(one, false).await.unwrap();
    assert_eq!(
        q.stores_to_backfill(one, &[], false).await.unwrap(),
        (vec![], false)
    );
    assert_eq!(
        q.stores_to_backfill(&both, &[], true).await.unwrap(),
        (vec![c.clone()], true)
    );
    q.stores_backfilled(std::slice::from_ref(&c), true)
        .await
        .unwrap();
    assert_eq!(
        q.stores_to_backfill(&both, &[], true).await.unwrap(),
        (vec![], false)
    );
    // A server configured with `a` only does not undo `c`.
    assert_eq!(
        q.stores_to_backfill(one, &[], true).await.unwrap(),
        (vec![], false)
    );
    assert_eq!(q.registered_stores().await.unwrap(), both);
    // The default turned off, then on: backfilled again.
    assert_eq!(
        q.stores_to_backfill(one, &[], false).await.unwrap(),
        (vec![], false)
    );
    assert_eq!(
        q.stores_to_backfill(one, &[], true).await.unwrap(),
        (vec![], true)
    );
    // Retired: no longer recorded; were it configured again, it would be backfilled.
    assert_eq!(
        q.stores_to_backfill(one, std::slice::from_ref(&c), true)
            .await
            .unwrap(),
        (vec![], true)
    );
    assert_eq!(q.registered_stores().await.unwrap(), vec![a.clone()]);
    assert_eq!(
        q.stores_to_backfill(&both, &[], false).await.unwrap(),
        (vec![c.clone()], false)
    );

    // Leases: one holder until it runs out; its payload goes to the next.
    assert_eq!(
        q.take_lease("scrub", "x", t, t + 1_000, None)
            .await
            .unwrap(),
        Some(None)
    );
    assert_eq!(
        q.take_lease("scrub", "y", t + 10, t + 1_010, None)
            .await
            .unwrap(),
        None
    );
    assert!(
        q.take_lease("scrub", "x", t + 20, t + 1_020, Some("here"))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        q.take_lease("scrub", "y", t + 1_020, t + 2_000, None)
            .await
            .unwrap(),
        Some(Some("here".into()))
    );
}
