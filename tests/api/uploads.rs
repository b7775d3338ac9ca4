//! The three-phase upload and its failure paths, and the inline upload.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    FILE_FIELDS, http_error_code, on_aws, sha256_hex, spawn_app, spawn_app_with,
    url_checks_belong_to_s3,
};

fn sha2_base64(bytes: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn three_phase_upload_publishes_a_version_that_downloads() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let bytes = b"hello, filesync\n".to_vec();
    let ticket = app
        .begin_upload(
            "alice",
            &space,
            "docs/hello.txt",
            &bytes,
            json!({ "contentType": "text/plain" }),
        )
        .await;
    assert_eq!(ticket.0["method"], "PUT");
    assert_eq!(ticket.0["version"], 1);
    let headers: Vec<(String, String)> = ticket.0["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_ascii_lowercase(),
                h["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(headers.contains(&("content-type".into(), "text/plain".into())));
    if on_aws() {
        // Length, checksum and the pending tag are signed headers of the presigned PUT.
        let checksum = sha2_base64(&bytes);
        assert!(headers.contains(&("x-amz-checksum-sha256".into(), checksum)));
        assert!(headers.contains(&("content-length".into(), "16".into())));
        assert!(headers.contains(&("x-amz-tagging".into(), "Status=Pending".into())));
    } else {
        assert_eq!(headers.len(), 1);
    }

    let res = app.put_bytes(&ticket, bytes.clone()).await;
    assert_eq!(res.status(), 200);
    let file = app.commit("alice", &ticket).await;
    assert_eq!(file["id"], ticket.file_id());
    assert_eq!(file["name"], "docs/hello.txt");
    assert_eq!(file["version"], 1);
    assert_eq!(file["size"], bytes.len());
    assert_eq!(file["sha256"], sha256_hex(&bytes));
    assert_eq!(file["creator"], "alice");
    assert_eq!(file["deleted"], false);

    let url = file["downloadUrl"].as_str().unwrap();
    let res = app.get(url).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/plain");
    assert_eq!(res.bytes().await.unwrap(), bytes);

    let res = app
        .client
        .get(url)
        .header("Range", "bytes=7-14")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()["content-range"], "bytes 7-14/16");
    assert_eq!(&res.bytes().await.unwrap()[..], b"filesync");

    let res = app
        .client
        .get(url)
        .header("Range", "bytes=-4")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(&res.bytes().await.unwrap()[..], b"ync\n");

    let res = app
        .client
        .get(url)
        .header("Range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 416);
    if !on_aws() {
        // S3 sends it too; moto does not.
        assert_eq!(res.headers()["content-range"], "bytes */16");
    }
}

#[tokio::test]
async fn download_urls_are_signed_and_expire() {
    // URLs carry whole seconds, so one lives between `download_ttl` - 1 s and
    // `download_ttl`: 3 s leaves a loaded machine time for the first GET.
    let app = spawn_app_with(|s| s.uploads.download_ttl = Duration::from_secs(3)).await;
    let space = app.create_space("alice", "Team").await;
    let file = app.upload("alice", &space, "a.bin", b"abc").await;
    let url = file["downloadUrl"].as_str().unwrap().to_owned();
    assert_eq!(app.get(&url).await.bytes().await.unwrap(), &b"abc"[..]);
    if url_checks_belong_to_s3() {
        return;
    }

    let tampered = url.replace("sig=", "sig=00");
    let res = app.get(&tampered).await;
    assert_eq!(res.status(), 403);
    assert_eq!(http_error_code(res).await, "FORBIDDEN");
    let unsigned = url.split('?').next().unwrap().to_owned();
    assert_eq!(app.get(&unsigned).await.status(), 403);
    let other_type = format!("{url}&ct=text%2Fhtml");
    assert_eq!(app.get(&other_type).await.status(), 403);

    tokio::time::sleep(Duration::from_millis(3100)).await;
    let res = app.get(&url).await;
    assert_eq!(res.status(), 403);
    assert_eq!(http_error_code(res).await, "UPLOAD_EXPIRED");
}

#[tokio::test]
async fn commit_is_idempotent() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let bytes = b"same result twice".to_vec();
    let ticket = app
        .begin_upload("alice", &space, "a.txt", &bytes, json!({}))
        .await;
    // The PUT is (or triggers) the storage event, which commits too.
    let res = app.put_bytes(&ticket, bytes.clone()).await;
    assert_eq!(res.status(), 200);
    if !on_aws() {
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["committed"], true);
        assert_eq!(body["version"], 1);
    }

    let first = app.commit("alice", &ticket).await;
    let second = app.commit("alice", &ticket).await;
    assert_eq!(first["version"], 1);
    assert_eq!(first["cursor"], second["cursor"]);
    assert_eq!(first["id"], second["id"]);
    let changes = app.changes("alice", &space, None, None).await;
    assert_eq!(
        changes["files"].as_array().unwrap().len(),
        1,
        "one change, not three"
    );

    if url_checks_belong_to_s3() {
        return;
    }
    // A PUT after the commit cannot replace the committed bytes.
    let res = app.put_bytes(&ticket, b"other bytes here!".to_vec()).await;
    assert_eq!(res.status(), 400);
    let res = app.get(first["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(res.bytes().await.unwrap(), bytes);
}

/// A client that sends the bytes and vanishes before `commitUpload` still gets its file
/// published: by the blob endpoint (embedded), by the S3 notification through SQS (AWS).
#[tokio::test]
async fn the_storage_event_publishes_an_upload_nobody_commits() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let ticket = app
        .begin_upload("alice", &space, "orphan.txt", b"bytes only", json!({}))
        .await;
    assert_eq!(
        app.put_bytes(&ticket, b"bytes only".to_vec())
            .await
            .status(),
        200
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let file = app.file("alice", ticket.file_id()).await;
        if !file.is_null() {
            assert_eq!(file["version"], 1);
            assert_eq!(file["sha256"], sha256_hex(b"bytes only"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the storage event never published the upload"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The client coming back later gets the same version.
    assert_eq!(app.commit("alice", &ticket).await["version"], 1);
}

/// On AWS, storage events come through SQS. A message that is not an S3 notification is
/// never acknowledged, so the queue's redrive policy moves it to the dead-letter queue once
/// its receives run out (5, in `infra/`); a notification about an object that is no upload
/// of ours is acknowledged and dropped. Backend-specific: the embedded backend has no queue.
#[tokio::test]
async fn a_poison_storage_event_ends_in_the_dead_letter_queue() {
    if !on_aws() {
        eprintln!("skipped: storage events come through a queue on AWS only");
        return;
    }
    use aws_sdk_sqs::types::QueueAttributeName as Attr;
    let app = spawn_app().await;
    let stack: serde_json::Value =
        serde_json::from_slice(&std::fs::read(app.data_dir.path().join("aws-stack.json")).unwrap())
            .unwrap();
    let (queue, dead, bucket) = (
        stack["FILESYNC_STORAGE__EVENTS_QUEUE_URL"]
            .as_str()
            .unwrap(),
        stack["DeadLetterQueueUrl"].as_str().unwrap(),
        stack["FILESYNC_STORAGE__BUCKET"].as_str().unwrap(),
    );
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    // Redelivered a second after each receive rather than a minute.
    sqs.set_queue_attributes()
        .queue_url(queue)
        .attributes(Attr::VisibilityTimeout, "1")
        .send()
        .await
        .unwrap();
    let stray = json!({ "Records": [{
        "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "s3": { "bucket": { "name": bucket },
                "object": { "key": "no-such-space/no-such-upload", "size": 1 } } }] });
    for body in ["not an S3 notification", &stray.to_string()] {
        sqs.send_message()
            .queue_url(queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    let dead_letters = || async {
        sqs.receive_message()
            .queue_url(dead)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let moved = loop {
        if let Some(message) = dead_letters().await.messages().first() {
            break message.body().unwrap_or_default().to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the poison message never reached the dead-letter queue"
        );
    };
    assert_eq!(moved, "not an S3 notification");
    let left = sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(Attr::ApproximateNumberOfMessages)
        .attribute_names(Attr::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let count = |name: &Attr| {
        left.attributes()
            .and_then(|a| a.get(name))
            .map_or(0, |n| n.parse::<u32>().unwrap())
    };
    assert_eq!(
        count(&Attr::ApproximateNumberOfMessages)
            + count(&Attr::ApproximateNumberOfMessagesNotVisible),
        0,
        "the stray notification was acknowledged, not kept"
    );
    assert!(
        dead_letters().await.messages().is_empty(),
        "only the poison message is dead"
    );
}

#[tokio::test]
async fn commit_before_the_bytes_is_upload_incomplete() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let ticket = app
        .begin_upload("alice", &space, "a.txt", b"12345", json!({}))
        .await;
    let body = app.commit_raw("alice", &ticket).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UPLOAD_INCOMPLETE");
    // Once the bytes arrive, the same upload commits.
    assert_eq!(
        app.put_bytes(&ticket, b"12345".to_vec()).await.status(),
        200
    );
    assert_eq!(app.commit("alice", &ticket).await["version"], 1);
}

#[tokio::test]
async fn wrong_bytes_are_a_checksum_mismatch_and_publish_nothing() {
    if url_checks_belong_to_s3() {
        return;
    }
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let ticket = app
        .begin_upload("alice", &space, "a.txt", b"right", json!({}))
        .await;
    let res = app.put_bytes(&ticket, b"wrong".to_vec()).await;
    assert_eq!(res.status(), 400);
    assert_eq!(http_error_code(res).await, "CHECKSUM_MISMATCH");
    let body = app.commit_raw("alice", &ticket).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "CHECKSUM_MISMATCH");
    assert!(app.file("alice", ticket.file_id()).await.is_null());
    // The client may send the right bytes to the same URL.
    assert_eq!(
        app.put_bytes(&ticket, b"right".to_vec()).await.status(),
        200
    );
    assert_eq!(
        app.commit("alice", &ticket).await["sha256"],
        sha256_hex(b"right")
    );
}

#[tokio::test]
async fn short_and_oversize_bodies_are_refused() {
    if url_checks_belong_to_s3() {
        return;
    }
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let ticket = app
        .begin_upload("alice", &space, "a.txt", b"0123456789", json!({}))
        .await;

    let res = app.put_bytes(&ticket, vec![b'x'; 11]).await;
    assert_eq!(res.status(), 413);
    assert_eq!(http_error_code(res).await, "PAYLOAD_TOO_LARGE");
    let res = app.put_bytes(&ticket, vec![b'x'; 1 << 20]).await;
    assert_eq!(res.status(), 413);

    let res = app.put_bytes(&ticket, b"01234".to_vec()).await;
    assert_eq!(res.status(), 400);
    assert_eq!(http_error_code(res).await, "UPLOAD_INCOMPLETE");

    let body = app.commit_raw("alice", &ticket).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UPLOAD_INCOMPLETE");
    assert!(app.file("alice", ticket.file_id()).await.is_null());
    assert_eq!(
        app.changes("alice", &space, None, None).await["files"],
        json!([])
    );
}

#[tokio::test]
async fn declared_size_over_the_limit_is_payload_too_large() {
    let app = spawn_app_with(|s| s.uploads.max_file_size = 1000).await;
    let space = app.create_space("alice", "Team").await;
    let body = app
        .begin_upload_raw(
            "alice",
            json!({ "spaceId": space, "name": "big", "size": 1001, "sha256": sha256_hex(b"") }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");
    let body = app
        .begin_upload_raw(
            "alice",
            json!({ "spaceId": space, "name": "big", "size": -1, "sha256": sha256_hex(b"") }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_INPUT");
}

#[tokio::test]
async fn the_put_must_carry_the_declared_content_type() {
    if url_checks_belong_to_s3() {
        return;
    }
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let ticket = app
        .begin_upload(
            "alice",
            &space,
            "a.txt",
            b"abc",
            json!({ "contentType": "text/plain" }),
        )
        .await;
    let res = app
        .client
        .put(ticket.url())
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(http_error_code(res).await, "BAD_INPUT");
}

#[tokio::test]
async fn a_wrong_upload_token_is_forbidden() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let ticket = app
        .begin_upload("alice", &space, "a.txt", b"abc", json!({}))
        .await;
    app.put_bytes(&ticket, b"abc".to_vec()).await;
    for query in [
        "mutation($id: ID!) { commitUpload(uploadId: $id, uploadToken: \"guess\") { id } }",
        "mutation($id: ID!) { cancelUpload(uploadId: $id, uploadToken: \"guess\") }",
    ] {
        let (code, _) = app
            .gql_err(Some("alice"), query, json!({ "id": ticket.upload_id() }))
            .await;
        assert_eq!(code, "FORBIDDEN", "{query}");
    }
    let (code, _) = app
        .gql_err(
            Some("alice"),
            "mutation { commitUpload(uploadId: \"00000000-0000-0000-0000-000000000000\", uploadToken: \"x\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
}

#[tokio::test]
async fn expired_and_tampered_upload_urls_are_refused_without_touching_data() {
    if url_checks_belong_to_s3() {
        return;
    }
    let app = spawn_app_with(|s| s.uploads.url_ttl = Duration::from_secs(1)).await;
    let space = app.create_space("alice", "Team").await;
    let ticket = app
        .begin_upload("alice", &space, "a.txt", b"abc", json!({}))
        .await;

    let tampered = ticket.url().replace("expires=", "expires=9");
    let res = app.client.put(&tampered).body("abc").send().await.unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(http_error_code(res).await, "FORBIDDEN");
    let other_upload = ticket
        .url()
        .replace(ticket.upload_id(), "00000000-0000-0000-0000-000000000000");
    assert_eq!(
        app.client
            .put(&other_upload)
            .body("abc")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let res = app.put_bytes(&ticket, b"abc".to_vec()).await;
    assert_eq!(res.status(), 403);
    assert_eq!(http_error_code(res).await, "UPLOAD_EXPIRED");
    let body = app.commit_raw("alice", &ticket).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UPLOAD_INCOMPLETE");
    assert!(app.file("alice", ticket.file_id()).await.is_null());
}

#[tokio::test]
async fn a_never_committed_upload_is_invisible_everywhere() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let committed = app.upload("alice", &space, "keep.txt", b"v1").await;
    let id = committed["id"].as_str().unwrap();
    // A pending new file, and a pending version 2 of an existing file, bytes and all.
    let new = app
        .begin_upload("alice", &space, "pending.txt", b"new", json!({}))
        .await;
    let v2 = app
        .begin_upload(
            "alice",
            &space,
            "keep.txt",
            b"v2!",
            json!({ "fileId": id, "baseVersion": 1 }),
        )
        .await;
    assert_eq!(v2.0["version"], 2);
    // Bytes present but the commit is refused (wrong checksum): still pending.
    app.store_uncommittable(&space, &new, b"NEW").await;

    assert!(app.file("alice", new.file_id()).await.is_null());
    assert_eq!(app.file("alice", id).await["version"], 1);
    let data = app
        .gql(
            "alice",
            "query($s: ID!, $id: ID!) { files(spaceId: $s) { edges { node { name version } } }
               fileVersions(id: $id) { version } v2: file(id: $id, version: 2) { id } }",
            json!({ "s": space, "id": id }),
        )
        .await;
    assert_eq!(
        data["files"]["edges"],
        json!([{ "node": { "name": "keep.txt", "version": 1 } }])
    );
    assert_eq!(data["fileVersions"], json!([{ "version": 1 }]));
    assert!(data["v2"].is_null());
    let changes = app.changes("alice", &space, None, None).await;
    assert_eq!(changes["files"].as_array().unwrap().len(), 1);
    let (code, _) = app
        .gql_err(
            Some("alice"),
            "query($id: ID!) { fileVersions(id: $id) { version } }",
            json!({ "id": new.file_id() }),
        )
        .await;
    assert_eq!(code, "NOT_FOUND");
}

#[tokio::test]
async fn cancel_abandons_at_once_and_the_sweeper_abandons_expired_uploads() {
    let app = spawn_app_with(|s| {
        s.uploads.pending_ttl = Duration::from_secs(2);
        s.uploads.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let space = app.create_space("alice", "Team").await;
    let cancel = |t: &crate::helpers::Ticket| json!({ "id": t.upload_id(), "t": t.token() });
    const CANCEL: &str =
        "mutation($id: ID!, $t: String!) { cancelUpload(uploadId: $id, uploadToken: $t) }";

    let a = app
        .begin_upload("alice", &space, "a.txt", b"aaa", json!({}))
        .await;
    app.store_uncommittable(&space, &a, b"AAA").await; // stored, commit refused: pending
    assert!(app.blob_exists(&space, a.upload_id()).await);
    assert_eq!(
        app.gql("alice", CANCEL, cancel(&a)).await["cancelUpload"],
        true
    );
    assert!(
        !app.blob_exists(&space, a.upload_id()).await,
        "cancel deletes the bytes at once"
    );
    assert_eq!(
        app.gql("alice", CANCEL, cancel(&a)).await["cancelUpload"],
        false
    );
    let body = app.commit_raw("alice", &a).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UPLOAD_EXPIRED");

    let b = app
        .begin_upload("alice", &space, "b.txt", b"bbb", json!({}))
        .await;
    app.store_uncommittable(&space, &b, b"BBB").await;
    assert!(app.blob_exists(&space, b.upload_id()).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.blob_exists(&space, b.upload_id()).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweeper never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = app.commit_raw("alice", &b).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "UPLOAD_EXPIRED");

    // Committed uploads are never swept.
    let c = app.upload("alice", &space, "c.txt", b"ccc").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let res = app.get(c["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(res.bytes().await.unwrap(), &b"ccc"[..]);
}

#[tokio::test]
async fn new_versions_conflict_on_a_stale_base_and_names_are_unique() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let v1 = app.upload("alice", &space, "doc.txt", b"one").await;
    let id = v1["id"].as_str().unwrap();

    // Two clients begin from version 1; the first to commit wins.
    let x = app
        .begin_upload(
            "alice",
            &space,
            "doc.txt",
            b"two",
            json!({ "fileId": id, "baseVersion": 1 }),
        )
        .await;
    let y = app
        .begin_upload(
            "alice",
            &space,
            "doc.txt",
            b"TWO",
            json!({ "fileId": id, "baseVersion": 1 }),
        )
        .await;
    app.put_bytes(&x, b"two".to_vec()).await;
    app.commit("alice", &x).await;
    let res = app.put_bytes(&y, b"TWO".to_vec()).await;
    // The embedded endpoint commits on receipt and answers for the commit.
    assert_eq!(res.status(), if on_aws() { 200 } else { 409 });
    let body = app.commit_raw("alice", &y).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "CONFLICT");
    assert_eq!(body["errors"][0]["extensions"]["currentVersion"], 2);
    let file = app.file("alice", id).await;
    assert_eq!(file["version"], 2);
    assert_eq!(file["sha256"], sha256_hex(b"two"));

    // A stale base is refused up front too.
    let body = app
        .begin_upload_raw(
            "alice",
            json!({ "spaceId": space, "fileId": id, "baseVersion": 1, "name": "doc.txt", "size": 1, "sha256": sha256_hex(b"x") }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "CONFLICT");
    assert_eq!(body["errors"][0]["extensions"]["currentVersion"], 2);

    // A second live file may not take the name.
    let body = app
        .begin_upload_raw(
            "alice",
            json!({ "spaceId": space, "name": "doc.txt", "size": 1, "sha256": sha256_hex(b"x") }),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "CONFLICT");
    assert_eq!(body["errors"][0]["extensions"]["fileId"], id);
}

#[tokio::test]
async fn small_files_upload_inline_through_graphql_multipart() {
    let app = spawn_app_with(|s| s.uploads.inline_max_bytes = 64).await;
    let space = app.create_space("alice", "Team").await;
    let send = |name: &str, bytes: &[u8], declared_sha: String| {
        let operations = json!({
            "query": format!("mutation($input: BeginUploadInput!, $content: Upload!) {{ uploadFile(input: $input, content: $content) {{ {FILE_FIELDS} }} }}"),
            "variables": { "input": { "spaceId": space, "name": name, "size": bytes.len(), "sha256": declared_sha, "contentType": "text/plain" }, "content": null },
        });
        let form = reqwest::multipart::Form::new()
            .text("operations", operations.to_string())
            .text("map", r#"{"0": ["variables.content"]}"#)
            .part(
                "0",
                reqwest::multipart::Part::bytes(bytes.to_vec()).file_name("x.txt"),
            );
        app.client
            .post(format!("{}/graphql", app.base))
            .bearer_auth(app.token("alice"))
            .multipart(form)
            .send()
    };
    let body: serde_json::Value = send("inline.txt", b"inline bytes", sha256_hex(b"inline bytes"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file = &body["data"]["uploadFile"];
    assert_eq!(file["version"], 1, "{body}");
    let res = app.get(file["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(res.bytes().await.unwrap(), &b"inline bytes"[..]);

    let body: serde_json::Value = send("bad.txt", b"abc", sha256_hex(b"xyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "CHECKSUM_MISMATCH");
    let big = vec![b'x'; 65];
    let body: serde_json::Value = send("big.txt", &big, sha256_hex(&big))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");
    let changes = app.changes("alice", &space, None, None).await;
    assert_eq!(changes["files"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_empty_file_uploads_and_downloads() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let file = app.upload("alice", &space, "empty", b"").await;
    assert_eq!(file["size"], 0);
    assert_eq!(file["sha256"], sha256_hex(b""));
    let res = app.get(file["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(res.status(), 200);
    assert!(res.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn bytes_for_a_cancelled_upload_are_refused_and_not_stored() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Team").await;
    let ticket = app
        .begin_upload("alice", &space, "a.txt", b"aaa", json!({}))
        .await;
    let cancelled = app
        .gql(
            "alice",
            "mutation($id: ID!, $t: String!) { cancelUpload(uploadId: $id, uploadToken: $t) }",
            json!({ "id": ticket.upload_id(), "t": ticket.token() }),
        )
        .await;
    assert_eq!(cancelled["cancelUpload"], true);
    // The URL is still within its lifetime, but the upload is no longer pending.
    let res = app.put_bytes(&ticket, b"aaa".to_vec()).await;
    if url_checks_belong_to_s3() {
        // S3 takes the bytes (a presigned URL cannot be revoked); the storage event must
        // not publish an abandoned upload, and the pending tag lets the lifecycle rule
        // expire the object.
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(app.file("alice", ticket.file_id()).await.is_null());
        return;
    }
    assert_eq!(res.status(), 410);
    assert_eq!(http_error_code(res).await, "UPLOAD_EXPIRED");
    assert!(
        !app.blob_exists(&space, ticket.upload_id()).await,
        "nothing stored for an abandoned upload"
    );
}

/// An upload token is a capability within its upload's life and space only: a member
/// removed after the commit, or a stranger who got the token, learns nothing by
/// committing again; and once the upload expires the token is worth nothing.
#[tokio::test]
async fn an_upload_token_does_not_outlive_membership_or_the_upload() {
    let app = spawn_app_with(|s| s.uploads.pending_ttl = Duration::from_secs(2)).await;
    let space = app.create_space("alice", "Team").await;
    app.set_member("alice", &space, "bob", Some("EDITOR")).await;
    let ticket = app
        .begin_upload("bob", &space, "b.txt", b"bob", json!({}))
        .await;
    app.put_bytes(&ticket, b"bob".to_vec()).await;
    let file = app.commit("bob", &ticket).await;
    assert_eq!(file["version"], 1);
    // A stranger holding the token.
    let stranger = app.commit_raw("mallory", &ticket).await;
    assert_eq!(
        stranger["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{stranger}"
    );
    // Bob, removed.
    app.set_member("alice", &space, "bob", None).await;
    let removed = app.commit_raw("bob", &ticket).await;
    assert_eq!(
        removed["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{removed}"
    );
    // Alice, a member: the same answer as the first commit, until the upload expires.
    let again = app.commit("alice", &ticket).await;
    assert_eq!(again["id"], file["id"]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let expired = app.commit_raw("alice", &ticket).await;
    assert_eq!(
        expired["errors"][0]["extensions"]["code"], "UPLOAD_EXPIRED",
        "{expired}"
    );
}
