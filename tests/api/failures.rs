//! Bad clients and server-side failures on the embedded backend: a body that trickles or
//! stops, a client that hangs up mid-body, a full disk; and what the data dir lets
//! others see.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::helpers::{TestApp, http_error_code, on_aws, sha256_hex, spawn_app_with};
use crate::live::metrics_text;

/// A body that sends one byte every `every`, `count` times.
fn trickle(count: usize, every: Duration) -> reqwest::Body {
    let stream = futures::stream::unfold(0, move |sent| async move {
        if sent == count {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((Ok::<_, std::io::Error>(Bytes::from_static(b"x")), sent + 1))
    });
    reqwest::Body::wrap_stream(stream)
}

fn put(
    app: &TestApp,
    ticket: &crate::helpers::Ticket,
    body: reqwest::Body,
) -> reqwest::RequestBuilder {
    let mut req = app.client.put(ticket.url()).body(body);
    for h in ticket.0["headers"].as_array().unwrap() {
        req = req.header(h["name"].as_str().unwrap(), h["value"].as_str().unwrap());
    }
    req
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn server_errors(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with("filesync_http_requests_total") && l.contains("status=\"5"))
        .count()
}

/// "Every request bounded": a body that stalls is cut off after the idle timeout, one
/// that trickles after the deadline; the sweeper never waits for either (it skips a busy
/// upload and sweeps the others), and shutdown finishes within its grace.
#[tokio::test]
async fn a_trickling_body_holds_nothing_and_nobody() {
    if on_aws() {
        eprintln!("bodies go to S3 on AWS");
        return;
    }
    let app = spawn_app_with(|s| {
        s.uploads.body_idle_timeout = Duration::from_millis(500);
        s.uploads.body_deadline = Duration::from_secs(3);
        s.uploads.pending_ttl = Duration::from_secs(1);
        s.uploads.sweep_interval = Duration::from_millis(200);
        s.server.shutdown_grace = Duration::from_secs(1);
    })
    .await;
    let space = app.create_space("alice", "Team").await;
    let bytes = vec![b'x'; 100];

    // Stalls: a byte, then nothing.
    let stalled = app
        .begin_upload("alice", &space, "stalled.bin", &bytes, json!({}))
        .await;
    let res = put(&app, &stalled, stall_after(b"x")).send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(http_error_code(res).await, "UPLOAD_INCOMPLETE");

    // Trickles: a byte every 200 ms, never silent for long, never done in time.
    let slow = app
        .begin_upload("alice", &space, "slow.bin", &bytes, json!({}))
        .await;
    let other = app
        .begin_upload("alice", &space, "other.bin", &bytes, json!({}))
        .await;
    app.store_uncommittable(&space, &other, &[b'y'; 100]).await;
    let started = tokio::time::Instant::now();
    let slow_put = tokio::spawn(put(&app, &slow, trickle(100, Duration::from_millis(200))).send());
    // Both uploads expire at once; the sweeper deletes the other while the slow one's
    // body still trickles in.
    let other_blob = app
        .blob_dir()
        .join(format!("{space}/{}", other.upload_id()));
    while other_blob.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the sweeper was held up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = slow_put.await.unwrap().unwrap();
    assert_eq!(res.status(), 400, "cut off at the deadline");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        files_in(&app.data_dir.path().join("tmp")).is_empty(),
        "nothing partial stays"
    );

    // Shutdown with a body trickling in takes its grace, no more.
    let late = app
        .begin_upload("alice", &space, "late.bin", &bytes, json!({}))
        .await;
    let trickling =
        tokio::spawn(put(&app, &late, trickle(1000, Duration::from_millis(100))).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::time::Instant::now();
    app.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "shutdown took {:?}",
        stopping.elapsed()
    );
    let _ = trickling.await;
}

/// `first`, then silence for ever.
fn stall_after(first: &'static [u8]) -> reqwest::Body {
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(first))])
        .chain(futures::stream::pending());
    reqwest::Body::wrap_stream(body)
}

/// A client that hangs up mid-body is the client's doing: no 500, no partial object,
/// and the upload can still be completed.
#[tokio::test]
async fn a_client_hanging_up_mid_body_is_not_a_server_error() {
    if on_aws() {
        eprintln!("bodies go to S3 on AWS");
        return;
    }
    let app = spawn_app_with(|_| {}).await;
    let space = app.create_space("alice", "Team").await;
    let bytes = vec![b'z'; 1 << 20];
    let ticket = app
        .begin_upload("alice", &space, "big.bin", &bytes, json!({}))
        .await;
    // Half the bytes, then the connection drops (the request is cancelled).
    let half = bytes[..bytes.len() / 2].to_vec();
    let body = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from(half))])
        .chain(futures::stream::pending());
    let sending = tokio::spawn(put(&app, &ticket, reqwest::Body::wrap_stream(body)).send());
    tokio::time::sleep(Duration::from_millis(300)).await;
    sending.abort();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server_errors(&metrics_text(&app).await), 0, "no 5xx");
    assert!(
        files_in(&app.data_dir.path().join("tmp")).is_empty(),
        "nothing partial stays"
    );
    assert!(!app.blob_exists(&space, ticket.upload_id()).await);
    let res = app.put_bytes(&ticket, bytes.clone()).await;
    assert_eq!(
        res.status(),
        200,
        "the upload goes on: {}",
        res.text().await.unwrap()
    );
}

/// The data dir is its owner's only: folders 0700, files 0600, the database's WAL too.
#[tokio::test]
async fn the_data_dir_is_private() {
    if on_aws() {
        eprintln!("the AWS backend keeps nothing in the data dir");
        return;
    }
    let app = spawn_app_with(|_| {}).await;
    let space = app.create_space("alice", "Team").await;
    app.upload("alice", &space, "a.txt", b"private").await;
    let dir = app.data_dir.path();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700);
    for file in ["filesync.db", "filesync.db-wal", "jwt-secret", "LOCK"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&dir.join("blobs")), 0o700);
    let space_dir = dir.join("blobs").join(&space);
    assert_eq!(mode(&space_dir), 0o700);
    for object in files_in(&space_dir) {
        assert_eq!(mode(&space_dir.join(&object)), 0o600, "{object}");
    }
}

/// A full disk is the server's problem, said so (STORAGE_FULL, HTTP 507 on the blob
/// endpoint), on every write path, and nothing partial is left behind. The server runs
/// in a user and mount namespace of its own, on a 3 MiB tmpfs.
#[tokio::test]
async fn a_full_disk_is_storage_full_everywhere_and_leaves_nothing_partial() {
    if on_aws() {
        eprintln!("the disk is S3's on AWS");
        return;
    }
    let (server, dir) = crate::process::ServerProcess::start_on_tmpfs("3m").await;
    let app = TestApp::external(server.base.clone(), dir.clone());
    let space = app.create_space("alice", "Team").await;
    let view = server.root_view(dir.path());
    let mut full = None;
    for i in 0..10 {
        let bytes = vec![i as u8; 700 * 1024];
        let ticket = app
            .begin_upload_raw(
                "alice",
                json!({
                    "spaceId": space, "name": format!("f{i}.bin"), "size": bytes.len(),
                    "sha256": sha256_hex(&bytes), "contentType": "application/octet-stream",
                }),
            )
            .await;
        if let Some(code) = ticket["errors"][0]["extensions"]["code"].as_str() {
            assert_eq!(code, "STORAGE_FULL", "beginUpload on a full disk: {ticket}");
            full.get_or_insert(i);
            break;
        }
        let ticket = crate::helpers::Ticket(ticket["data"]["beginUpload"].clone());
        let res = app.put_bytes(&ticket, bytes).await;
        if res.status() == 200 {
            continue;
        }
        assert_eq!(res.status(), 507, "a full disk is not the client's fault");
        assert_eq!(http_error_code(res).await, "STORAGE_FULL");
        assert!(
            files_in(&view.join("tmp")).is_empty(),
            "no partial temp file"
        );
        assert!(
            !view
                .join(format!("blobs/{space}/{}", ticket.upload_id()))
                .exists()
        );
        full = Some(i);
        break;
    }
    assert!(full.is_some(), "3 MiB filled up");
    // Metadata writes say so too, never INTERNAL.
    let body: Value = app
        .gql_as(
            Some("alice"),
            "mutation { createSpace(name: \"More\") { id } }",
            json!({}),
        )
        .await;
    if let Some(code) = body["errors"][0]["extensions"]["code"].as_str() {
        assert_eq!(code, "STORAGE_FULL", "{body}");
    }
    drop(server);
}
