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
use filesync::storage::{BlobStore, PartTarget, PresignedRequest, PutTarget, RequestCounter};

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
    Some(S3Blobs::new(client, bucket, RequestCounter::default()).signing_with(&config))
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
    let response = match builder.body(payload).send().await {
        Ok(response) => response,
        // s3s-fs answered a refusal and closed the connection before reading a large
        // body: refused all the same (the callers check that nothing was stored).
        Err(e) if payload.len() > 1 << 20 => return (0, format!("connection closed: {e}")),
        Err(e) => panic!("s3s-fs answers: {e}"),
    };
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

/// A part URL pins its upload, part number, length and expiry; the parts complete into
/// one object whose whole content the server hashes. (s3s-fs 0.14 ignores a part's
/// `x-amz-checksum-sha256`, where S3 answers `BadDigest`: other bytes in a part are
/// caught by the whole-content digest at commit, tested in the API suite; and it lists
/// parts without their checksums and ETags.)
#[tokio::test]
async fn a_part_url_pins_its_part_and_the_parts_complete_into_one_object() {
    let Some(blobs) = strict_blobs().await else {
        return;
    };
    // Every part but the last must have 5 MiB at least (s3s-fs checks it, as S3 does).
    let first: &'static [u8] = vec![7u8; 5 << 20].leak();
    let last: &'static [u8] = b"and the rest";
    let size = (first.len() + last.len()) as u64;
    let (key, elsewhere) = (new_key(), new_key());
    let id = blobs
        .create_multipart(&key, size, Some("application/octet-stream"))
        .await
        .unwrap();
    let target = |number, offset, bytes: &[u8], expires_at| PartTarget {
        key: &key,
        multipart_id: &id,
        number,
        offset,
        size: bytes.len() as u64,
        sha256: sha256(bytes),
        expires_at,
    };
    let one = blobs
        .presign_part(target(1, 0, first, now_millis() + 60_000))
        .await
        .unwrap();
    let two = blobs
        .presign_part(target(2, first.len() as u64, last, now_millis() + 60_000))
        .await
        .unwrap();
    // The refusals on the short last part: s3s-fs answers them before the body (and
    // would close the connection under a body of megabytes).
    let url = two.url.as_str();
    let refusals = [
        (
            "a shorter body",
            send(&two, url, &last[1..], &["content-length"], &[]).await,
        ),
        (
            "a tampered signature",
            send(&two, &tampered(url), last, &[], &[]).await,
        ),
        (
            "another key",
            send(&two, &url.replace(&key, &elsewhere), last, &[], &[]).await,
        ),
        (
            "another part number",
            send(
                &two,
                &url.replace("partNumber=2", "partNumber=3"),
                last,
                &[],
                &[],
            )
            .await,
        ),
    ];
    for (what, (status, code)) in &refusals {
        assert!(
            [400, 403].contains(status),
            "{what}: refused, not {status} {code}"
        );
    }
    assert_eq!(
        blobs.list_parts(&key, &id).await.unwrap(),
        Some(Vec::new()),
        "a refused part is not stored"
    );
    let short_lived = blobs
        .presign_part(target(2, first.len() as u64, last, now_millis() + 1_000))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let expired = send(&short_lived, &short_lived.url, last, &[], &[]).await;
    assert_eq!(expired.0, 403, "expired: {expired:?}");

    // Out of order, then listed by number.
    assert_eq!(send(&two, &two.url, last, &[], &[]).await.0, 200);
    assert_eq!(send(&one, &one.url, first, &[], &[]).await.0, 200);
    let parts = blobs.list_parts(&key, &id).await.unwrap().expect("listed");
    let listed: Vec<(u32, u64)> = parts.iter().map(|p| (p.number, p.size)).collect();
    assert_eq!(listed, [(1, first.len() as u64), (2, last.len() as u64)]);
    assert!(
        blobs.head(&key).await.unwrap().is_none(),
        "not before completion"
    );
    blobs.complete_multipart(&key, &id, &parts).await.unwrap();
    // Completing again (a commit whose answer was lost) is harmless.
    blobs.complete_multipart(&key, &id, &parts).await.unwrap();
    let whole = blobs.digest(&key).await.unwrap().expect("the object");
    let mut content = first.to_vec();
    content.extend_from_slice(last);
    assert_eq!((whole.size, whole.sha256), (size, Some(sha256(&content))));
    // S3 answers NoSuchUpload for a completed upload; s3s-fs lists no parts.
    let after = blobs.list_parts(&key, &id).await.unwrap();
    assert!(after.as_ref().is_none_or(|p| p.is_empty()), "{after:?}");

    // Aborting removes the parts. (Aborting again is fine on S3, which answers
    // NoSuchUpload; s3s-fs answers AccessDenied, so it is not tried here.)
    let gone = blobs
        .create_multipart(&elsewhere, size, None)
        .await
        .unwrap();
    let part = blobs
        .presign_part(PartTarget {
            key: &elsewhere,
            multipart_id: &gone,
            ..target(1, 0, first, now_millis() + 60_000)
        })
        .await
        .unwrap();
    assert_eq!(send(&part, &part.url, first, &[], &[]).await.0, 200);
    blobs.abort_multipart(&elsewhere, &gone).await.unwrap();
    let after = blobs.list_parts(&elsewhere, &gone).await.unwrap();
    assert!(after.as_ref().is_none_or(|p| p.is_empty()), "{after:?}");
    assert!(blobs.head(&elsewhere).await.unwrap().is_none());
}

/// A change to a form's fields before it is sent.
type EditFields = Box<dyn FnOnce(&mut Vec<(String, String)>)>;

/// A browser form's POST: its policy pins the key, the length (`content-length-range`),
/// the type and the checksum, and expires; s3s-fs checks the policy's signature, its
/// conditions and the checksum, as S3 does. (s3s-fs keeps no tags, so the `tagging`
/// field is only signed here.)
#[tokio::test]
async fn a_post_policy_pins_key_length_type_checksum_and_expiry() {
    let Some(blobs) = strict_blobs().await else {
        return;
    };
    const BYTES: &[u8] = b"the declared bytes";
    let key = new_key();
    let target = |expires_at| PutTarget {
        key: &key,
        size: BYTES.len() as u64,
        sha256: sha256(BYTES),
        content_type: Some("text/plain"),
        expires_at,
    };
    let request = blobs
        .presign_post(target(now_millis() + 60_000))
        .await
        .unwrap();
    assert_eq!(request.method, "POST");
    let post = |request: PresignedRequest, file: &'static [u8], edit: EditFields| async move {
        let mut fields = request.form_fields.clone();
        edit(&mut fields);
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in fields {
            form = form.text(name, value);
        }
        let form = form.part("file", reqwest::multipart::Part::bytes(file));
        let response = reqwest::Client::new()
            .post(&request.url)
            .multipart(form)
            .send()
            .await
            .expect("s3s-fs answers");
        let status = response.status().as_u16();
        (status, error_code(&response.text().await.unwrap()))
    };
    let set = |name: &'static str, value: &'static str| -> EditFields {
        Box::new(move |fields: &mut Vec<(String, String)>| {
            for field in fields.iter_mut().filter(|f| f.0 == name) {
                field.1 = value.to_owned();
            }
        })
    };
    // Other bytes of the declared length: S3 stores nothing. s3s-fs answers BadDigest
    // but keeps the bytes; the commit's digest refuses them all the same (never the
    // declared checksum).
    let digest = post(request.clone(), b"the declared BYTES", Box::new(|_| {})).await;
    if let Some(left) = blobs.digest(&key).await.unwrap() {
        assert_ne!(left.sha256, Some(sha256(BYTES)));
        blobs.delete(&key).await.unwrap();
    }
    let refusals = [
        (
            "a longer file",
            post(
                request.clone(),
                b"the declared bytes, and more",
                Box::new(|_| {}),
            )
            .await,
        ),
        (
            "a shorter file",
            post(request.clone(), b"the declared", Box::new(|_| {})).await,
        ),
        (
            "another type",
            post(request.clone(), BYTES, set("Content-Type", "text/html")).await,
        ),
        (
            "another key",
            post(request.clone(), BYTES, set("key", "elsewhere/object")).await,
        ),
        (
            "a tampered signature",
            post(
                request.clone(),
                BYTES,
                Box::new(|fields: &mut Vec<(String, String)>| {
                    for field in fields.iter_mut().filter(|f| f.0 == "x-amz-signature") {
                        field.1 = tampered(&field.1);
                    }
                }),
            )
            .await,
        ),
        ("other bytes of the declared length", digest),
    ];
    for (what, (status, code)) in &refusals {
        assert!(
            [400, 403].contains(status),
            "{what}: refused, not {status} {code}"
        );
    }
    assert!(
        blobs.head(&key).await.unwrap().is_none(),
        "a refused form stores nothing: {refusals:?}"
    );
    let short_lived = blobs
        .presign_post(target(now_millis() + 1_000))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let expired = post(short_lived, BYTES, Box::new(|_| {})).await;
    assert_eq!(expired.0, 403, "expired: {expired:?}");

    let stored = post(request, BYTES, Box::new(|_| {})).await;
    assert!([200, 201, 204].contains(&stored.0), "{stored:?}");
    let object = blobs.digest(&key).await.unwrap().expect("stored");
    assert_eq!(
        (object.size, object.sha256),
        (BYTES.len() as u64, Some(sha256(BYTES)))
    );
}
