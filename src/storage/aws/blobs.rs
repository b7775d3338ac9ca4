//! `BlobStore` on S3. Clients send and fetch bytes themselves through presigned URLs; the
//! server only signs, checks (`HeadObject` with the stored SHA-256), untags and deletes.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures::TryStreamExt;
use sha2::Digest;

use crate::domain::{DEFAULT_CONTENT_TYPE, Millis, Sha256, now_millis, served_as_attachment};
use crate::storage::{
    BlobError, BlobInfo, BlobRead, BlobStore, ByteStream, CopySource, PartTarget, PresignedRequest,
    PutTarget, RangeRequest, RequestCounter, StoredPart,
};

/// The tag an object carries from its upload until its version is committed; the bucket's
/// lifecycle rule expires objects that still carry it.
pub const PENDING_TAG: &str = "Status=Pending";

pub struct S3Blobs {
    client: Client,
    bucket: String,
    requests: RequestCounter,
    /// What a POST form's policy is signed with (the SDK presigns no POST).
    credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    region: String,
    /// The endpoint and credentials this store is reached with (see [`CopySource`]).
    group: Option<String>,
    /// Replication: copies larger than this are sent in parts of this size.
    part_size: u64,
}

impl S3Blobs {
    pub fn new(client: Client, bucket: String, requests: RequestCounter) -> Self {
        Self {
            client,
            bucket,
            requests,
            credentials: None,
            region: "us-east-1".into(),
            group: None,
            part_size: 16 << 20,
        }
    }

    /// Lets another store reached through `group` (endpoint and credentials) copy from
    /// this one inside S3.
    pub fn copy_group(mut self, group: String) -> Self {
        self.group = Some(group);
        self
    }

    /// The part size of copies streamed into this store.
    pub fn copy_part_size(mut self, size: u64) -> Self {
        self.part_size = size;
        self
    }

    /// Streams a copy in parts of `part_size`, each held once in memory for its
    /// checksum, which S3 verifies; the whole is hashed on the way and must be `sha256`,
    /// or the upload is aborted.
    async fn put_copy_in_parts(
        &self,
        key: &str,
        mut body: ByteStream,
        size: u64,
        sha256: Sha256,
        content_type: Option<&str>,
    ) -> Result<(), BlobError> {
        self.requests.s3("CreateMultipartUpload");
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(content_type.map(str::to_owned))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .send()
            .await
            .map_err(s3_error)?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| BlobError::Other(anyhow::anyhow!("S3 gave no upload id")))?
            .to_owned();
        // A copy dropped half-way (its claim lost) aborts its upload rather than leave
        // its parts behind; one cut off by the server stopping or dying leaves them to
        // the bucket's lifecycle rule for incomplete multipart uploads.
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            upload_id: Some(upload_id.clone()),
        };
        // At most 10,000 parts: larger objects take larger parts (whole MiBs).
        let part_size = self
            .part_size
            .max(size.div_ceil(10_000).div_ceil(1 << 20) << 20);
        let part_len = usize::try_from(part_size).unwrap_or(usize::MAX);
        let result = async {
            let mut whole = sha2::Sha256::new();
            let mut parts = Vec::new();
            let mut sent = 0u64;
            let mut buffer = bytes::BytesMut::with_capacity(part_len.min(64 << 20));
            let mut number = 0u32;
            loop {
                let chunk = body.try_next().await.map_err(|e| {
                    BlobError::Other(anyhow::Error::new(e).context("reading the source"))
                })?;
                let ended = chunk.is_none();
                if let Some(chunk) = chunk {
                    buffer.extend_from_slice(&chunk);
                }
                while buffer.len() >= part_len || (ended && !buffer.is_empty()) {
                    let take = buffer.len().min(part_len);
                    let part = buffer.split_to(take).freeze();
                    whole.update(&part);
                    sent += part.len() as u64;
                    if sent > size {
                        return Err(BlobError::ChecksumMismatch);
                    }
                    number += 1;
                    let digest = Sha256(sha2::Sha256::digest(&part).into());
                    self.requests.s3("UploadPart");
                    let out = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(&upload_id)
                        .part_number(i32::try_from(number).unwrap_or(i32::MAX))
                        .checksum_algorithm(ChecksumAlgorithm::Sha256)
                        .checksum_sha256(digest.to_base64())
                        .body(S3Body::from(part))
                        .send()
                        .await
                        .map_err(s3_error)?;
                    parts.push(
                        CompletedPart::builder()
                            .part_number(i32::try_from(number).unwrap_or(i32::MAX))
                            .set_e_tag(out.e_tag().map(str::to_owned))
                            .checksum_sha256(digest.to_base64())
                            .build(),
                    );
                }
                if ended {
                    break;
                }
            }
            if sent != size || Sha256(whole.finalize().into()) != sha256 {
                return Err(BlobError::ChecksumMismatch);
            }
            self.requests.s3("CompleteMultipartUpload");
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(s3_error)?;
            Ok(())
        }
        .await;
        if result.is_err() {
            self.requests.s3("AbortMultipartUpload");
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
        }
        guard.upload_id = None;
        result
    }

    /// Signs POST policies with the credentials and region of `config` (the ones the
    /// client signs its requests with).
    pub fn signing_with(mut self, config: &aws_config::SdkConfig) -> Self {
        self.credentials = config.credentials_provider();
        if let Some(region) = config.region() {
            self.region = region.as_ref().to_owned();
        }
        self
    }

    /// The bucket's URL (a POST form's target), as the client addresses the bucket (path
    /// style or virtual host): a presigned URL of `key`, cut before the key.
    async fn bucket_url(&self, key: &str) -> Result<String, BlobError> {
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(presigning(now_millis() + 60_000)?)
            .await
            .map_err(s3_error)?;
        let uri = request.uri();
        uri.find(&format!("/{key}?"))
            .map(|end| uri[..end].to_owned())
            .ok_or_else(|| BlobError::Other(anyhow::anyhow!("cannot find the bucket in {uri}")))
    }
}

fn s3_error(e: impl std::error::Error + Send + Sync + 'static) -> BlobError {
    BlobError::Other(anyhow::Error::new(e).context("S3 request failed"))
}

/// The pending tag as a POST form's `tagging` field carries it.
const PENDING_TAGGING: &str =
    "<Tagging><TagSet><Tag><Key>Status</Key><Value>Pending</Value></Tag></TagSet></Tagging>";

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// The parts of one `ListParts` page (S3's maximum).
const PARTS_PER_PAGE: i32 = 1000;

/// Whether an S3 error says the multipart upload does not exist (completed or aborted).
fn no_such_upload<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> bool
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    e.as_service_error()
        .is_some_and(|e| e.code() == Some("NoSuchUpload"))
}

/// The request the SDK presigned, as the client must send it.
fn presigned(request: aws_sdk_s3::presigning::PresignedRequest) -> PresignedRequest {
    PresignedRequest {
        url: request.uri().to_owned(),
        method: "PUT",
        headers: request
            .headers()
            // The client's HTTP library sets these itself.
            .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
        form_fields: Vec::new(),
    }
}

/// A presigned URL lives from now until `expires_at` (at least one second).
fn presigning(expires_at: Millis) -> Result<PresigningConfig, BlobError> {
    let ms = u64::try_from(expires_at - now_millis())
        .unwrap_or(0)
        .max(1000);
    PresigningConfig::expires_in(Duration::from_millis(ms))
        .map_err(|e| BlobError::Other(anyhow::anyhow!("presigning: {e}")))
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn presign_put(&self, target: PutTarget<'_>) -> Result<PresignedRequest, BlobError> {
        let size = i64::try_from(target.size).map_err(|_| BlobError::TooLarge)?;
        // Length, checksum, type and the pending tag are all signed headers: S3 refuses
        // a body of another length or digest, and the object is tagged from its creation.
        // `If-None-Match: *` makes the URL write once: a PUT repeated after the commit
        // (its first response lost) cannot put the pending tag back on committed content.
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(target.key)
            .content_length(size)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(target.sha256.to_base64())
            // Always pinned: S3 serves an object with the type it was stored with.
            .content_type(target.content_type.unwrap_or(DEFAULT_CONTENT_TYPE))
            .tagging(PENDING_TAG)
            .if_none_match("*")
            .presigned(presigning(target.expires_at)?)
            .await
            .map_err(s3_error)?;
        Ok(presigned(request))
    }

    async fn presign_post(&self, target: PutTarget<'_>) -> Result<PresignedRequest, BlobError> {
        // The SDK presigns no POST: the policy is signed here, as SigV4 prescribes for
        // browser forms (the signature of the base64 policy with the day's signing key).
        use aws_credential_types::provider::ProvideCredentials;
        let credentials = self
            .credentials
            .as_ref()
            .ok_or_else(|| BlobError::Other(anyhow::anyhow!("no AWS credentials to sign with")))?
            .provide_credentials()
            .await
            .map_err(s3_error)?;
        let region = &self.region;
        let now = chrono::Utc::now();
        let day = now.format("%Y%m%d").to_string();
        let amz_date = now.format("%Y%m%dT%H%M%SZ").to_string();
        let expiration = chrono::DateTime::from_timestamp_millis(target.expires_at)
            .unwrap_or(now)
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        let credential = format!(
            "{}/{day}/{region}/s3/aws4_request",
            credentials.access_key_id()
        );
        let mut fields: Vec<(String, String)> = vec![
            ("key".into(), target.key.to_owned()),
            (
                "Content-Type".into(),
                target
                    .content_type
                    .unwrap_or(DEFAULT_CONTENT_TYPE)
                    .to_owned(),
            ),
            ("tagging".into(), PENDING_TAGGING.to_owned()),
            ("x-amz-checksum-sha256".into(), target.sha256.to_base64()),
            ("x-amz-algorithm".into(), "AWS4-HMAC-SHA256".into()),
            ("x-amz-credential".into(), credential),
            ("x-amz-date".into(), amz_date),
        ];
        if let Some(token) = credentials.session_token() {
            fields.push(("x-amz-security-token".into(), token.to_owned()));
        }
        let mut conditions = vec![
            serde_json::json!({ "bucket": self.bucket }),
            serde_json::json!(["content-length-range", target.size, target.size]),
        ];
        conditions.extend(
            fields
                .iter()
                .map(|(name, value)| serde_json::json!({ name.as_str(): value })),
        );
        let policy = STANDARD.encode(
            serde_json::json!({ "expiration": expiration, "conditions": conditions }).to_string(),
        );
        let signing_key = [region.as_str(), "s3", "aws4_request"].into_iter().fold(
            hmac_sha256(
                format!("AWS4{}", credentials.secret_access_key()).as_bytes(),
                day.as_bytes(),
            ),
            |key, part| hmac_sha256(&key, part.as_bytes()),
        );
        let signature = hex::encode(hmac_sha256(&signing_key, policy.as_bytes()));
        fields.push(("policy".into(), policy));
        fields.push(("x-amz-signature".into(), signature));
        Ok(PresignedRequest {
            url: self.bucket_url(target.key).await?,
            method: "POST",
            headers: Vec::new(),
            form_fields: fields,
        })
    }

    async fn presign_get(
        &self,
        key: &str,
        content_type: Option<&str>,
        expires_at: Millis,
    ) -> Result<String, BlobError> {
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_type(content_type.unwrap_or(DEFAULT_CONTENT_TYPE))
            // A page or a script never runs as the bucket's origin.
            .set_response_content_disposition(
                served_as_attachment(content_type.unwrap_or(DEFAULT_CONTENT_TYPE))
                    .then(|| "attachment".to_owned()),
            )
            .presigned(presigning(expires_at)?)
            .await
            .map_err(s3_error)?;
        Ok(request.uri().to_owned())
    }

    async fn put(&self, key: &str, body: ByteStream, limit: u64) -> Result<BlobInfo, BlobError> {
        // Only inline uploads come through the server, and they are small (bounded by
        // `uploads.inline_max_bytes`): collect, hash, and send in one request.
        let mut bytes = Vec::new();
        let mut hasher = sha2::Sha256::new();
        let mut body = body;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| BlobError::Other(e.into()))?
        {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(BlobError::TooLarge);
            }
            hasher.update(&chunk);
            bytes.extend_from_slice(&chunk);
        }
        let sha256 = Sha256(hasher.finalize().into());
        let size = bytes.len() as u64;
        self.requests.s3("PutObject");
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(sha256.to_base64())
            .tagging(PENDING_TAG)
            .body(S3Body::from(bytes))
            .send()
            .await
            .map_err(s3_error)?;
        Ok(BlobInfo {
            size,
            sha256: Some(sha256),
        })
    }

    async fn head(&self, key: &str) -> Result<Option<BlobInfo>, BlobError> {
        self.requests.s3("HeadObject");
        let out = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => return Ok(None),
            Err(e) => return Err(s3_error(e)),
        };
        // A multipart object's checksum is a checksum of part checksums ("...-N"), which
        // cannot be compared with the declared digest: such an object is refused.
        let sha256 = out
            .checksum_sha256()
            .and_then(|b64| STANDARD.decode(b64).ok())
            .and_then(|raw| <[u8; 32]>::try_from(raw).ok())
            .map(Sha256);
        Ok(Some(BlobInfo {
            size: out
                .content_length()
                .and_then(|l| u64::try_from(l).ok())
                .unwrap_or(0),
            sha256,
        }))
    }

    async fn get(
        &self,
        key: &str,
        range: Option<RangeRequest>,
    ) -> Result<Option<BlobRead>, BlobError> {
        let Some(info) = self.head(key).await? else {
            return Ok(None);
        };
        let range = match range {
            None => None,
            Some(r) => Some(r.resolve(info.size).ok_or(BlobError::RangeNotSatisfiable {
                total_size: info.size,
            })?),
        };
        self.requests.s3("GetObject");
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(|r| format!("bytes={}-{}", r.first, r.last)))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(s3_error(e)),
        };
        let reader = out.body.into_async_read();
        Ok(Some(BlobRead {
            total_size: info.size,
            range,
            stream: Box::pin(tokio_util::io::ReaderStream::with_capacity(
                reader,
                64 * 1024,
            )),
        }))
    }

    async fn mark_committed(&self, key: &str) -> Result<bool, BlobError> {
        self.requests.s3("DeleteObjectTagging");
        match self
            .client
            .delete_object_tagging()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            // The object is gone (a cancel on another replica won the race).
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(false),
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.requests.s3("DeleteObject");
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    async fn create_multipart(
        &self,
        key: &str,
        _size: u64,
        content_type: Option<&str>,
    ) -> Result<String, BlobError> {
        self.requests.s3("CreateMultipartUpload");
        // Every part carries its SHA-256 (S3 checks it, and keeps a checksum of the
        // part checksums); the object is tagged pending from the start, like a PUT's.
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type.unwrap_or(DEFAULT_CONTENT_TYPE))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .tagging(PENDING_TAG)
            .send()
            .await
            .map_err(s3_error)?;
        out.upload_id
            .ok_or_else(|| BlobError::Other(anyhow::anyhow!("S3 gave no multipart upload id")))
    }

    async fn presign_part(&self, target: PartTarget<'_>) -> Result<PresignedRequest, BlobError> {
        let size = i64::try_from(target.size).map_err(|_| BlobError::TooLarge)?;
        let number = i32::try_from(target.number).map_err(|_| BlobError::TooLarge)?;
        // Length and checksum are signed headers: S3 refuses other bytes (`BadDigest`).
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(target.key)
            .upload_id(target.multipart_id)
            .part_number(number)
            .content_length(size)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(target.sha256.to_base64())
            .presigned(presigning(target.expires_at)?)
            .await
            .map_err(s3_error)?;
        Ok(presigned(request))
    }

    async fn put_part(
        &self,
        _target: PartTarget<'_>,
        _body: ByteStream,
    ) -> Result<StoredPart, BlobError> {
        // Parts go from the client straight to S3 through their presigned URLs.
        Err(BlobError::Other(anyhow::anyhow!(
            "parts of an S3 upload are sent to S3, not through the server"
        )))
    }

    async fn list_parts(
        &self,
        key: &str,
        multipart_id: &str,
    ) -> Result<Option<Vec<StoredPart>>, BlobError> {
        let mut parts = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            self.requests.s3("ListParts");
            let out = match self
                .client
                .list_parts()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(multipart_id)
                .max_parts(PARTS_PER_PAGE)
                .set_part_number_marker(marker.clone())
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if no_such_upload(&e) => return Ok(None),
                Err(e) => return Err(s3_error(e)),
            };
            for part in out.parts() {
                let (Some(number), Some(size)) = (part.part_number(), part.size()) else {
                    continue;
                };
                parts.push(StoredPart {
                    number: u32::try_from(number).unwrap_or(0),
                    size: u64::try_from(size).unwrap_or(0),
                    sha256: part
                        .checksum_sha256()
                        .and_then(|b64| STANDARD.decode(b64).ok())
                        .and_then(|raw| <[u8; 32]>::try_from(raw).ok())
                        .map(Sha256),
                    etag: part.e_tag().map(str::to_owned),
                });
            }
            match out.next_part_number_marker() {
                Some(next)
                    if out.is_truncated() == Some(true) && marker.as_deref() != Some(next) =>
                {
                    marker = Some(next.to_owned());
                }
                _ => break,
            }
        }
        // Not every S3 implementation lists in order.
        parts.sort_by_key(|p| p.number);
        parts.dedup_by_key(|p| p.number);
        Ok(Some(parts))
    }

    async fn complete_multipart(
        &self,
        key: &str,
        multipart_id: &str,
        parts: &[StoredPart],
    ) -> Result<(), BlobError> {
        let completed = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(i32::try_from(p.number).unwrap_or(i32::MAX))
                    .set_e_tag(p.etag.clone())
                    .set_checksum_sha256(p.sha256.map(|s| s.to_base64()))
                    .build()
            })
            .collect();
        self.requests.s3("CompleteMultipartUpload");
        match self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(multipart_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Completed before (a repeated commit whose first answer was lost): the
            // object is there (its key belongs to this upload alone). S3 answers
            // NoSuchUpload then; other implementations answer otherwise (s3s-fs:
            // AccessDenied).
            Err(e) => match self.head(key).await? {
                Some(_) => Ok(()),
                None if no_such_upload(&e) => Err(BlobError::NoSuchUpload),
                // A part was sent again (a new ETag) since the parts were listed.
                None if e
                    .as_service_error()
                    .and_then(|e| e.code())
                    .is_some_and(|c| c == "InvalidPart" || c == "InvalidPartOrder") =>
                {
                    Err(BlobError::PartsChanged)
                }
                None => Err(s3_error(e)),
            },
        }
    }

    async fn abort_multipart(&self, key: &str, multipart_id: &str) -> Result<(), BlobError> {
        self.requests.s3("AbortMultipartUpload");
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(multipart_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if no_such_upload(&e) => Ok(()),
            Err(e) => Err(s3_error(e)),
        }
    }

    async fn seal(&self, key: &str) -> Result<Option<(String, BlobInfo)>, BlobError> {
        // A POST has no `If-None-Match`: the form could be sent again after the commit,
        // re-tagging or (where the checksum is not enforced) replacing the object. The
        // version points at a copy instead, which S3 checksums whole as it copies.
        let sealed = format!("{key}.sealed");
        self.requests.s3("CopyObject");
        match self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(&sealed)
            .copy_source(format!("{}/{key}", self.bucket))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .tagging_directive(aws_sdk_s3::types::TaggingDirective::Replace)
            .tagging(PENDING_TAG)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.code() == Some("NoSuchKey")) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(s3_error(e)),
        }
        let info = match self.head(&sealed).await? {
            Some(info) if info.sha256.is_some() => info,
            // A store that computed no checksum for the copy: hash it (at most 5 GiB).
            Some(_) => self
                .digest(&sealed)
                .await?
                .ok_or_else(|| BlobError::Other(anyhow::anyhow!("the sealed copy vanished")))?,
            None => {
                return Err(BlobError::Other(anyhow::anyhow!(
                    "the sealed copy vanished"
                )));
            }
        };
        Ok(Some((sealed, info)))
    }

    async fn digest(&self, key: &str) -> Result<Option<BlobInfo>, BlobError> {
        // S3 holds no SHA-256 of a multipart object's whole content (only a checksum of
        // its parts' checksums): read it and hash it, in 64 KiB chunks.
        let Some(read) = self.get(key, None).await? else {
            return Ok(None);
        };
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        let mut stream = read.stream;
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| BlobError::Other(anyhow::Error::new(e).context("reading from S3")))?
        {
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok(Some(BlobInfo {
            size,
            sha256: Some(Sha256(hasher.finalize().into())),
        }))
    }

    async fn put_copy(
        &self,
        key: &str,
        body: ByteStream,
        size: u64,
        sha256: Sha256,
        content_type: Option<&str>,
    ) -> Result<(), BlobError> {
        if size > self.part_size {
            return self
                .put_copy_in_parts(key, body, size, sha256, content_type)
                .await;
        }
        // Small enough for one request: read (at most `part_size` bytes), check, send
        // with the checksum S3 verifies again.
        let mut bytes = Vec::new();
        let mut body = body;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| BlobError::Other(anyhow::Error::new(e).context("reading the source")))?
        {
            if (bytes.len() + chunk.len()) as u64 > size {
                return Err(BlobError::ChecksumMismatch);
            }
            bytes.extend_from_slice(&chunk);
        }
        if bytes.len() as u64 != size || Sha256(sha2::Sha256::digest(&bytes).into()) != sha256 {
            return Err(BlobError::ChecksumMismatch);
        }
        self.requests.s3("PutObject");
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(content_type.map(str::to_owned))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .checksum_sha256(sha256.to_base64())
            .body(S3Body::from(bytes))
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    }

    fn copy_source(&self) -> Option<CopySource> {
        Some(CopySource {
            group: self.group.clone()?,
            bucket: self.bucket.clone(),
        })
    }

    async fn copy_within(
        &self,
        source: &CopySource,
        key: &str,
        size: u64,
        sha256: Sha256,
    ) -> Result<bool, BlobError> {
        // One CopyObject takes up to 5 GiB; larger objects are streamed in parts.
        if self.group.as_deref() != Some(source.group.as_str()) || size > MAX_COPY_OBJECT {
            return Ok(false);
        }
        self.requests.s3("CopyObject");
        let out = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(key)
            .copy_source(format!("{}/{key}", source.bucket))
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            // No tags: a copy is committed content, never the lifecycle rule's.
            .tagging_directive(aws_sdk_s3::types::TaggingDirective::Replace)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            // The source lacks the object: streaming finds that out and says so.
            Err(e) if e.as_service_error().and_then(|e| e.code()) == Some("NoSuchKey") => {
                return Ok(false);
            }
            Err(e) => return Err(s3_error(e)),
        };
        let reported = out
            .copy_object_result()
            .and_then(|r| r.checksum_sha256())
            .and_then(|b64| STANDARD.decode(b64).ok())
            .and_then(|raw| <[u8; 32]>::try_from(raw).ok())
            .map(Sha256);
        let intact = match reported {
            Some(found) => found == sha256,
            // Where the store reports no checksum of the copy, it is read back and hashed.
            None => self.verify(key, size, sha256, true).await? == crate::storage::Verdict::Intact,
        };
        if !intact {
            let _ = self.delete(key).await;
            return Err(BlobError::ChecksumMismatch);
        }
        Ok(true)
    }
}

/// Aborts a multipart upload when dropped while still armed.
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(upload_id) = self.upload_id.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let request = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(upload_id);
            runtime.spawn(async move {
                let _ = request.send().await;
            });
        }
    }
}

/// The largest object one `CopyObject` copies.
const MAX_COPY_OBJECT: u64 = 5 << 30;
