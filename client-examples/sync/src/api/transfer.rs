//! Moving bytes: a download into a partial file (resumed with `Range`, hashed as it
//! lands) and an upload streamed from disk to the ticket's URL.

use std::path::Path;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Api, ApiError, Ticket, describe};

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The network, or the other end, failed; trying again later may work.
    #[error("the transfer was interrupted: {0}")]
    Interrupted(String),
    /// The URL was refused (expired, or signed for other bytes); `code` is the server's
    /// error code when it sent one.
    #[error("the storage refused the transfer (HTTP {status}{}): {message}",
        code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Refused {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// Reading or writing the local file failed.
    #[error("{0}")]
    Local(#[from] std::io::Error),
    /// A call to the API on the way (a multipart upload's status or part URLs) failed.
    #[error("{0}")]
    Api(#[from] ApiError),
}

/// Fetches `url` into `part`, continuing after the bytes already there; returns the
/// SHA-256 of the whole file. The file is flushed and synced before this returns.
pub async fn download(
    api: &Api,
    url: &str,
    part: &Path,
    size: u64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<String, TransferError> {
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(part)
        .await?;
    let mut have = file.metadata().await?.len();
    if have > size {
        file.set_len(0).await?;
        have = 0;
    }
    // What is already there counts: hash it, then ask for the rest.
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0;
    while read < have {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        read += n as u64;
    }
    progress(have);
    if have < size {
        let mut req = api.transfers().get(url);
        if have > 0 {
            req = req.header("range", format!("bytes={have}-"));
        }
        let res = req
            .send()
            .await
            .map_err(|e| TransferError::Interrupted(describe(&e.without_url())))?;
        match res.status().as_u16() {
            206 if have > 0 => {}
            200 => {
                // The whole body: start over.
                if have > 0 {
                    file.set_len(0).await?;
                    hasher = Sha256::new();
                    progress(0);
                }
            }
            status => return Err(refused(status, res).await),
        }
        use tokio::io::AsyncSeekExt;
        file.seek(std::io::SeekFrom::End(0)).await?;
        let mut done = file.metadata().await?.len();
        let mut body = res.bytes_stream();
        // The body comes in small chunks; each tokio file write is a hop to a blocking
        // thread, so gather a MiB before writing.
        let mut out = tokio::io::BufWriter::with_capacity(1024 * 1024, &mut file);
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| TransferError::Interrupted(describe(&e.without_url())))?;
            out.write_all(&chunk).await?;
            hasher.update(&chunk);
            done += chunk.len() as u64;
            progress(done);
        }
        out.flush().await?;
    }
    // tokio's sync_all does not flush its buffer: flush first, or a write error is lost.
    file.flush().await?;
    file.sync_all().await?;
    Ok(hex::encode(hasher.finalize()))
}

/// Sends the file at `path` (`size` bytes) to the ticket's URL.
pub async fn upload(
    api: &Api,
    ticket: &Ticket,
    path: &Path,
    size: u64,
    progress: std::sync::Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<(), TransferError> {
    if !ticket.method.eq_ignore_ascii_case("PUT") {
        return Err(TransferError::Refused {
            status: 0,
            code: None,
            message: format!(
                "this client sends PUT uploads; the server asked for {}",
                ticket.method
            ),
        });
    }
    let file = tokio::fs::File::open(path).await?;
    let mut sent = 0u64;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
        if let Ok(bytes) = &chunk {
            sent += bytes.len() as u64;
            progress(sent);
        }
        chunk
    });
    let mut req = api
        .transfers()
        .put(&ticket.url)
        .header("content-length", size)
        .body(reqwest::Body::wrap_stream(stream));
    for h in &ticket.headers {
        req = req.header(&h.name, &h.value);
    }
    let res = req
        .send()
        .await
        .map_err(|e| TransferError::Interrupted(describe(&e.without_url())))?;
    match res.status().as_u16() {
        200..=299 => Ok(()),
        // A write-once URL used again: the bytes are already stored.
        412 => Ok(()),
        status => Err(refused(status, res).await),
    }
}

/// Parts sent at once.
const PARALLEL_PARTS: usize = 4;
/// Part URLs asked for in one request.
const URL_BATCH: usize = 16;
/// Sends of one part before giving up on it for this pass.
const PART_ATTEMPTS: u32 = 3;

/// Sends the parts of the file at `path` (`size` bytes) that the server does not hold
/// yet: all of them for a new upload, only the missing ones for one resumed after a
/// crash or an interruption. Returns how many parts the server already had. Parts go
/// [`PARALLEL_PARTS`] at a time, each read into memory (a part is at most
/// `size / 10,000` rounded up, 8 MiB for any file up to 78 GiB), hashed for its URL,
/// then sent; a part interrupted or whose URL expired is sent again.
pub async fn upload_multipart(
    api: &Api,
    ticket: &Ticket,
    path: &Path,
    size: u64,
    progress: std::sync::Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<u32, TransferError> {
    let (Some(part_size), Some(part_count)) = (ticket.part_size, ticket.part_count) else {
        return Err(TransferError::Refused {
            status: 0,
            code: None,
            message: "a multipart ticket without its parts".into(),
        });
    };
    let status = api.upload_status(ticket).await?;
    if status.state != "PENDING" {
        return Err(TransferError::Refused {
            status: 0,
            code: Some("UPLOAD_EXPIRED".into()),
            message: format!("the upload is {}", status.state.to_lowercase()),
        });
    }
    let missing = status.missing_parts;
    let had = part_count - missing.len() as u32;
    let part_len = |n: u32| part_size.min(size - u64::from(n - 1) * part_size);
    let done =
        std::sync::atomic::AtomicU64::new(size - missing.iter().map(|&n| part_len(n)).sum::<u64>());
    progress(done.load(std::sync::atomic::Ordering::Relaxed));
    for batch in missing.chunks(URL_BATCH) {
        let mut digests = Vec::with_capacity(batch.len());
        for &n in batch {
            let bytes = read_part(path, u64::from(n - 1) * part_size, part_len(n)).await?;
            digests.push((n, hex::encode(Sha256::digest(&bytes))));
        }
        let urls = api.upload_part_urls(ticket, &digests).await?;
        let sends = urls.into_iter().map(|url| {
            let digest = digests
                .iter()
                .find(|(n, _)| *n == url.part_number)
                .map(|(_, d)| d.clone());
            let done = &done;
            let progress = progress.clone();
            async move {
                let n = url.part_number;
                let len = part_len(n);
                send_part(
                    api,
                    ticket,
                    path,
                    url,
                    digest,
                    u64::from(n - 1) * part_size,
                    len,
                )
                .await?;
                let total = done.fetch_add(len, std::sync::atomic::Ordering::Relaxed) + len;
                progress(total);
                Ok::<(), TransferError>(())
            }
        });
        let mut sends = futures::stream::iter(sends).buffer_unordered(PARALLEL_PARTS);
        while let Some(sent) = sends.next().await {
            sent?;
        }
    }
    Ok(had)
}

/// Sends one part, again when interrupted or when its URL has expired.
async fn send_part(
    api: &Api,
    ticket: &Ticket,
    path: &Path,
    mut url: super::ops::PartUrl,
    digest: Option<String>,
    offset: u64,
    len: u64,
) -> Result<(), TransferError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let bytes = read_part(path, offset, len).await?;
        let mut req = api
            .transfers()
            .put(&url.url)
            .header("content-length", len)
            .body(bytes);
        for h in &url.headers {
            req = req.header(&h.name, &h.value);
        }
        let failure = match req.send().await {
            Ok(res) if res.status().is_success() => return Ok(()),
            Ok(res) => refused(res.status().as_u16(), res).await,
            Err(e) => TransferError::Interrupted(describe(&e.without_url())),
        };
        if attempt >= PART_ATTEMPTS {
            return Err(failure);
        }
        match &failure {
            TransferError::Interrupted(_) => {}
            // The URL expired (a long queue of parts behind a slow link): a fresh one.
            TransferError::Refused { status: 403, .. } => {
                let digest = digest.clone().unwrap_or_default();
                let fresh = api
                    .upload_part_urls(ticket, &[(url.part_number, digest)])
                    .await?;
                url = fresh.into_iter().next().ok_or(failure)?;
            }
            _ => return Err(failure),
        }
        tokio::time::sleep(std::time::Duration::from_millis(250 << attempt)).await;
    }
}

async fn read_part(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, TransferError> {
    use tokio::io::AsyncSeekExt;
    let mut file = tokio::fs::File::open(path).await?;
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut bytes = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
    file.read_exact(&mut bytes).await?;
    Ok(bytes)
}

async fn refused(status: u16, res: reqwest::Response) -> TransferError {
    let body = res.text().await.unwrap_or_default();
    // The embedded backend answers GraphQL-shaped errors; S3 answers XML.
    let json: Option<serde_json::Value> = serde_json::from_str(&body).ok();
    let error = json.as_ref().map(|j| &j["errors"][0]);
    let code = error
        .and_then(|e| e["extensions"]["code"].as_str())
        .map(str::to_owned)
        .or_else(|| xml_tag(&body, "Code"));
    let message = error
        .and_then(|e| e["message"].as_str())
        .map(str::to_owned)
        .or_else(|| xml_tag(&body, "Message"))
        .unwrap_or_else(|| body.chars().take(200).collect());
    TransferError::Refused {
        status,
        code,
        message,
    }
}

fn xml_tag(body: &str, tag: &str) -> Option<String> {
    let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].to_owned())
}
