//! Incremental sync: `changes(spaceId, since, limit)`.

use std::collections::HashMap;

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn changes_lists_each_file_once_in_its_latest_state_with_tombstones() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let head0 = app
        .gql(
            "alice",
            "query($s: ID!) { space(id: $s) { headCursor } }",
            json!({ "s": space }),
        )
        .await["space"]["headCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let a = app.upload_id("alice", &space, "a.txt", b"a").await;
    let b = app.upload_id("alice", &space, "b.txt", b"b").await;
    let page = app.changes("alice", &space, None, None).await;
    let cursor = page["nextCursor"].as_str().unwrap().to_owned();
    assert_eq!(page["hasMore"], false);
    assert_eq!(page["files"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.changes("alice", &space, Some(&head0), None).await["files"],
        page["files"]
    );

    // Nothing new: an empty page whose cursor does not move.
    let empty = app.changes("alice", &space, Some(&cursor), None).await;
    assert_eq!(empty["files"], json!([]));
    assert_eq!(empty["nextCursor"], cursor.as_str());

    app.update_metadata("alice", &a, 1, "k", "1").await;
    app.update_metadata("alice", &a, 2, "k", "2").await;
    app.gql(
        "alice",
        "mutation($id: ID!) { deleteFile(id: $id) { id } }",
        json!({ "id": b }),
    )
    .await;
    let c = app.upload_id("alice", &space, "c.txt", b"c").await;

    let page = app.changes("alice", &space, Some(&cursor), None).await;
    let got: Vec<_> = page["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["version"].as_i64().unwrap(),
                f["deleted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (a.clone(), 3, false),
            (b.clone(), 2, true),
            (c.clone(), 1, false)
        ]
    );
    let head = app
        .gql(
            "alice",
            "query($s: ID!) { space(id: $s) { headCursor } }",
            json!({ "s": space }),
        )
        .await["space"]["headCursor"]
        .clone();
    assert_eq!(page["nextCursor"], head);
}

#[tokio::test]
async fn pages_follow_limit_and_has_more() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    for i in 0..7 {
        app.upload("alice", &space, &format!("f{i}"), format!("{i}").as_bytes())
            .await;
    }
    let mut since: Option<String> = None;
    let mut names = Vec::new();
    let mut pages = 0;
    loop {
        let page = app
            .changes("alice", &space, since.as_deref(), Some(3))
            .await;
        pages += 1;
        names.extend(
            page["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["name"].as_str().unwrap().to_owned()),
        );
        since = Some(page["nextCursor"].as_str().unwrap().to_owned());
        if page["hasMore"] == false {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, (0..7).map(|i| format!("f{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn bad_cursors_and_limits_are_bad_input() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "A").await;
    let other = app.create_space("alice", "B").await;
    let other_cursor = app.upload("alice", &other, "x", b"x").await["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let future = filesync::domain::Cursor::new(space.parse().unwrap(), 99).encode();
    const Q: &str = "query($s: ID!, $c: Cursor, $l: Int) { changes(spaceId: $s, since: $c, limit: $l) { hasMore } }";
    for (since, limit) in [
        (json!("not-a-cursor"), json!(null)),
        (json!(""), json!(null)),
        (json!(other_cursor), json!(null)),
        (json!(future), json!(null)),
        (json!(123), json!(null)),
        (json!(null), json!(0)),
        (json!(null), json!(-5)),
        (json!(null), json!(1_000_000)),
        (json!(null), json!("ten")),
    ] {
        let (code, _) = app
            .gql_err(
                Some("alice"),
                Q,
                json!({ "s": space, "c": since, "l": limit }),
            )
            .await;
        assert_eq!(code, "BAD_INPUT", "since {since}, limit {limit}");
    }
}

#[tokio::test]
async fn files_is_a_relay_connection_with_a_prefix_filter() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    for name in ["docs/a.md", "docs/b.md", "docs/c.md", "docsx", "img/p.png"] {
        app.upload("alice", &space, name, name.as_bytes()).await;
    }
    const Q: &str = "query($s: ID!, $p: String, $f: Int, $a: String) { files(spaceId: $s, prefix: $p, first: $f, after: $a) {
        edges { cursor node { name } } pageInfo { hasNextPage endCursor } } }";
    let page = app
        .gql("alice", Q, json!({ "s": space, "p": "docs/", "f": 2 }))
        .await["files"]
        .clone();
    let names = node_names(&page);
    assert_eq!(names, vec![json!("docs/a.md"), json!("docs/b.md")]);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let after = page["pageInfo"]["endCursor"].clone();
    let page = app
        .gql(
            "alice",
            Q,
            json!({ "s": space, "p": "docs/", "f": 2, "a": after }),
        )
        .await["files"]
        .clone();
    let names = node_names(&page);
    assert_eq!(names, vec![json!("docs/c.md")]);
    assert_eq!(page["pageInfo"]["hasNextPage"], false);
    let all = app.gql("alice", Q, json!({ "s": space })).await["files"]["edges"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(all, 5);
    let (code, _) = app
        .gql_err(Some("alice"), Q, json!({ "s": space, "a": "%%%" }))
        .await;
    assert_eq!(code, "BAD_INPUT");
}

fn node_names(connection: &serde_json::Value) -> Vec<serde_json::Value> {
    connection["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["name"].clone())
        .collect()
}

/// A client paging while others write misses nothing: once it reaches the head after the
/// writers stop, it has seen every file at its final version.
#[tokio::test]
async fn paging_during_concurrent_writes_misses_nothing() {
    let app = std::sync::Arc::new(spawn_app().await);
    let space = app.create_space("alice", "Team").await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            app.upload_id("alice", &space, &format!("f{i:02}"), b"x")
                .await,
        );
    }
    let writers: Vec<_> = ids
        .chunks(5)
        .map(|chunk| {
            let (app, chunk) = (app.clone(), chunk.to_vec());
            tokio::spawn(async move {
                for round in 1..=10 {
                    for id in &chunk {
                        let body = app
                            .update_metadata("alice", id, round, "round", &round.to_string())
                            .await;
                        assert!(body.get("errors").is_none(), "{body}");
                    }
                }
            })
        })
        .collect();

    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut since: Option<String> = None;
    let mut writers_done = false;
    loop {
        let page = app
            .changes("alice", &space, since.as_deref(), Some(7))
            .await;
        for f in page["files"].as_array().unwrap() {
            let version = f["version"].as_i64().unwrap();
            let previous = seen.insert(f["id"].as_str().unwrap().to_owned(), version);
            assert!(
                previous.is_none_or(|p| p < version),
                "versions only move forward"
            );
        }
        since = Some(page["nextCursor"].as_str().unwrap().to_owned());
        if page["hasMore"] == false {
            if writers_done {
                break;
            }
            writers_done = writers.iter().all(|w| w.is_finished());
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    for id in &ids {
        assert_eq!(seen[id], 11, "file {id} seen at its final version");
    }
}

/// `changes.files` has a fast path for plain scalar selections; a fragment takes the
/// generic resolver. Both must answer the same, field for field.
#[tokio::test]
async fn the_fast_and_the_generic_file_list_answer_the_same() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let a = app.upload_id("alice", &space, "a.txt", b"a").await;
    // No content type, and a tombstone (no download URL).
    let ticket = app
        .begin_upload_raw(
            "alice",
            json!({ "spaceId": space, "name": "b", "size": 1, "sha256": crate::helpers::sha256_hex(b"b") }),
        )
        .await;
    let ticket = crate::helpers::Ticket(ticket["data"]["beginUpload"].clone());
    assert_eq!(app.put_bytes(&ticket, b"b".to_vec()).await.status(), 200);
    app.commit("alice", &ticket).await;
    app.gql(
        "alice",
        "mutation($id: ID!) { deleteFile(id: $id) { id } }",
        json!({ "id": a }),
    )
    .await;
    app.upload("alice", &space, "c.txt", b"c").await;

    const FIELDS: &str = "__typename id spaceId name version size sha256 contentType creator createdAt updatedAt deleted cursor downloadUrl again: id";
    let fast = format!("query($s: ID!) {{ changes(spaceId: $s) {{ files {{ {FIELDS} }} }} }}");
    let generic = format!(
        "query($s: ID!) {{ changes(spaceId: $s) {{ files {{ ... on File {{ {FIELDS} }} }} }} }}"
    );
    let strip_signatures = |mut v: serde_json::Value| {
        for f in v["changes"]["files"].as_array_mut().unwrap() {
            if let Some(url) = f["downloadUrl"].as_str() {
                f["downloadUrl"] = json!(url.split('?').next().unwrap());
            }
        }
        v
    };
    let fast = strip_signatures(app.gql("alice", &fast, json!({ "s": space })).await);
    let generic = strip_signatures(app.gql("alice", &generic, json!({ "s": space })).await);
    assert_eq!(fast["changes"]["files"].as_array().unwrap().len(), 3);
    assert_eq!(fast, generic);
    // Key order follows the selection, as GraphQL requires (checked on the raw text:
    // serde_json's map sorts keys).
    let raw = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(app.token("alice"))
        .json(&json!({ "query": format!("query($s: ID!) {{ changes(spaceId: $s) {{ files {{ {FIELDS} }} }} }}"), "variables": { "s": space } }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let first_file = &raw[raw.find("\"files\":[{").unwrap()..];
    let at = |key: &str| first_file.find(&format!("\"{key}\":")).unwrap();
    assert!(
        at("__typename") < at("id") && at("id") < at("version") && at("downloadUrl") < at("again"),
        "{first_file}"
    );
    // In seq order: b (created), a (deleted after b was created), c.
    assert!(fast["changes"]["files"][0]["contentType"].is_null());
    assert!(
        fast["changes"]["files"][1]["downloadUrl"].is_null(),
        "tombstone"
    );
    assert!(fast["changes"]["files"][2]["downloadUrl"].is_string());
}
