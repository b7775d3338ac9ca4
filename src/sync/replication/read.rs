//! Reads that fall over: a download goes to the primary store while its copy is intact,
//! else to a store whose copy is `OK`; a read that finds the primary's object missing or
//! corrupt queues its repair.

use bytes::Bytes;
use futures::StreamExt;
use sha2::Digest;

use crate::domain::{Content, Millis, Sha256, SpaceId, StoreId, served_type};
use crate::storage::{BlobError, BlobRead, ByteStream, RangeRequest, Verdict};
use crate::sync::{Result, SyncService};

impl SyncService {
    /// A download URL for `content` of `space`: the primary's, unless the primary lacks
    /// the object (its copy is not `OK`), then the first store whose copy is.
    pub(in crate::sync) async fn presign_content(
        &self,
        space: SpaceId,
        content: &Content,
        expires_at: Millis,
    ) -> Result<String> {
        let replication = self.replication();
        let served = served_type(content.content_type.as_deref());
        if replication.active() && replication.is_degraded(&content.blob_key) {
            let copies = self
                .inner
                .store
                .copies
                .copies_of(space, &content.blob_key)
                .await?;
            let primary_ok = copies
                .iter()
                .any(|c| c.store.is_primary() && c.status == crate::domain::CopyStatus::Ok);
            if !primary_ok {
                for copy in copies
                    .iter()
                    .filter(|c| !c.store.is_primary() && c.status == crate::domain::CopyStatus::Ok)
                {
                    if let Some(store) = replication.store(&copy.store) {
                        return Ok(store
                            .presign_get(&content.blob_key, Some(&served), expires_at)
                            .await?);
                    }
                }
            }
        }
        Ok(self
            .inner
            .store
            .blobs
            .presign_get(&content.blob_key, Some(&served), expires_at)
            .await?)
    }

    /// Reads an object for the embedded blob endpoint, falling over to another store when
    /// the primary's object is missing or (whole reads) does not match its checksum.
    /// Whole reads up to `verify_reads_below` are hashed before a byte is sent; larger
    /// ones are hashed on the way and end in an error, never a complete-looking body, if
    /// they do not match. Ranges are served from the primary unchecked while it has the
    /// object.
    pub async fn open_content(
        &self,
        key: &str,
        range: Option<RangeRequest>,
    ) -> std::result::Result<Option<BlobRead>, BlobError> {
        let replication = self.replication();
        let primary = &self.inner.store.blobs;
        let space = key
            .split('/')
            .next()
            .and_then(|s| s.parse::<SpaceId>().ok());
        let (true, Some(space)) = (replication.active(), space) else {
            return primary.get(key, range).await;
        };
        let copies = self
            .inner
            .store
            .copies
            .copies_of(space, key)
            .await
            .map_err(|e| BlobError::Other(anyhow::anyhow!("cannot read the copies: {e:#}")))?;
        let Some(own) = copies.iter().find(|c| c.store.is_primary()) else {
            // Not replicated: nothing to fall over to.
            return primary.get(key, range).await;
        };
        if own.status == crate::domain::CopyStatus::Ok {
            match primary.get(key, range).await? {
                Some(read) if range.is_some() => return Ok(Some(read)),
                Some(read) => {
                    if let Some(read) = self.verified(read, space, &own.content).await? {
                        return Ok(Some(read));
                    }
                }
                None => {
                    self.found_bad(space, key, &StoreId::primary(), Verdict::Missing)
                        .await
                }
            }
        }
        for copy in copies
            .iter()
            .filter(|c| !c.store.is_primary() && c.status == crate::domain::CopyStatus::Ok)
        {
            let Some(store) = replication.store(&copy.store) else {
                continue;
            };
            match store.get(key, range).await {
                Ok(Some(read)) => {
                    tracing::info!(%key, store = %copy.store, "read served by a replica store");
                    return Ok(Some(read));
                }
                Ok(None) => {
                    self.found_bad(space, key, &copy.store, Verdict::Missing)
                        .await
                }
                Err(BlobError::RangeNotSatisfiable { total_size }) => {
                    return Err(BlobError::RangeNotSatisfiable { total_size });
                }
                Err(e) => {
                    tracing::warn!(%key, store = %copy.store, error = %format!("{e:#}"), "replica read failed")
                }
            }
        }
        Err(BlobError::Unavailable)
    }

    /// `read` checked against `content`: small ones hashed whole first (`None` when
    /// corrupt, its repair queued), larger ones as they stream.
    async fn verified(
        &self,
        read: BlobRead,
        space: SpaceId,
        content: &Content,
    ) -> std::result::Result<Option<BlobRead>, BlobError> {
        let key = content.blob_key.clone();
        if read.total_size != content.size {
            self.found_bad(space, &key, &StoreId::primary(), Verdict::Corrupt)
                .await;
            return Ok(None);
        }
        // Held whole only within the budget of bytes all such reads share; past it (many
        // at once), hashed as it streams instead.
        let budget = u32::try_from(read.total_size)
            .ok()
            .filter(|_| read.total_size <= self.replication().settings.verify_reads_below)
            .and_then(|n| {
                self.replication()
                    .read_budget
                    .clone()
                    .try_acquire_many_owned(n.max(1))
                    .ok()
            });
        if let Some(held) = budget {
            let mut bytes = Vec::with_capacity(read.total_size as usize);
            let mut stream = read.stream;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| BlobError::Other(e.into()))?;
                if (bytes.len() + chunk.len()) as u64 > content.size {
                    break;
                }
                bytes.extend_from_slice(&chunk);
            }
            if bytes.len() as u64 != content.size
                || Sha256(sha2::Sha256::digest(&bytes).into()) != content.sha256
            {
                self.found_bad(space, &key, &StoreId::primary(), Verdict::Corrupt)
                    .await;
                return Ok(None);
            }
            // The budget is given back when the body is dropped (sent, or the client
            // gone), not when it is handed over.
            let body = Bytes::from_owner(Held {
                bytes,
                _budget: held,
            });
            let stream: ByteStream = Box::pin(futures::stream::once(async move { Ok(body) }));
            return Ok(Some(BlobRead {
                total_size: read.total_size,
                range: None,
                stream,
            }));
        }
        let this = self.clone();
        let on_corrupt = move || {
            tokio::spawn(async move {
                this.found_bad(space, &key, &StoreId::primary(), Verdict::Corrupt)
                    .await;
            });
        };
        Ok(Some(BlobRead {
            total_size: read.total_size,
            range: None,
            stream: verifying(read.stream, content.sha256, on_corrupt),
        }))
    }
}

/// Bytes held in memory together with their share of the read budget.
struct Held {
    bytes: Vec<u8>,
    _budget: tokio::sync::OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// `stream`, hashed as it goes, holding back its last chunk until the whole is known to
/// match `expected`: a mismatch ends it with an error instead of that chunk.
fn verifying(
    stream: ByteStream,
    expected: Sha256,
    on_corrupt: impl FnOnce() + Send + 'static,
) -> ByteStream {
    struct State {
        inner: ByteStream,
        hasher: sha2::Sha256,
        held: Option<Bytes>,
        on_corrupt: Option<Box<dyn FnOnce() + Send>>,
        finished: bool,
    }
    let state = State {
        inner: stream,
        hasher: sha2::Sha256::new(),
        held: None,
        on_corrupt: Some(Box::new(on_corrupt)),
        finished: false,
    };
    Box::pin(futures::stream::unfold(state, move |mut st| async move {
        if st.finished {
            return None;
        }
        loop {
            match st.inner.next().await {
                Some(Ok(chunk)) => {
                    st.hasher.update(&chunk);
                    if let Some(previous) = st.held.replace(chunk) {
                        return Some((Ok(previous), st));
                    }
                }
                Some(Err(e)) => {
                    st.finished = true;
                    return Some((Err(e), st));
                }
                None => {
                    st.finished = true;
                    let digest = Sha256(std::mem::take(&mut st.hasher).finalize().into());
                    if digest == expected {
                        let last = st.held.take()?;
                        return Some((Ok(last), st));
                    }
                    if let Some(report) = st.on_corrupt.take() {
                        report();
                    }
                    return Some((
                        Err(std::io::Error::other(
                            "the stored object does not match its checksum",
                        )),
                        st,
                    ));
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<std::io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures::stream::iter(items))
    }

    #[tokio::test]
    async fn a_matching_stream_is_passed_through_whole() {
        let expected = Sha256(sha2::Sha256::digest(b"hello world").into());
        let out: Vec<_> = verifying(chunks(&[b"hello", b" ", b"world"]), expected, || {})
            .collect()
            .await;
        let bytes: Vec<u8> = out.into_iter().flat_map(|c| c.unwrap().to_vec()).collect();
        assert_eq!(bytes, b"hello world");
    }

    #[tokio::test]
    async fn a_corrupt_stream_ends_in_an_error_before_its_last_chunk() {
        let expected = Sha256(sha2::Sha256::digest(b"hello world").into());
        let reported = Arc::new(AtomicBool::new(false));
        let flag = reported.clone();
        let out: Vec<_> = verifying(chunks(&[b"hello", b" ", b"wXrld"]), expected, move || {
            flag.store(true, Ordering::SeqCst)
        })
        .collect()
        .await;
        assert_eq!(
            out.len(),
            3,
            "two chunks, then the error instead of the third"
        );
        assert!(out[2].is_err());
        assert!(reported.load(Ordering::SeqCst));
    }
}
