//! Races and failures between two steps: a member removed while their subscription
//! replays, a PUT repeated after its commit, a commit and a cancel racing on two
//! replicas, a delete that fails after an abandon. Each names the promise it checks.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{on_aws, spawn_app_in, spawn_app_with};
use crate::ws_client::TRANSPORT_WS;

/// Metadata as large as a version may carry: four entries of about 2 KB (8 KiB in all).
fn bulky_metadata(tag: i64) -> Value {
    let value = format!("{tag:04}").repeat(499);
    Value::Array(
        (0..4)
            .map(|i| json!({ "key": format!("k{i:02}"), "value": value }))
            .collect(),
    )
}

async fn wait_until<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// "A non-member learns nothing": a viewer removed while their subscription replays an
/// old cursor is sent none of the changes committed after the removal, and their
/// subscription ends with FORBIDDEN at once, not after the rest of the replay.
#[tokio::test]
async fn a_member_removed_mid_replay_receives_nothing_committed_after_and_is_ended_at_once() {
    let app = crate::helpers::spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    app.set_member("alice", &space, "bob", Some("VIEWER")).await;
    let file = app.upload_id("alice", &space, "log.txt", b"x").await;
    let start = app.changes("alice", &space, None, None).await["nextCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    // 100 versions of 8 KiB of metadata, which each event selects 25 times: about 20 MB
    // of replay, far more than socket buffers hold, so it is still going when bob is
    // removed.
    const VERSIONS: i64 = 100;
    for base in 1..=VERSIONS {
        let body = app
            .gql_as(
                Some("alice"),
                "mutation($id: ID!, $b: Int!, $m: [MetadataEntryInput!]) {
                    updateFile(id: $id, baseVersion: $b, input: { metadata: $m }) { version } }",
                json!({ "id": file, "b": base, "m": bulky_metadata(base) }),
            )
            .await;
        assert!(body.get("errors").is_none(), "{body}");
    }
    let last_before = VERSIONS + 1;

    // A small receive buffer: what the server has sent and bob has not read stays small.
    let bob = app.ws_connect_with(TRANSPORT_WS, Some(4096)).await;
    let mut bob = app.ws_init(bob, "bob").await;
    bob.subscribe(
        "s",
        &format!(
            "subscription($s: ID!, $c: Cursor) {{ changes(spaceId: $s, since: $c) {{
                kind cursor version file {{ name downloadUrl {} }} }} }}",
            (0..25)
                .map(|i| format!("m{i}: metadata {{ key value }}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        json!({ "s": space, "c": start }),
    )
    .await;
    for _ in 0..3 {
        bob.event().await.expect("replayed events");
    }
    app.set_member("alice", &space, "bob", None).await;
    let renamed = app
        .gql(
            "alice",
            "mutation($id: ID!, $b: Int!) { updateFile(id: $id, baseVersion: $b, input: { name: \"secret-plan.txt\" }) { version } }",
            json!({ "id": file, "b": last_before }),
        )
        .await;
    assert_eq!(renamed["updateFile"]["version"], last_before + 1);

    let mut received = 3;
    let ended = loop {
        match bob.event().await {
            Ok(event) => {
                received += 1;
                let version = event["version"].as_i64().unwrap_or_default();
                assert!(
                    version <= last_before && event["file"]["name"] != "secret-plan.txt",
                    "a change committed after the removal reached the removed member: {event}"
                );
            }
            Err(message) => break message,
        }
    };
    assert_eq!(
        ended["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{ended}"
    );
    assert!(
        received < VERSIONS,
        "the replay went on after the removal: {received} of {VERSIONS} events sent"
    );
}

/// "Content never disagrees with metadata": a PUT repeated after its upload committed
/// (the client never saw the first response) must not tag the committed object pending,
/// or the bucket's lifecycle rule would delete committed content. The URL writes once;
/// and should a pending tag come back anyway, the repeated commit and the storage event
/// each remove it.
#[tokio::test]
async fn a_put_repeated_after_the_commit_never_leaves_committed_content_tagged_pending() {
    if !on_aws() {
        eprintln!("only S3 objects carry the pending tag");
        return;
    }
    let app = crate::helpers::spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let ticket = app
        .begin_upload("alice", &space, "a.txt", b"abc", json!({}))
        .await;
    assert_eq!(app.put_bytes(&ticket, b"abc".to_vec()).await.status(), 200);
    app.commit("alice", &ticket).await;
    let id = ticket.upload_id();
    assert_eq!(app.object_tags(&space, id).await, Some(vec![]));

    let again = app.put_bytes(&ticket, b"abc".to_vec()).await;
    assert_eq!(again.status(), 412, "the upload URL writes once");
    assert_eq!(app.object_tags(&space, id).await, Some(vec![]));

    // A second write that got through anyway (tagged as the URL tags it): its storage
    // event untags the committed object...
    app.put_pending_object(&space, id, b"abc").await;
    wait_until("the storage event untags the object", || async {
        app.object_tags(&space, id).await == Some(vec![])
    })
    .await;
    // ...and so does the client's repeated commit, with the same answer as before.
    let app = spawn_app_in(app.data_dir.clone(), |s| s.storage.events_queue_url = None).await;
    app.put_pending_object(&space, id, b"abc").await;
    let file = app.commit("alice", &ticket).await;
    assert_eq!(file["version"], 1);
    assert_eq!(app.object_tags(&space, id).await, Some(vec![]));
}

/// "Any number of replicas": a commit on one replica and a cancel on another agree on
/// one outcome. Only the cancel that won deletes the bytes; a commit that lost says so
/// (UPLOAD_EXPIRED) at once; a committed version's object always exists, untagged.
#[tokio::test]
async fn commit_and_cancel_racing_on_two_replicas_agree_and_lose_no_committed_bytes() {
    if !on_aws() {
        eprintln!("replicas share a store only on the AWS backend");
        return;
    }
    // No storage events: the bytes arriving must not commit the upload before the race.
    let a = Arc::new(spawn_app_with(|s| s.storage.events_queue_url = None).await);
    let b = Arc::new(spawn_app_in(a.data_dir.clone(), |s| s.storage.events_queue_url = None).await);
    let space = a.create_space("alice", "Team").await;
    // How long a commit takes here: the cancels start across that span.
    let started = tokio::time::Instant::now();
    a.upload("alice", &space, "calibration.txt", b"x").await;
    let span = started.elapsed().as_millis() as u64;
    let (mut committed, mut cancelled) = (0, 0);
    for round in 0..60u64 {
        let bytes = format!("round {round}").into_bytes();
        let ticket = a
            .begin_upload("alice", &space, &format!("r{round}.txt"), &bytes, json!({}))
            .await;
        assert_eq!(a.put_bytes(&ticket, bytes.clone()).await.status(), 200);
        let started = tokio::time::Instant::now();
        // The cancel starts from 0 to 1.5 times a commit's duration after the commit, a
        // little later each round: each side wins some rounds, some cross in the middle.
        let lag = Duration::from_millis(round * span * 3 / 2 / 60);
        let (commit, cancel) = tokio::join!(a.commit_raw("alice", &ticket), async {
            tokio::time::sleep(lag).await;
            b.cancel_raw("alice", &ticket).await
        });
        let code = |body: &Value| {
            body["errors"][0]["extensions"]["code"]
                .as_str()
                .map(str::to_owned)
        };
        match (code(&commit), code(&cancel)) {
            (None, Some(c)) => {
                eprintln!("round {round}: commit");
                assert_eq!(
                    c, "BAD_INPUT",
                    "a cancel that lost says committed: {cancel}"
                );
                committed += 1;
                let tags = a.object_tags(&space, ticket.upload_id()).await;
                assert_eq!(
                    tags,
                    Some(vec![]),
                    "round {round}: the committed object exists, untagged"
                );
                let url = commit["data"]["commitUpload"]["downloadUrl"]
                    .as_str()
                    .unwrap();
                assert_eq!(a.get(url).await.bytes().await.unwrap(), bytes);
            }
            (Some(c), None) => {
                eprintln!("round {round}: cancel");
                assert_eq!(cancel["data"]["cancelUpload"], true, "{cancel}");
                assert!(
                    c == "UPLOAD_EXPIRED" || c == "UPLOAD_INCOMPLETE",
                    "round {round}: a commit that lost to a cancel: {commit}"
                );
                assert!(started.elapsed() < Duration::from_secs(1), "promptly");
                cancelled += 1;
                assert!(!a.blob_exists(&space, ticket.upload_id()).await);
            }
            other => panic!("round {round}: both or neither won: {other:?}\n{commit}\n{cancel}"),
        }
    }
    eprintln!("{committed} commits and {cancelled} cancels won");
    assert!(committed > 0 && cancelled > 0, "both sides won some rounds");
}

/// "Nothing leaks": a PUT through an upload URL still valid after its cancel stores bytes
/// no version will ever reference; the abandon leaves a trace the sweeper finishes once
/// that URL has expired.
#[tokio::test]
async fn a_put_through_a_live_url_after_a_cancel_is_removed_by_the_sweeper() {
    if !on_aws() {
        eprintln!("the embedded backend refuses bytes for an abandoned upload");
        return;
    }
    let app = spawn_app_with(|s| {
        s.uploads.url_ttl = Duration::from_secs(3);
        s.uploads.sweep_interval = Duration::from_millis(300);
    })
    .await;
    let space = app.create_space("alice", "Team").await;
    let ticket = app
        .begin_upload("alice", &space, "a.txt", b"abc", json!({}))
        .await;
    assert_eq!(
        app.cancel_raw("alice", &ticket).await["data"]["cancelUpload"],
        true
    );
    assert_eq!(app.put_bytes(&ticket, b"abc".to_vec()).await.status(), 200);
    assert!(app.blob_exists(&space, ticket.upload_id()).await);
    wait_until("the sweeper removes the late bytes", || async {
        !app.blob_exists(&space, ticket.upload_id()).await
    })
    .await;
}

/// "Nothing leaks": a delete that fails after an upload is abandoned is not forgotten;
/// the sweeper finishes it.
#[tokio::test]
async fn a_failed_delete_after_a_cancel_is_finished_by_the_sweeper() {
    if on_aws() {
        eprintln!("the failure is made in the embedded backend's blob folder");
        return;
    }
    let app = spawn_app_with(|s| {
        s.uploads.url_ttl = Duration::from_secs(1);
        s.uploads.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let space = app.create_space("alice", "Team").await;
    let ticket = app
        .begin_upload("alice", &space, "a.txt", b"abc", json!({}))
        .await;
    app.store_uncommittable(&space, &ticket, b"ABC").await; // stored, but pending
    let blob = app
        .blob_dir()
        .join(format!("{space}/{}", ticket.upload_id()));
    let aside = blob.with_extension("aside");
    // The delete will fail: a folder (not empty) stands where the object is.
    std::fs::rename(&blob, &aside).unwrap();
    std::fs::create_dir(&blob).unwrap();
    std::fs::write(blob.join("x"), b"x").unwrap();
    assert_eq!(
        app.cancel_raw("alice", &ticket).await["data"]["cancelUpload"],
        true
    );
    assert!(blob.is_dir(), "the delete failed");
    // The store recovers; the object is back where it was.
    std::fs::remove_dir_all(&blob).unwrap();
    std::fs::rename(&aside, &blob).unwrap();
    wait_until(
        "the sweeper deletes the abandoned upload's bytes",
        || async { !blob.exists() },
    )
    .await;
}
