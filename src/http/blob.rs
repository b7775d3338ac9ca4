//! The embedded backend's stand-in for S3 presigned URLs: `PUT /blob/{space}/{upload}`
//! receives an upload's bytes (streamed to disk, never held whole in memory) and
//! `GET /blob/{space}/{upload}` serves content, honouring `Range`. Every URL is
//! HMAC-signed and expires.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
    RANGE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use super::AppState;
use super::errors::error_response;
use crate::domain::{Sha256, SpaceId, UploadId, now_millis};
use crate::storage::RangeRequest;
use crate::storage::embedded::{LocalBlobStore, PostPolicy};
use crate::storage::url_signing::{SignatureError, SignedQuery};
use crate::sync::{Error, ReceivedUpload};

pub(super) async fn put_blob(
    State(state): State<AppState>,
    Path((space, upload)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some((_, upload_id)) = parse_key(&space, &upload) else {
        return Error::NotFound("upload").into_response();
    };
    let path = format!("/blob/{space}/{upload}");
    let signed = SignedQuery::parse(query.as_deref());
    if let Some(refusal) = refuse_unsigned(&state, "PUT", &path, signed.as_ref(), "") {
        return refusal;
    }
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limits = state.service.limits();
    let body = timed(
        body.into_data_stream().map_err(std::io::Error::other),
        limits.body_idle_timeout,
        limits.body_deadline,
    );
    received_response(
        state
            .service
            .receive_upload(upload_id, content_type, body)
            .await,
    )
}

/// The answer to bytes received whole: the commit they set off, or why not.
fn received_response(received: Result<ReceivedUpload, Error>) -> Response {
    match received {
        Err(e) => e.into_response(),
        Ok(received) => match received.commit {
            Ok(file) => Json(json!({
                "uploadId": received.upload_id.to_string(),
                "committed": true,
                "fileId": file.id.to_string(),
                "version": file.version,
            }))
            .into_response(),
            // The bytes are stored; the commit (the storage event) was refused. The upload
            // stays pending: `commitUpload` reports the same error until it is resolved.
            Err(e) => e.into_response(),
        },
    }
}

/// Form fields before the file: few and small (S3 allows 20 KB of them).
const MAX_FORM_FIELDS: usize = 20;
const MAX_FORM_FIELD_BYTES: usize = 8 * 1024;

/// A browser form's upload (S3's POST Object): the fields, checked against the signed
/// policy, then the file, streamed as a PUT's body is. Every field must be one the policy
/// names, with its value; the file's length must be the policy's.
pub(super) async fn post_blob(
    State(state): State<AppState>,
    Path((space, upload)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some((_, upload_id)) = parse_key(&space, &upload) else {
        return Error::NotFound("upload").into_response();
    };
    let key = format!("{space}/{upload}");
    let path = LocalBlobStore::url_path(&key);
    let boundary = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        return Error::bad_input("the body must be multipart/form-data").into_response();
    };
    // The body is timed as a PUT's is, and the fields before the file may take only
    // `MAX_FORM_PREAMBLE` bytes (headers and boundaries included): the form is read
    // before its signature can be checked, so nothing unchecked may grow without bound.
    let limits = state.service.limits();
    let file_started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = capped_preamble(
        timed(
            body.into_data_stream().map_err(std::io::Error::other),
            limits.body_idle_timeout,
            limits.body_deadline,
        ),
        file_started.clone(),
    );
    let mut form = multer::Multipart::new(body, boundary);
    let mut fields: Vec<(String, String)> = Vec::new();
    let file = loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => return Error::bad_input("the form has no field `file`").into_response(),
            Err(e) => return form_error(e),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            file_started.store(true, std::sync::atomic::Ordering::Relaxed);
            break field;
        }
        if fields.len() == MAX_FORM_FIELDS {
            return Error::bad_input("too many form fields").into_response();
        }
        let mut value = Vec::new();
        let mut field = field;
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) if value.len() + chunk.len() <= MAX_FORM_FIELD_BYTES => {
                    value.extend_from_slice(&chunk);
                }
                Ok(Some(_)) => {
                    return Error::bad_input(format!("the form field {name:?} is too long"))
                        .into_response();
                }
                Ok(None) => break,
                Err(e) => return form_error(e),
            }
        }
        let Ok(value) = String::from_utf8(value) else {
            return Error::bad_input(format!("the form field {name:?} is not UTF-8"))
                .into_response();
        };
        fields.push((name, value));
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let policy = field("policy").unwrap_or_default().to_owned();
    let signed = field("x-filesync-expires")
        .and_then(|e| e.parse().ok())
        .zip(field("x-filesync-signature"))
        .map(|(expires, sig)| SignedQuery {
            expires,
            sig: sig.to_owned(),
            ct: None,
            size: None,
            sha256: None,
        });
    if let Some(refusal) = refuse_unsigned(&state, "POST", &path, signed.as_ref(), &policy) {
        return refusal;
    }
    let Some(policy) = signed
        .as_ref()
        .and_then(|s| PostPolicy::decode(&policy, s.expires))
    else {
        return Error::forbidden("the form's policy is invalid").into_response();
    };
    // Each field the policy pins, with its value; no field it does not name.
    for (name, value) in &fields {
        let pinned = match name.to_ascii_lowercase().as_str() {
            "policy" | "x-filesync-expires" | "x-filesync-signature" => continue,
            "key" => policy.key.as_str(),
            "content-type" => policy.content_type.as_str(),
            "x-amz-checksum-sha256" => policy.sha256.as_str(),
            _ => {
                return error_response(
                    StatusCode::FORBIDDEN,
                    "FORBIDDEN",
                    &format!("the form field {name:?} is not in the policy"),
                );
            }
        };
        if value != pinned {
            return error_response(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                &format!("the form field {name:?} does not match the policy"),
            );
        }
    }
    if policy.key != key || field("key").is_none() || field("Content-Type").is_none() {
        return error_response(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "the form's key and Content-Type must be those of the policy",
        );
    }
    let body: crate::storage::ByteStream = Box::pin(file.map_err(std::io::Error::other));
    received_response(
        state
            .service
            .receive_upload(upload_id, Some(policy.content_type), body)
            .await,
    )
}

/// A form that could not be read: the client's (malformed, too large, too slow).
fn form_error(e: multer::Error) -> Response {
    Error::bad_input(format!("the form cannot be read: {e}")).into_response()
}

/// Bytes a form may send before its `file` field starts.
const MAX_FORM_PREAMBLE: u64 = 64 * 1024;

/// `body`, failing once it has sent more than [`MAX_FORM_PREAMBLE`] bytes while
/// `file_started` is still false.
fn capped_preamble(
    body: crate::storage::ByteStream,
    file_started: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> crate::storage::ByteStream {
    let mut read = 0u64;
    Box::pin(body.map(move |chunk| {
        let chunk = chunk?;
        if !file_started.load(std::sync::atomic::Ordering::Relaxed) {
            read += chunk.len() as u64;
            if read > MAX_FORM_PREAMBLE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the form's fields before the file are too large",
                ));
            }
        }
        Ok(chunk)
    }))
}

/// One part of a multipart upload, at a URL that pins its length and SHA-256.
pub(super) async fn put_part(
    State(state): State<AppState>,
    Path((space, upload, number)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let (Some((_, upload_id)), Ok(number)) = (parse_key(&space, &upload), number.parse::<u32>())
    else {
        return Error::NotFound("upload").into_response();
    };
    let path = LocalBlobStore::part_url_path(&format!("{space}/{upload}"), number);
    let signed = SignedQuery::parse(query.as_deref());
    let pinned = signed.as_ref().and_then(|q| {
        let sha256 = Sha256::parse(q.sha256.as_deref()?).ok()?;
        Some((q.size?, sha256))
    });
    let signed_part = pinned.map_or(String::new(), |(size, sha256)| {
        LocalBlobStore::part_signed(size, &sha256)
    });
    if let Some(refusal) = refuse_unsigned(&state, "PUT", &path, signed.as_ref(), &signed_part) {
        return refusal;
    }
    let Some((size, sha256)) = pinned else {
        return Error::forbidden("the URL's signature is invalid").into_response();
    };
    let limits = state.service.limits();
    let body = timed(
        body.into_data_stream().map_err(std::io::Error::other),
        limits.body_idle_timeout,
        limits.body_deadline,
    );
    match state
        .service
        .receive_part(upload_id, number, size, sha256, body)
        .await
    {
        Ok(part) => Json(json!({
            "partNumber": part.number,
            "size": part.size,
            "sha256": part.sha256.map(|h| h.to_hex()),
        }))
        .into_response(),
        Err(e) => e.into_response(),
    }
}

pub(super) async fn get_blob(
    State(state): State<AppState>,
    Path((space, upload)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if parse_key(&space, &upload).is_none() {
        return Error::NotFound("content").into_response();
    }
    let path = format!("/blob/{space}/{upload}");
    let signed = SignedQuery::parse(query.as_deref());
    let content_type = signed.as_ref().and_then(|q| q.ct.clone());
    let signed_type = content_type.as_deref().unwrap_or("");
    if let Some(refusal) = refuse_unsigned(&state, "GET", &path, signed.as_ref(), signed_type) {
        return refusal;
    }
    // An unparsable or multi-range header is ignored, as RFC 9110 allows.
    let range = headers.get(RANGE).and_then(parse_range);
    let key = format!("{space}/{upload}");
    let read = match state.service.open_content(&key, range).await {
        Ok(Some(read)) => read,
        Ok(None) => return Error::NotFound("content").into_response(),
        Err(crate::storage::BlobError::RangeNotSatisfiable { total_size }) => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(CONTENT_RANGE, format!("bytes */{total_size}"))],
            )
                .into_response();
        }
        Err(e) => return Error::from(e).into_response(),
    };
    let content_type = content_type
        .as_deref()
        .unwrap_or(crate::domain::DEFAULT_CONTENT_TYPE);
    // A page or a script is downloaded, never rendered as this origin (the sandbox CSP
    // below stops scripts too).
    let attachment = crate::domain::served_as_attachment(content_type);
    let content_type = HeaderValue::from_str(content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    let mut response = Response::new(Body::from_stream(read.stream));
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, content_type);
    if attachment {
        h.insert(CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    }
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=60"),
    );
    // User content must never run as this origin's script.
    h.insert(
        "content-security-policy",
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    match read.range {
        Some(r) => {
            h.insert(CONTENT_LENGTH, (r.last - r.first + 1).into());
            h.insert(
                CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {}-{}/{}", r.first, r.last, read.total_size))
                    .expect("digits are a valid header"),
            );
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        }
        None => {
            h.insert(CONTENT_LENGTH, read.total_size.into());
        }
    }
    response
}

/// A body that fails when it sends nothing for `idle` or is not done by `deadline`: a
/// client trickling bytes cannot hold an upload (and its lock) for ever.
fn timed(
    body: impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
    idle: std::time::Duration,
    deadline: std::time::Duration,
) -> crate::storage::ByteStream {
    let deadline = tokio::time::Instant::now() + deadline;
    Box::pin(async_stream::stream! {
        let mut body = std::pin::pin!(body);
        loop {
            let wait = (tokio::time::Instant::now() + idle).min(deadline);
            match tokio::time::timeout_at(wait, body.next()).await {
                Ok(Some(chunk)) => {
                    let failed = chunk.is_err();
                    yield chunk;
                    if failed {
                        return;
                    }
                }
                Ok(None) => return,
                Err(_) => {
                    let why = if wait == deadline { "took too long" } else { "stalled" };
                    yield Err(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("the body {why}")));
                    return;
                }
            }
        }
    })
}

fn parse_key(space: &str, upload: &str) -> Option<(SpaceId, UploadId)> {
    Some((space.parse().ok()?, upload.parse().ok()?))
}

/// The refusal for a URL whose signature is missing, invalid or expired.
fn refuse_unsigned(
    state: &AppState,
    method: &str,
    path: &str,
    signed: Option<&SignedQuery>,
    extra: &str,
) -> Option<Response> {
    let Some(signed) = signed else {
        return Some(error_response(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "the URL is not signed",
        ));
    };
    state
        .url_signer
        .verify(
            method,
            path,
            signed.expires,
            extra,
            &signed.sig,
            now_millis(),
        )
        .err()
        .map(|e| match e {
            SignatureError::Expired => error_response(
                StatusCode::FORBIDDEN,
                "UPLOAD_EXPIRED",
                "the URL has expired",
            ),
            SignatureError::Invalid => error_response(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "the URL's signature is invalid",
            ),
        })
}

/// A single `bytes=` range; `None` for anything else.
fn parse_range(value: &HeaderValue) -> Option<RangeRequest> {
    let spec = value.to_str().ok()?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        (true, false) => Some(RangeRequest::Last(last.parse().ok()?)),
        (false, true) => Some(RangeRequest::From(first.parse().ok()?)),
        (false, false) => Some(RangeRequest::Span(first.parse().ok()?, last.parse().ok()?)),
        (true, true) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse() {
        let r = |s: &str| parse_range(&HeaderValue::from_str(s).unwrap());
        assert_eq!(r("bytes=0-9"), Some(RangeRequest::Span(0, 9)));
        assert_eq!(r("bytes=5-"), Some(RangeRequest::From(5)));
        assert_eq!(r("bytes=-3"), Some(RangeRequest::Last(3)));
        assert_eq!(r("bytes=0-1,4-5"), None);
        assert_eq!(r("items=0-1"), None);
        assert_eq!(r("bytes=x-1"), None);
    }
}
