//! Several replicas on one AWS stack: a subscriber on replica B sees the writes made
//! through replica A, each once and in order, across a drop and resume. B hears of A's
//! writes only through the table's DynamoDB stream.

use std::sync::Arc;

use crate::helpers::{on_aws, spawn_app, spawn_app_in};
use crate::ws_client::{TRANSPORT_WS, WsClient};

async fn versions_until(ws: &mut WsClient, last: i64) -> Vec<i64> {
    let mut versions = Vec::new();
    while versions.last() != Some(&last) {
        let event = ws.event().await.unwrap_or_else(|e| panic!("event: {e}"));
        if event["kind"] != "READY" {
            versions.push(event["version"].as_i64().expect("a change"));
        }
    }
    versions
}

#[tokio::test]
async fn a_subscriber_on_one_replica_sees_the_writes_made_through_another() {
    if !on_aws() {
        eprintln!("replicas share a store only on the AWS backend");
        return;
    }
    let a = Arc::new(spawn_app().await);
    // The same stack and token secret: a second replica, not a restart.
    let b = spawn_app_in(a.data_dir.clone(), |_| {}).await;
    let space = a.create_space("alice", "Team").await;
    let file = a.upload_id("alice", &space, "shared.txt", b"v1").await;

    let mut sub = b.ws_as("alice", TRANSPORT_WS).await;
    sub.subscribe_changes("s", &space, None).await;
    sub.until_ready().await;
    let writer = {
        let (a, file) = (a.clone(), file.clone());
        tokio::spawn(async move {
            for base in 1..=30 {
                let body = a
                    .update_metadata("alice", &file, base, "n", &base.to_string())
                    .await;
                assert!(body.get("errors").is_none(), "{body}");
            }
        })
    };

    let mut seen = Vec::new();
    let mut cursor = String::new();
    while seen.len() < 12 {
        let event = sub.event().await.unwrap();
        assert_eq!(event["kind"], "UPDATED");
        seen.push(event["version"].as_i64().unwrap());
        cursor = event["cursor"].as_str().unwrap().to_owned();
    }
    sub.hang_up().await;
    let mut sub = b.ws_as("alice", TRANSPORT_WS).await;
    sub.subscribe_changes("s", &space, Some(&cursor)).await;
    seen.extend(versions_until(&mut sub, 31).await);
    writer.await.unwrap();
    assert_eq!(
        seen,
        (2..=31).collect::<Vec<_>>(),
        "each version once, in order"
    );

    // And the other way round, live: a write through B reaches a subscriber on A.
    let mut on_a = a.ws_as("alice", TRANSPORT_WS).await;
    on_a.subscribe_changes("a", &space, None).await;
    on_a.until_ready().await;
    b.update_metadata("alice", &file, 31, "from", "b").await;
    assert_eq!(versions_until(&mut on_a, 32).await, vec![32]);
    assert_eq!(versions_until(&mut sub, 32).await, vec![32]);
}
