//! `kill -9` of the real server at random points of a mixed workload, many times; after
//! each restart, the promises hold: every acknowledged change is there, versions have no
//! gaps, `changes` from the start equals the files' latest states, every visible
//! version's bytes have its size and SHA-256, nothing pending is visible, and a
//! subscriber resuming from an older cursor gets each later change once.
//!
//! On AWS, two replicas share one stack and one of them is killed mid-workload; its
//! subscriber resumes on the other, and afterwards every committed version's object
//! exists, untagged, with its size and checksum.
//!
//! Rounds: `CRASH_ROUNDS` (default 8); the seed of each run is printed, `CRASH_SEED`
//! replays one.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::helpers::{TestApp, on_aws, sha256_hex, use_aws_stack};
use crate::process::{ServerProcess, aws_env};
use crate::ws_client::TRANSPORT_WS;

/// One acknowledged change: the server answered that it committed it.
#[derive(Debug, Clone)]
struct Ack {
    file: String,
    version: i64,
    name: String,
    deleted: bool,
    sha256: String,
}

/// What the workload saw: acknowledgements, and uploads begun but never committed.
#[derive(Default, Clone)]
struct Journal {
    acks: Vec<Ack>,
    /// Files that only ever had a pending upload: they must never be visible.
    never_committed: BTreeSet<String>,
}

/// A GraphQL call that may fail (the server is being killed): `None` on any failure.
async fn call(app: &TestApp, query: &str, variables: Value) -> Option<Value> {
    let res = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(app.token("alice"))
        .json(&json!({ "query": query, "variables": variables }))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let body: Value = res.json().await.ok()?;
    if body.get("errors").is_some() {
        return None;
    }
    body.get("data").cloned()
}

const FILE: &str = "id version name deleted sha256";

fn ack_of(file: &Value) -> Ack {
    Ack {
        file: file["id"].as_str().unwrap().to_owned(),
        version: file["version"].as_i64().unwrap(),
        name: file["name"].as_str().unwrap().to_owned(),
        deleted: file["deleted"].as_bool().unwrap(),
        sha256: file["sha256"].as_str().unwrap().to_owned(),
    }
}

/// How far a three-phase upload goes.
#[derive(Clone, Copy, PartialEq)]
enum Finish {
    /// Begin, send the bytes, commit.
    Commit,
    /// Begin and send the bytes: the storage event commits it (AWS; on the embedded
    /// backend the PUT itself does), and the client never hears of it.
    Bytes,
    /// Begin only: nothing of it may ever become visible.
    Begin,
}

/// A three-phase upload of `bytes` (a new file, or a new version of `file`); the file
/// as committed, when the server said so.
async fn three_phase(
    app: &TestApp,
    space: &str,
    name: &str,
    file: Option<(&str, i64)>,
    bytes: &[u8],
    finish: Finish,
    journal: &Mutex<Journal>,
) -> Option<Value> {
    let mut input = json!({
        "spaceId": space, "name": name, "size": bytes.len(),
        "sha256": sha256_hex(bytes), "contentType": "application/octet-stream",
    });
    if let Some((id, base)) = file {
        input["fileId"] = json!(id);
        input["baseVersion"] = json!(base);
    }
    let ticket = call(
        app,
        "mutation($i: BeginUploadInput!) { beginUpload(input: $i) {
            uploadId uploadToken fileId url headers { name value } } }",
        json!({ "i": input }),
    )
    .await?["beginUpload"]
        .clone();
    if finish == Finish::Begin {
        if file.is_none() {
            let id = ticket["fileId"].as_str()?.to_owned();
            journal.lock().unwrap().never_committed.insert(id);
        }
        return None;
    }
    let mut put = app.client.put(ticket["url"].as_str()?).body(bytes.to_vec());
    for h in ticket["headers"].as_array()? {
        put = put.header(h["name"].as_str()?, h["value"].as_str()?);
    }
    let stored = put.timeout(Duration::from_secs(10)).send().await.ok()?;
    if !stored.status().is_success() || finish == Finish::Bytes {
        return None; // committed by the storage event, perhaps: not acknowledged
    }
    let committed = call(
        app,
        &format!("mutation($u: ID!, $t: String!) {{ commitUpload(uploadId: $u, uploadToken: $t) {{ {FILE} }} }}"),
        json!({ "u": ticket["uploadId"], "t": ticket["uploadToken"] }),
    )
    .await?;
    Some(committed["commitUpload"].clone())
}

/// A small file sent inline (GraphQL multipart request).
async fn inline(app: &TestApp, space: &str, name: &str, bytes: &[u8]) -> Option<Value> {
    let operations = json!({
        "query": format!("mutation($i: BeginUploadInput!, $c: Upload!) {{ uploadFile(input: $i, content: $c) {{ {FILE} }} }}"),
        "variables": { "i": { "spaceId": space, "name": name, "size": bytes.len(), "sha256": sha256_hex(bytes) }, "c": null },
    });
    let form = reqwest::multipart::Form::new()
        .text("operations", operations.to_string())
        .text("map", json!({ "0": ["variables.c"] }).to_string())
        .part(
            "0",
            reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("f"),
        );
    let res = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(app.token("alice"))
        .multipart(form)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let body: Value = res.json().await.ok()?;
    body.get("errors")
        .is_none()
        .then(|| body["data"]["uploadFile"].clone())
}

/// One worker: its own files, random operations on them through any of `apps`, until
/// every one of them is dead or `until` has passed.
async fn worker(
    mut apps: Vec<Arc<TestApp>>,
    space: String,
    worker: usize,
    seed: u64,
    journal: Arc<Mutex<Journal>>,
    until: tokio::time::Instant,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    // Each file's last known (id, version, deleted).
    let mut files: Vec<(String, i64, bool)> = Vec::new();
    for step in 0..100_000 {
        if apps.is_empty() || tokio::time::Instant::now() >= until {
            return;
        }
        let which = rng.random_range(0..apps.len());
        let app = &apps[which];
        let bytes: Vec<u8> = (0..rng.random_range(0..4096))
            .map(|_| rng.random())
            .collect();
        let name = format!("w{worker}/f{step}.bin");
        let pick = (!files.is_empty()).then(|| rng.random_range(0..files.len()));
        let outcome = match (rng.random_range(0..8), pick) {
            (0, _) | (_, None) => {
                three_phase(app, &space, &name, None, &bytes, Finish::Commit, &journal).await
            }
            (1, _) => inline(app, &space, &name, &bytes).await,
            (2, _) => three_phase(app, &space, &name, None, &bytes, Finish::Begin, &journal).await,
            (7, _) => three_phase(app, &space, &name, None, &bytes, Finish::Bytes, &journal).await,
            (3, Some(i)) if !files[i].2 => {
                let (id, v, _) = &files[i];
                three_phase(
                    app,
                    &space,
                    &name,
                    Some((id, *v)),
                    &bytes,
                    Finish::Commit,
                    &journal,
                )
                .await
            }
            (4, Some(i)) if !files[i].2 => {
                let (id, v, _) = files[i].clone();
                call(app, &format!("mutation($id: ID!, $b: Int!, $n: String!) {{ updateFile(id: $id, baseVersion: $b, input: {{ name: $n }}) {{ {FILE} }} }}"),
                    json!({ "id": id, "b": v, "n": name })).await.map(|d| d["updateFile"].clone())
            }
            (5, Some(i)) if !files[i].2 => {
                let (id, v, _) = files[i].clone();
                call(app, &format!("mutation($id: ID!, $b: Int!) {{ deleteFile(id: $id, baseVersion: $b) {{ {FILE} }} }}"),
                    json!({ "id": id, "b": v })).await.map(|d| d["deleteFile"].clone())
            }
            (_, Some(i)) => {
                let (id, v, _) = files[i].clone();
                call(app, &format!("mutation($id: ID!, $b: Int!) {{ restoreVersion(id: $id, version: 1, baseVersion: $b) {{ {FILE} }} }}"),
                    json!({ "id": id, "b": v })).await.map(|d| d["restoreVersion"].clone())
            }
        };
        match outcome {
            Some(file) if file.is_object() => {
                let ack = ack_of(&file);
                match files.iter_mut().find(|f| f.0 == ack.file) {
                    Some(known) => *known = (ack.file.clone(), ack.version, ack.deleted),
                    None => files.push((ack.file.clone(), ack.version, ack.deleted)),
                }
                journal.lock().unwrap().acks.push(ack);
            }
            _ => {
                // Refused or cut off: a server that is gone is not used again.
                if call(app, "{ me { id } }", json!({})).await.is_none() {
                    apps.remove(which);
                }
            }
        }
    }
}

/// Every check of the module doc, through `app` (a healthy server). The history and
/// bytes of a file are read only when `deep` is `None` or names it (the files a round
/// touched; the last round reads all of them).
async fn check(
    app: &TestApp,
    space: &str,
    journal: &Journal,
    resume_from: &str,
    deep: Option<&BTreeSet<String>>,
) {
    // `changes` from the start: each file once, at its latest state.
    let mut latest: BTreeMap<String, Value> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = app
            .gql(
                "alice",
                "query($s: ID!, $c: Cursor) { changes(spaceId: $s, since: $c, limit: 500) {
                    files { id version deleted sha256 size downloadUrl } nextCursor hasMore } }",
                json!({ "s": space, "c": cursor }),
            )
            .await["changes"]
            .clone();
        for file in page["files"].as_array().unwrap() {
            let id = file["id"].as_str().unwrap().to_owned();
            assert!(
                latest.insert(id, file.clone()).is_none(),
                "a file twice in changes"
            );
        }
        cursor = page["nextCursor"].as_str().map(str::to_owned);
        if page["hasMore"] != true {
            break;
        }
    }
    for id in journal
        .acks
        .iter()
        .map(|a| &a.file)
        .collect::<BTreeSet<_>>()
    {
        assert!(
            latest.contains_key(id),
            "acknowledged file {id} is not in changes"
        );
    }
    for id in &journal.never_committed {
        assert!(
            !latest.contains_key(id),
            "a never-committed upload is visible: {id}"
        );
    }
    let mut acked: BTreeMap<&str, Vec<&Ack>> = BTreeMap::new();
    for ack in &journal.acks {
        acked.entry(ack.file.as_str()).or_default().push(ack);
    }
    for (id, file) in &latest {
        if deep.is_some_and(|deep| !deep.contains(id)) {
            continue;
        }
        // Its history: no gaps, up to the latest state `changes` shows, and every
        // acknowledged version in it as acknowledged.
        let history = app
            .gql(
                "alice",
                "query($id: ID!) { fileVersions(id: $id) { version name deleted sha256 } }",
                json!({ "id": id }),
            )
            .await["fileVersions"]
            .as_array()
            .unwrap()
            .clone();
        let numbers: Vec<i64> = history
            .iter()
            .map(|v| v["version"].as_i64().unwrap())
            .collect();
        let n = file["version"].as_i64().unwrap();
        assert_eq!(numbers, (1..=n).collect::<Vec<_>>(), "versions of {id}");
        for ack in acked.get(id.as_str()).into_iter().flatten() {
            let found = &history[usize::try_from(ack.version - 1).unwrap()];
            assert_eq!(
                (
                    found["name"].as_str(),
                    found["deleted"].as_bool(),
                    found["sha256"].as_str()
                ),
                (
                    Some(ack.name.as_str()),
                    Some(ack.deleted),
                    Some(ack.sha256.as_str())
                ),
                "acknowledged {ack:?}"
            );
        }
        // Its bytes, as the metadata says.
        if file["deleted"] == false {
            let bytes = app
                .get(file["downloadUrl"].as_str().unwrap())
                .await
                .bytes()
                .await
                .unwrap();
            assert_eq!(
                bytes.len() as i64,
                file["size"].as_i64().unwrap(),
                "size of {id}"
            );
            assert_eq!(
                sha256_hex(&bytes),
                file["sha256"].as_str().unwrap(),
                "bytes of {id}"
            );
        }
    }
    // A subscriber resuming from an older cursor: each later change once, in order.
    let mut sub = app.ws_as("alice", TRANSPORT_WS).await;
    sub.subscribe(
        "r",
        "subscription($s: ID!, $c: Cursor) { changes(spaceId: $s, since: $c) { kind cursor } }",
        json!({ "s": space, "c": resume_from }),
    )
    .await;
    let events = sub.until_ready().await;
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| seq_of(e["cursor"].as_str().unwrap()))
        .collect();
    let (replayed, ready) = seqs.split_at(seqs.len() - 1);
    let from = seq_of(resume_from);
    assert_eq!(
        replayed,
        (from + 1..=ready[0]).collect::<Vec<_>>(),
        "every change after the cursor, once, in order"
    );
}

/// The seq a cursor names (a test may read its own server's cursors).
fn seq_of(cursor: &str) -> u64 {
    filesync::domain::Cursor::decode(cursor).unwrap().seq
}

fn seed() -> u64 {
    std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

fn rounds() -> usize {
    std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

async fn head_cursor(app: &TestApp, space: &str) -> String {
    let mut cursor: Option<String> = None;
    loop {
        let page = app
            .gql(
                "alice",
                "query($s: ID!, $c: Cursor) { changes(spaceId: $s, since: $c, limit: 1000) { nextCursor hasMore } }",
                json!({ "s": space, "c": cursor }),
            )
            .await["changes"]
            .clone();
        cursor = page["nextCursor"].as_str().map(str::to_owned);
        if page["hasMore"] != true {
            return cursor.unwrap();
        }
    }
}

#[tokio::test]
async fn kill_9_at_random_points_of_a_mixed_workload_loses_nothing_acknowledged() {
    if on_aws() {
        eprintln!("the AWS variant is the two-replica test below");
        return;
    }
    let seed = seed();
    eprintln!("CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut server = ServerProcess::start(dir.path(), &[]).await;
    let mut app = Arc::new(TestApp::external(server.base.clone(), dir.clone()));
    let space = app.create_space("alice", "Team").await;
    let journal = Arc::new(Mutex::new(Journal::default()));
    let rounds = rounds();
    for round in 0..rounds {
        let resume_from = head_cursor(&app, &space).await;
        let acked_before = journal.lock().unwrap().acks.len();
        let workers: Vec<_> = (0..3)
            .map(|w| {
                tokio::spawn(worker(
                    vec![app.clone()],
                    space.clone(),
                    round * 10 + w,
                    rng.random(),
                    journal.clone(),
                    tokio::time::Instant::now() + Duration::from_secs(60),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..700))).await;
        server.kill9();
        for w in workers {
            w.await.unwrap();
        }
        server = ServerProcess::start(dir.path(), &[]).await;
        let restarted = TestApp::external(server.base.clone(), dir.clone());
        let journal = journal.lock().unwrap().clone();
        let touched: BTreeSet<String> = journal.acks[acked_before..]
            .iter()
            .map(|a| a.file.clone())
            .collect();
        let deep = (round + 1 < rounds).then_some(&touched);
        check(&restarted, &space, &journal, &resume_from, deep).await;
        let acks = journal.acks.len();
        eprintln!("round {round}: {acks} acknowledged changes so far, all there");
        app = Arc::new(restarted);
    }
}

/// A commit on one replica racing a cancel on the other, over and over: whichever wins,
/// an acknowledged commit is in the journal.
async fn commits_racing_cancels(
    a: Arc<TestApp>,
    b: Arc<TestApp>,
    space: String,
    journal: Arc<Mutex<Journal>>,
) {
    for round in 0u64.. {
        let bytes = format!("raced {round}").into_bytes();
        let Some(ticket) = call(
            &a,
            "mutation($i: BeginUploadInput!) { beginUpload(input: $i) { uploadId uploadToken url headers { name value } } }",
            json!({ "i": { "spaceId": space, "name": format!("race/{round}"), "size": bytes.len(), "sha256": sha256_hex(&bytes), "contentType": "application/octet-stream" } }),
        )
        .await
        else {
            return;
        };
        let ticket = ticket["beginUpload"].clone();
        let mut put = a
            .client
            .put(ticket["url"].as_str().unwrap())
            .body(bytes.clone());
        for h in ticket["headers"].as_array().unwrap() {
            put = put.header(h["name"].as_str().unwrap(), h["value"].as_str().unwrap());
        }
        if put.send().await.is_err() {
            return;
        }
        let ids = json!({ "u": ticket["uploadId"], "t": ticket["uploadToken"] });
        let commit = format!(
            "mutation($u: ID!, $t: String!) {{ commitUpload(uploadId: $u, uploadToken: $t) {{ {FILE} }} }}"
        );
        let (committed, _) = tokio::join!(call(&a, &commit, ids.clone()), async {
            tokio::time::sleep(Duration::from_millis(round % 40)).await;
            call(
                &b,
                "mutation($u: ID!, $t: String!) { cancelUpload(uploadId: $u, uploadToken: $t) }",
                ids.clone(),
            )
            .await
        });
        if let Some(data) = committed {
            journal
                .lock()
                .unwrap()
                .acks
                .push(ack_of(&data["commitUpload"]));
        }
    }
}

/// Every committed version's object is in the bucket, untagged, with its size and
/// SHA-256.
async fn check_objects(app: &TestApp, space: &str) {
    let mut cursor: Option<String> = None;
    let mut checked = 0;
    loop {
        let page = app
            .gql(
                "alice",
                "query($s: ID!, $c: Cursor) { changes(spaceId: $s, since: $c, limit: 200) { files { id version } nextCursor hasMore } }",
                json!({ "s": space, "c": cursor }),
            )
            .await["changes"]
            .clone();
        for file in page["files"].as_array().unwrap() {
            let history = app
                .gql(
                    "alice",
                    "query($id: ID!) { fileVersions(id: $id) { size sha256 deleted downloadUrl } }",
                    json!({ "id": file["id"] }),
                )
                .await["fileVersions"]
                .as_array()
                .unwrap()
                .clone();
            for version in history.iter().filter(|v| v["deleted"] == false) {
                let url = version["downloadUrl"].as_str().unwrap();
                let object = app
                    .object_of_url(url)
                    .await
                    .unwrap_or_else(|| panic!("no object for {url}"));
                assert_eq!(object.size, version["size"].as_u64().unwrap(), "{url}");
                assert_eq!(
                    object.sha256.as_deref(),
                    version["sha256"].as_str(),
                    "{url}"
                );
                assert!(
                    object.tags.is_empty(),
                    "a committed object is tagged {:?}: {url}",
                    object.tags
                );
                checked += 1;
            }
        }
        cursor = page["nextCursor"].as_str().map(str::to_owned);
        if page["hasMore"] != true {
            break;
        }
    }
    eprintln!("{checked} committed objects checked in the bucket");
}

#[tokio::test]
async fn killing_one_of_two_replicas_mid_workload_loses_no_committed_byte() {
    if !on_aws() {
        eprintln!("replicas share a store only on the AWS backend");
        return;
    }
    let seed = seed();
    eprintln!("CRASH_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let stack = Arc::new(tempfile::tempdir().unwrap());
    let mut settings = filesync::config::Settings::default();
    use_aws_stack(&mut settings, stack.path());
    let mut env = aws_env(&settings);
    env.push(("FILESYNC_STORAGE__STREAM_LEASE".into(), "4s".into()));
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut server_a = ServerProcess::start(dir_a.path(), &env).await;
    let server_b = ServerProcess::start(dir_b.path(), &env).await;
    let a = Arc::new(TestApp::external(server_a.base.clone(), stack.clone()));
    let b = Arc::new(TestApp::external(server_b.base.clone(), stack.clone()));
    let space = a.create_space("alice", "Team").await;
    let start = head_cursor(&a, &space).await;

    // A subscriber on the replica that will die: the cursor of the last event it got.
    let mut sub = a.ws_as("alice", TRANSPORT_WS).await;
    sub.subscribe_changes("s", &space, Some(&start)).await;
    let last_seen = Arc::new(Mutex::new(start.clone()));
    let listener = {
        let last_seen = last_seen.clone();
        tokio::spawn(async move {
            while let Ok(message) = sub.recv().await {
                if let Some(cursor) = message["payload"]["data"]["changes"]["cursor"].as_str() {
                    *last_seen.lock().unwrap() = cursor.to_owned();
                }
            }
        })
    };

    let journal = Arc::new(Mutex::new(Journal::default()));
    let kill_after = Duration::from_millis(rng.random_range(2000..5000));
    let until = tokio::time::Instant::now() + kill_after + Duration::from_secs(3);
    let mut tasks: Vec<_> = (0..3)
        .map(|w| {
            tokio::spawn(worker(
                vec![a.clone(), b.clone()],
                space.clone(),
                w,
                rng.random(),
                journal.clone(),
                until,
            ))
        })
        .collect();
    tasks.push(tokio::spawn(commits_racing_cancels(
        a.clone(),
        b.clone(),
        space.clone(),
        journal.clone(),
    )));
    tokio::time::sleep(kill_after).await;
    server_a.kill9();
    for task in tasks {
        task.await.unwrap();
    }
    let _ = listener.await;

    // Storage events still in flight commit what they commit; then everything holds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resume_from = last_seen.lock().unwrap().clone();
    let journal = journal.lock().unwrap().clone();
    check(&b, &space, &journal, &resume_from, None).await;
    check_objects(&b, &space).await;
    eprintln!("{} acknowledged changes, all there", journal.acks.len());
}
