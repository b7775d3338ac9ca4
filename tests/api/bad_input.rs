//! Every kind of bad request, tried as a new user or an attacker would: each gets its
//! stable `extensions.code` (and HTTP status where HTTP is what is wrong), never a 500,
//! and leaves the store exactly as it was.

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::{TestApp, on_aws, sha256_hex, spawn_app};

const FILE: &str = "id name version deleted";
const UPDATE: &str = "mutation($id: ID!, $b: Int!, $i: UpdateFileInput!) { updateFile(id: $id, baseVersion: $b, input: $i) { version } }";
const BEGIN: &str = "mutation($i: BeginUploadInput!) { beginUpload(input: $i) { uploadId } }";
const CHANGES: &str = "query($s: ID!, $c: Cursor, $l: Int) { changes(spaceId: $s, since: $c, limit: $l) { files { id } } }";

/// What the store holds, as its owners see it.
async fn snapshot(app: &TestApp, spaces: &[(&str, &str)]) -> Value {
    let mut all = Vec::new();
    for (user, space) in spaces {
        let state = app
            .gql(
                user,
                &format!(
                    "query($s: ID!) {{ space(id: $s) {{ headCursor settings {{ maxFileSize }} members {{ userId role }} }}
                      files(spaceId: $s, first: 100) {{ nodes {{ {FILE} metadata {{ key value }} }} }} }}"
                ),
                json!({ "s": space }),
            )
            .await;
        all.push(state);
        all.push(app.gql(user, "{ spaces { id name } }", json!({})).await);
    }
    Value::Array(all)
}

/// A GraphQL request's error code (or `ok` when it succeeded), with the token given.
async fn gql_code(
    app: &TestApp,
    auth: Option<&str>,
    query: &str,
    variables: Value,
) -> (u16, String) {
    let mut req = app
        .client
        .post(format!("{}/graphql", app.base))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    let code = match body["errors"][0]["extensions"]["code"].as_str() {
        Some(code) => code.to_owned(),
        None if body.get("errors").is_none() && !body.is_null() => "ok".to_owned(),
        None => format!("no code: {body}"),
    };
    (status, code)
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// An HS256 token over `claims` with `secret`.
fn hs256(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn every_bad_input_has_its_code_and_changes_nothing() {
    let app = spawn_app().await;
    let team = app.create_space("alice", "Team").await;
    app.set_member("alice", &team, "vera", Some("VIEWER")).await;
    let file = app.upload_id("alice", &team, "docs/a.txt", b"alpha").await;
    let ticket = app
        .begin_upload("alice", &team, "pending.txt", b"later", json!({}))
        .await;
    let other = app.create_space("bob", "Other").await;
    let bobs = app.upload_id("bob", &other, "b.txt", b"bravo").await;
    let other_cursor = app
        .gql(
            "bob",
            "query($s: ID!) { space(id: $s) { headCursor } }",
            json!({ "s": other }),
        )
        .await["space"]["headCursor"]
        .clone();
    let unknown = uuid::Uuid::new_v4().to_string();
    let secret = filesync::auth::load_or_create_secret(app.data_dir.path()).unwrap();
    let now = chrono::Utc::now().timestamp();
    let before = snapshot(&app, &[("alice", &team), ("bob", &other)]).await;

    let alice = format!("Bearer {}", app.token("alice"));
    let vera = format!("Bearer {}", app.token("vera"));
    let carol = format!("Bearer {}", app.token("carol"));
    let upload = |name: Value, size: Value, sha: Value, extra: Value| {
        let mut input = json!({ "spaceId": team, "name": name, "size": size, "sha256": sha });
        input
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "i": input })
    };
    let ok_sha = json!(sha256_hex(b"12345"));
    let name = |n: &str| upload(json!(n), json!(5), ok_sha.clone(), json!({}));
    let rename = |n: &str| json!({ "id": file, "b": 1, "i": { "name": n } });
    let many: Vec<Value> = (0..65)
        .map(|i| json!({ "key": format!("k{i}"), "value": "v" }))
        .collect();
    let deep = format!("{{ {}{} }}", "spaces { ".repeat(30), "}".repeat(30));
    let aliases: String = (0..40).map(|n| format!("a{n}: me {{ id }} ")).collect();

    // (what, Authorization header, query, variables, expected code)
    let cases: Vec<(&str, Option<String>, String, Value, &str)> = vec![
        // Tokens.
        ("no token", None, "mutation { createSpace(name: \"x\") { id } }".into(), json!({}), "UNAUTHENTICATED"),
        ("not a bearer header", Some("Basic YWxpY2U6cHc=".into()), "{ me { id } }".into(), json!({}), "UNAUTHENTICATED"),
        ("an empty bearer", Some("Bearer ".into()), "{ me { id } }".into(), json!({}), "UNAUTHENTICATED"),
        ("a garbage token", Some("Bearer a.b.c".into()), "{ me { id } }".into(), json!({}), "UNAUTHENTICATED"),
        ("an expired token", Some(format!("Bearer {}", hs256(&json!({ "sub": "alice", "exp": now - 3600 }), &secret))), "{ me { id } }".into(), json!({}), "UNAUTHENTICATED"),
        ("a token of another secret", Some(format!("Bearer {}", hs256(&json!({ "sub": "alice", "exp": now + 60 }), b"not the server's secret, 32 bytes!"))), "{ me { id } }".into(), json!({}), "UNAUTHENTICATED"),
        ("alg none", Some(format!("Bearer {}.{}.", b64(&json!({ "alg": "none" })), b64(&json!({ "sub": "alice", "exp": now + 60 })))), "{ me { id } }".into(), json!({}), "UNAUTHENTICATED"),
        ("an empty user", Some(format!("Bearer {}", hs256(&json!({ "sub": "", "exp": now + 60 }), &secret))), "{ me { id } }".into(), json!({}), "UNAUTHENTICATED"),
        ("a user that is a number", Some(format!("Bearer {}", hs256(&json!({ "sub": 7, "exp": now + 60 }), &secret))), "{ me { id } }".into(), json!({}), "UNAUTHENTICATED"),
        ("no exp", Some(format!("Bearer {}", hs256(&json!({ "sub": "alice" }), &secret))), "{ me { id } }".into(), json!({}), "UNAUTHENTICATED"),
        // Names.
        ("an empty space name", Some(alice.clone()), "mutation { createSpace(name: \"\") { id } }".into(), json!({}), "BAD_INPUT"),
        ("a space name of 10,000 bytes", Some(alice.clone()), "mutation($n: String!) { createSpace(name: $n) { id } }".into(), json!({ "n": "n".repeat(10_000) }), "BAD_INPUT"),
        ("an empty file name", Some(alice.clone()), BEGIN.into(), name(""), "BAD_INPUT"),
        ("a leading slash", Some(alice.clone()), BEGIN.into(), name("/etc/passwd"), "BAD_INPUT"),
        ("an empty segment", Some(alice.clone()), BEGIN.into(), name("a//b.txt"), "BAD_INPUT"),
        ("a trailing slash", Some(alice.clone()), BEGIN.into(), name("dir/"), "BAD_INPUT"),
        ("a . segment", Some(alice.clone()), BEGIN.into(), name("a/./b.txt"), "BAD_INPUT"),
        ("a .. segment", Some(alice.clone()), BEGIN.into(), name("../../escape.txt"), "BAD_INPUT"),
        ("a control character", Some(alice.clone()), BEGIN.into(), name("bell\u{7}.txt"), "BAD_INPUT"),
        ("a NUL", Some(alice.clone()), BEGIN.into(), name("nul\u{0}.txt"), "BAD_INPUT"),
        ("a backslash", Some(alice.clone()), BEGIN.into(), name("dir\\file.txt"), "BAD_INPUT"),
        ("a name over 1,024 bytes", Some(alice.clone()), BEGIN.into(), name(&format!("{}/x", "d/".repeat(520))), "BAD_INPUT"),
        ("a segment over 255 bytes", Some(alice.clone()), BEGIN.into(), name(&"s".repeat(256)), "BAD_INPUT"),
        ("a rename to ..", Some(alice.clone()), UPDATE.into(), rename("../up.txt"), "BAD_INPUT"),
        ("a rename to an empty name", Some(alice.clone()), UPDATE.into(), rename(""), "BAD_INPUT"),
        // Sizes and types.
        ("a size over the server's limit", Some(alice.clone()), BEGIN.into(), upload(json!("n.txt"), json!(68_719_476_737_u64), ok_sha.clone(), json!({})), "PAYLOAD_TOO_LARGE"),
        ("a negative size", Some(alice.clone()), BEGIN.into(), upload(json!("n.txt"), json!(-1), ok_sha.clone(), json!({})), "BAD_INPUT"),
        ("a size past 2^53", Some(alice.clone()), BEGIN.into(), upload(json!("n.txt"), json!(18_014_398_509_481_984_u64), ok_sha.clone(), json!({})), "BAD_INPUT"),
        ("a fractional size", Some(alice.clone()), BEGIN.into(), upload(json!("n.txt"), json!(1.5), ok_sha.clone(), json!({})), "BAD_INPUT"),
        ("a size that is a string", Some(alice.clone()), BEGIN.into(), upload(json!("n.txt"), json!("five"), ok_sha.clone(), json!({})), "BAD_INPUT"),
        ("a name that is a number", Some(alice.clone()), BEGIN.into(), upload(json!(42), json!(5), ok_sha.clone(), json!({})), "BAD_INPUT"),
        ("a sha256 that is not hex", Some(alice.clone()), BEGIN.into(), upload(json!("n.txt"), json!(5), json!("z".repeat(64)), json!({})), "BAD_INPUT"),
        ("a short sha256", Some(alice.clone()), BEGIN.into(), upload(json!("n.txt"), json!(5), json!("abcd"), json!({})), "BAD_INPUT"),
        ("a content type that is not one", Some(alice.clone()), BEGIN.into(), upload(json!("n.txt"), json!(5), ok_sha.clone(), json!({ "contentType": "not a type" })), "BAD_INPUT"),
        ("a content type with a newline", Some(alice.clone()), BEGIN.into(), upload(json!("n.txt"), json!(5), ok_sha.clone(), json!({ "contentType": "text/plain\r\nX-Evil: 1" })), "BAD_INPUT"),
        ("65 metadata entries", Some(alice.clone()), UPDATE.into(), json!({ "id": file, "b": 1, "i": { "metadata": many } }), "BAD_INPUT"),
        ("a metadata key of 200 bytes", Some(alice.clone()), UPDATE.into(), json!({ "id": file, "b": 1, "i": { "metadata": [{ "key": "k".repeat(200), "value": "v" }] } }), "BAD_INPUT"),
        ("an update with nothing", Some(alice.clone()), UPDATE.into(), json!({ "id": file, "b": 1, "i": {} }), "BAD_INPUT"),
        ("a baseVersion that is a string", Some(alice.clone()), UPDATE.into(), json!({ "id": file, "b": "one", "i": { "name": "x.txt" } }), "BAD_INPUT"),
        ("a role that does not exist", Some(alice.clone()), "mutation($s: ID!) { setMember(spaceId: $s, userId: \"zed\", role: ADMIN) { id } }".into(), json!({ "s": team }), "BAD_INPUT"),
        ("an empty user id", Some(alice.clone()), "mutation($s: ID!) { setMember(spaceId: $s, userId: \"\", role: EDITOR) { id } }".into(), json!({ "s": team }), "BAD_INPUT"),
        ("space settings with a bad type", Some(alice.clone()), "mutation($s: ID!) { updateSpaceSettings(spaceId: $s, input: { allowedContentTypes: [\"png\"] }) { id } }".into(), json!({ "s": team }), "BAD_INPUT"),
        // Cursors and page sizes.
        ("a garbage cursor", Some(alice.clone()), CHANGES.into(), json!({ "s": team, "c": "garbage" }), "BAD_INPUT"),
        ("a cursor of another space", Some(alice.clone()), CHANGES.into(), json!({ "s": team, "c": other_cursor }), "BAD_INPUT"),
        ("a cursor of 10 KB", Some(alice.clone()), CHANGES.into(), json!({ "s": team, "c": "A".repeat(10_000) }), "BAD_INPUT"),
        ("a negative limit", Some(alice.clone()), CHANGES.into(), json!({ "s": team, "l": -1 }), "BAD_INPUT"),
        ("a zero limit", Some(alice.clone()), CHANGES.into(), json!({ "s": team, "l": 0 }), "BAD_INPUT"),
        ("a huge limit", Some(alice.clone()), CHANGES.into(), json!({ "s": team, "l": 1_000_000 }), "BAD_INPUT"),
        ("a limit past 32 bits", Some(alice.clone()), CHANGES.into(), json!({ "s": team, "l": 1_u64 << 40 }), "BAD_INPUT"),
        ("a negative first", Some(alice.clone()), "query($s: ID!) { files(spaceId: $s, first: -5) { nodes { id } } }".into(), json!({ "s": team }), "BAD_INPUT"),
        ("a garbage after", Some(alice.clone()), "query($s: ID!) { files(spaceId: $s, after: \"%%%\") { nodes { id } } }".into(), json!({ "s": team }), "BAD_INPUT"),
        // Unknown and malformed ids.
        ("a malformed space id", Some(alice.clone()), CHANGES.into(), json!({ "s": "not-a-uuid" }), "BAD_INPUT"),
        ("a malformed file id", Some(alice.clone()), UPDATE.into(), json!({ "id": "42", "b": 1, "i": { "name": "x.txt" } }), "BAD_INPUT"),
        ("an unknown space", Some(alice.clone()), CHANGES.into(), json!({ "s": unknown }), "NOT_FOUND"),
        ("an unknown file", Some(alice.clone()), UPDATE.into(), json!({ "id": unknown, "b": 1, "i": { "name": "x.txt" } }), "NOT_FOUND"),
        ("deleting an unknown file", Some(alice.clone()), "mutation($id: ID!) { deleteFile(id: $id) { id } }".into(), json!({ "id": unknown }), "NOT_FOUND"),
        ("restoring an unknown file", Some(alice.clone()), "mutation($id: ID!) { restoreVersion(id: $id, version: 1, baseVersion: 1) { id } }".into(), json!({ "id": unknown }), "NOT_FOUND"),
        ("committing an unknown upload", Some(alice.clone()), "mutation($u: ID!) { commitUpload(uploadId: $u, uploadToken: \"t\") { id } }".into(), json!({ "u": unknown }), "NOT_FOUND"),
        ("cancelling an unknown upload", Some(alice.clone()), "mutation($u: ID!) { cancelUpload(uploadId: $u, uploadToken: \"t\") }".into(), json!({ "u": unknown }), "NOT_FOUND"),
        ("uploading into an unknown space", Some(alice.clone()), BEGIN.into(), json!({ "i": { "spaceId": unknown, "name": "x.txt", "size": 5, "sha256": ok_sha } }), "NOT_FOUND"),
        // Ids of other spaces, and roles.
        ("updating another space's file", Some(alice.clone()), UPDATE.into(), json!({ "id": bobs, "b": 1, "i": { "name": "mine.txt" } }), "NOT_FOUND"),
        ("deleting another space's file", Some(alice.clone()), "mutation($id: ID!) { deleteFile(id: $id) { id } }".into(), json!({ "id": bobs }), "NOT_FOUND"),
        ("reading another space's changes", Some(alice.clone()), CHANGES.into(), json!({ "s": other }), "NOT_FOUND"),
        ("versions of another space's file", Some(alice.clone()), "query($id: ID!) { fileVersions(id: $id) { version } }".into(), json!({ "id": bobs }), "NOT_FOUND"),
        ("a new version of another space's file", Some(alice.clone()), BEGIN.into(), upload(json!("b.txt"), json!(5), ok_sha.clone(), json!({ "fileId": bobs })), "NOT_FOUND"),
        ("a non-member adding members", Some(carol.clone()), "mutation($s: ID!) { setMember(spaceId: $s, userId: \"carol\", role: OWNER) { id } }".into(), json!({ "s": team }), "NOT_FOUND"),
        ("a viewer writing", Some(vera.clone()), UPDATE.into(), rename("vera.txt"), "FORBIDDEN"),
        ("a viewer adding members", Some(vera.clone()), "mutation($s: ID!) { setMember(spaceId: $s, userId: \"vera\", role: OWNER) { id } }".into(), json!({ "s": team }), "FORBIDDEN"),
        ("the wrong upload token", Some(alice.clone()), "mutation($u: ID!) { commitUpload(uploadId: $u, uploadToken: \"guess\") { id } }".into(), json!({ "u": ticket.upload_id() }), "FORBIDDEN"),
        ("a stranger guessing an upload token", Some(carol.clone()), "mutation($u: ID!) { cancelUpload(uploadId: $u, uploadToken: \"guess\") }".into(), json!({ "u": ticket.upload_id() }), "FORBIDDEN"),
        // Versions.
        ("a stale baseVersion", Some(alice.clone()), UPDATE.into(), json!({ "id": file, "b": 7, "i": { "name": "x.txt" } }), "CONFLICT"),
        ("baseVersion zero", Some(alice.clone()), UPDATE.into(), json!({ "id": file, "b": 0, "i": { "name": "x.txt" } }), "BAD_INPUT"),
        ("restoring version 0", Some(alice.clone()), "mutation($id: ID!) { restoreVersion(id: $id, version: 0, baseVersion: 1) { id } }".into(), json!({ "id": file }), "BAD_INPUT"),
        ("restoring a version that never was", Some(alice.clone()), "mutation($id: ID!) { restoreVersion(id: $id, version: 99, baseVersion: 1) { id } }".into(), json!({ "id": file }), "NOT_FOUND"),
        ("a name another file holds", Some(alice.clone()), BEGIN.into(), name("docs/a.txt"), "CONFLICT"),
        // GraphQL itself.
        ("a syntax error", Some(alice.clone()), "{ me { id ".into(), json!({}), "BAD_INPUT"),
        ("an unknown field", Some(alice.clone()), "{ me { password } }".into(), json!({}), "BAD_INPUT"),
        ("a missing variable", Some(alice.clone()), CHANGES.into(), json!({}), "BAD_INPUT"),
        ("a query 30 levels deep", Some(alice.clone()), deep.clone(), json!({}), "BAD_INPUT"),
        ("too many aliases", Some(alice.clone()), format!("{{ {aliases} }}"), json!({}), "BAD_INPUT"),
        ("a query of 20,000 fields", Some(alice.clone()), format!("{{ {} }}", "me { id } ".repeat(20_000)), json!({}), "BAD_INPUT"),
        ("two operations, none named", Some(alice.clone()), "query A { me { id } } query B { me { id } }".into(), json!({}), "BAD_INPUT"),
    ];
    let mut seen = 0;
    for (what, auth, query, variables, expected) in &cases {
        let (status, code) = gql_code(&app, auth.as_deref(), query, variables.clone()).await;
        assert_ne!(status, 500, "{what}");
        assert_eq!(code, *expected, "{what}");
        seen += 1;
    }

    // Requests that are wrong as HTTP.
    let post = |body: reqwest::Body, content_type: &'static str| {
        app.client
            .post(format!("{}/graphql", app.base))
            .header("authorization", &alice)
            .header("content-type", content_type)
            .body(body)
    };
    let http_cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "malformed JSON",
            post("{\"query\": ".into(), "application/json"),
            400,
            "BAD_INPUT",
        ),
        (
            // A request with no query: a missing parameter, 400 (GraphQL over HTTP).
            "JSON that is not a request",
            post("{\"nope\": 1}".into(), "application/json"),
            400,
            "BAD_INPUT",
        ),
        (
            "a body of another content type",
            post("{\"query\": \"{ me { id } }\"}".into(), "text/plain"),
            415,
            "BAD_INPUT",
        ),
        (
            "an empty body",
            post("".into(), "application/json"),
            400,
            "BAD_INPUT",
        ),
        (
            "a batch",
            post(
                "[{\"query\": \"{ me { id } }\"}]".into(),
                "application/json",
            ),
            400,
            "BAD_INPUT",
        ),
        (
            "a body over the limit",
            post(vec![b' '; 17 * 1024 * 1024].into(), "application/json"),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "a mutation over GET",
            app.client
                .get(format!(
                    "{}/graphql?query=mutation%7BcreateSpace(name:%22x%22)%7Bid%7D%7D",
                    app.base
                ))
                .header("authorization", &alice),
            405,
            "BAD_INPUT",
        ),
    ];
    for (what, request, status, expected) in http_cases {
        let res = request.send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{what}");
        assert_eq!(
            crate::helpers::http_error_code(res).await,
            expected,
            "{what}"
        );
        seen += 1;
    }
    if !on_aws() {
        // The embedded blob endpoint (on AWS, S3 answers these: see tests/storage).
        let url = ticket.url().to_owned();
        let unsigned = url.split('?').next().unwrap().to_owned();
        let blob_cases = [
            ("an unsigned blob URL", unsigned.clone(), 403, "FORBIDDEN"),
            (
                "a tampered blob URL",
                url.replace("sig=", "sig=0"),
                403,
                "FORBIDDEN",
            ),
            (
                "a blob key that is not one",
                format!("{}/blob/x/y?{}", app.base, url.split('?').nth(1).unwrap()),
                404,
                "NOT_FOUND",
            ),
        ];
        for (what, target, status, expected) in blob_cases {
            let res = app
                .client
                .put(&target)
                .header("content-type", "application/octet-stream")
                .body("later")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status().as_u16(), status, "{what}");
            assert_eq!(
                crate::helpers::http_error_code(res).await,
                expected,
                "{what}"
            );
            seen += 1;
        }
        let res = app
            .client
            .put(&url)
            .header("content-type", "text/html")
            .body("later")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 400, "bytes of another content type");
        assert_eq!(crate::helpers::http_error_code(res).await, "BAD_INPUT");
        seen += 1;
    }
    assert!(seen >= 60, "{seen} cases");
    assert_eq!(
        snapshot(&app, &[("alice", &team), ("bob", &other)]).await,
        before,
        "nothing changed"
    );
    // The pending upload is still good.
    assert_eq!(
        app.put_bytes(&ticket, b"later".to_vec()).await.status(),
        200
    );
    assert_eq!(app.commit("alice", &ticket).await["version"], 1);
}

/// Field errors as the GraphQL spec handles them: a failed nullable field is `null`, not
/// missing; a failed non-null root field makes `data` null even when a sibling worked;
/// and a non-null object whose every field is skipped is `{}`.
#[tokio::test]
async fn field_errors_null_what_the_spec_says_and_skipped_objects_are_empty() {
    let app = crate::helpers::spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    app.upload("alice", &space, "a.txt", b"a").await;
    let nullable = app
        .gql_as(
            Some("alice"),
            "{ me { id } space(id: \"not-an-id\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        nullable["data"],
        json!({ "me": { "id": "alice" }, "space": null }),
        "{nullable}"
    );
    assert_eq!(nullable["errors"][0]["path"], json!(["space"]));
    let root = app
        .gql_as(
            Some("alice"),
            "{ a: spaces { id } b: files(spaceId: \"bad\") { __typename } }",
            json!({}),
        )
        .await;
    assert!(
        root["data"].is_null(),
        "a non-null root field failed: {root}"
    );
    assert_eq!(root["errors"][0]["path"], json!(["b"]));
    let skipped = app
        .gql_as(
            Some("alice"),
            "query($s: ID!) { files(spaceId: $s) { nodes { id @skip(if: true) } } }",
            json!({ "s": space }),
        )
        .await;
    assert_eq!(
        skipped["data"],
        json!({ "files": { "nodes": [{}] } }),
        "{skipped}"
    );
    let nothing = app
        .gql_as(
            Some("alice"),
            "query { me @skip(if: true) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(nothing, json!({ "data": {} }), "every root field skipped");
    // A failed field keeps its place among its siblings (clients diff responses as text).
    let raw = app
        .client
        .post(format!("{}/graphql", app.base))
        .bearer_auth(app.token("alice"))
        .json(&json!({
            "query": "{ a: me { id } space(id: \"not-an-id\") { id } z: me { id } }"
        }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (a, failed, z) = (
        raw.find("\"a\"").unwrap(),
        raw.find("\"space\"").unwrap(),
        raw.find("\"z\"").unwrap(),
    );
    assert!(a < failed && failed < z, "selection order: {raw}");
}
