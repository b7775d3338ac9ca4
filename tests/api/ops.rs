//! Health, readiness, metrics, GraphiQL, request ids and HTTP-level failures.

use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_readiness_metrics_and_graphiql_answer() {
    let app = spawn_app().await;
    let get = |path: &str| app.client.get(format!("{}{path}", app.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let page = get("/graphiql").await.unwrap().text().await.unwrap();
    assert!(page.contains("graphiql"), "GraphiQL page");

    app.gql("alice", "{ me { id } }", json!({})).await;
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            r#"filesync_http_requests_total{method="POST",route="/graphql",status="200"}"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("filesync_http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let res = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36);
    let res = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "from-the-client")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "from-the-client");
}

#[tokio::test]
async fn malformed_requests_get_a_code_not_a_500() {
    let app = spawn_app().await;
    let post = |body: &'static str, content_type: &'static str| {
        app.client
            .post(format!("{}/graphql", app.base))
            .bearer_auth(app.token("alice"))
            .header("Content-Type", content_type)
            .body(body)
            .send()
    };
    for (body, ct) in [
        ("{not json", "application/json"),
        ("", "application/json"),
        ("[1,2,3]", "application/json"),
        ("{\"query\": 5}", "application/json"),
    ] {
        let res = post(body, ct).await.unwrap();
        assert!(
            res.status().is_client_error() || res.status() == 200,
            "{body}: {}",
            res.status()
        );
        let json: serde_json::Value = res.json().await.unwrap();
        assert_eq!(
            json["errors"][0]["extensions"]["code"], "BAD_INPUT",
            "{body}: {json}"
        );
    }
    for query in [
        "{ me { id ",
        "{ nope }",
        "query { me { id } } query { me { id } }",
        "{ file(id: 5) { id } }",
    ] {
        let (code, _) = app.gql_err(Some("alice"), query, json!({})).await;
        assert_eq!(code, "BAD_INPUT", "{query}");
    }
    // Mutations are not accepted over GET.
    let res = app
        .client
        .get(format!("{}/graphql", app.base))
        .query(&[("query", "mutation { createSpace(name: \"x\") { id } }")])
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    // Queries are.
    let res = app
        .client
        .get(format!("{}/graphql", app.base))
        .query(&[("query", "{ me { id } }")])
        .bearer_auth(app.token("alice"))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["data"]["me"]["id"], "alice");
}

#[tokio::test]
async fn an_oversize_request_body_is_payload_too_large() {
    let app = crate::helpers::spawn_app_with(|s| s.server.max_request_bytes = 1024).await;
    let query = format!("{{ me {{ id }} }} # {}", "x".repeat(4096));
    let res = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(app.token("alice"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");
}
