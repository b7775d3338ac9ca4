//! The websocket protocols' edges: authentication, misbehaving clients, timeouts,
//! keep-alives and errors of individual operations.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with};
use crate::live::{metric, wait_for_metric};
use crate::ws_client::{LEGACY, TRANSPORT_WS};

#[tokio::test]
async fn a_bad_or_missing_token_closes_with_forbidden() {
    let app = spawn_app().await;
    let expired = {
        let now = chrono::Utc::now().timestamp();
        let secret = filesync::auth::load_or_create_secret(app.data_dir.path()).unwrap();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({ "sub": "alice", "iat": now - 7200, "exp": now - 3600 }),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap()
    };
    for payload in [
        json!(null),
        json!({}),
        json!({ "authorization": "Bearer not-a-jwt" }),
        json!({ "authorization": format!("Basic {}", app.token("alice")) }),
        json!({ "token": expired }),
        json!({ "token": 42 }),
    ] {
        let mut ws = app.ws_connect(TRANSPORT_WS).await;
        ws.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        let closed = ws.closed().await;
        assert_eq!(closed.0, Some(4403), "{payload}: {closed:?}");
        assert!(closed.1.starts_with("Forbidden"), "{closed:?}");
    }

    // The legacy protocol says why in `connection_error` first.
    let mut ws = app.ws_connect(LEGACY).await;
    ws.send(json!({ "type": "connection_init", "payload": { "token": "nope" } }))
        .await;
    let error = ws.recv().await.unwrap();
    assert_eq!(error["type"], "connection_error");
    assert_eq!(error["payload"]["extensions"]["code"], "UNAUTHENTICATED");
    assert_eq!(ws.closed().await.0, Some(4403));

    // Both ways of passing a good token work.
    for payload in [
        json!({ "authorization": format!("Bearer {}", app.token("alice")) }),
        json!({ "Authorization": format!("Bearer {}", app.token("alice")) }),
        json!({ "token": app.token("alice") }),
    ] {
        let mut ws = app.ws_connect(TRANSPORT_WS).await;
        ws.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        assert_eq!(ws.recv().await.unwrap()["type"], "connection_ack");
    }
}

#[tokio::test]
async fn misbehaving_clients_get_the_protocol_close_codes() {
    let app = spawn_app_with(|s| s.subscriptions.init_timeout = Duration::from_millis(300)).await;
    let me = "{ me { id } }";

    let mut silent = app.ws_connect(TRANSPORT_WS).await;
    let closed = silent.closed().await;
    assert_eq!(
        closed.0,
        Some(4408),
        "no connection_init in time: {closed:?}"
    );

    let mut eager = app.ws_connect(TRANSPORT_WS).await;
    eager.subscribe("1", me, json!({})).await;
    assert_eq!(eager.closed().await.0, Some(4401), "subscribe before ack");

    let mut twice = app.ws_as("alice", TRANSPORT_WS).await;
    twice
        .send(json!({ "type": "connection_init", "payload": { "token": app.token("alice") } }))
        .await;
    assert_eq!(
        twice.closed().await.0,
        Some(4429),
        "a second connection_init"
    );

    let space = app.create_space("alice", "Team").await;
    let mut dup = app.ws_as("alice", TRANSPORT_WS).await;
    dup.subscribe_changes("same", &space, None).await;
    dup.until_ready().await;
    dup.subscribe_changes("same", &space, None).await;
    let closed = dup.closed().await;
    assert_eq!(closed.0, Some(4409), "{closed:?}");

    for garbage in [
        "not json".to_owned(),
        json!({ "type": "launch" }).to_string(),
        json!({ "type": "subscribe", "payload": { "query": me } }).to_string(),
        json!({ "type": "start", "id": "1", "payload": { "query": me } }).to_string(),
    ] {
        let mut ws = app.ws_as("alice", TRANSPORT_WS).await;
        ws.send(serde_json::from_str(&garbage).unwrap_or(json!(garbage)))
            .await;
        let closed = ws.closed().await;
        assert_eq!(closed.0, Some(4400), "{garbage}: {closed:?}");
    }
}

#[tokio::test]
async fn operations_fail_alone_with_a_code_and_the_connection_lives_on() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let strangers = app.create_space("carol", "Private").await;
    let mut ws = app.ws_as("alice", TRANSPORT_WS).await;

    let cases = [
        ("not a member", strangers.clone(), None, "NOT_FOUND"),
        ("not an id", "space-1".into(), None, "BAD_INPUT"),
        ("garbage cursor", space.clone(), Some("???"), "BAD_INPUT"),
    ];
    for (n, (what, space_id, since, code)) in cases.into_iter().enumerate() {
        ws.subscribe_changes(&n.to_string(), &space_id, since).await;
        let end = ws.event().await.expect_err(what);
        assert_eq!(end["type"], "error", "{what}: {end}");
        assert_eq!(end["id"], n.to_string());
        assert_eq!(
            end["payload"][0]["extensions"]["code"], code,
            "{what}: {end}"
        );
    }
    let other_cursor = app.changes("carol", &strangers, None, None).await["nextCursor"].clone();
    ws.subscribe_changes("other", &space, other_cursor.as_str())
        .await;
    let end = ws.event().await.expect_err("a cursor of another space");
    assert_eq!(
        end["payload"][0]["extensions"]["code"], "BAD_INPUT",
        "{end}"
    );

    ws.subscribe("v", "subscription { nope }", json!({})).await;
    let end = ws.event().await.expect_err("validation error");
    assert_eq!(
        end["payload"][0]["extensions"]["code"], "BAD_INPUT",
        "{end}"
    );

    // Queries and mutations work over the socket too: one result, then complete.
    ws.subscribe("q", "{ me { id } }", json!({})).await;
    let result = ws.recv().await.unwrap();
    assert_eq!(result["type"], "next");
    assert_eq!(result["payload"]["data"]["me"]["id"], "alice");
    assert_eq!(ws.recv().await.unwrap()["type"], "complete");

    // `complete` from the client detaches the subscription.
    ws.subscribe_changes("live", &space, None).await;
    ws.until_ready().await;
    let metrics = wait_for_metric(&app, "filesync_live_subscriptions", 1).await;
    assert_eq!(metric(&metrics, "filesync_websocket_connections"), 1);
    ws.send(json!({ "type": "complete", "id": "live" })).await;
    wait_for_metric(&app, "filesync_live_subscriptions", 0).await;
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.recv().await.unwrap()["type"], "pong", "still connected");
}

#[tokio::test]
async fn idle_connections_get_keep_alives_in_both_protocols() {
    let app = spawn_app_with(|s| s.subscriptions.keep_alive = Duration::from_millis(100)).await;
    let space = app.create_space("alice", "Team").await;
    for protocol in [TRANSPORT_WS, LEGACY] {
        let mut ws = app.ws_as("alice", protocol).await;
        ws.subscribe_changes("a", &space, None).await;
        ws.until_ready().await;
        tokio::time::sleep(Duration::from_millis(450)).await;
        app.upload("alice", &space, &format!("{protocol}.txt"), b"x")
            .await;
        let event = ws.event().await.unwrap();
        assert_eq!(event["kind"], "CREATED");
        assert!(ws.keep_alives >= 2, "{protocol}: {} pings", ws.keep_alives);
    }
}

/// RFC 6455 §5.5.1: a close frame is answered with a close frame before the connection
/// ends, so clients see their own close code (1000), not 1006.
#[tokio::test]
async fn a_client_close_is_echoed() {
    let app = spawn_app().await;
    for protocol in [TRANSPORT_WS, LEGACY] {
        let ws = app.ws_as("alice", protocol).await;
        assert_eq!(ws.close_and_wait_for_echo().await, Some(1000), "{protocol}");
        let ws = app.ws_connect(protocol).await;
        assert_eq!(
            ws.close_and_wait_for_echo().await,
            Some(1000),
            "{protocol}, before connection_init"
        );
    }
}
