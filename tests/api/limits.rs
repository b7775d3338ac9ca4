//! Limits on what one request or one user may ask for: mutation rate, websockets per
//! user, operations per websocket, aliases, introspection, batching; and the headers
//! every response carries (security headers, CORS only when configured).

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_app_with};
use crate::ws_client::TRANSPORT_WS;

const CREATE: &str = "mutation($n: String!) { createSpace(name: $n) { id } }";

#[tokio::test]
async fn mutations_beyond_the_rate_are_rate_limited_and_change_nothing() {
    let app = spawn_app_with(|s| {
        s.limits.mutations_per_second = 0.5;
        s.limits.mutation_burst = 3;
    })
    .await;
    for n in 0..3 {
        app.gql("alice", CREATE, json!({ "n": format!("s{n}") }))
            .await;
    }
    let res = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(app.token("alice"))
        .json(&json!({ "query": CREATE, "variables": { "n": "one too many" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = res.json().await.unwrap();
    let extensions = &body["errors"][0]["extensions"];
    assert_eq!(extensions["code"], "RATE_LIMITED", "{body}");
    assert_eq!(extensions["retryAfterSeconds"], retry);

    let spaces = app.gql("alice", "{ spaces { name } }", json!({})).await;
    assert_eq!(
        spaces["spaces"].as_array().unwrap().len(),
        3,
        "queries are not limited"
    );
    app.gql("bob", CREATE, json!({ "n": "bob's" })).await;

    // Over the websocket too.
    let mut ws = app.ws_as("alice", TRANSPORT_WS).await;
    ws.subscribe("m", CREATE, json!({ "n": "by socket" })).await;
    let refused = ws.recv().await.unwrap();
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
}

#[tokio::test]
async fn a_user_holds_a_bounded_number_of_websockets_and_operations() {
    let app = spawn_app_with(|s| {
        s.limits.websockets_per_user = 2;
        s.limits.subscriptions_per_connection = 2;
    })
    .await;
    let space = app.create_space("alice", "Team").await;
    let first = app.ws_as("alice", TRANSPORT_WS).await;
    let mut second = app.ws_as("alice", TRANSPORT_WS).await;
    let mut third = app.ws_connect(TRANSPORT_WS).await;
    third
        .send(json!({ "type": "connection_init", "payload": { "token": app.token("alice") } }))
        .await;
    let closed = third.closed().await;
    assert_eq!(closed.0, Some(1008), "{closed:?}");
    let _bobs = app.ws_as("bob", TRANSPORT_WS).await;

    // A closed socket frees its place.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut ws = app.ws_connect(TRANSPORT_WS).await;
        ws.send(json!({ "type": "connection_init", "payload": { "token": app.token("alice") } }))
            .await;
        if ws.recv().await.is_ok_and(|m| m["type"] == "connection_ack") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let changes = "subscription($s: ID!) { changes(spaceId: $s) { kind } }";
    for id in ["a", "b"] {
        second.subscribe(id, changes, json!({ "s": space })).await;
        assert_eq!(
            second.recv().await.unwrap()["type"],
            "next",
            "READY of {id}"
        );
    }
    second.subscribe("c", changes, json!({ "s": space })).await;
    let refused = second.recv().await.unwrap();
    assert_eq!(
        (refused["type"].as_str(), refused["id"].as_str()),
        (Some("error"), Some("c"))
    );
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    second.send(json!({ "type": "complete", "id": "a" })).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        second.subscribe("d", changes, json!({ "s": space })).await;
        let answer = second.recv().await.unwrap();
        if answer["type"] == "next" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
    }
}

#[tokio::test]
async fn queries_asking_for_too_much_are_bad_input() {
    let app = spawn_app_with(|s| {
        s.graphql.max_aliases = 5;
        s.graphql.introspection = false;
    })
    .await;
    let aliases: String = (0..6).map(|n| format!("a{n}: me {{ id }} ")).collect();
    let body = app
        .gql_as(Some("alice"), &format!("{{ {aliases} }}"), json!({}))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_INPUT",
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("aliases")
    );
    let five: String = (0..5).map(|n| format!("a{n}: me {{ id }} ")).collect();
    let body = app
        .gql_as(Some("alice"), &format!("{{ {five} }}"), json!({}))
        .await;
    assert_eq!(body["data"]["a4"]["id"], "alice", "{body}");

    let body = app
        .gql_as(Some("alice"), "{ __schema { types { name } } }", json!({}))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_INPUT",
        "{body}"
    );

    // No batching: a JSON array is not a request.
    let res = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(app.token("alice"))
        .json(&json!([{ "query": "{ me { id } }" }, { "query": "{ me { id } }" }]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(crate::helpers::http_error_code(res).await, "BAD_INPUT");

    let open = spawn_app().await;
    let body = open
        .gql_as(
            Some("alice"),
            "{ __schema { queryType { name } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        body["data"]["__schema"]["queryType"]["name"], "Query",
        "on by default"
    );
}

#[tokio::test]
async fn responses_carry_security_headers_and_cors_only_when_configured() {
    let app = spawn_app().await;
    for path in ["/graphql?query=%7Bme%7Bid%7D%7D", "/healthz"] {
        let res = app.get(&format!("{}{path}", app.base)).await;
        let headers = res.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(headers["cache-control"], "no-store", "{path}");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
    let preflight = |app_base: String, origin: &'static str| async move {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, format!("{app_base}/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
            .await
            .unwrap()
    };
    let res = preflight(app.base.clone(), "https://app.example.com").await;
    assert!(
        res.headers().get("access-control-allow-origin").is_none(),
        "off by default"
    );

    let app = spawn_app_with(|s| {
        s.server.cors_allowed_origins = vec!["https://app.example.com".to_owned()];
    })
    .await;
    let res = preflight(app.base.clone(), "https://app.example.com").await;
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let allowed = res.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let res = preflight(app.base.clone(), "https://evil.example.com").await;
    assert!(res.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_user_has_a_bounded_number_of_uploads_pending() {
    let app = spawn_app_with(|s| s.uploads.max_pending_per_user = 2).await;
    let space = app.create_space("alice", "Team").await;
    let first = app
        .begin_upload("alice", &space, "1.txt", b"one", json!({}))
        .await;
    let _second = app
        .begin_upload("alice", &space, "2.txt", b"two", json!({}))
        .await;
    let input = |name: &str| {
        json!({ "spaceId": space, "name": name, "size": 5,
                "sha256": crate::helpers::sha256_hex(b"three") })
    };
    let refused = app.begin_upload_raw("alice", input("3.txt")).await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "RATE_LIMITED",
        "{refused}"
    );
    let other = app.create_space("bob", "Other").await;
    app.begin_upload("bob", &other, "b.txt", b"bob", json!({}))
        .await;

    // Publishing one frees its place.
    let res = app.put_bytes(&first, b"one".to_vec()).await;
    assert_eq!(res.status(), 200);
    app.commit("alice", &first).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let body = app.begin_upload_raw("alice", input("3.txt")).await;
        if body.get("errors").is_none() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The standard introspection query (graphql-js's `getIntrospectionQuery`, what GraphiQL,
/// codegen, Postman and Apollo tooling send) passes the depth limit; an ordinary query
/// deeper than the limit does not. (The schema has no recursive type a query could nest
/// deeply with, so the limit is lowered to 2 here.)
#[tokio::test]
async fn the_standard_introspection_query_passes_and_the_depth_limit_still_holds() {
    let app = crate::helpers::spawn_app_with(|s| s.graphql.max_depth = 2).await;
    // Generated with graphql 16 (tests/js): getIntrospectionQuery({ descriptions,
    // specifiedByUrl, directiveIsRepeatable, schemaDescription, inputValueDeprecation,
    // oneOf }).
    let query = include_str!("../fixtures/introspection.graphql");
    let body = app.gql_as(None, query, serde_json::json!({})).await;
    assert!(body.get("errors").is_none(), "{}", body["errors"]);
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
    let ok = app
        .gql_as(Some("alice"), "{ spaces { id } }", serde_json::json!({}))
        .await;
    assert!(ok.get("errors").is_none(), "{ok}");
    let refused = app
        .gql_as(
            Some("alice"),
            "{ spaces { members { userId } } }",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "BAD_INPUT",
        "{refused}"
    );
    let message = refused["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("3 fields deep"), "{message}");
}
