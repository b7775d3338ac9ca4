//! Multipart uploads: parts in parallel and out of order, resume from `uploadStatus`,
//! refused parts, whole-content verification, cancel and expiry, and the limits.
//!
//! On AWS the part URLs point at moto, which checks neither signatures nor part
//! checksums: what a part URL itself refuses is S3's check, tested against s3s-fs in
//! `tests/storage/strict_s3.rs`. Everything the server decides (the plan, the parts it
//! completes from, the whole-content hash) is tested here on both backends.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{
    FILE_FIELDS, TestApp, http_error_code, on_aws, sha256_hex, spawn_app, spawn_app_with,
    url_checks_belong_to_s3,
};

const MIB: usize = 1 << 20;
/// Two whole parts of 8 MiB and a short third one.
const SIZE: usize = 2 * 8 * MIB + 123_457;

fn content(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

const TICKET: &str = "uploadId uploadToken fileId version url method expiresAt partSize partCount";

async fn begin(app: &TestApp, space: &str, name: &str, size: usize, sha256: &str) -> Value {
    let body = begin_raw(
        app,
        json!({ "spaceId": space, "name": name, "size": size, "sha256": sha256,
                "method": "MULTIPART" }),
    )
    .await;
    assert!(body.get("errors").is_none(), "beginUpload: {body:#}");
    body["data"]["beginUpload"].clone()
}

async fn begin_raw(app: &TestApp, input: Value) -> Value {
    app.gql_as(
        Some("alice"),
        &format!("mutation($i: BeginUploadInput!) {{ beginUpload(input: $i) {{ {TICKET} }} }}"),
        json!({ "i": input }),
    )
    .await
}

/// The bytes of part `n` (1-based) of `bytes` cut into `part_size` parts.
fn part(bytes: &[u8], part_size: usize, n: usize) -> &[u8] {
    let start = (n - 1) * part_size;
    &bytes[start..(start + part_size).min(bytes.len())]
}

async fn part_urls_raw(app: &TestApp, ticket: &Value, parts: Value) -> Value {
    app.gql_as(
        Some("alice"),
        "mutation($id: ID!, $t: String!, $p: [UploadPartInput!]!) {
            uploadPartUrls(uploadId: $id, uploadToken: $t, parts: $p) {
                partNumber size url method headers { name value } expiresAt } }",
        json!({ "id": ticket["uploadId"], "t": ticket["uploadToken"], "p": parts }),
    )
    .await
}

/// URLs for the parts `numbers` of `bytes`, each pinning that part's digest.
async fn part_urls(app: &TestApp, ticket: &Value, bytes: &[u8], numbers: &[usize]) -> Vec<Value> {
    let part_size = ticket["partSize"].as_u64().unwrap() as usize;
    let parts: Vec<Value> = numbers
        .iter()
        .map(|&n| json!({ "partNumber": n, "sha256": sha256_hex(part(bytes, part_size, n)) }))
        .collect();
    let body = part_urls_raw(app, ticket, json!(parts)).await;
    assert!(body.get("errors").is_none(), "uploadPartUrls: {body:#}");
    body["data"]["uploadPartUrls"].as_array().unwrap().clone()
}

async fn send(app: &TestApp, url: &Value, bytes: Vec<u8>) -> reqwest::Response {
    let mut req = app.client.put(url["url"].as_str().unwrap()).body(bytes);
    for h in url["headers"].as_array().unwrap() {
        req = req.header(h["name"].as_str().unwrap(), h["value"].as_str().unwrap());
    }
    req.send().await.expect("part PUT")
}

/// Sends the parts `numbers` of `bytes`, all at once.
async fn send_parts(app: &TestApp, ticket: &Value, bytes: &[u8], numbers: &[usize]) {
    let part_size = ticket["partSize"].as_u64().unwrap() as usize;
    let urls = part_urls(app, ticket, bytes, numbers).await;
    let sends = urls.iter().map(|url| {
        let n = url["partNumber"].as_u64().unwrap() as usize;
        send(app, url, part(bytes, part_size, n).to_vec())
    });
    for res in join_all(sends).await {
        let status = res.status();
        assert!(
            status.is_success(),
            "part: {status} {}",
            res.text().await.unwrap()
        );
    }
}

async fn status(app: &TestApp, ticket: &Value) -> Value {
    app.gql(
        "alice",
        "query($id: ID!, $t: String!) { uploadStatus(uploadId: $id, uploadToken: $t) {
            uploadId state method size sha256 partSize partCount verifying
            parts { partNumber size sha256 } missingParts } }",
        json!({ "id": ticket["uploadId"], "t": ticket["uploadToken"] }),
    )
    .await["uploadStatus"]
        .clone()
}

async fn commit_raw(app: &TestApp, ticket: &Value) -> Value {
    app.gql_as(
        Some("alice"),
        &format!(
            "mutation($id: ID!, $t: String!) {{ commitUpload(uploadId: $id, uploadToken: $t) {{ {FILE_FIELDS} }} }}"
        ),
        json!({ "id": ticket["uploadId"], "t": ticket["uploadToken"] }),
    )
    .await
}

/// Commits, asking again while the server answers `UPLOAD_VERIFYING`.
async fn commit(app: &TestApp, ticket: &Value) -> Value {
    for _ in 0..600 {
        let body = commit_raw(app, ticket).await;
        if body["errors"][0]["extensions"]["code"] == "UPLOAD_VERIFYING" {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        return body;
    }
    panic!("the upload was never verified");
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error, got {body:#}"))
}

#[tokio::test]
async fn parts_sent_in_parallel_and_out_of_order_publish_one_version() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Videos").await;
    let bytes = content(SIZE, 1);
    let ticket = begin(&app, &space, "films/long.mp4", SIZE, &sha256_hex(&bytes)).await;
    assert_eq!(ticket["method"], "MULTIPART");
    assert_eq!(ticket["url"], "");
    assert_eq!(ticket["partSize"], 8 * MIB);
    assert_eq!(ticket["partCount"], 3);

    // The last part first, then the others at once.
    send_parts(&app, &ticket, &bytes, &[3]).await;
    send_parts(&app, &ticket, &bytes, &[2, 1]).await;
    let before = status(&app, &ticket).await;
    assert_eq!(before["state"], "PENDING");
    assert_eq!(before["missingParts"], json!([]));
    let sizes: Vec<u64> = before["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [8 * MIB as u64, 8 * MIB as u64, 123_457]);
    assert!(
        app.changes("alice", &space, None, None).await["files"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    let file = commit(&app, &ticket).await;
    let file = &file["data"]["commitUpload"];
    assert_eq!(file["version"], 1, "{file:#}");
    assert_eq!(file["size"], SIZE);
    assert_eq!(file["sha256"], sha256_hex(&bytes));
    // Again: the same version, nothing new.
    let again = commit(&app, &ticket).await;
    assert_eq!(again["data"]["commitUpload"]["version"], 1, "{again:#}");
    let body = part_urls_raw(
        &app,
        &ticket,
        json!([{ "partNumber": 1, "sha256": sha256_hex(b"x") }]),
    )
    .await;
    assert_eq!(
        code(&body),
        "BAD_INPUT",
        "no part URLs once committed: {body:#}"
    );
    assert_eq!(status(&app, &ticket).await["state"], "COMMITTED");
    assert_eq!(app.multipart_uploads_left(&space).await, 0);

    let url = file["downloadUrl"].as_str().unwrap();
    let whole = app.get(url).await.bytes().await.unwrap();
    assert!(whole == bytes, "the download is the content sent");
    // A download cut off after 10 MiB resumes from there.
    let rest = app
        .client
        .get(url)
        .header("Range", format!("bytes={}-", 10 * MIB))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 206);
    assert_eq!(
        rest.headers()["content-range"],
        format!("bytes {}-{}/{SIZE}", 10 * MIB, SIZE - 1).as_str()
    );
    assert!(rest.bytes().await.unwrap() == bytes[10 * MIB..]);
}

#[tokio::test]
async fn an_upload_dropped_between_parts_resumes_from_upload_status() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Backups").await;
    let bytes = content(SIZE, 2);
    let ticket = begin(&app, &space, "disk.img", SIZE, &sha256_hex(&bytes)).await;
    send_parts(&app, &ticket, &bytes, &[1, 3]).await;

    // The client went away; a new one knows only the upload id and token.
    let resumed = status(&app, &ticket).await;
    assert_eq!(resumed["missingParts"], json!([2]));
    let numbers: Vec<u64> = resumed["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["partNumber"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 3]);
    // moto lists no part checksums; S3 does for an upload begun with SHA-256, and the
    // embedded backend always does.
    if !on_aws() {
        assert_eq!(
            resumed["parts"][0]["sha256"],
            sha256_hex(part(&bytes, 8 * MIB, 1))
        );
    }
    // A commit now names what is missing.
    let early = commit_raw(&app, &ticket).await;
    assert_eq!(code(&early), "UPLOAD_INCOMPLETE", "{early:#}");
    assert_eq!(early["errors"][0]["extensions"]["missingParts"], json!([2]));
    assert_eq!(early["errors"][0]["extensions"]["missingPartCount"], 1);

    send_parts(&app, &ticket, &bytes, &[2]).await;
    let file = commit(&app, &ticket).await;
    assert_eq!(
        file["data"]["commitUpload"]["sha256"],
        sha256_hex(&bytes),
        "{file:#}"
    );
}

#[tokio::test]
async fn a_part_with_the_wrong_bytes_or_length_is_refused_and_the_last_send_counts() {
    if url_checks_belong_to_s3() {
        return;
    }
    let app = spawn_app().await;
    let space = app.create_space("alice", "Parts").await;
    let bytes = content(SIZE, 3);
    let ticket = begin(&app, &space, "p.bin", SIZE, &sha256_hex(&bytes)).await;
    let one = part(&bytes, 8 * MIB, 1).to_vec();
    let url = &part_urls(&app, &ticket, &bytes, &[1]).await[0];
    assert_eq!(url["size"], 8 * MIB);

    let mut other = one.clone();
    other[4096] ^= 1;
    let res = send(&app, url, other).await;
    assert_eq!(res.status(), 400);
    assert_eq!(http_error_code(res).await, "CHECKSUM_MISMATCH");
    let res = send(&app, url, one[..one.len() - 1].to_vec()).await;
    assert_eq!(http_error_code(res).await, "UPLOAD_INCOMPLETE");
    let mut longer = one.clone();
    longer.push(0);
    let res = send(&app, url, longer).await;
    assert_eq!(res.status(), 413);
    assert_eq!(
        status(&app, &ticket).await["missingParts"],
        json!([1, 2, 3])
    );

    // Stored, then sent again: twice the same bytes is harmless...
    assert_eq!(send(&app, url, one.clone()).await.status(), 200);
    assert_eq!(send(&app, url, one.clone()).await.status(), 200);
    assert_eq!(status(&app, &ticket).await["missingParts"], json!([2, 3]));
    // ...and a failed send of a stored part leaves it missing (the last send counts).
    let mut other = one.clone();
    other[0] ^= 1;
    assert_eq!(send(&app, url, other).await.status(), 400);
    assert_eq!(
        status(&app, &ticket).await["missingParts"],
        json!([1, 2, 3])
    );

    // A URL's pinned length or digest cannot be edited: the signature covers them.
    let tampered = url["url"].as_str().unwrap().replace(
        &format!("size={}", 8 * MIB),
        &format!("size={}", 8 * MIB - 1),
    );
    let res = app
        .client
        .put(tampered)
        .body(one.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(http_error_code(res).await, "FORBIDDEN");
}

#[tokio::test]
async fn content_other_than_the_declared_sha256_is_never_published() {
    let app = spawn_app().await;
    let space = app.create_space("alice", "Lies").await;
    let bytes = content(SIZE, 4);
    let declared = sha256_hex(&content(SIZE, 5));
    let ticket = begin(&app, &space, "lie.bin", SIZE, &declared).await;
    // Every part matches its own URL; the whole is not what was declared.
    send_parts(&app, &ticket, &bytes, &[1, 2, 3]).await;
    let refused = commit(&app, &ticket).await;
    assert_eq!(code(&refused), "CHECKSUM_MISMATCH", "{refused:#}");
    assert!(
        app.changes("alice", &space, None, None).await["files"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        !app.blob_exists(&space, ticket["uploadId"].as_str().unwrap())
            .await
    );
    assert_eq!(app.multipart_uploads_left(&space).await, 0);
    // The upload is over: it never commits.
    let again = commit_raw(&app, &ticket).await;
    assert_eq!(code(&again), "UPLOAD_EXPIRED", "{again:#}");
    assert_eq!(status(&app, &ticket).await["state"], "ABANDONED");
    let body = part_urls_raw(
        &app,
        &ticket,
        json!([{ "partNumber": 1, "sha256": sha256_hex(b"x") }]),
    )
    .await;
    assert_eq!(
        code(&body),
        "UPLOAD_EXPIRED",
        "no part URLs for it: {body:#}"
    );
}

#[tokio::test]
async fn bad_part_requests_are_bad_input() {
    let app = spawn_app_with(|s| s.uploads.max_part_urls = 2).await;
    let space = app.create_space("alice", "Bad").await;
    let bytes = content(SIZE, 6);
    let ticket = begin(&app, &space, "b.bin", SIZE, &sha256_hex(&bytes)).await;
    let sha = sha256_hex(b"x");
    for (parts, why) in [
        (json!([{ "partNumber": 0, "sha256": sha }]), "part 0"),
        (
            json!([{ "partNumber": 4, "sha256": sha }]),
            "above partCount",
        ),
        (
            json!([{ "partNumber": 1, "sha256": sha }, { "partNumber": 1, "sha256": sha }]),
            "twice",
        ),
        (
            json!([{ "partNumber": 1, "sha256": sha }, { "partNumber": 2, "sha256": sha },
                   { "partNumber": 3, "sha256": sha }]),
            "above max_part_urls",
        ),
        (json!([]), "none"),
        (
            json!([{ "partNumber": 1, "sha256": "xyz" }]),
            "a bad digest",
        ),
    ] {
        let body = part_urls_raw(&app, &ticket, parts).await;
        assert_eq!(code(&body), "BAD_INPUT", "{why}: {body:#}");
    }
    let body = app
        .gql_as(
            Some("alice"),
            "mutation($id: ID!, $p: [UploadPartInput!]!) {
                uploadPartUrls(uploadId: $id, uploadToken: \"wrong\", parts: $p) { url } }",
            json!({ "id": ticket["uploadId"], "p": [{ "partNumber": 1, "sha256": sha }] }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body:#}");
    // Someone outside the space has no use for alice's token.
    let body = app
        .gql_as(
            Some("mallory"),
            "query($id: ID!, $t: String!) { uploadStatus(uploadId: $id, uploadToken: $t) { state } }",
            json!({ "id": ticket["uploadId"], "t": ticket["uploadToken"] }),
        )
        .await;
    assert!(
        ["FORBIDDEN", "NOT_FOUND"].contains(&code(&body)),
        "{body:#}"
    );

    // A PUT upload has no parts.
    let small = app
        .begin_upload("alice", &space, "small.txt", b"tiny", json!({}))
        .await;
    let body = part_urls_raw(&app, &small.0, json!([{ "partNumber": 1, "sha256": sha }])).await;
    assert_eq!(code(&body), "BAD_INPUT", "{body:#}");
}

#[tokio::test]
async fn sizes_at_and_just_above_every_limit() {
    let app = spawn_app_with(|s| s.uploads.max_file_size = 80 << 30).await;
    let space = app.create_space("alice", "Limits").await;
    let sha = sha256_hex(b"whatever");
    let ticket = |size: u64, method: Option<&str>| {
        let mut input = json!({ "spaceId": space, "name": format!("f{size}"), "size": size,
                                "sha256": sha });
        if let Some(m) = method {
            input["method"] = json!(m);
        }
        begin_raw(&app, input)
    };
    // The threshold: up to 64 MiB one PUT, above it parts.
    let at = ticket(64 << 20, None).await;
    assert_eq!(at["data"]["beginUpload"]["method"], "PUT", "{at:#}");
    assert!(at["data"]["beginUpload"]["partCount"].is_null());
    let above = ticket((64 << 20) + 1, None).await;
    assert_eq!(
        above["data"]["beginUpload"]["method"], "MULTIPART",
        "{above:#}"
    );
    assert_eq!(above["data"]["beginUpload"]["partCount"], 9);
    // One PUT stores at most 5 GiB.
    let put = ticket(5 << 30, Some("PUT")).await;
    assert_eq!(put["data"]["beginUpload"]["method"], "PUT", "{put:#}");
    let too_big = ticket((5 << 30) + 1, Some("PUT")).await;
    assert_eq!(code(&too_big), "PAYLOAD_TOO_LARGE", "{too_big:#}");
    let form = ticket(5 << 30, Some("POST")).await;
    assert_eq!(form["data"]["beginUpload"]["method"], "POST", "{form:#}");
    let too_big = ticket((5 << 30) + 1, Some("POST")).await;
    assert_eq!(code(&too_big), "PAYLOAD_TOO_LARGE", "{too_big:#}");
    // 10,000 parts of 8 MiB, and one byte more (bigger parts, rounded up to a MiB).
    let most = ticket(10_000 * (8 << 20), None).await;
    assert_eq!(most["data"]["beginUpload"]["partCount"], 10_000, "{most:#}");
    let more = ticket(10_000 * (8 << 20) + 1, None).await;
    assert_eq!(more["data"]["beginUpload"]["partSize"], 9 << 20, "{more:#}");
    assert_eq!(more["data"]["beginUpload"]["partCount"], 8_889);
    // The largest file, and one byte more.
    let max = ticket(80 << 30, None).await;
    assert_eq!(max["data"]["beginUpload"]["partSize"], 9 << 20, "{max:#}");
    assert_eq!(max["data"]["beginUpload"]["partCount"], 9_103);
    let over = ticket((80 << 30) + 1, None).await;
    assert_eq!(code(&over), "PAYLOAD_TOO_LARGE", "{over:#}");
    // An empty file has no parts.
    let empty = ticket(0, Some("MULTIPART")).await;
    assert_eq!(code(&empty), "BAD_INPUT", "{empty:#}");
    // A space's own limit holds for multipart uploads too, at begin and at commit.
    let limited = app.create_space("alice", "Limited").await;
    app.gql(
        "alice",
        "mutation($s: ID!, $i: SpaceSettingsInput!) { updateSpaceSettings(spaceId: $s, input: $i) { id } }",
        json!({ "s": limited, "i": { "maxFileSize": 10u64 << 30 } }),
    )
    .await;
    let input = |size: u64| {
        json!({ "spaceId": limited, "name": format!("l{size}"), "size": size, "sha256": sha,
                "method": "MULTIPART" })
    };
    let within = begin_raw(&app, input(10 << 30)).await;
    assert_eq!(
        within["data"]["beginUpload"]["method"], "MULTIPART",
        "{within:#}"
    );
    let beyond = begin_raw(&app, input((10 << 30) + 1)).await;
    assert_eq!(code(&beyond), "PAYLOAD_TOO_LARGE", "{beyond:#}");
    // Sizes past 4 GiB come back exact.
    let odd = (5u64 << 30) + 7;
    let t = ticket(odd, None).await["data"]["beginUpload"].clone();
    let s = status(&app, &t).await;
    assert_eq!(s["size"].as_u64(), Some(odd), "{s:#}");
    assert_eq!(s["missingParts"].as_array().unwrap().len(), 641);
}

#[tokio::test]
async fn cancel_and_expiry_leave_no_parts_behind() {
    let app = spawn_app_with(|s| {
        s.uploads.pending_ttl = Duration::from_secs(3);
        s.uploads.url_ttl = Duration::from_secs(3);
        s.uploads.sweep_interval = Duration::from_millis(200);
    })
    .await;
    let space = app.create_space("alice", "Gone").await;
    let bytes = content(SIZE, 7);
    let cancelled = begin(&app, &space, "c.bin", SIZE, &sha256_hex(&bytes)).await;
    send_parts(&app, &cancelled, &bytes, &[1, 2]).await;
    let res = app
        .gql(
            "alice",
            "mutation($id: ID!, $t: String!) { cancelUpload(uploadId: $id, uploadToken: $t) }",
            json!({ "id": cancelled["uploadId"], "t": cancelled["uploadToken"] }),
        )
        .await;
    assert_eq!(res["cancelUpload"], true);
    assert_eq!(app.multipart_uploads_left(&space).await, 0);

    let expiring = begin(&app, &space, "e.bin", SIZE, &sha256_hex(&bytes)).await;
    send_parts(&app, &expiring, &bytes, &[3]).await;
    assert_eq!(app.multipart_uploads_left(&space).await, 1);
    // The sweeper abandons it after its 3 s and removes its parts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while app.multipart_uploads_left(&space).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "parts left behind");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let late = commit_raw(&app, &expiring).await;
    assert_eq!(code(&late), "UPLOAD_EXPIRED", "{late:#}");
    assert!(
        !app.blob_exists(&space, expiring["uploadId"].as_str().unwrap())
            .await
    );
}

#[tokio::test]
async fn an_expired_part_url_is_refused_and_a_fresh_one_works() {
    if url_checks_belong_to_s3() {
        return;
    }
    // URLs carry whole seconds: one lives between 2 and 3 s.
    let app = spawn_app_with(|s| s.uploads.url_ttl = Duration::from_secs(3)).await;
    let space = app.create_space("alice", "Slow").await;
    let bytes = content(SIZE, 8);
    let ticket = begin(&app, &space, "slow.bin", SIZE, &sha256_hex(&bytes)).await;
    let url = &part_urls(&app, &ticket, &bytes, &[3]).await[0];
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let res = send(&app, url, part(&bytes, 8 * MIB, 3).to_vec()).await;
    assert_eq!(res.status(), 403);
    assert_eq!(http_error_code(res).await, "UPLOAD_EXPIRED");
    send_parts(&app, &ticket, &bytes, &[3]).await;
    assert_eq!(status(&app, &ticket).await["missingParts"], json!([1, 2]));
}

#[tokio::test]
async fn a_slow_verification_answers_upload_verifying_then_the_file() {
    let app = spawn_app_with(|s| s.uploads.commit_wait = Duration::ZERO).await;
    let space = app.create_space("alice", "Patience").await;
    let bytes = content(SIZE, 9);
    let ticket = begin(&app, &space, "v.bin", SIZE, &sha256_hex(&bytes)).await;
    send_parts(&app, &ticket, &bytes, &[1, 2, 3]).await;
    let first = commit_raw(&app, &ticket).await;
    assert_eq!(code(&first), "UPLOAD_VERIFYING", "{first:#}");
    assert!(
        first["errors"][0]["extensions"]["retryAfterMs"]
            .as_u64()
            .unwrap()
            > 0
    );
    // No more parts while the whole is checked.
    let body = part_urls_raw(
        &app,
        &ticket,
        json!([{ "partNumber": 1, "sha256": sha256_hex(b"x") }]),
    )
    .await;
    assert!(
        ["BAD_INPUT", "UPLOAD_EXPIRED"].contains(&code(&body)),
        "{body:#}"
    );
    let file = commit(&app, &ticket).await;
    assert_eq!(
        file["data"]["commitUpload"]["sha256"],
        sha256_hex(&bytes),
        "{file:#}"
    );
}
