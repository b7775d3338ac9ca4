//! Optimistic concurrency under contention.

use std::sync::Arc;

use serde_json::json;

use crate::helpers::spawn_app;

/// 32 clients modify one file at once, each retrying on `CONFLICT` with the version the
/// error names: every success saw its own base, versions are gapless, nothing is lost.
#[tokio::test]
async fn thirty_two_concurrent_modifications_lose_nothing() {
    let app = Arc::new(spawn_app().await);
    let space = app.create_space("alice", "Team").await;
    let id = app.upload_id("alice", &space, "hot.txt", b"hot").await;

    let clients: Vec<_> = (0..32)
        .map(|client| {
            let (app, id) = (app.clone(), id.clone());
            tokio::spawn(async move {
                let mut base = 1;
                let mut conflicts = 0;
                loop {
                    let body = app
                        .update_metadata("alice", &id, base, "writer", &client.to_string())
                        .await;
                    if let Some(errors) = body.get("errors") {
                        let ext = &errors[0]["extensions"];
                        assert_eq!(
                            ext["code"], "CONFLICT",
                            "every failure is a conflict: {body}"
                        );
                        let current = ext["currentVersion"].as_i64().unwrap();
                        assert!(current >= base, "the current version never goes back");
                        base = current;
                        conflicts += 1;
                        continue;
                    }
                    let version = body["data"]["updateFile"]["version"].as_i64().unwrap();
                    assert_eq!(version, base + 1, "a success saw its own baseVersion");
                    return (client, version, conflicts);
                }
            })
        })
        .collect();
    let mut results = Vec::new();
    for c in clients {
        results.push(c.await.unwrap());
    }
    assert!(
        results.iter().any(|r| r.2 > 0),
        "the clients really contended"
    );

    let data = app
        .gql(
            "alice",
            "query($id: ID!) { fileVersions(id: $id) { version metadata { value } } }",
            json!({ "id": id }),
        )
        .await;
    let versions = data["fileVersions"].as_array().unwrap();
    assert_eq!(versions.len(), 33);
    for (i, v) in versions.iter().enumerate() {
        assert_eq!(v["version"], i as i64 + 1, "gapless");
    }
    // Each client's update is in history exactly once, at the version it was told.
    for (client, version, _) in &results {
        let v = &versions[*version as usize - 1];
        assert_eq!(v["metadata"][0]["value"], client.to_string());
    }

    let page = app.changes("alice", &space, None, None).await;
    let files = page["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "the file is listed once");
    assert_eq!(files[0]["version"], 33);
}
