//! The presigned POST of a browser form: the ticket's `formFields` in order, then the
//! file. On AWS the form goes to moto, which checks no policy: what the policy refuses
//! is S3's check, tested against s3s-fs in `tests/storage/strict_s3.rs`.

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, http_error_code, on_aws, sha256_hex, spawn_app, spawn_app_with,
    url_checks_belong_to_s3,
};

/// A change to a form's fields before it is sent.
type EditFields = Box<dyn FnOnce(&mut Vec<(String, String)>)>;

async fn begin_post(app: &TestApp, space: &str, name: &str, bytes: &[u8]) -> Value {
    let body = app
        .gql_as(
            Some("alice"),
            "mutation($i: BeginUploadInput!) { beginUpload(input: $i) {
                uploadId uploadToken url method headers { name value } formFields { name value } } }",
            json!({ "i": { "spaceId": space, "name": name, "size": bytes.len(),
                    "sha256": sha256_hex(bytes), "contentType": "text/plain", "method": "POST" } }),
        )
        .await;
    assert!(body.get("errors").is_none(), "beginUpload: {body:#}");
    body["data"]["beginUpload"].clone()
}

/// The form as a browser sends it, with `edit` applied to its fields first.
fn form(ticket: &Value, bytes: &[u8], edit: impl FnOnce(&mut Vec<(String, String)>)) -> Form {
    let mut fields: Vec<(String, String)> = ticket["formFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    edit(&mut fields);
    let mut form = Form::new();
    for (name, value) in fields {
        form = form.text(name, value);
    }
    form.part("file", Part::bytes(bytes.to_vec()).file_name("upload.txt"))
}

async fn post(app: &TestApp, ticket: &Value, form: Form) -> reqwest::Response {
    app.client
        .post(ticket["url"].as_str().unwrap())
        .multipart(form)
        .send()
        .await
        .expect("POST")
}

async fn commit(app: &TestApp, ticket: &Value) -> Value {
    app.gql_as(
        Some("alice"),
        "mutation($u: ID!, $t: String!) { commitUpload(uploadId: $u, uploadToken: $t) {
            id version size sha256 downloadUrl } }",
        json!({ "u": ticket["uploadId"], "t": ticket["uploadToken"] }),
    )
    .await
}

#[tokio::test]
async fn a_browser_form_post_publishes_the_file() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Forms").await;
    let bytes = b"sent the way a browser form sends a file\n".to_vec();
    let ticket = begin_post(&app, &space, "notes/form.txt", &bytes).await;
    assert_eq!(ticket["method"], "POST");
    assert_eq!(ticket["headers"], json!([]));
    let names: Vec<&str> = ticket["formFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for name in ["key", "Content-Type", "x-amz-checksum-sha256", "policy"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let res = post(&app, &ticket, form(&ticket, &bytes, |_| {})).await;
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let file = commit(&app, &ticket).await;
    let file = &file["data"]["commitUpload"];
    assert_eq!(file["sha256"], sha256_hex(&bytes), "{file:#}");
    let url = file["downloadUrl"].as_str().unwrap().to_owned();
    assert_eq!(app.get(&url).await.bytes().await.unwrap(), bytes);

    // The form sent again after the commit, with other bytes of the same length (what
    // a store that does not enforce the form's checksum would take): the published
    // version does not change. The embedded endpoint refuses it; on S3 the version
    // points at a sealed copy no form writes.
    let mut other = bytes.clone();
    other[0] ^= 1;
    let again = post(&app, &ticket, form(&ticket, &other, |_| {})).await;
    if !on_aws() {
        assert_eq!(again.status(), 400);
    }
    let file = commit(&app, &ticket).await;
    let url = file["data"]["commitUpload"]["downloadUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.get(&url).await.bytes().await.unwrap(), bytes);
    if let Some(object) = app.object_of_url(&url).await {
        assert!(
            object.tags.is_empty(),
            "committed content keeps no pending tag: {object:?}"
        );
    }
}

#[tokio::test]
async fn a_form_that_never_reaches_its_file_is_cut_off() {
    if url_checks_belong_to_s3() {
        return;
    }
    let app = spawn_app().await;
    let space = app.create_space("alice", "Forms").await;
    let ticket = begin_post(&app, &space, "f.txt", b"x").await;
    // 1 MB of a form whose boundary never comes: refused long before its end.
    let res = app
        .client
        .post(ticket["url"].as_str().unwrap())
        .header("content-type", "multipart/form-data; boundary=never")
        .body(vec![b'a'; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(http_error_code(res).await, "BAD_INPUT");
    // As many bytes in one field before the file: the same.
    let res = post(
        &app,
        &ticket,
        form(&ticket, b"x", |f| {
            f.insert(0, ("padding".into(), "p".repeat(200_000)))
        }),
    )
    .await;
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn the_policy_refuses_another_length_type_field_or_signature() {
    if url_checks_belong_to_s3() {
        return;
    }
    let app = spawn_app_with(|s| s.uploads.url_ttl = Duration::from_secs(3)).await;
    let space = app.create_space("alice", "Forms").await;
    let bytes = b"exactly these bytes".to_vec();
    let ticket = begin_post(&app, &space, "f.txt", &bytes).await;
    let upload = ticket["uploadId"].as_str().unwrap().to_owned();

    let mut longer = bytes.clone();
    longer.push(b'!');
    let res = post(&app, &ticket, form(&ticket, &longer, |_| {})).await;
    assert_eq!(res.status(), 413, "above the declared size");
    let res = post(&app, &ticket, form(&ticket, &bytes[1..], |_| {})).await;
    assert_eq!(http_error_code(res).await, "UPLOAD_INCOMPLETE", "below it");
    let set = |name: &'static str, value: &'static str| {
        move |fields: &mut Vec<(String, String)>| {
            for field in fields.iter_mut().filter(|f| f.0 == name) {
                field.1 = value.to_owned();
            }
        }
    };
    for (what, edit) in [
        (
            "another type",
            Box::new(set("Content-Type", "text/html")) as EditFields,
        ),
        (
            "another checksum",
            Box::new(set("x-amz-checksum-sha256", "AAAA")),
        ),
        ("another key", Box::new(set("key", "elsewhere"))),
        (
            "a tampered policy",
            Box::new(|f: &mut Vec<(String, String)>| {
                for field in f.iter_mut().filter(|f| f.0 == "policy") {
                    field.1.insert(0, 'e');
                }
            }),
        ),
        (
            "a field the policy does not name",
            Box::new(|f: &mut Vec<(String, String)>| {
                f.push((
                    "success_action_redirect".into(),
                    "https://evil.example".into(),
                ));
            }),
        ),
        (
            "no signature",
            Box::new(|f: &mut Vec<(String, String)>| {
                f.retain(|f| f.0 != "x-filesync-signature");
            }),
        ),
    ] {
        let res = post(&app, &ticket, form(&ticket, &bytes, edit)).await;
        assert_eq!(res.status(), 403, "{what}: {}", res.text().await.unwrap());
    }
    let res = app
        .client
        .post(ticket["url"].as_str().unwrap())
        .multipart(Form::new().text("key", "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "a form without a file");
    assert!(!app.blob_exists(&space, &upload).await, "nothing stored");

    tokio::time::sleep(Duration::from_millis(3100)).await;
    let res = post(&app, &ticket, form(&ticket, &bytes, |_| {})).await;
    assert_eq!(res.status(), 403);
    assert_eq!(http_error_code(res).await, "UPLOAD_EXPIRED");
    assert!(!app.blob_exists(&space, &upload).await, "nothing stored");
}
