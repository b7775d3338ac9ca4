//! Metadata updates, renames, deletes and restores, with optimistic concurrency.

use serde_json::json;

use crate::helpers::{FILE_FIELDS, spawn_app};

const DELETE: &str = "mutation($id: ID!, $b: Int) { deleteFile(id: $id, baseVersion: $b) { id version deleted cursor downloadUrl } }";
const RESTORE: &str = "mutation($id: ID!, $v: Int!, $b: Int!) { restoreVersion(id: $id, version: $v, baseVersion: $b) { name version deleted sha256 metadata { key value } } }";

#[tokio::test]
async fn updates_make_new_versions_and_a_stale_base_is_a_conflict() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let id = app.upload_id("alice", &space, "a.txt", b"content").await;

    let body = app.update_metadata("alice", &id, 1, "color", "blue").await;
    let v2 = &body["data"]["updateFile"];
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["metadata"], json!([{ "key": "color", "value": "blue" }]));

    let body = app.update_metadata("alice", &id, 1, "color", "red").await;
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "CONFLICT");
    assert_eq!(error["extensions"]["currentVersion"], 2);
    assert_eq!(
        app.file("alice", &id).await["metadata"][0]["value"],
        "blue",
        "nothing overwritten"
    );

    let renamed = app
        .gql(
            "alice",
            &format!("mutation($id: ID!) {{ updateFile(id: $id, baseVersion: 2, input: {{ name: \"b/renamed.txt\" }}) {{ {FILE_FIELDS} }} }}"),
            json!({ "id": id }),
        )
        .await;
    assert_eq!(renamed["updateFile"]["name"], "b/renamed.txt");
    assert_eq!(
        renamed["updateFile"]["metadata"][0]["value"], "blue",
        "metadata kept"
    );

    // Old versions stay readable.
    let data = app
        .gql(
            "alice",
            "query($id: ID!) { v1: file(id: $id, version: 1) { name version metadata { key } }
               fileVersions(id: $id) { version kind state name author } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        data["v1"],
        json!({ "name": "a.txt", "version": 1, "metadata": [] })
    );
    let kinds: Vec<_> = data["fileVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["kind"].clone())
        .collect();
    assert_eq!(
        kinds,
        vec![json!("CREATED"), json!("UPDATED"), json!("UPDATED")]
    );
    assert!(
        data["fileVersions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["state"] == "COMMITTED")
    );

    let (code, _) = app
        .gql_err(
            Some("alice"),
            "mutation($id: ID!) { updateFile(id: $id, baseVersion: 3, input: {}) { id } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code, "BAD_INPUT", "an empty update is refused");
}

#[tokio::test]
async fn only_the_creator_or_an_owner_may_delete() {
    let app = spawn_app().await;
    let space = app.create_space("owner", "Team").await;
    app.set_member("owner", &space, "bob", Some("EDITOR")).await;
    app.set_member("owner", &space, "carol", Some("EDITOR"))
        .await;
    app.set_member("owner", &space, "vic", Some("VIEWER")).await;
    let bobs = app.upload_id("bob", &space, "bob.txt", b"b").await;
    let carols = app.upload_id("carol", &space, "carol.txt", b"c").await;

    for user in ["carol", "vic"] {
        let (code, _) = app.gql_err(Some(user), DELETE, json!({ "id": bobs })).await;
        assert_eq!(code, "FORBIDDEN", "{user} may not delete bob's file");
    }
    assert_eq!(app.file("bob", &bobs).await["deleted"], false);

    let tombstone =
        app.gql("bob", DELETE, json!({ "id": bobs, "b": 1 })).await["deleteFile"].clone();
    assert_eq!(tombstone["deleted"], true);
    assert_eq!(tombstone["version"], 2);
    assert!(tombstone["downloadUrl"].is_null());
    // Deleting again changes nothing.
    let again = app.gql("bob", DELETE, json!({ "id": bobs })).await["deleteFile"].clone();
    assert_eq!(again, tombstone);

    let by_owner = app.gql("owner", DELETE, json!({ "id": carols })).await;
    assert_eq!(by_owner["deleteFile"]["deleted"], true);

    // A stale base on delete is a conflict.
    let d = app.upload_id("bob", &space, "d.txt", b"d").await;
    app.update_metadata("bob", &d, 1, "k", "v").await;
    let (code, error) = app
        .gql_err(Some("bob"), DELETE, json!({ "id": d, "b": 1 }))
        .await;
    assert_eq!(code, "CONFLICT");
    assert_eq!(error["extensions"]["currentVersion"], 2);

    // Viewers cannot modify at all.
    let body = app.update_metadata("vic", &d, 2, "k", "w").await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
}

#[tokio::test]
async fn restore_brings_back_an_old_version_and_undeletes() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let v1 = app.upload("alice", &space, "a.txt", b"first").await;
    let id = v1["id"].as_str().unwrap().to_owned();
    let v2 = app
        .begin_upload(
            "alice",
            &space,
            "a.txt",
            b"second",
            json!({ "fileId": id, "baseVersion": 1 }),
        )
        .await;
    app.put_bytes(&v2, b"second".to_vec()).await;
    app.commit("alice", &v2).await;
    app.gql("alice", DELETE, json!({ "id": id, "b": 2 })).await;

    let (code, _) = app
        .gql_err(Some("alice"), RESTORE, json!({ "id": id, "v": 1, "b": 2 }))
        .await;
    assert_eq!(code, "CONFLICT");
    let (code, _) = app
        .gql_err(Some("alice"), RESTORE, json!({ "id": id, "v": 3, "b": 3 }))
        .await;
    assert_eq!(code, "BAD_INPUT", "a tombstone has nothing to restore");
    let (code, _) = app
        .gql_err(Some("alice"), RESTORE, json!({ "id": id, "v": 9, "b": 3 }))
        .await;
    assert_eq!(code, "NOT_FOUND");

    let restored = app
        .gql("alice", RESTORE, json!({ "id": id, "v": 1, "b": 3 }))
        .await["restoreVersion"]
        .clone();
    assert_eq!(restored["version"], 4);
    assert_eq!(restored["deleted"], false);
    assert_eq!(restored["sha256"], v1["sha256"]);
    let file = app.file("alice", &id).await;
    let res = app.get(file["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(res.bytes().await.unwrap(), &b"first"[..]);

    // Updating a deleted file is refused; restoring is the way back.
    app.gql("alice", DELETE, json!({ "id": id })).await;
    let body = app.update_metadata("alice", &id, 5, "k", "v").await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_INPUT");
}
