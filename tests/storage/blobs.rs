//! `BlobStore`: objects appear whole or not at all, read whole or by range, and go away.

use bytes::Bytes;
use filesync::domain::{Sha256, SpaceId, UploadId};
use filesync::storage::{BlobError, BlobRead, BlobStore, ByteRange, ByteStream, RangeRequest};
use futures::TryStreamExt;
use sha2::Digest;

use crate::backend;

pub fn body(chunks: &[&'static [u8]]) -> ByteStream {
    let chunks: Vec<_> = chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
    Box::pin(futures::stream::iter(chunks))
}

pub fn sha256(bytes: &[u8]) -> Sha256 {
    Sha256(sha2::Sha256::digest(bytes).into())
}

/// A key as the server makes them: never from a user's name.
pub fn new_key() -> String {
    format!("{}/{}", SpaceId::new(), UploadId::new())
}

async fn read(
    blobs: &dyn BlobStore,
    key: &str,
    range: Option<RangeRequest>,
) -> (BlobRead, Vec<u8>) {
    let mut read = blobs.get(key, range).await.unwrap().expect("the object");
    let mut bytes = Vec::new();
    while let Some(chunk) = read.stream.try_next().await.unwrap() {
        bytes.extend_from_slice(&chunk);
    }
    (read, bytes)
}

#[tokio::test]
async fn an_object_is_stored_whole_read_by_range_and_deleted() {
    let store = backend().await;
    let blobs = &*store.blobs;
    let key = new_key();
    let info = blobs
        .put(&key, body(&[b"hello ", b"world"]), 1024)
        .await
        .unwrap();
    assert_eq!((info.size, info.sha256), (11, Some(sha256(b"hello world"))));
    assert_eq!(blobs.head(&key).await.unwrap(), Some(info));

    let (whole, bytes) = read(blobs, &key, None).await;
    assert_eq!(
        (whole.total_size, whole.range, &bytes[..]),
        (11, None, &b"hello world"[..])
    );
    for (range, first, last, expected) in [
        (RangeRequest::Span(0, 4), 0, 4, &b"hello"[..]),
        (RangeRequest::Span(6, 100), 6, 10, b"world"),
        (RangeRequest::From(9), 9, 10, b"ld"),
        (RangeRequest::Last(3), 8, 10, b"rld"),
    ] {
        let (part, bytes) = read(blobs, &key, Some(range)).await;
        assert_eq!(part.total_size, 11);
        assert_eq!(part.range, Some(ByteRange { first, last }), "{range:?}");
        assert_eq!(bytes, expected, "{range:?}");
    }
    let outside = blobs.get(&key, Some(RangeRequest::From(11))).await;
    assert!(
        matches!(
            outside,
            Err(BlobError::RangeNotSatisfiable { total_size: 11 })
        ),
        "{:?}",
        outside.err()
    );

    assert!(blobs.mark_committed(&key).await.unwrap());
    assert!(blobs.mark_committed(&key).await.unwrap(), "idempotent");
    assert_eq!(blobs.head(&key).await.unwrap().unwrap().size, 11);
    blobs.delete(&key).await.unwrap();
    assert!(!blobs.mark_committed(&key).await.unwrap(), "no such object");
    assert!(blobs.head(&key).await.unwrap().is_none());
    assert!(blobs.get(&key, None).await.unwrap().is_none());
    blobs.delete(&key).await.expect("deleting twice is fine");
}

#[tokio::test]
async fn an_oversize_body_leaves_no_object() {
    let store = backend().await;
    let key = new_key();
    let refused = store
        .blobs
        .put(&key, body(&[b"0123456789", b"0123456789"]), 15)
        .await;
    assert!(matches!(refused, Err(BlobError::TooLarge)), "{refused:?}");
    assert!(store.blobs.head(&key).await.unwrap().is_none());
    assert!(store.blobs.head(&new_key()).await.unwrap().is_none());
}

#[tokio::test]
async fn a_copy_is_stored_only_as_the_bytes_it_must_be_and_checks_find_damage() {
    use filesync::storage::Verdict;
    let store = backend().await;
    let blobs = &*store.blobs;
    let key = new_key();
    let good: &'static [u8] = b"the version's bytes";
    let digest = sha256(good);
    let size = good.len() as u64;
    assert_eq!(
        blobs.verify(&key, size, digest, true).await.unwrap(),
        Verdict::Missing
    );
    blobs
        .put_copy(
            &key,
            body(&[b"the version", b"'s bytes"]),
            size,
            digest,
            Some("text/plain"),
        )
        .await
        .unwrap();
    for deep in [false, true] {
        assert_eq!(
            blobs.verify(&key, size, digest, deep).await.unwrap(),
            Verdict::Intact
        );
    }
    // Other bytes, more bytes, fewer bytes: refused, and what was there stays.
    for wrong in [
        &[b"THE VERSION'S BYTES" as &'static [u8]][..],
        &[b"the version's bytes", b"!"],
        &[b"the version"],
    ] {
        let err = blobs
            .put_copy(&key, body(wrong), size, digest, None)
            .await
            .unwrap_err();
        assert!(matches!(err, BlobError::ChecksumMismatch), "{err:?}");
        let (_, bytes) = read(blobs, &key, None).await;
        assert_eq!(bytes, good);
    }
    let other = new_key();
    assert!(
        blobs
            .put_copy(&other, body(&[b"short"]), size, digest, None)
            .await
            .is_err()
    );
    assert!(
        blobs.head(&other).await.unwrap().is_none(),
        "nothing left of a refused copy"
    );
    // Another digest or size than the object's: corrupt.
    assert_eq!(
        blobs
            .verify(&key, size, sha256(b"other"), true)
            .await
            .unwrap(),
        Verdict::Corrupt
    );
    assert_eq!(
        blobs.verify(&key, size + 1, digest, false).await.unwrap(),
        Verdict::Corrupt
    );
}
