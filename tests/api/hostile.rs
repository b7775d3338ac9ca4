//! Hostile requests the server must survive and refuse with a code: values nested
//! thousands deep in every place a query or its variables can hold them, by every
//! transport.

use serde_json::{Value, json};

use crate::helpers::spawn_app;
use crate::ws_client::{LEGACY, TRANSPORT_WS};

/// Queries whose brackets nest `depth` deep, one per place a value or selection can go.
fn deep_queries(depth: usize) -> Vec<(&'static str, String)> {
    vec![
        (
            "a list argument",
            format!(
                "{{ changes(spaceId: {}1{}) {{ hasMore }} }}",
                "[".repeat(depth),
                "]".repeat(depth)
            ),
        ),
        (
            "an object argument",
            format!(
                "{{ changes(spaceId: {}1{}) {{ hasMore }} }}",
                "{a:".repeat(depth),
                "}".repeat(depth)
            ),
        ),
        (
            "a selection",
            format!("{{ me {} }}", "{ id ".repeat(depth) + &"}".repeat(depth)),
        ),
        (
            "a directive argument",
            format!(
                "{{ me @skip(if: {}true{}) {{ id }} }}",
                "[".repeat(depth),
                "]".repeat(depth)
            ),
        ),
        (
            "a variable default",
            format!(
                "query($v: ID = {}1{}) {{ me {{ id }} }}",
                "[".repeat(depth),
                "]".repeat(depth)
            ),
        ),
    ]
}

/// JSON variables nested `depth` deep.
fn deep_variables(depth: usize) -> Vec<(&'static str, String)> {
    vec![
        (
            "a list variable",
            format!(
                "{{\"query\":\"query($v: [ID]) {{ me {{ id }} }}\",\"variables\":{{\"v\":{}1{}}}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            ),
        ),
        (
            "an object variable",
            format!(
                "{{\"query\":\"query($v: ID) {{ me {{ id }} }}\",\"variables\":{{\"v\":{}1{}}}}}",
                "{\"a\":".repeat(depth),
                "}".repeat(depth)
            ),
        ),
    ]
}

fn code_of(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

#[tokio::test]
async fn values_nested_100000_deep_are_refused_by_every_transport_and_the_server_lives() {
    let app = spawn_app().await;
    let graphql = format!("{}/graphql", app.base);
    for (what, query) in deep_queries(100_000) {
        // POST, with no token at all.
        let res = app
            .client
            .post(&graphql)
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        assert!(status == 200 || status == 400, "{what} by POST: {status}");
        assert_eq!(code_of(&body), Some("BAD_INPUT"), "{what} by POST: {body}");
    }
    for (what, body) in deep_variables(100_000) {
        let res = app
            .client
            .post(&graphql)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{what}");
        assert_eq!(
            crate::helpers::http_error_code(res).await,
            "BAD_INPUT",
            "{what}"
        );
    }
    // GET: as deep as a URL may be (1,500 deep already overflowed the stack).
    for (what, query) in deep_queries(3_000) {
        let res = app
            .client
            .get(&graphql)
            .query(&[("query", query.as_str())])
            .send()
            .await
            .unwrap();
        assert!(
            res.status().is_client_error() || res.status() == 200,
            "{what} by GET: {}",
            res.status()
        );
        if res.status() != 414 && res.status() != 431 {
            let body: Value = res.json().await.unwrap();
            assert_eq!(code_of(&body), Some("BAD_INPUT"), "{what} by GET: {body}");
        }
    }
    // Websockets, both protocols.
    for protocol in [TRANSPORT_WS, LEGACY] {
        let mut ws = app.ws_as("alice", protocol).await;
        for (i, (what, query)) in deep_queries(100_000).into_iter().enumerate() {
            let id = format!("q{i}");
            ws.subscribe(&id, &query, json!({})).await;
            let reply = ws
                .recv()
                .await
                .unwrap_or_else(|e| panic!("{what} over {protocol}: closed {e:?}"));
            let text = reply.to_string();
            assert!(
                text.contains("BAD_INPUT"),
                "{what} over {protocol}: {reply}"
            );
        }
    }
    // Still serving.
    let me = app.gql("alice", "{ me { id } }", json!({})).await;
    assert_eq!(me["me"]["id"], "alice");
}
