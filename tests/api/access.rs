//! Authentication, membership and what a non-member can learn (nothing).

use serde_json::{Value, json};

use crate::helpers::{sha256_hex, spawn_app};

/// A token signed with `secret` for `sub`, expiring at `exp` (Unix seconds).
fn token_with(secret: &[u8], sub: &str, exp: i64) -> String {
    let claims = json!({ "sub": sub, "iat": exp - 60, "exp": exp });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

async fn me_with_header(app: &crate::helpers::TestApp, header: Option<&str>) -> Value {
    let mut req = app
        .client
        .post(format!("{}/graphql", app.base))
        .json(&json!({ "query": "{ me { id } }" }));
    if let Some(h) = header {
        req = req.header("Authorization", h);
    }
    req.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn bad_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    let good = app.token("alice");
    assert_eq!(
        me_with_header(&app, Some(&format!("Bearer {good}"))).await["data"]["me"]["id"],
        "alice"
    );

    let secret = filesync::auth::load_or_create_secret(app.data_dir.path()).unwrap();
    let now = chrono::Utc::now().timestamp();
    let expired = token_with(&secret, "alice", now - 3600);
    let foreign = token_with(b"a different secret of 32+ bytes!!", "alice", now + 3600);
    let mut tampered = good.clone();
    tampered.insert(tampered.len() - 4, 'A');
    let unsigned = {
        use base64::Engine;
        let e = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.",
            e(json!({"alg": "none", "typ": "JWT"})),
            e(json!({"sub": "alice", "exp": now + 3600}))
        )
    };
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("garbage", Some("Bearer garbage".into())),
        ("wrong scheme", Some(format!("Basic {good}"))),
        ("expired", Some(format!("Bearer {expired}"))),
        ("other key", Some(format!("Bearer {foreign}"))),
        ("tampered", Some(format!("Bearer {tampered}"))),
        ("alg none", Some(format!("Bearer {unsigned}"))),
        ("empty", Some("Bearer ".into())),
    ];
    for (what, header) in cases {
        let body = me_with_header(&app, header.as_deref()).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
            "{what}: {body}"
        );
        assert!(body["data"].is_null(), "{what}");
    }
    // Mutations too, and nothing is created.
    let body = app
        .gql_as(
            None,
            "mutation { createSpace(name: \"x\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    assert_eq!(
        app.gql("alice", "{ spaces { id } }", json!({})).await["spaces"],
        json!([])
    );
}

#[tokio::test]
async fn a_non_member_learns_nothing_about_a_space_or_its_files() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Secret").await;
    let file = app.upload("alice", &space, "plans.txt", b"secret").await;
    let id = file["id"].as_str().unwrap();
    let cursor = file["cursor"].as_str().unwrap();
    let missing_space = "00000000-0000-0000-0000-000000000000";

    let data = app
        .gql(
            "mallory",
            "query($s: ID!, $f: ID!) { space(id: $s) { id } file(id: $f) { id } v1: file(id: $f, version: 1) { id } spaces { id } }",
            json!({ "s": space, "f": id }),
        )
        .await;
    assert_eq!(
        data,
        json!({ "space": null, "file": null, "v1": null, "spaces": [] })
    );

    // Every operation answers exactly as for a space that does not exist.
    let ops: Vec<(&str, Value)> = vec![
        (
            "query($s: ID!) { files(spaceId: $s) { edges { cursor } } }",
            json!({}),
        ),
        (
            "query($s: ID!, $c: Cursor) { changes(spaceId: $s, since: $c) { hasMore } }",
            json!({ "c": cursor }),
        ),
        (
            "query($f: ID!) { fileVersions(id: $f) { version } }",
            json!({}),
        ),
        (
            "mutation($s: ID!) { setMember(spaceId: $s, userId: \"mallory\", role: OWNER) { id } }",
            json!({}),
        ),
        (
            "mutation($f: ID!) { updateFile(id: $f, baseVersion: 1, input: { name: \"x\" }) { id } }",
            json!({}),
        ),
        ("mutation($f: ID!) { deleteFile(id: $f) { id } }", json!({})),
        (
            "mutation($f: ID!) { restoreVersion(id: $f, version: 1, baseVersion: 1) { id } }",
            json!({}),
        ),
        (
            "mutation($s: ID!, $sha: String!) { beginUpload(input: { spaceId: $s, name: \"x\", size: 1, sha256: $sha }) { uploadId } }",
            json!({ "sha": sha256_hex(b"x") }),
        ),
    ];
    for (query, extra) in ops {
        let mut answers = Vec::new();
        for (s, f) in [(space.as_str(), id), (missing_space, missing_space)] {
            let mut vars = json!({ "s": s, "f": f });
            vars.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            if query.contains("$c") {
                // A cursor for the missing space, so the answer cannot differ on that.
                vars["c"] = json!(filesync::domain::Cursor::new(s.parse().unwrap(), 1).encode());
            }
            let (code, error) = app.gql_err(Some("mallory"), query, vars).await;
            answers.push((code, error["message"].clone()));
        }
        assert_eq!(answers[0].0, "NOT_FOUND", "{query}");
        assert_eq!(
            answers[0], answers[1],
            "{query}: existing and missing look the same"
        );
    }
    assert_eq!(app.file("alice", id).await["version"], 1, "nothing changed");
}

#[tokio::test]
async fn owners_manage_members_and_roles_are_enforced() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    const SET: &str = "mutation($s: ID!, $u: ID!, $r: Role) { setMember(spaceId: $s, userId: $u, role: $r) { id role members { userId role } } }";

    let data = app
        .gql(
            "alice",
            SET,
            json!({ "s": space, "u": "bob", "r": "VIEWER" }),
        )
        .await;
    assert_eq!(
        data["setMember"]["members"],
        json!([{ "userId": "alice", "role": "OWNER" }, { "userId": "bob", "role": "VIEWER" }])
    );
    // Bob now sees the space, as a viewer.
    let data = app.gql("bob", "{ spaces { name role } }", json!({})).await;
    assert_eq!(
        data["spaces"],
        json!([{ "name": "Team", "role": "VIEWER" }])
    );

    let (code, _) = app
        .gql_err(
            Some("bob"),
            SET,
            json!({ "s": space, "u": "bob", "r": "OWNER" }),
        )
        .await;
    assert_eq!(code, "FORBIDDEN", "a viewer cannot promote itself");
    let body = app
        .begin_upload_raw(
            "bob",
            json!({ "spaceId": space, "name": "x", "size": 1, "sha256": sha256_hex(b"x") }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");

    let (code, _) = app
        .gql_err(
            Some("alice"),
            SET,
            json!({ "s": space, "u": "alice", "r": "EDITOR" }),
        )
        .await;
    assert_eq!(code, "BAD_INPUT", "the last owner cannot step down");
    let (code, _) = app
        .gql_err(
            Some("alice"),
            SET,
            json!({ "s": space, "u": "", "r": "EDITOR" }),
        )
        .await;
    assert_eq!(code, "BAD_INPUT");

    // Removing a member removes access.
    app.gql("alice", SET, json!({ "s": space, "u": "bob", "r": null }))
        .await;
    let data = app
        .gql(
            "bob",
            "query($s: ID!) { space(id: $s) { id } }",
            json!({ "s": space }),
        )
        .await;
    assert!(data["space"].is_null());
}

#[tokio::test]
async fn a_commit_by_an_author_who_lost_write_access_is_forbidden() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    app.set_member("alice", &space, "bob", Some("EDITOR")).await;
    let ticket = app
        .begin_upload("bob", &space, "b.txt", b"bob", json!({}))
        .await;
    app.set_member("alice", &space, "bob", Some("VIEWER")).await;
    let res = app.put_bytes(&ticket, b"bob".to_vec()).await;
    // The embedded endpoint commits on receipt; on AWS the storage event is refused.
    assert_eq!(
        res.status(),
        if crate::helpers::on_aws() { 200 } else { 403 }
    );
    let body = app.commit_raw("bob", &ticket).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert!(app.file("alice", ticket.file_id()).await.is_null());
}

/// A user's spaces and a space's members come in pages: every one exactly once, in a
/// stable order, and a page past the limit is refused rather than cut short.
#[tokio::test]
async fn spaces_and_members_are_paged() {
    let app = spawn_app().await;
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(app.create_space("alice", &format!("S{i}")).await);
        // Spaces made in one millisecond come in id order.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    for user in ["dan", "bob", "carol", "erin"] {
        app.set_member("alice", &made[0], user, Some("VIEWER"))
            .await;
    }
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = app
            .gql(
                "alice",
                "query($a: ID) { spaces(first: 2, after: $a) { id } }",
                json!({ "a": after }),
            )
            .await["spaces"]
            .as_array()
            .unwrap()
            .clone();
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap()["id"].clone();
        seen.extend(page.iter().map(|s| s["id"].as_str().unwrap().to_owned()));
    }
    assert_eq!(seen, made, "oldest first, each once");
    let all = app.gql("alice", "{ spaces { id } }", json!({})).await;
    assert_eq!(all["spaces"].as_array().unwrap().len(), 5, "default page");

    let mut members = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = app
            .gql(
                "alice",
                "query($s: ID!, $a: String) { space(id: $s) { members(first: 2, after: $a) { userId } } }",
                json!({ "s": made[0], "a": after }),
            )
            .await["space"]["members"]
            .as_array()
            .unwrap()
            .clone();
        if page.is_empty() {
            break;
        }
        after = page.last().unwrap()["userId"].clone();
        members.extend(
            page.iter()
                .map(|m| m["userId"].as_str().unwrap().to_owned()),
        );
    }
    assert_eq!(
        members,
        ["alice", "bob", "carol", "dan", "erin"],
        "by user id"
    );

    let (code, _) = app
        .gql_err(Some("alice"), "{ spaces(first: 0) { id } }", json!({}))
        .await;
    assert_eq!(code, "BAD_INPUT");
    let (code, _) = app
        .gql_err(Some("alice"), "{ spaces(first: 100000) { id } }", json!({}))
        .await;
    assert!(
        code == "BAD_INPUT" || code == "QUERY_TOO_COMPLEX",
        "an oversized page is refused: {code}"
    );
    // Bob sees only the space he is in, and a cursor from a space he is not in is no
    // way around that.
    let bob = app
        .gql(
            "bob",
            "query($a: ID) { spaces(after: $a) { id } }",
            json!({ "a": made[4] }),
        )
        .await;
    assert_eq!(bob["spaces"], json!([]));
    let bob = app.gql("bob", "{ spaces { id } }", json!({})).await;
    assert_eq!(bob["spaces"], json!([{ "id": made[0] }]));
}
