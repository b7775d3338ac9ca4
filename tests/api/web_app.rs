//! What the browser app needs from the server: the owners' inspector of uploads (both
//! backends), the development sign-in, and the app served from a folder at `/app/`.

use serde_json::{Value, json};

use crate::helpers::{http_error_code, on_aws, spawn_app, spawn_app_with};

const UPLOADS: &str = "query($id: ID!, $first: Int, $after: ID) { space(id: $id) {
    uploads(first: $first, after: $after) { uploadId fileId version name size sha256 author
      state createdAt expiresAt object { key size sha256 } } } }";

async fn uploads(app: &crate::helpers::TestApp, user: &str, space: &str, vars: Value) -> Value {
    let mut vars = vars;
    vars["id"] = json!(space);
    let body = app.gql(user, UPLOADS, vars).await;
    body["space"]["uploads"].clone()
}

#[tokio::test]
async fn the_inspector_shows_an_upload_go_from_pending_to_committed_beside_its_object() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "inspected").await;
    app.set_member("alice", &space, "bob", Some("EDITOR")).await;
    let bytes = b"three phases".to_vec();

    // Phase one: a pending version, nothing stored yet.
    let ticket = app
        .begin_upload("bob", &space, "a.txt", &bytes, json!({}))
        .await;
    let list = uploads(&app, "alice", &space, json!({})).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    let row = &list[0];
    assert_eq!(row["uploadId"], ticket.upload_id());
    assert_eq!(row["state"], "PENDING");
    assert_eq!(row["author"], "bob");
    assert_eq!(row["version"], 1);
    assert_eq!(row["size"], bytes.len());
    assert_eq!(row["object"], Value::Null);

    // Phase two: the bytes are in the store (the version pending, or already committed
    // by the store's own notification of the new object).
    assert!(
        app.put_bytes(&ticket, bytes.clone())
            .await
            .status()
            .is_success()
    );
    let row = uploads(&app, "alice", &space, json!({})).await[0].clone();
    assert!(["PENDING", "COMMITTED"].contains(&row["state"].as_str().unwrap()));
    assert_eq!(row["object"]["size"], bytes.len());
    assert!(
        row["object"]["key"]
            .as_str()
            .unwrap()
            .contains(ticket.upload_id()),
        "{row:#}"
    );

    // Phase three: committed.
    app.commit("bob", &ticket).await;
    let row = uploads(&app, "alice", &space, json!({})).await[0].clone();
    assert_eq!(row["state"], "COMMITTED");
    assert_eq!(row["object"]["size"], bytes.len());

    // A cancelled one (before its bytes were sent: once stored, the upload may commit
    // itself): abandoned, with no object.
    let cancelled = app
        .begin_upload("alice", &space, "b.txt", b"x", json!({}))
        .await;
    let body = app.cancel_raw("alice", &cancelled).await;
    assert_eq!(body["data"]["cancelUpload"], true, "{body:#}");
    let list = uploads(&app, "alice", &space, json!({})).await;
    assert_eq!(list[0]["uploadId"], cancelled.upload_id(), "newest first");
    assert_eq!(list[0]["state"], "ABANDONED");
    assert_eq!(list[0]["object"], Value::Null);
}

#[tokio::test]
async fn the_inspector_pages_newest_first_and_is_for_owners_only() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "paged").await;
    app.set_member("alice", &space, "bob", Some("EDITOR")).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let ticket = app
            .begin_upload("alice", &space, &format!("f{i}.txt"), b"x", json!({}))
            .await;
        ids.push(ticket.upload_id().to_owned());
        // Distinct creation times, so that the order is the test's.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = uploads(&app, "alice", &space, json!({ "first": 2, "after": after })).await;
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().unwrap()["uploadId"].clone();
        seen.extend(
            page.iter()
                .map(|u| u["uploadId"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(seen, ids);

    // Another space's uploads never show, nor does an upload id from elsewhere page it.
    let other = app.create_space("alice", "other").await;
    assert_eq!(uploads(&app, "alice", &other, json!({})).await, json!([]));
    let page = uploads(&app, "alice", &other, json!({ "after": ids[0] })).await;
    assert_eq!(page, json!([]));

    // An editor is refused; to a non-member the space does not exist.
    let body = app
        .gql_as(Some("bob"), UPLOADS, json!({ "id": space }))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{body:#}"
    );
    let body = app
        .gql_as(Some("mallory"), UPLOADS, json!({ "id": space }))
        .await;
    assert_eq!(body["data"]["space"], Value::Null, "{body:#}");
    let body = app
        .gql_as(
            Some("alice"),
            UPLOADS,
            json!({ "id": space, "after": "nope" }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_INPUT");
    // Each upload costs a look at the blob store: at most 100 a page.
    let body = app
        .gql_as(Some("alice"), UPLOADS, json!({ "id": space, "first": 101 }))
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_INPUT",
        "{body:#}"
    );
}

#[tokio::test]
async fn the_development_sign_in_is_off_unless_enabled() {
    let app = spawn_app().await;
    for req in [
        app.client.get(format!("{}/auth/dev-sign-in", app.base)),
        app.client
            .post(format!("{}/auth/dev-sign-in", app.base))
            .json(&json!({ "user": "alice" })),
    ] {
        assert_eq!(req.send().await.unwrap().status(), 404);
    }
}

#[tokio::test]
async fn the_development_sign_in_mints_a_working_token() {
    if on_aws() {
        return; // Embedded only: the server refuses it on AWS (tested below).
    }
    let app = spawn_app_with(|s| s.auth.dev_sign_in = true).await;
    let url = format!("{}/auth/dev-sign-in", app.base);
    assert_eq!(app.client.get(&url).send().await.unwrap().status(), 200);
    let res = app
        .client
        .post(&url)
        .json(&json!({ "user": "dana" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    let me: Value = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(token)
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["data"]["me"]["id"], "dana");

    for bad in [json!({ "user": "" }), json!({ "who": "x" }), json!("alice")] {
        let res = app.client.post(&url).json(&bad).send().await.unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        assert_eq!(http_error_code(res).await, "BAD_INPUT");
    }
    // Another site's page (a browser sends its Origin), or a rebound DNS name: refused.
    let res = app
        .client
        .post(&url)
        .header("origin", "https://evil.example")
        .json(&json!({ "user": "dana" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(http_error_code(res).await, "FORBIDDEN");
    let res = app
        .client
        .post(&url)
        .header("host", "rebound.example")
        .json(&json!({ "user": "dana" }))
        .send()
        .await
        .unwrap();
    assert_eq!(http_error_code(res).await, "FORBIDDEN");
    let res = app
        .client
        .post(&url)
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(http_error_code(res).await, "BAD_INPUT");
}

#[tokio::test]
async fn the_development_sign_in_is_refused_off_loopback_and_on_aws() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = filesync::config::Settings::default();
    settings.storage.data_dir = dir.path().to_owned();
    settings.auth.dev_sign_in = true;
    settings.server.listen = "0.0.0.0:0".parse().unwrap();
    let error = filesync::startup::App::build(settings.clone())
        .await
        .err()
        .expect("refused off loopback")
        .to_string();
    assert!(error.contains("loopback"), "{error}");
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.cors_allowed_origins = vec!["*".into()];
    let error = filesync::startup::App::build(settings.clone())
        .await
        .err()
        .expect("refused with CORS for every origin")
        .to_string();
    assert!(error.contains("any web"), "{error}");
    settings.server.cors_allowed_origins.clear();
    settings.storage.backend = filesync::config::Backend::Aws;
    let error = filesync::startup::App::build(settings)
        .await
        .err()
        .expect("refused on AWS")
        .to_string();
    assert!(error.contains("embedded"), "{error}");
}

#[tokio::test]
async fn the_web_app_is_served_from_its_folder_with_its_own_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("assets")).unwrap();
    std::fs::write(
        dir.path().join("index.html"),
        "<!doctype html><title>app</title>",
    )
    .unwrap();
    std::fs::write(dir.path().join("assets/app.js"), "console.log(1)").unwrap();
    std::fs::write(dir.path().join(".secret"), "no").unwrap();
    let app_dir = dir.path().to_owned();
    let app = spawn_app_with(move |s| s.server.web_app = Some(app_dir)).await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirects
        .get(format!("{}/app", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 308);
    assert_eq!(res.headers()["location"], "/app/");

    let res = app.get(&format!("{}/app/", app.base)).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(res.text().await.unwrap().contains("<title>app</title>"));

    let res = app.get(&format!("{}/app/assets/app.js", app.base)).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );

    for path in [
        "/app/.secret",
        "/app/assets",
        "/app/missing.js",
        "/app/%2e%2e/Cargo.toml",
    ] {
        let res = app.get(&format!("{}{path}", app.base)).await;
        assert_eq!(res.status(), 404, "{path}");
    }

    // A folder without the built app is refused at startup, with what to do.
    let empty = tempfile::tempdir().unwrap();
    let mut settings = filesync::config::Settings::default();
    settings.storage.data_dir = empty.path().to_owned();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.web_app = Some(empty.path().to_owned());
    let error = filesync::startup::App::build(settings)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("npm run build"), "{error}");
}
