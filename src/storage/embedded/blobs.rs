//! Content in a local folder. Objects are written to `tmp/`, fsynced, then renamed into
//! `blobs/<key>`, so an object is either whole or absent. A small sidecar records the
//! SHA-256 computed while streaming, tied to the object's inode so a stale sidecar is never
//! trusted.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use anyhow::Context;
use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tokio::fs::{self, File};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::multipart::Multiparts;
use crate::domain::{Millis, Sha256};
use crate::storage::url_signing::UrlSigner;
use crate::storage::{
    BlobError, BlobInfo, BlobRead, BlobStore, ByteStream, PartTarget, PresignedRequest, PutTarget,
    RangeRequest, StoredPart,
};

/// Bytes per read when streaming a blob out: each read of a tokio file is a hop to a
/// blocking thread, and `ReaderStream`'s default of 4 KiB made a GiB a quarter of a
/// million of them.
const READ_CHUNK: usize = 256 * 1024;

pub struct LocalBlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
    multipart: Multiparts,
    public_url: String,
    signer: UrlSigner,
}

/// The policy of an embedded POST form, as S3's: base64 JSON whose conditions every form
/// field must meet. Signed (with the expiry) by the URL signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostPolicy {
    pub key: String,
    pub content_type: String,
    /// Base64, as in the `x-amz-checksum-sha256` field.
    pub sha256: String,
    pub size: u64,
    /// Unix seconds.
    pub expires: i64,
}

impl PostPolicy {
    pub fn encode(&self) -> String {
        use base64::Engine;
        let json = serde_json::json!({
            "expiration": chrono::DateTime::from_timestamp(self.expires, 0)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            "conditions": [
                { "key": self.key },
                { "Content-Type": self.content_type },
                { "x-amz-checksum-sha256": self.sha256 },
                ["content-length-range", self.size, self.size],
            ],
        });
        base64::engine::general_purpose::STANDARD.encode(json.to_string())
    }

    /// Reads a policy this server encoded (after its signature was checked).
    pub fn decode(policy: &str, expires: i64) -> Option<Self> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(policy)
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&raw).ok()?;
        let conditions = json["conditions"].as_array()?;
        let field = |name: &str| {
            conditions
                .iter()
                .find_map(|c| c.get(name)?.as_str().map(str::to_owned))
        };
        let size = conditions.iter().find_map(|c| {
            let c = c.as_array()?;
            (c.first()?.as_str()? == "content-length-range").then(|| c.get(1)?.as_u64())?
        })?;
        Some(Self {
            key: field("key")?,
            content_type: field("Content-Type")?,
            sha256: field("x-amz-checksum-sha256")?,
            size,
            expires,
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct Sidecar {
    pub(super) inode: u64,
    pub(super) size: u64,
    pub(super) sha256: String,
}

impl LocalBlobStore {
    pub fn open(data_dir: &Path, public_url: String, signer: UrlSigner) -> anyhow::Result<Self> {
        let blobs = data_dir.join("blobs");
        let tmp = data_dir.join("tmp");
        super::private_dir(&blobs).context("cannot create blob folder")?;
        // Leftovers of interrupted uploads are garbage: no object was ever published there.
        let _ = std::fs::remove_dir_all(&tmp);
        super::private_dir(&tmp).context("cannot create temp folder")?;
        // Multipart uploads outlive a restart (their parts are durable); orphans are
        // removed by `embedded::open`, which knows the uploads.
        let multipart = Multiparts::open(data_dir)?;
        Ok(Self {
            blobs,
            tmp,
            multipart,
            public_url,
            signer,
        })
    }

    /// Stores `body` under `key` (streamed to a temp file, fsynced, renamed into place);
    /// with `expect`, only bytes of that SHA-256 are put in place.
    async fn store(
        &self,
        key: &str,
        mut body: ByteStream,
        limit: u64,
        expect: Option<Sha256>,
    ) -> Result<BlobInfo, BlobError> {
        let path = self.path_of(key)?;
        let tmp = self.tmp.join(uuid::Uuid::new_v4().to_string());
        let result = async {
            let mut file = private_file(&tmp)
                .await
                .map_err(|e| BlobError::write(e, "cannot create temp file"))?;
            let mut hasher = sha2::Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| BlobError::BodyInterrupted(e.to_string()))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(BlobError::TooLarge);
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| BlobError::write(e, "cannot write temp file"))?;
            }
            // tokio's `sync_all` does not flush its write buffer: without this, the error
            // of the last write (a full disk, say) would be lost.
            file.flush()
                .await
                .map_err(|e| BlobError::write(e, "cannot write temp file"))?;
            file.sync_all()
                .await
                .map_err(|e| BlobError::write(e, "cannot fsync temp file"))?;
            let inode = std::os::unix::fs::MetadataExt::ino(
                &file
                    .metadata()
                    .await
                    .map_err(|e| BlobError::write(e, "cannot stat temp file"))?,
            );
            drop(file);
            let sha256 = Sha256(hasher.finalize().into());
            if expect.is_some_and(|e| e != sha256) {
                return Err(BlobError::ChecksumMismatch);
            }
            if let Some(parent) = path.parent() {
                self.space_dir(parent).await?;
            }
            // The sidecar first (the inode stays the same across the rename): an object
            // that is in place always has its digest, and a failure leaves neither.
            let sidecar = Sidecar {
                inode,
                size,
                sha256: sha256.to_hex(),
            };
            write_sidecar(&path, &sidecar).await?;
            if let Err(e) = fs::rename(&tmp, &path).await {
                let _ = fs::remove_file(Self::sidecar_of(&path)).await;
                return Err(BlobError::write(e, "cannot publish blob"));
            }
            if let Some(parent) = path.parent() {
                sync_dir(parent).await?;
            }
            Ok(BlobInfo {
                size,
                sha256: Some(sha256),
            })
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&tmp).await;
        }
        result
    }

    /// Keys are server-made (`<uuid>/<uuid>`); anything else is refused before it can
    /// name a path.
    fn path_of(&self, key: &str) -> Result<PathBuf, BlobError> {
        let valid = !key.is_empty()
            && key.len() <= 200
            && key.split('/').all(|seg| {
                !seg.is_empty()
                    && seg.len() <= 64
                    && seg.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
            });
        if !valid {
            return Err(BlobError::Other(anyhow::anyhow!(
                "invalid blob key {key:?}"
            )));
        }
        Ok(self.blobs.join(key))
    }

    /// Makes a space's blob folder if needed; a new one is made durable (the blob folder
    /// fsynced), or a crash could lose the folder and with it every object inside.
    async fn space_dir(&self, dir: &Path) -> Result<(), BlobError> {
        match fs::metadata(dir).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BlobError::write(e, "cannot stat blob folder")),
        }
        let mut builder = fs::DirBuilder::new();
        builder.mode(0o700);
        match builder.create(dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(BlobError::write(e, "cannot create blob folder")),
        }
        sync_dir(&self.blobs).await
    }

    pub(super) fn sidecar_of(path: &Path) -> PathBuf {
        let mut name = path.as_os_str().to_owned();
        name.push(".sha256");
        PathBuf::from(name)
    }

    /// Path part of the signed URL of an object.
    pub fn url_path(key: &str) -> String {
        format!("/blob/{key}")
    }

    /// Path part of the signed URL of a part.
    pub fn part_url_path(key: &str, number: u32) -> String {
        format!("/blob/{key}/part/{number}")
    }

    /// What the signature of a part URL binds beside method, path and expiry: the part's
    /// length and SHA-256 (so the URL pins them, as S3's presigned `UploadPart` does).
    pub fn part_signed(size: u64, sha256: &Sha256) -> String {
        format!("{size}:{}", sha256.to_hex())
    }

    /// Removes multipart uploads on disk that are not among `keep` (at start-up).
    pub(super) async fn remove_multipart_orphans(&self, keep: &std::collections::HashSet<String>) {
        self.multipart.remove_all_but(keep).await;
    }
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn presign_put(&self, target: PutTarget<'_>) -> Result<PresignedRequest, BlobError> {
        let path = Self::url_path(target.key);
        let expires = target.expires_at / 1000;
        // The path names the upload, whose declared size, checksum and content type the
        // server checks when the bytes arrive.
        let sig = self.signer.sign("PUT", &path, expires, "");
        let ct = target
            .content_type
            .unwrap_or(crate::domain::DEFAULT_CONTENT_TYPE);
        let headers = vec![("Content-Type".to_owned(), ct.to_owned())];
        Ok(PresignedRequest {
            url: format!("{}{path}?expires={expires}&sig={sig}", self.public_url),
            method: "PUT",
            headers,
            form_fields: Vec::new(),
        })
    }

    async fn presign_post(&self, target: PutTarget<'_>) -> Result<PresignedRequest, BlobError> {
        let path = Self::url_path(target.key);
        let expires = target.expires_at / 1000;
        let ct = target
            .content_type
            .unwrap_or(crate::domain::DEFAULT_CONTENT_TYPE);
        let policy = PostPolicy {
            key: target.key.to_owned(),
            content_type: ct.to_owned(),
            sha256: target.sha256.to_base64(),
            size: target.size,
            expires,
        }
        .encode();
        let sig = self.signer.sign("POST", &path, expires, &policy);
        Ok(PresignedRequest {
            url: format!("{}{path}", self.public_url),
            method: "POST",
            headers: Vec::new(),
            form_fields: vec![
                ("key".into(), target.key.to_owned()),
                ("Content-Type".into(), ct.to_owned()),
                ("x-amz-checksum-sha256".into(), target.sha256.to_base64()),
                ("policy".into(), policy),
                ("x-filesync-expires".into(), expires.to_string()),
                ("x-filesync-signature".into(), sig),
            ],
        })
    }

    async fn presign_get(
        &self,
        key: &str,
        content_type: Option<&str>,
        expires_at: Millis,
    ) -> Result<String, BlobError> {
        let path = Self::url_path(key);
        let expires = expires_at / 1000;
        let ct = content_type.unwrap_or("");
        let sig = self.signer.sign("GET", &path, expires, ct);
        let mut url = format!("{}{path}?expires={expires}&sig={sig}", self.public_url);
        if !ct.is_empty() {
            url.push_str("&ct=");
            url.push_str(&percent_encode(ct));
        }
        Ok(url)
    }

    async fn put(&self, key: &str, body: ByteStream, limit: u64) -> Result<BlobInfo, BlobError> {
        self.store(key, body, limit, None).await
    }

    async fn put_copy(
        &self,
        key: &str,
        body: ByteStream,
        size: u64,
        sha256: Sha256,
        _content_type: Option<&str>,
    ) -> Result<(), BlobError> {
        match self.store(key, body, size, Some(sha256)).await {
            Ok(info) if info.size == size => Ok(()),
            Ok(_) => {
                // Shorter than it should be: never left in place as the copy.
                self.delete(key).await?;
                Err(BlobError::ChecksumMismatch)
            }
            Err(BlobError::TooLarge) => Err(BlobError::ChecksumMismatch),
            Err(e) => Err(e),
        }
    }

    async fn verify(
        &self,
        key: &str,
        size: u64,
        sha256: Sha256,
        _deep: bool,
    ) -> Result<crate::storage::Verdict, BlobError> {
        use crate::storage::Verdict;
        // Always hashed: the sidecar would not notice bytes overwritten in place.
        let path = self.path_of(key)?;
        match fs::metadata(&path).await {
            Ok(meta) if meta.len() != size => return Ok(Verdict::Corrupt),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verdict::Missing),
            Err(e) => return Err(anyhow::Error::new(e).context("cannot stat blob").into()),
        }
        Ok(match hash_file(&path).await {
            Ok(found) if found == sha256 => Verdict::Intact,
            Ok(_) => Verdict::Corrupt,
            Err(BlobError::Other(e))
                if e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound) =>
            {
                Verdict::Missing
            }
            Err(e) => return Err(e),
        })
    }

    async fn head(&self, key: &str) -> Result<Option<BlobInfo>, BlobError> {
        let path = self.path_of(key)?;
        let meta = match fs::metadata(&path).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(anyhow::Error::new(e).context("cannot stat blob").into()),
        };
        let size = meta.len();
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        let sidecar = fs::read(Self::sidecar_of(&path))
            .await
            .ok()
            .and_then(|raw| serde_json::from_slice::<Sidecar>(&raw).ok())
            .filter(|s| s.inode == inode && s.size == size)
            .and_then(|s| Sha256::parse(&s.sha256).ok());
        let sha256 = match sidecar {
            Some(sha) => sha,
            // Interrupted between rename and sidecar: hash the object itself.
            None => hash_file(&path).await?,
        };
        Ok(Some(BlobInfo {
            size,
            sha256: Some(sha256),
        }))
    }

    async fn get(
        &self,
        key: &str,
        range: Option<RangeRequest>,
    ) -> Result<Option<BlobRead>, BlobError> {
        let path = self.path_of(key)?;
        let mut file = match File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(anyhow::Error::new(e).context("cannot open blob").into()),
        };
        let total_size = file.metadata().await.context("cannot stat blob")?.len();
        let range = match range {
            Some(asked) => Some(
                asked
                    .resolve(total_size)
                    .ok_or(BlobError::RangeNotSatisfiable { total_size })?,
            ),
            None => None,
        };
        let stream: ByteStream = match range {
            Some(r) => {
                file.seek(SeekFrom::Start(r.first))
                    .await
                    .context("cannot seek blob")?;
                Box::pin(ReaderStream::with_capacity(
                    file.take(r.last - r.first + 1),
                    READ_CHUNK,
                ))
            }
            None => Box::pin(ReaderStream::with_capacity(file, READ_CHUNK)),
        };
        Ok(Some(BlobRead {
            total_size,
            range,
            stream,
        }))
    }

    async fn mark_committed(&self, key: &str) -> Result<bool, BlobError> {
        // Local objects carry no pending marker: the metadata row is the only record.
        match fs::metadata(self.path_of(key)?).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(anyhow::Error::new(e).context("cannot stat blob").into()),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.path_of(key)?;
        for p in [Self::sidecar_of(&path), path] {
            match fs::remove_file(&p).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(anyhow::Error::new(e).context("cannot delete blob").into()),
            }
        }
        Ok(())
    }

    async fn create_multipart(
        &self,
        _key: &str,
        size: u64,
        _content_type: Option<&str>,
    ) -> Result<String, BlobError> {
        self.multipart.create(size).await
    }

    async fn presign_part(&self, target: PartTarget<'_>) -> Result<PresignedRequest, BlobError> {
        let path = Self::part_url_path(target.key, target.number);
        let expires = target.expires_at / 1000;
        let sig = self.signer.sign(
            "PUT",
            &path,
            expires,
            &Self::part_signed(target.size, &target.sha256),
        );
        Ok(PresignedRequest {
            url: format!(
                "{}{path}?size={}&sha256={}&expires={expires}&sig={sig}",
                self.public_url,
                target.size,
                target.sha256.to_hex()
            ),
            method: "PUT",
            // Nothing to pin in a header: the URL binds length and digest, so a browser
            // sends the part with no header of its own.
            headers: Vec::new(),
            form_fields: Vec::new(),
        })
    }

    async fn put_part(
        &self,
        target: PartTarget<'_>,
        body: ByteStream,
    ) -> Result<StoredPart, BlobError> {
        self.multipart.put_part(target, body).await
    }

    async fn list_parts(
        &self,
        _key: &str,
        multipart_id: &str,
    ) -> Result<Option<Vec<StoredPart>>, BlobError> {
        self.multipart.list(multipart_id).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        multipart_id: &str,
        parts: &[StoredPart],
    ) -> Result<(), BlobError> {
        let path = self.path_of(key)?;
        if let Some(parent) = path.parent() {
            self.space_dir(parent).await?;
        }
        if self.multipart.complete(multipart_id, parts, &path).await? {
            return Ok(());
        }
        // Completed already (a repeated commit), or aborted.
        match fs::metadata(&path).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(BlobError::NoSuchUpload),
            Err(e) => Err(anyhow::Error::new(e).context("cannot stat blob").into()),
        }
    }

    async fn abort_multipart(&self, _key: &str, multipart_id: &str) -> Result<(), BlobError> {
        self.multipart.abort(multipart_id).await
    }

    async fn digest(&self, key: &str) -> Result<Option<BlobInfo>, BlobError> {
        // The sidecar holds the digest computed when the object was written.
        self.head(key).await
    }
}

pub(super) async fn write_sidecar(path: &Path, sidecar: &Sidecar) -> Result<(), BlobError> {
    let target = LocalBlobStore::sidecar_of(path);
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let json = serde_json::to_vec(sidecar).context("cannot encode sidecar")?;
    let written = async {
        let mut file = private_file(&tmp).await?;
        file.write_all(&json).await?;
        file.flush().await?;
        file.sync_all().await?;
        fs::rename(&tmp, &target).await
    }
    .await;
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp).await;
        return Err(BlobError::write(e, "cannot write sidecar"));
    }
    Ok(())
}

/// A new file only its owner may read or write.
pub(super) async fn private_file(path: &Path) -> std::io::Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
}

pub(super) async fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    let synced = async { File::open(dir).await?.sync_all().await }.await;
    synced.map_err(|e| BlobError::write(e, "cannot fsync blob folder"))
}

/// The SHA-256 of a file, read on a blocking thread in 1 MiB reads (a tokio read per
/// 64 KiB made hashing a GiB take twice as long as the hashing itself).
pub(super) async fn hash_file(path: &Path) -> Result<Sha256, BlobError> {
    let path = path.to_owned();
    let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<Sha256> {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Sha256(hasher.finalize().into()))
    })
    .await
    .map_err(|e| BlobError::Other(anyhow::anyhow!("hashing stopped: {e}")))?;
    hashed.map_err(|e| anyhow::Error::new(e).context("cannot read blob").into())
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
