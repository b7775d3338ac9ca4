//! Names that map onto a folder tree on every common file system: unique ignoring case
//! and look-alikes (unless the owner says otherwise), never a file where a folder must
//! be, no invisible or bidirectional characters, no trailing dots or spaces; the same
//! limits on both backends.

use serde_json::{Value, json};

use crate::helpers::{TestApp, sha256_hex, spawn_app};

async fn try_upload(app: &TestApp, space: &str, name: &str) -> Value {
    let body = app
        .begin_upload_raw(
            "alice",
            json!({ "spaceId": space, "name": name, "size": 1, "sha256": sha256_hex(b"x"),
                    "contentType": "text/plain" }),
        )
        .await;
    if body.get("errors").is_some() {
        return body;
    }
    let ticket = crate::helpers::Ticket(body["data"]["beginUpload"].clone());
    app.put_bytes(&ticket, b"x".to_vec()).await;
    app.commit_raw("alice", &ticket).await
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("none")
}

#[tokio::test]
async fn names_that_no_folder_could_hold_together_are_refused() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    for name in [
        "README.md",
        "a.txt",
        "a",
        "caf\u{e9}.txt",
        "file.txt",
        "A.txt2",
    ] {
        let body = try_upload(&app, &space, name).await;
        assert_eq!(code(&body), "none", "{name}: {body}");
    }
    for (name, expected) in [
        ("readme.md", "CONFLICT"), // case
        ("README.MD", "CONFLICT"),
        ("CAF\u{c9}.TXT", "CONFLICT"),
        ("\u{fb01}le.txt", "CONFLICT"), // a ligature of file.txt
        ("\u{ff21}.txt2", "CONFLICT"),  // full-width A
        ("a/b", "CONFLICT"),            // inside the file `a`
        ("a.txt.", "BAD_INPUT"),        // a trailing dot
        ("a.txt ", "BAD_INPUT"),        // a trailing space
        ("zero\u{200b}width.txt", "BAD_INPUT"),
        ("gnp\u{202e}.exe", "BAD_INPUT"),
        ("line\u{2028}break.txt", "BAD_INPUT"),
        ("what?.txt", "BAD_INPUT"),
        ("nul", "BAD_INPUT"),
    ] {
        let body = try_upload(&app, &space, name).await;
        assert_eq!(code(&body), expected, "{name:?}: {body}");
    }
    // A folder where a file is, and back: `x/y` exists, so `x` cannot.
    assert_eq!(code(&try_upload(&app, &space, "x/y.txt").await), "none");
    let body = try_upload(&app, &space, "X").await;
    assert_eq!(code(&body), "CONFLICT", "{body}");
    assert!(
        body["errors"][0]["extensions"]["fileId"].is_string(),
        "names the file in the way"
    );

    // `files(prefix:)` compares the prefix as names: normalised and case-folded.
    let listed = app
        .gql(
            "alice",
            "query($s: ID!, $p: String) { files(spaceId: $s, prefix: $p) { edges { node { name } } } }",
            json!({ "s": space, "p": "Cafe\u{301}" }),
        )
        .await;
    assert_eq!(
        listed["files"]["edges"][0]["node"]["name"], "caf\u{e9}.txt",
        "{listed}"
    );
}

#[tokio::test]
async fn an_owner_may_make_a_new_space_case_sensitive_but_not_a_used_one() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Linux").await;
    let set = "mutation($s: ID!, $c: Boolean) { updateSpaceSettings(spaceId: $s, input: { caseSensitiveNames: $c }) { settings { caseSensitiveNames } } }";
    let on = app
        .gql("alice", set, json!({ "s": space, "c": true }))
        .await;
    assert_eq!(
        on["updateSpaceSettings"]["settings"]["caseSensitiveNames"],
        true
    );
    assert_eq!(code(&try_upload(&app, &space, "Makefile").await), "none");
    assert_eq!(
        code(&try_upload(&app, &space, "makefile").await),
        "none",
        "case-sensitive"
    );
    assert_eq!(
        code(&try_upload(&app, &space, "\u{ff2d}akefile").await),
        "CONFLICT",
        "look-alikes still clash"
    );
    let off = app
        .gql_as(Some("alice"), set, json!({ "s": space, "c": false }))
        .await;
    assert_eq!(code(&off), "BAD_INPUT", "{off}");
}

/// Both backends hold the same names: up to 1,000 bytes, `BAD_INPUT` past it (DynamoDB
/// keys hold 1,024 bytes, a name key among them).
#[tokio::test]
async fn names_up_to_1000_bytes_work_on_every_backend() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let long = format!("{}/{}", "d".repeat(250), vec!["e".repeat(249); 3].join("/"));
    assert_eq!(long.len(), 1000);
    let body = try_upload(&app, &space, &long).await;
    assert_eq!(code(&body), "none", "{body}");
    assert_eq!(body["data"]["commitUpload"]["name"], long.as_str());
    let body = try_upload(&app, &space, &format!("{long}x")).await;
    assert_eq!(code(&body), "BAD_INPUT", "{body}");
    // Multi-byte characters count in bytes, and a name whose normalised form grows
    // past the limit (each U+0149 becomes two characters, three bytes) is refused too,
    // never an internal error.
    let body = try_upload(&app, &space, &"\u{df}".repeat(120)).await;
    assert_eq!(code(&body), "none", "{body}");
    let grows = vec!["\u{149}".repeat(80); 5].join("/");
    assert!(grows.len() <= 1000);
    let body = try_upload(&app, &space, &grows).await;
    assert_eq!(code(&body), "BAD_INPUT", "{body}");
}
