//! Per-space settings: owners limit the size, content types and extensions of the files
//! a space accepts; enforced at `beginUpload`, again at commit on the stored bytes, and
//! on renames. Refusals change nothing.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const SET: &str = "mutation($s: ID!, $i: SpaceSettingsInput!) { updateSpaceSettings(spaceId: $s, input: $i) { settings { maxFileSize allowedContentTypes allowedExtensions } } }";

async fn set(app: &TestApp, user: &str, space: &str, input: Value) -> Value {
    app.gql_as(Some(user), SET, json!({ "s": space, "i": input }))
        .await
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("none")
}

async fn head(app: &TestApp, space: &str) -> Value {
    app.gql(
        "alice",
        "query($s: ID!) { space(id: $s) { headCursor } }",
        json!({ "s": space }),
    )
    .await["space"]["headCursor"]
        .clone()
}

#[tokio::test]
async fn owners_set_what_a_space_accepts_and_members_can_read_it() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    app.set_member("alice", &space, "bob", Some("EDITOR")).await;
    let body = set(
        &app,
        "alice",
        &space,
        json!({ "maxFileSize": 1000, "allowedContentTypes": ["Image/*", "text/plain"],
                "allowedExtensions": [".PNG", "txt"] }),
    )
    .await;
    assert_eq!(
        body["data"]["updateSpaceSettings"]["settings"],
        json!({ "maxFileSize": 1000, "allowedContentTypes": ["image/*", "text/plain"],
                "allowedExtensions": ["png", "txt"] }),
        "{body}"
    );
    let read = app
        .gql(
            "bob",
            "query($s: ID!) { space(id: $s) { settings { maxFileSize allowedExtensions } } }",
            json!({ "s": space }),
        )
        .await;
    assert_eq!(
        read["space"]["settings"]["allowedExtensions"],
        json!(["png", "txt"])
    );

    for (user, input, expected) in [
        ("bob", json!({ "maxFileSize": 1 }), "FORBIDDEN"),
        ("eve", json!({ "maxFileSize": 1 }), "NOT_FOUND"),
        ("alice", json!({ "maxFileSize": 0 }), "BAD_INPUT"),
        (
            "alice",
            json!({ "maxFileSize": 68719476737_u64 }),
            "BAD_INPUT",
        ),
        (
            "alice",
            json!({ "allowedContentTypes": ["image"] }),
            "BAD_INPUT",
        ),
        (
            "alice",
            json!({ "allowedExtensions": ["a.b"] }),
            "BAD_INPUT",
        ),
    ] {
        let body = set(&app, user, &space, input.clone()).await;
        assert_eq!(code(&body), expected, "{user} {input}: {body}");
    }
    let read = app
        .gql(
            "alice",
            "query($s: ID!) { space(id: $s) { settings { maxFileSize } } }",
            json!({ "s": space }),
        )
        .await;
    assert_eq!(
        read["space"]["settings"]["maxFileSize"], 1000,
        "refusals changed nothing"
    );
}

#[tokio::test]
async fn uploads_and_renames_the_settings_refuse_change_nothing() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let kept = app
        .upload("alice", &space, "kept.bin", b"before any limit")
        .await;
    set(
        &app,
        "alice",
        &space,
        json!({ "maxFileSize": 10, "allowedContentTypes": ["text/*"],
        "allowedExtensions": ["txt", "md"] }),
    )
    .await;
    let before = head(&app, &space).await;

    let begin = |name: &'static str, bytes: &'static [u8], ct: Value| {
        let (app, space) = (&app, &space);
        async move {
            app.begin_upload_raw("alice", json!({ "spaceId": space, "name": name,
                "size": bytes.len(), "sha256": crate::helpers::sha256_hex(bytes), "contentType": ct }))
                .await
        }
    };
    assert_eq!(
        code(&begin("big.txt", b"eleven bytes", json!("text/plain")).await),
        "PAYLOAD_TOO_LARGE"
    );
    assert_eq!(
        code(&begin("a.txt", b"short", json!("image/png")).await),
        "BAD_INPUT"
    );
    assert_eq!(
        code(&begin("a.txt", b"short", Value::Null).await),
        "BAD_INPUT"
    );
    assert_eq!(
        code(&begin("a.exe", b"short", json!("text/plain")).await),
        "BAD_INPUT"
    );
    assert_eq!(
        code(&begin("noext", b"short", json!("text/plain")).await),
        "BAD_INPUT"
    );
    assert_eq!(head(&app, &space).await, before);
    let ok = begin("a.md", b"short", json!("text/markdown; charset=utf-8")).await;
    assert!(ok.get("errors").is_none(), "{ok}");

    // Renames are checked against the extensions; other updates of a file the settings
    // would no longer accept still work.
    let rename = "mutation($id: ID!, $n: String!) { updateFile(id: $id, baseVersion: 1, input: { name: $n }) { version } }";
    let body = app
        .gql_as(
            Some("alice"),
            rename,
            json!({ "id": kept["id"], "n": "kept.exe" }),
        )
        .await;
    assert_eq!(code(&body), "BAD_INPUT", "{body}");
    let body = app
        .gql_as(
            Some("alice"),
            rename,
            json!({ "id": kept["id"], "n": "kept.txt" }),
        )
        .await;
    assert_eq!(body["data"]["updateFile"]["version"], 2, "{body}");
    let body = app.gql_as(Some("alice"),
        "mutation($id: ID!) { updateFile(id: $id, baseVersion: 2, input: { metadata: [{ key: \"k\", value: \"v\" }] }) { version } }",
        json!({ "id": kept["id"] })).await;
    assert_eq!(body["data"]["updateFile"]["version"], 3, "{body}");
}

/// The commit checks again, against the settings as they are then: an upload begun
/// before an owner tightened them is refused, and publishes nothing.
#[tokio::test]
async fn the_commit_checks_the_stored_bytes_against_the_settings_of_the_time() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let bytes = b"twenty bytes of text";
    let ticket = app
        .begin_upload(
            "alice",
            &space,
            "late.txt",
            bytes,
            json!({ "contentType": "text/plain" }),
        )
        .await;
    set(&app, "alice", &space, json!({ "maxFileSize": 10 })).await;
    let before = head(&app, &space).await;
    // The embedded endpoint commits on receipt and answers with the refusal; S3 takes the
    // bytes, and the storage event's commit is refused the same way.
    let _ = app.put_bytes(&ticket, bytes.to_vec()).await;
    let body = app.commit_raw("alice", &ticket).await;
    assert_eq!(code(&body), "PAYLOAD_TOO_LARGE", "{body}");
    assert_eq!(head(&app, &space).await, before);
    let file = app
        .gql_as(
            Some("alice"),
            "query($id: ID!) { file(id: $id) { id } }",
            json!({ "id": ticket.file_id() }),
        )
        .await;
    assert_eq!(file["data"]["file"], Value::Null, "{file}");

    set(&app, "alice", &space, json!({})).await;
    let body = app.commit_raw("alice", &ticket).await;
    assert_eq!(
        body["data"]["commitUpload"]["version"], 1,
        "loosened again: {body}"
    );
}

/// A restore is checked like what it brings back: a name like a rename, other content
/// like an upload. Once only `md` is allowed, an old `page.html` stays in the past.
#[tokio::test]
async fn a_restore_cannot_bring_back_what_the_settings_now_refuse() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let ticket = app
        .begin_upload(
            "alice",
            &space,
            "page.html",
            b"<script>1</script>",
            json!({ "contentType": "text/html" }),
        )
        .await;
    app.put_bytes(&ticket, b"<script>1</script>".to_vec()).await;
    let file = app.commit("alice", &ticket).await;
    let id = file["id"].as_str().unwrap();
    let renamed = app
        .gql(
            "alice",
            "mutation($id: ID!) { updateFile(id: $id, baseVersion: 1, input: { name: \"notes.md\" }) { version } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(renamed["updateFile"]["version"], 2);
    let body = set(
        &app,
        "alice",
        &space,
        json!({ "allowedExtensions": ["md"] }),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    let restore = app
        .gql_as(
            Some("alice"),
            "mutation($id: ID!) { restoreVersion(id: $id, version: 1, baseVersion: 2) { name } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code(&restore), "BAD_INPUT", "{restore}");
    assert_eq!(
        app.file("alice", id).await["name"],
        "notes.md",
        "nothing changed"
    );
    // The content type rule applies to content a restore brings back: version 3 is new
    // text, and only text is accepted now; version 1's HTML stays in the past.
    let text = app
        .begin_upload(
            "alice",
            &space,
            "notes.md",
            b"# notes",
            json!({ "fileId": id, "baseVersion": 2, "contentType": "text/plain" }),
        )
        .await;
    app.put_bytes(&text, b"# notes".to_vec()).await;
    assert_eq!(app.commit("alice", &text).await["version"], 3);
    let body = set(
        &app,
        "alice",
        &space,
        json!({ "allowedContentTypes": ["text/plain"], "allowedExtensions": ["md", "html"] }),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    let other = app
        .gql_as(
            Some("alice"),
            "mutation($id: ID!) { restoreVersion(id: $id, version: 1, baseVersion: 3) { name } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(code(&other), "BAD_INPUT", "{other}");
    assert_eq!(app.file("alice", id).await["version"], 3, "nothing changed");
}

/// Content types are parsed, not matched as text: a parameter cannot smuggle another
/// type past a rule, and what is served is the normalised type, with pages and scripts
/// as attachments.
#[tokio::test]
async fn content_types_are_parsed_normalised_and_pages_are_attachments() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let body = set(
        &app,
        "alice",
        &space,
        json!({ "allowedContentTypes": ["image/*", "text/html"] }),
    )
    .await;
    assert!(body.get("errors").is_none(), "{body}");
    for smuggled in [
        "image/png;x=,text/html",
        "image/png; q=1",
        "image/png, text/html",
    ] {
        let refused = app
            .begin_upload_raw(
                "alice",
                json!({ "spaceId": space, "name": "a.png", "size": 1, "contentType": smuggled,
                        "sha256": crate::helpers::sha256_hex(b"x") }),
            )
            .await;
        assert_eq!(code(&refused), "BAD_INPUT", "{smuggled}: {refused}");
    }
    let page = b"<html><script>alert(1)</script></html>";
    let ticket = app
        .begin_upload(
            "alice",
            &space,
            "p.html",
            page,
            json!({ "contentType": "Text/HTML; Charset=UTF-8" }),
        )
        .await;
    let pinned: Vec<&Value> = ticket.0["headers"].as_array().unwrap().iter().collect();
    assert!(
        pinned.iter().any(|h| h["name"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("content-type")
            && h["value"] == "text/html; charset=utf-8"),
        "the ticket pins the normalised type: {pinned:?}"
    );
    assert_eq!(app.put_bytes(&ticket, page.to_vec()).await.status(), 200);
    let file = app.commit("alice", &ticket).await;
    assert_eq!(file["contentType"], "text/html; charset=utf-8");
    let res = app.get(file["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
    assert!(
        res.headers()
            .get("content-disposition")
            .is_some_and(|d| d.to_str().unwrap().starts_with("attachment")),
        "a page is downloaded, not rendered: {:?}",
        res.headers()
    );
    // Undeclared: pinned and served as application/octet-stream.
    let plain = set(&app, "alice", &space, json!({})).await;
    assert!(plain.get("errors").is_none(), "{plain}");
    let raw = app
        .begin_upload_raw(
            "alice",
            json!({ "spaceId": space, "name": "blob.bin", "size": 3, "sha256": crate::helpers::sha256_hex(b"abc") }),
        )
        .await;
    let ticket = crate::helpers::Ticket(raw["data"]["beginUpload"].clone());
    assert!(
        ticket.0["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["value"] == "application/octet-stream"),
        "{raw}"
    );
    assert_eq!(app.put_bytes(&ticket, b"abc".to_vec()).await.status(), 200);
    let file = app.commit("alice", &ticket).await;
    let res = app.get(file["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(res.headers()["content-type"], "application/octet-stream");
}
