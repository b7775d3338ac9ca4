//! A model-based test of the sync contract, on whichever backend this run is for:
//! seeded random operations (creates, renames, metadata, deletes, restores, some of them
//! concurrent) while subscribers drop and resume on their own random schedules.
//!
//! The model is the commit log as the writers saw it: every mutation answers with the
//! change's cursor, so the test knows every seq. It checks that
//! - the seqs the writers saw are exactly 1, 2, 3, ... (gapless, each once);
//! - `changes` from the start, collapsed, equals replaying the whole log (each file at
//!   its last change), at several points along the way;
//! - every subscriber's events, across its drops and resumes, equal the log after the
//!   cursor it first subscribed with: each change once, in order.
//!
//! `MODEL_SEED` replays a run; `MODEL_OPS` sets its length (default 150).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::helpers::{TestApp, spawn_app};
use crate::ws_client::TRANSPORT_WS;

/// A random operation: a new file, or a mutation `(kind, root field, query, variables)`.
enum Op {
    Create(String),
    Mutate(&'static str, &'static str, String, Value),
}

/// One entry of the commit log: `(seq, kind, file, version, name, deleted)`.
type Entry = (u64, String, String, i64, String, bool);

fn seq_of(cursor: &str) -> u64 {
    filesync::domain::Cursor::decode(cursor).unwrap().seq
}

const FIELDS: &str = "id version name deleted cursor";

fn entry(kind: &str, file: &Value) -> Entry {
    (
        seq_of(file["cursor"].as_str().unwrap()),
        kind.to_owned(),
        file["id"].as_str().unwrap().to_owned(),
        file["version"].as_i64().unwrap(),
        file["name"].as_str().unwrap().to_owned(),
        file["deleted"].as_bool().unwrap(),
    )
}

/// The latest state of each file after `log`: `id -> (version, name, deleted)`.
fn collapse<'a>(log: impl Iterator<Item = &'a Entry>) -> BTreeMap<String, (i64, String, bool)> {
    let mut files = BTreeMap::new();
    for (_, _, id, version, name, deleted) in log {
        files.insert(id.clone(), (*version, name.clone(), *deleted));
    }
    files
}

/// `changes` from the start, every page, collapsed the same way.
async fn changes_from_start(app: &TestApp, space: &str) -> BTreeMap<String, (i64, String, bool)> {
    let mut files = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = app
            .gql(
                "alice",
                "query($s: ID!, $c: Cursor) { changes(spaceId: $s, since: $c, limit: 7) {
                    files { id version name deleted } nextCursor hasMore } }",
                json!({ "s": space, "c": cursor }),
            )
            .await["changes"]
            .clone();
        for f in page["files"].as_array().unwrap() {
            files.insert(
                f["id"].as_str().unwrap().to_owned(),
                (
                    f["version"].as_i64().unwrap(),
                    f["name"].as_str().unwrap().to_owned(),
                    f["deleted"].as_bool().unwrap(),
                ),
            );
        }
        cursor = page["nextCursor"].as_str().map(str::to_owned);
        if page["hasMore"] != true {
            return files;
        }
    }
}

/// A subscriber that drops its socket at random points and resumes from the cursor of
/// the last event it got, until it has seen seq `until` (once the writers are done).
async fn subscriber(
    app: Arc<TestApp>,
    space: String,
    first_cursor: Option<String>,
    seed: u64,
    done: watch::Receiver<Option<u64>>,
) -> Vec<Entry> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen: Vec<Entry> = Vec::new();
    let mut cursor = first_cursor;
    loop {
        let mut ws = app.ws_as("alice", TRANSPORT_WS).await;
        ws.subscribe(
            "m",
            "subscription($s: ID!, $c: Cursor) { changes(spaceId: $s, since: $c) {
                kind cursor fileId version file { name deleted } } }",
            json!({ "s": space, "c": cursor }),
        )
        .await;
        // Up to this many events on this connection, then a drop.
        let budget = rng.random_range(1..40);
        let mut got = 0;
        loop {
            let finished = *done.borrow();
            if finished.is_some_and(|last| seen.last().is_some_and(|e| e.0 >= last)) {
                return seen;
            }
            let event = match tokio::time::timeout(Duration::from_millis(500), ws.event()).await {
                Err(_) => continue, // quiet for now; look at `done` again
                Ok(Ok(event)) => event,
                Ok(Err(ended)) => panic!("the subscription ended: {ended}"),
            };
            let kind = event["kind"].as_str().unwrap().to_owned();
            let c = event["cursor"].as_str().unwrap().to_owned();
            if kind != "READY" {
                seen.push((
                    seq_of(&c),
                    kind,
                    event["fileId"].as_str().unwrap().to_owned(),
                    event["version"].as_i64().unwrap(),
                    event["file"]["name"].as_str().unwrap().to_owned(),
                    event["file"]["deleted"].as_bool().unwrap(),
                ));
                cursor = Some(c);
            }
            got += 1;
            if got >= budget {
                break;
            }
        }
        ws.hang_up().await;
    }
}

#[tokio::test]
async fn random_operations_and_resumes_keep_the_sync_contract() {
    let seed: u64 = std::env::var("MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let ops: usize = std::env::var("MODEL_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    eprintln!("MODEL_SEED={seed} MODEL_OPS={ops}");
    let mut rng = StdRng::seed_from_u64(seed);
    let app = Arc::new(spawn_app().await);
    let space = app.create_space("alice", "Team").await;
    let log: Arc<Mutex<Vec<Entry>>> = Arc::default();
    let (done_tx, done) = watch::channel(None);

    // Subscribers from the start, each on its own drop schedule; a third joins halfway,
    // from the cursor the log had reached then.
    let start = filesync::domain::Cursor::new(space.parse().unwrap(), 0).encode();
    let mut subscribers = Vec::new();
    for _ in 0..2 {
        let task = subscriber(
            app.clone(),
            space.clone(),
            Some(start.clone()),
            rng.random(),
            done.clone(),
        );
        subscribers.push((start.clone(), tokio::spawn(task)));
    }

    let mut live: Vec<(String, i64, bool)> = Vec::new(); // (id, version, deleted)
    for step in 0..ops {
        if step == ops / 2 {
            let middle = log.lock().unwrap().iter().map(|e| e.0).max().unwrap_or(0);
            let cursor = filesync::domain::Cursor::new(space.parse().unwrap(), middle).encode();
            let task = subscriber(
                app.clone(),
                space.clone(),
                Some(cursor.clone()),
                rng.random(),
                done.clone(),
            );
            subscribers.push((cursor, tokio::spawn(task)));
        }
        // One or two operations at once (two on one file race: one loses with CONFLICT).
        let n = if rng.random_bool(0.3) { 2 } else { 1 };
        let mut batch = Vec::new();
        for k in 0..n {
            let target = (!live.is_empty()).then(|| live[rng.random_range(0..live.len())].clone());
            batch.push(match (rng.random_range(0..5), target) {
                (0, _) | (_, None) => Op::Create(format!("f{step}-{k}.txt")),
                (1, Some((id, v, false))) => Op::Mutate(
                    "UPDATED", "updateFile",
                    format!("mutation($id: ID!, $b: Int!, $n: String!) {{ updateFile(id: $id, baseVersion: $b, input: {{ name: $n }}) {{ {FIELDS} }} }}"),
                    json!({ "id": id, "b": v, "n": format!("r{step}-{k}.txt") }),
                ),
                (2, Some((id, v, false))) => Op::Mutate(
                    "UPDATED", "updateFile",
                    format!("mutation($id: ID!, $b: Int!) {{ updateFile(id: $id, baseVersion: $b, input: {{ metadata: [{{ key: \"s\", value: \"{step}\" }}] }}) {{ {FIELDS} }} }}"),
                    json!({ "id": id, "b": v }),
                ),
                (3, Some((id, v, false))) => Op::Mutate(
                    "DELETED", "deleteFile",
                    format!("mutation($id: ID!, $b: Int!) {{ deleteFile(id: $id, baseVersion: $b) {{ {FIELDS} }} }}"),
                    json!({ "id": id, "b": v }),
                ),
                (_, Some((id, v, _))) => Op::Mutate(
                    "RESTORED", "restoreVersion",
                    format!("mutation($id: ID!, $b: Int!) {{ restoreVersion(id: $id, version: 1, baseVersion: $b) {{ {FIELDS} }} }}"),
                    json!({ "id": id, "b": v }),
                ),
            });
        }
        let results = futures::future::join_all(batch.into_iter().map(|op| {
            let app = app.clone();
            let space = space.clone();
            async move {
                match op {
                    Op::Create(name) => {
                        // A new file through the whole three-phase upload.
                        let file = app.upload("alice", &space, &name, name.as_bytes()).await;
                        Some(("CREATED", file))
                    }
                    Op::Mutate(kind, field, query, vars) => {
                        let body = app.gql_as(Some("alice"), &query, vars).await;
                        if let Some(code) = body["errors"][0]["extensions"]["code"].as_str() {
                            assert!(code == "CONFLICT" || code == "BAD_INPUT", "{body}");
                            return None;
                        }
                        Some((kind, body["data"][field].clone()))
                    }
                }
            }
        }))
        .await;
        for (kind, file) in results.into_iter().flatten() {
            let e = entry(kind, &file);
            match live.iter_mut().find(|f| f.0 == e.2) {
                Some(known) => *known = (e.2.clone(), e.3, e.5),
                None => live.push((e.2.clone(), e.3, e.5)),
            }
            log.lock().unwrap().push(e);
        }
        live.retain(|f| !f.2 || rng.random_bool(0.5)); // keep some tombstones to restore
        if step % 25 == 24 {
            let mut model = log.lock().unwrap().clone();
            model.sort();
            assert_eq!(
                changes_from_start(&app, &space).await,
                collapse(model.iter()),
                "changes collapsed equals the log replayed, after {step} steps"
            );
        }
    }

    let mut model = log.lock().unwrap().clone();
    model.sort();
    let seqs: Vec<u64> = model.iter().map(|e| e.0).collect();
    assert_eq!(
        seqs,
        (1..=model.len() as u64).collect::<Vec<_>>(),
        "seqs are gapless, each once"
    );
    assert_eq!(
        changes_from_start(&app, &space).await,
        collapse(model.iter())
    );
    let _ = done_tx.send(Some(model.len() as u64));
    for (first, task) in subscribers {
        let seen = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("subscribers finish")
            .unwrap();
        let from = seq_of(&first);
        let expected: Vec<Entry> = model.iter().filter(|e| e.0 > from).cloned().collect();
        assert_eq!(
            seen, expected,
            "a subscriber from {from}: the log after its cursor, once, in order"
        );
        assert_eq!(
            collapse(model.iter().filter(|e| e.0 <= from).chain(seen.iter())),
            collapse(model.iter())
        );
    }
}
