//! Presigned URLs against a strict S3 server (s3s-fs, which `scripts/aws-emulator start`
//! runs beside moto and names in `TEST_STRICT_S3_ENDPOINT`): moto verifies neither
//! signatures nor checksums, s3s-fs does, as S3 does. The blob store here is the AWS
//! backend's own `S3Blobs`, on a bucket of its own.
//!
//! An upload URL pins the object's key, length, SHA-256 and content type, and expires; a
//! download URL pins the object and expires. Each refused request leaves no object.

use std::time::Duration;

use filesync::domain::now_millis;
use filesync::storage::aws::{S3Blobs, s3_client};
use filesync::storage::{BlobStore, PresignedRequest, PutTarget, RequestCounter};

use crate::blobs::{body, new_key, sha256};
use crate::on_aws;

/// The strict S3 store in the AWS run; `None` (saying so) in the embedded one, whatever
/// the environment holds.
async fn strict_blobs() -> Option<S3Blobs> {
    if !on_aws() {
        eprintln!("skipped: presigned S3 URLs are checked in the AWS run, against s3s-fs");
        return None;
    }
    let endpoint = std::env::var("TEST_STRICT_S3_ENDPOINT").expect(
        "TEST_STRICT_S3_ENDPOINT is not set: start the emulators with scripts/aws-emulator start",
    );
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await;
    let client = s3_client(&config, true);
    let bucket = format!(
        "strict-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create a bucket in s3s-fs");
    Some(S3Blobs::new(client, bucket, RequestCounter::default()))
}

/// Sends a presigned request as a client would, with its headers but those `skip`ped, and
/// `extra` ones; the status and S3's error code.
async fn send(
    request: &PresignedRequest,
    url: &str,
    payload: &'static [u8],
    skip: &[&str],
    extra: &[(&str, &str)],
) -> (u16, String) {
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).unwrap();
    let mut builder = reqwest::Client::new().request(method, url);
    for (name, value) in &request.headers {
        if !skip.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            builder = builder.header(name, value);
        }
    }
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    let response = builder.body(payload).send().await.expect("s3s-fs answers");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, error_code(&text))
}

fn error_code(xml: &str) -> String {
    xml.split_once("<Code>")
        .and_then(|(_, rest)| rest.split_once("</Code>"))
        .map(|(code, _)| code.to_owned())
        .unwrap_or_default()
}

/// The URL with the last hex digit of its signature changed.
fn tampered(url: &str) -> String {
    let mut url = url.to_owned();
    let last = url.pop().unwrap();
    url.push(if last == '0' { '1' } else { '0' });
    url
}

#[tokio::test]
async fn an_upload_url_pins_length_checksum_type_and_expiry() {
    let Some(blobs) = strict_blobs().await else {
        return;
    };
    const BYTES: &[u8] = b"the declared bytes";
    let (key, elsewhere) = (new_key(), new_key());
    let target = |expires_at| PutTarget {
        key: &key,
        size: BYTES.len() as u64,
        sha256: sha256(BYTES),
        content_type: Some("text/plain"),
        expires_at,
    };
    let request = blobs
        .presign_put(target(now_millis() + 60_000))
        .await
        .unwrap();
    let url = request.url.as_str();
    let length = "content-length";

    // Other bytes of the declared length: S3 stores nothing. s3s-fs keeps the bytes but
    // not the declared checksum, so the commit's `HeadObject` check refuses them (an
    // object without its SHA-256 is never published).
    let digest = send(&request, url, b"the declared BYTES", &[], &[]).await;
    if let Some(left) = blobs.head(&key).await.unwrap() {
        assert_ne!(
            left.sha256,
            Some(sha256(BYTES)),
            "other bytes never pass as the declared ones"
        );
        blobs.delete(&key).await.unwrap();
    }
    let refusals: [(&str, (u16, String)); 7] = [
        ("other bytes of the same length", digest),
        (
            "a shorter body",
            send(&request, url, b"the declared", &[length], &[]).await,
        ),
        (
            "a longer body",
            send(
                &request,
                url,
                b"the declared bytes, and more",
                &[length],
                &[],
            )
            .await,
        ),
        (
            "another content type",
            send(
                &request,
                url,
                BYTES,
                &["content-type"],
                &[("content-type", "text/html")],
            )
            .await,
        ),
        (
            "no checksum header",
            send(&request, url, BYTES, &["x-amz-checksum-sha256"], &[]).await,
        ),
        (
            "a tampered signature",
            send(&request, &tampered(url), BYTES, &[], &[]).await,
        ),
        (
            "another key",
            send(&request, &url.replace(&key, &elsewhere), BYTES, &[], &[]).await,
        ),
    ];
    assert!(
        blobs.head(&key).await.unwrap().is_none(),
        "a refused request stores nothing"
    );
    for (what, (status, code)) in &refusals {
        assert!(
            [400, 403].contains(status),
            "{what}: refused, not {status} {code}"
        );
    }
    assert_eq!(refusals[0].1, (400, "BadDigest".to_owned()), "{refusals:?}");
    for (what, (_, code)) in &refusals[1..] {
        assert_eq!(code, "SignatureDoesNotMatch", "{what}");
    }

    let short_lived = blobs
        .presign_put(target(now_millis() + 1_000))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let expired = send(&short_lived, &short_lived.url, BYTES, &[], &[]).await;
    assert_eq!(expired.0, 403, "expired: {expired:?}");
    assert!(
        blobs.head(&key).await.unwrap().is_none(),
        "expired: no object"
    );

    assert_eq!(
        send(&request, url, BYTES, &[], &[]).await,
        (200, String::new())
    );
    let stored = blobs.head(&key).await.unwrap().expect("stored");
    assert_eq!(
        (stored.size, stored.sha256),
        (BYTES.len() as u64, Some(sha256(BYTES)))
    );
}

#[tokio::test]
async fn a_download_url_is_bound_to_its_object_and_expires() {
    let Some(blobs) = strict_blobs().await else {
        return;
    };
    let (key, other) = (new_key(), new_key());
    blobs.put(&key, body(&[b"mine"]), 100).await.unwrap();
    blobs.put(&other, body(&[b"theirs"]), 100).await.unwrap();
    let url = blobs
        .presign_get(&key, Some("text/plain"), now_millis() + 60_000)
        .await
        .unwrap();
    let get = |url: String| async move {
        let response = reqwest::get(url).await.expect("s3s-fs answers");
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap())
    };
    assert_eq!(get(url.clone()).await, (200, "mine".into()));
    assert_eq!(get(tampered(&url)).await.0, 403);
    assert_eq!(
        get(url.replace(&key, &other)).await.0,
        403,
        "another object"
    );

    let short_lived = blobs
        .presign_get(&key, None, now_millis() + 1_000)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(get(short_lived).await.0, 403, "expired");
}
