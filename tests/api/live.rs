//! Live subscriptions through real websockets: gap-free resume, both protocols, membership
//! and slow subscribers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_with};
use crate::ws_client::{EVENT_FIELDS, LEGACY, TRANSPORT_WS, WsClient};

/// Uploads `name` into `space`; its id and version-1 cursor.
async fn new_file(app: &TestApp, space: &str, name: &str) -> (String, String) {
    let file = app.upload("alice", space, name, b"v1").await;
    (
        file["id"].as_str().unwrap().to_owned(),
        file["cursor"].as_str().unwrap().to_owned(),
    )
}

/// `writers` clients together make `total` changes to one file, each retrying on
/// `CONFLICT` with the version the error names.
pub fn spawn_writers(
    app: &Arc<TestApp>,
    file: &str,
    writers: usize,
    total: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let (app, file) = (app.clone(), file.to_owned());
            tokio::spawn(async move {
                let mut base = 1;
                for n in 0..total / writers {
                    loop {
                        let body = app
                            .update_metadata("alice", &file, base, "writer", &format!("{w}/{n}"))
                            .await;
                        match body.get("errors") {
                            None => {
                                base = body["data"]["updateFile"]["version"].as_i64().unwrap();
                                break;
                            }
                            Some(errors) => {
                                assert_eq!(errors[0]["extensions"]["code"], "CONFLICT", "{body}");
                                base = errors[0]["extensions"]["currentVersion"].as_i64().unwrap();
                            }
                        }
                    }
                }
            })
        })
        .collect()
}

fn version(event: &Value) -> i64 {
    event["version"]
        .as_i64()
        .unwrap_or_else(|| panic!("a change: {event}"))
}

/// Reads change events until version `last`; READY events are counted, not collected.
async fn versions_until(ws: &mut WsClient, last: i64, readies: &mut usize) -> Vec<i64> {
    let mut versions = Vec::new();
    loop {
        let event = ws.event().await.unwrap_or_else(|e| panic!("event: {e}"));
        if event["kind"] == "READY" {
            *readies += 1;
            continue;
        }
        versions.push(version(&event));
        if version(&event) >= last {
            return versions;
        }
    }
}

/// The issue's scenario: four writers make 100 changes to one file; subscriber A drops
/// after ~40 events and resumes from its last cursor; a legacy-protocol subscriber and a
/// `fileChanged` subscriber watch throughout; a late subscriber replays from version 1.
/// Every one of them sees versions 2..=101, each once, in order.
#[tokio::test]
async fn every_subscriber_sees_every_version_once_in_order_across_a_reconnect() {
    let app = Arc::new(spawn_app().await);
    let space = app.create_space("alice", "Team").await;
    let (file, v1_cursor) = new_file(&app, &space, "hot.txt").await;

    let mut a = app.ws_as("alice", TRANSPORT_WS).await;
    a.subscribe_changes("a", &space, None).await;
    let ready = a.until_ready().await;
    assert_eq!(ready.len(), 1, "without `since`, READY comes at once");
    assert_eq!(
        ready[0]["cursor"], v1_cursor,
        "READY carries the head cursor"
    );
    let mut legacy = app.ws_as("alice", LEGACY).await;
    legacy.subscribe_changes("l", &space, None).await;
    legacy.until_ready().await;
    let mut by_file = app.ws_as("alice", TRANSPORT_WS).await;
    by_file
        .subscribe(
            "f",
            &format!("subscription($id: ID!) {{ fileChanged(id: $id) {{ {EVENT_FIELDS} }} }}"),
            json!({ "id": file }),
        )
        .await;
    by_file.until_ready().await;

    let writers = spawn_writers(&app, &file, 4, 100);

    let mut seen = Vec::new();
    let mut cursor = String::new();
    while seen.len() < 40 {
        let event = a.event().await.unwrap();
        assert_eq!(event["kind"], "UPDATED");
        assert_eq!(event["spaceId"], space);
        assert_eq!(event["actor"], "alice");
        assert_eq!(event["file"]["version"], event["version"]);
        seen.push(version(&event));
        cursor = event["cursor"].as_str().unwrap().to_owned();
    }
    a.hang_up().await;
    let mut a = app.ws_as("alice", TRANSPORT_WS).await;
    a.subscribe_changes("a", &space, Some(&cursor)).await;
    let mut readies = 0;
    seen.extend(versions_until(&mut a, 101, &mut readies).await);
    assert_eq!(
        seen,
        (2..=101).collect::<Vec<_>>(),
        "A: each version once, in order"
    );
    assert_eq!(readies, 1, "one READY on resume");

    let mut none = 0;
    let legacy_seen = versions_until(&mut legacy, 101, &mut none).await;
    assert_eq!(
        legacy_seen,
        (2..=101).collect::<Vec<_>>(),
        "legacy protocol"
    );
    let file_seen = versions_until(&mut by_file, 101, &mut none).await;
    assert_eq!(file_seen, (2..=101).collect::<Vec<_>>(), "fileChanged");
    assert_eq!(none, 0, "no second READY");
    for w in writers {
        w.await.unwrap();
    }

    let mut late = app.ws_as("alice", TRANSPORT_WS).await;
    late.subscribe_changes("late", &space, Some(&v1_cursor))
        .await;
    let replay = late.until_ready().await;
    let (ready, changes) = replay.split_last().unwrap();
    assert_eq!(
        changes.iter().map(version).collect::<Vec<_>>(),
        (2..=101).collect::<Vec<_>>(),
        "replay from version 1's cursor"
    );
    assert_eq!(ready["cursor"], changes.last().unwrap()["cursor"]);
    app.update_metadata("alice", &file, 101, "after", "ready")
        .await;
    let next = late.event().await.unwrap();
    assert_eq!(
        (next["kind"].as_str(), version(&next)),
        (Some("UPDATED"), 102),
        "live after READY, and READY only once"
    );
}

#[tokio::test]
async fn removing_a_member_ends_their_subscription_and_spaces_never_mix() {
    let app = spawn_app().await;
    let team = app.create_space("alice", "Team").await;
    let other = app.create_space("alice", "Other").await;
    app.set_member("alice", &team, "bob", Some("VIEWER")).await;
    app.set_member("alice", &other, "bob", Some("VIEWER")).await;
    let (kept, _) = new_file(&app, &team, "kept.txt").await;

    let mut bob = app.ws_as("bob", TRANSPORT_WS).await;
    bob.subscribe_changes("team", &team, None).await;
    bob.until_ready().await;
    let mut only_kept = app.ws_as("bob", LEGACY).await;
    only_kept
        .subscribe(
            "k",
            &format!(
                "subscription($s: ID!, $f: [ID!]) {{ changes(spaceId: $s, fileIds: $f) {{ {EVENT_FIELDS} }} }}"
            ),
            json!({ "s": team, "f": [kept] }),
        )
        .await;
    only_kept.until_ready().await;

    // Interleave changes in both spaces: bob's `team` subscription sees only `team`'s.
    let mut team_files = vec![kept.clone()];
    for n in 0..5 {
        new_file(&app, &other, &format!("other-{n}.txt")).await;
        team_files.push(new_file(&app, &team, &format!("team-{n}.txt")).await.0);
    }
    app.update_metadata("alice", &kept, 1, "k", "v").await;
    for expected in team_files.iter().skip(1).chain([&kept]) {
        let event = bob.event().await.unwrap();
        assert_eq!(event["spaceId"], team, "only the subscribed space: {event}");
        assert_eq!(&event["fileId"], expected);
    }
    let event = only_kept.event().await.unwrap();
    assert_eq!(
        (&event["fileId"], version(&event)),
        (&json!(kept), 2),
        "fileIds filter"
    );

    app.set_member("alice", &team, "bob", None).await;
    let end = bob.event().await.expect_err("the subscription ends");
    assert_eq!(end["type"], "error", "{end}");
    assert_eq!(
        end["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{end}"
    );
    let end = only_kept.event().await.expect_err("the legacy one too");
    assert_eq!(
        end["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{end}"
    );

    bob.subscribe_changes("again", &team, None).await;
    let refused = bob.event().await.expect_err("no way back in");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "NOT_FOUND");
    bob.subscribe_changes("other", &other, None).await;
    assert_eq!(
        bob.until_ready().await.len(),
        1,
        "the connection and other spaces are unaffected"
    );
}

/// Subscribers of one space that select differently (aliases, fragments, variables in
/// directives, `__typename`, two root fields) each get exactly the shape they asked for,
/// although one change is rendered once per distinct selection and shared.
#[tokio::test]
async fn each_subscriber_gets_the_shape_it_selected() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Shapes").await;
    let (file, _) = new_file(&app, &space, "shaped.txt").await;
    let fragment = "subscription($s: ID!, $withFile: Boolean!) { changes(spaceId: $s) { ...E } } \
                    fragment E on ChangeEvent { version file @include(if: $withFile) { name } }";
    let both = "subscription($s: ID!, $f: ID!) { all: changes(spaceId: $s) { version } \
                one: fileChanged(id: $f) { kind version } }";
    let subscriptions = [
        (
            "subscription($s: ID!) { changes(spaceId: $s) { version } }",
            json!({ "s": space }),
        ),
        (
            "subscription($s: ID!) { mine: changes(spaceId: $s) { version } }",
            json!({ "s": space }),
        ),
        (
            "subscription($s: ID!) { ours: changes(spaceId: $s) { version } }",
            json!({ "s": space }),
        ),
        (
            "subscription($s: ID!) { changes(spaceId: $s) { __typename version } }",
            json!({ "s": space }),
        ),
        (fragment, json!({ "s": space, "withFile": true })),
        (fragment, json!({ "s": space, "withFile": false })),
        (both, json!({ "s": space, "f": file })),
    ];
    let mut sockets = Vec::new();
    for (query, variables) in &subscriptions {
        let mut ws = app.ws_as("alice", TRANSPORT_WS).await;
        ws.subscribe("s", query, variables.clone()).await;
        let roots = if *query == both { 2 } else { 1 };
        for _ in 0..roots {
            let ready = ws.recv().await.unwrap();
            assert_eq!(ready["type"], "next", "{ready}");
        }
        sockets.push(ws);
    }

    app.update_metadata("alice", &file, 1, "k", "v").await;
    let mut seen = Vec::new();
    for ws in &mut sockets {
        let message = ws.recv().await.unwrap();
        assert_eq!(message["type"], "next", "{message}");
        seen.push(message["payload"].clone());
    }
    let both_second = sockets[6].recv().await.unwrap()["payload"].clone();
    let mut both = [seen[6].clone(), both_second];
    both.sort_by_key(|payload| payload["data"].get("one").is_some());
    assert_eq!(
        seen[..6],
        [
            json!({ "data": { "changes": { "version": 2 } } }),
            json!({ "data": { "mine": { "version": 2 } } }),
            json!({ "data": { "ours": { "version": 2 } } }),
            json!({ "data": { "changes": { "__typename": "ChangeEvent", "version": 2 } } }),
            json!({ "data": { "changes": { "version": 2, "file": { "name": "shaped.txt" } } } }),
            json!({ "data": { "changes": { "version": 2 } } }),
        ]
    );
    assert_eq!(
        both,
        [
            json!({ "data": { "all": { "version": 2 } } }),
            json!({ "data": { "one": { "kind": "UPDATED", "version": 2 } } }),
        ]
    );
}

/// The mutation for a change with about 8 KB of metadata: a large event.
const BULKY_UPDATE: &str = "mutation($id: ID!, $b: Int!, $v: String!) {
    updateFile(id: $id, baseVersion: $b, input: { metadata: [
        { key: \"a\", value: $v }, { key: \"b\", value: $v },
        { key: \"c\", value: $v }, { key: \"d\", value: $v }] }) { version } }";

/// One subscriber stops reading: it is cut off (its buffer overflows and its socket is
/// dropped) while another subscriber of the same space receives every change.
#[tokio::test]
async fn a_subscriber_that_never_reads_is_disconnected_and_others_keep_receiving() {
    if crate::helpers::on_aws() {
        // The cut-off is the hub's, whatever the backend; it needs writes fast enough to
        // outrun the kernel's socket buffers, which the emulator's are not.
        eprintln!("skipped on AWS: the emulator cannot write fast enough to test this");
        return;
    }
    let app = Arc::new(
        spawn_app_with(|s| {
            s.subscriptions.buffer = 64;
            s.subscriptions.send_timeout = Duration::from_millis(500);
            // One user writes 800 changes as fast as it can.
            s.limits.mutations_per_second = 0.0;
        })
        .await,
    );
    let space = app.create_space("alice", "Team").await;
    app.set_member("alice", &space, "bob", Some("VIEWER")).await;
    let bulky = "subscription($s: ID!) { changes(spaceId: $s) { fileId version file { metadata { key value } } } }";
    let stuck = app.ws_connect_with(TRANSPORT_WS, Some(4096)).await;
    let mut stuck = app.ws_init(stuck, "bob").await;
    stuck.subscribe("s", bulky, json!({ "s": space })).await;
    assert_eq!(
        stuck.event().await.unwrap()["version"],
        Value::Null,
        "READY"
    );
    let mut reader = app.ws_as("alice", TRANSPORT_WS).await;
    reader.subscribe("r", bulky, json!({ "s": space })).await;
    reader.event().await.unwrap();

    // 8 writers, one file each, 100 changes of ~8 KB each: far more than socket buffers
    // hold, so the stuck connection backs up.
    const FILES: usize = 8;
    const CHANGES: i64 = 100;
    let mut files = Vec::new();
    for n in 0..FILES {
        files.push(new_file(&app, &space, &format!("big-{n}.txt")).await.0);
    }
    let reading = tokio::spawn(async move {
        let mut versions: std::collections::HashMap<String, Vec<i64>> = Default::default();
        for _ in 0..FILES * (CHANGES as usize + 1) {
            let event = reader
                .event()
                .await
                .unwrap_or_else(|e| panic!("reader: {e}"));
            let file = event["fileId"].as_str().unwrap().to_owned();
            versions.entry(file).or_default().push(version(&event));
        }
        (versions, reader)
    });
    let writers: Vec<_> = files
        .iter()
        .map(|file| {
            let (app, file) = (app.clone(), file.clone());
            tokio::spawn(async move {
                let value = "x".repeat(2000);
                for base in 1..=CHANGES {
                    let body = app
                        .gql(
                            "alice",
                            BULKY_UPDATE,
                            json!({ "id": file, "b": base, "v": value }),
                        )
                        .await;
                    assert_eq!(body["updateFile"]["version"], base + 1);
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let (versions, _reader) = tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the reader is never held up")
        .unwrap();
    for file in &files {
        assert_eq!(
            versions[file],
            (1..=CHANGES + 1).collect::<Vec<_>>(),
            "{file}"
        );
    }

    let metrics = wait_for_metric(&app, "filesync_websocket_connections", 1).await;
    assert!(
        metric(
            &metrics,
            "filesync_live_subscriptions_ended_total{reason=\"lagged\"}"
        ) >= 1,
        "the hub cut the stuck subscriber off: {metrics}"
    );
    assert_eq!(metric(&metrics, "filesync_live_subscriptions"), 1);

    // What the stuck client finds when it finally reads: some events, then the end.
    let mut received = 0;
    let end = loop {
        match stuck.recv().await {
            Ok(m) if m["type"] == "next" => received += 1,
            other => break other,
        }
    };
    assert!(
        received < FILES * CHANGES as usize,
        "it did not get everything: {received}"
    );
    match end {
        Ok(error) => assert_eq!(error["payload"][0]["extensions"]["code"], "SLOW_SUBSCRIBER"),
        Err(closed) => assert_eq!(closed.0, None, "dropped, not closed politely: {closed:?}"),
    }
}

#[tokio::test]
async fn shutdown_closes_websockets_with_going_away() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let mut ws = app.ws_as("alice", TRANSPORT_WS).await;
    ws.subscribe_changes("a", &space, None).await;
    ws.until_ready().await;
    let stopping = tokio::spawn(app.stop());
    let closed = ws.closed().await;
    assert_eq!(closed.0, Some(1001), "{closed:?}");
    stopping.await.unwrap();
}

pub async fn metrics_text(app: &TestApp) -> String {
    app.get(&format!("{}/metrics", app.base))
        .await
        .text()
        .await
        .unwrap()
}

pub fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(-1, |v| v as i64)
}

/// Polls `/metrics` until `name` reads `value` (10 s at most); the whole text.
pub async fn wait_for_metric(app: &TestApp, name: &str, value: i64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics_text(app).await;
        if metric(&text, name) == value || tokio::time::Instant::now() > deadline {
            assert_eq!(metric(&text, name), value, "{name} in {text}");
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
