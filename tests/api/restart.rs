//! A restart on the same data dir keeps everything.

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_in};

#[tokio::test]
async fn a_restart_keeps_files_versions_cursors_and_the_signing_key() {
    let app = spawn_app().await;
    let token = app.token("alice");
    let space = app.create_space("alice", "Team").await;
    let file = app.upload("alice", &space, "a.txt", b"durable").await;
    let id = file["id"].as_str().unwrap().to_owned();
    app.update_metadata("alice", &id, 1, "k", "v").await;
    let cursor = app.changes("alice", &space, None, None).await["nextCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let pending = app
        .begin_upload("alice", &space, "later.txt", b"later", json!({}))
        .await;
    let dir = app.stop().await;

    let app = spawn_app_in(dir, |_| {}).await;
    // A token minted before the restart still works: the key was kept.
    let res = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(&token)
        .json(&json!({ "query": "{ me { id } spaces { name } }" }))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(
        body["data"],
        json!({ "me": { "id": "alice" }, "spaces": [{ "name": "Team" }] })
    );

    let file = app.file("alice", &id).await;
    assert_eq!(file["version"], 2);
    assert_eq!(file["metadata"], json!([{ "key": "k", "value": "v" }]));
    let res = app.get(file["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(res.bytes().await.unwrap(), &b"durable"[..]);
    let versions = app
        .gql(
            "alice",
            "query($id: ID!) { fileVersions(id: $id) { version } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(versions["fileVersions"].as_array().unwrap().len(), 2);

    // The old cursor is still a valid position: nothing new since.
    assert_eq!(
        app.changes("alice", &space, Some(&cursor), None).await["files"],
        json!([])
    );
    // And the seq goes on from where it was.
    app.update_metadata("alice", &id, 2, "k", "w").await;
    let page = app.changes("alice", &space, Some(&cursor), None).await;
    assert_eq!(page["files"][0]["version"], 3);

    if crate::helpers::on_aws() {
        // An upload begun before the restart can still be finished: its URL is S3's.
        assert_eq!(
            app.put_bytes(&pending, b"later".to_vec()).await.status(),
            200
        );
        assert_eq!(app.commit("alice", &pending).await["name"], "later.txt");
        return;
    }
    // An upload begun before the restart can still be finished (its URL's port changed,
    // so the client asks again by sending to the new server's address).
    let old_url = pending.url().to_owned();
    let path_and_query = &old_url[old_url.find("/blob/").unwrap()..];
    let res = app
        .client
        .put(format!("{}{path_and_query}", app.base))
        .header("Content-Type", "application/octet-stream")
        .body("later")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app.commit("alice", &pending).await["name"], "later.txt");
}

#[tokio::test]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    if crate::helpers::on_aws() {
        eprintln!("a data dir belongs to the embedded backend; AWS replicas share a table");
        return;
    }
    let app = spawn_app().await;
    let mut settings = filesync::config::Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.storage.data_dir = app.data_dir.path().to_owned();
    let err = filesync::startup::App::build(settings)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("in use"), "{err}");
}
