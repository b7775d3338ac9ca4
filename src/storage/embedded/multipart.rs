//! Multipart uploads on the local folder. An upload is a folder
//! `multipart/<id>/` holding `data`, a sparse file of the object's final size into which
//! each part is written at its offset (never joined by copying), and `parts`, an
//! append-only log of the parts stored: `<number> <size> <sha256>` once a part's bytes are
//! fsynced, `<number> -` before a stored part is written again. The last line of a part
//! is the truth (a line that does not parse strikes its part), so a crash in the middle
//! of a part leaves it missing, never half-written and counted. Completing hashes `data`, writes the sidecar and renames the
//! file into `blobs/`: the object appears whole or not at all.

use std::collections::{BTreeMap, HashMap};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures::StreamExt;
use sha2::Digest;
use tokio::fs::{self, File};
use tokio::io::{AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio::sync::{Mutex as AsyncMutex, RwLock};

use crate::domain::Sha256;
use crate::storage::{BlobError, ByteStream, PartTarget, StoredPart};

/// The write buffer of a part: few, large writes to the page cache.
const WRITE_BUFFER: usize = 1 << 20;

pub(super) struct Multiparts {
    root: PathBuf,
    /// Per upload: parts hold it shared while they write, completing and aborting hold
    /// it alone, so no part writes into a file that has become an object; and per part
    /// a lock, so two sends of one part never interleave their bytes.
    open: Mutex<HashMap<String, Arc<Upload>>>,
}

#[derive(Default)]
struct Upload {
    whole: RwLock<()>,
    parts: Mutex<HashMap<u32, Arc<AsyncMutex<()>>>>,
}

impl Upload {
    fn part(&self, number: u32) -> Arc<AsyncMutex<()>> {
        self.parts
            .lock()
            .expect("part locks poisoned")
            .entry(number)
            .or_default()
            .clone()
    }
}

impl Multiparts {
    pub(super) fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let root = data_dir.join("multipart");
        super::private_dir(&root).context("cannot create multipart folder")?;
        Ok(Self {
            root,
            open: Mutex::default(),
        })
    }

    /// The ids of the multipart uploads on disk (for the clean-up at start-up).
    pub(super) fn ids_on_disk(&self) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.root).context("cannot list multipart folder")? {
            let entry = entry.context("cannot list multipart folder")?;
            if let Some(name) = entry.file_name().to_str() {
                ids.push(name.to_owned());
            }
        }
        Ok(ids)
    }

    /// Ids are made here (UUIDs); anything else is refused before it can name a path.
    fn dir_of(&self, id: &str) -> Result<PathBuf, BlobError> {
        uuid::Uuid::try_parse(id)
            .map_err(|_| BlobError::Other(anyhow::anyhow!("invalid multipart id {id:?}")))?;
        Ok(self.root.join(id))
    }

    fn upload(&self, id: &str) -> Arc<Upload> {
        self.open
            .lock()
            .expect("multipart locks poisoned")
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    fn forget(&self, id: &str) {
        self.open
            .lock()
            .expect("multipart locks poisoned")
            .remove(id);
    }

    pub(super) async fn create(&self, size: u64) -> Result<String, BlobError> {
        let id = uuid::Uuid::new_v4().to_string();
        let dir = self.dir_of(&id)?;
        let mut builder = fs::DirBuilder::new();
        builder.mode(0o700);
        builder
            .create(&dir)
            .await
            .map_err(|e| BlobError::write(e, "cannot create multipart folder"))?;
        let made = async {
            let data = super::blobs::private_file(&dir.join("data")).await?;
            // Sparse: no block is written until a part lands there.
            data.set_len(size).await?;
            data.sync_all().await?;
            super::blobs::private_file(&dir.join("parts"))
                .await?
                .sync_all()
                .await?;
            File::open(&dir).await?.sync_all().await?;
            File::open(&self.root).await?.sync_all().await
        }
        .await;
        if let Err(e) = made {
            let _ = fs::remove_dir_all(&dir).await;
            // Larger than this file system holds a file: the size's fault, not a full disk.
            if e.kind() == std::io::ErrorKind::FileTooLarge {
                return Err(BlobError::TooLarge);
            }
            return Err(BlobError::write(e, "cannot create multipart upload"));
        }
        Ok(id)
    }

    pub(super) async fn put_part(
        &self,
        target: PartTarget<'_>,
        mut body: ByteStream,
    ) -> Result<StoredPart, BlobError> {
        let dir = self.dir_of(target.multipart_id)?;
        let upload = self.upload(target.multipart_id);
        let _whole = upload.whole.read().await;
        let part = upload.part(target.number);
        let _part = part.lock().await;
        let file = match fs::OpenOptions::new()
            .write(true)
            .open(dir.join("data"))
            .await
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NoSuchUpload);
            }
            Err(e) => return Err(BlobError::write(e, "cannot open multipart data")),
        };
        // The part stops counting before a byte of it changes: a crash or a failure from
        // here on leaves it missing, to be sent again.
        if read_log(&dir).await?.contains_key(&target.number) {
            append_log(&dir, &format!("{} -", target.number)).await?;
        }
        let mut file = BufWriter::with_capacity(WRITE_BUFFER, file);
        let stored = async {
            file.seek(SeekFrom::Start(target.offset))
                .await
                .map_err(|e| BlobError::write(e, "cannot seek multipart data"))?;
            let mut hasher = sha2::Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| BlobError::BodyInterrupted(e.to_string()))?;
                size += chunk.len() as u64;
                if size > target.size {
                    return Err(BlobError::TooLarge);
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| BlobError::write(e, "cannot write multipart data"))?;
            }
            if size < target.size {
                return Err(BlobError::BodyInterrupted(format!(
                    "part {} ended after {size} of its {} bytes",
                    target.number, target.size
                )));
            }
            if Sha256(hasher.finalize().into()) != target.sha256 {
                return Err(BlobError::ChecksumMismatch);
            }
            // tokio's `sync_all` does not flush its write buffer: flush first, or the
            // error of the last write (a full disk) would be lost.
            file.flush()
                .await
                .map_err(|e| BlobError::write(e, "cannot write multipart data"))?;
            file.get_ref()
                .sync_data()
                .await
                .map_err(|e| BlobError::write(e, "cannot fsync multipart data"))?;
            Ok(())
        }
        .await;
        if stored.is_err() {
            // A tokio file finishes a write on a blocking thread after `write` returned:
            // wait for it (dropping what is still buffered) before the locks go, or those
            // bytes could land after a completion hashed the file. The part stays
            // missing (an earlier copy of it was struck from the log above).
            let _ = file.into_inner().flush().await;
        }
        stored?;
        append_log(
            &dir,
            &format!(
                "{} {} {}",
                target.number,
                target.size,
                target.sha256.to_hex()
            ),
        )
        .await?;
        Ok(StoredPart {
            number: target.number,
            size: target.size,
            sha256: Some(target.sha256),
            etag: None,
        })
    }

    pub(super) async fn list(&self, id: &str) -> Result<Option<Vec<StoredPart>>, BlobError> {
        let dir = self.dir_of(id)?;
        match fs::metadata(&dir).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context("cannot stat multipart")
                    .into());
            }
        }
        Ok(Some(read_log(&dir).await?.into_values().collect()))
    }

    /// Hashes the data file and moves it to `target` (a path in `blobs/`, whose folder
    /// exists) with its sidecar, once no part is being written, if the parts are still
    /// `parts`. `false` when there is no such upload.
    pub(super) async fn complete(
        &self,
        id: &str,
        parts: &[StoredPart],
        target: &Path,
    ) -> Result<bool, BlobError> {
        let dir = self.dir_of(id)?;
        let upload = self.upload(id);
        let whole = upload.whole.write().await;
        let data = dir.join("data");
        let meta = match fs::metadata(&data).await {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context("cannot stat multipart")
                    .into());
            }
        };
        // The parts as they are now, with no part being written: a part sent again (or
        // struck by a failed send) since the caller listed them makes this another
        // object than the one the caller checked.
        let now: Vec<StoredPart> = read_log(&dir).await?.into_values().collect();
        if now != parts {
            return Err(BlobError::PartsChanged);
        }
        let sidecar = super::blobs::Sidecar {
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
            size: meta.len(),
            sha256: super::blobs::hash_file(&data).await?.to_hex(),
        };
        // As for a PUT: the sidecar first (the inode stays the same across the rename).
        super::blobs::write_sidecar(target, &sidecar).await?;
        if let Err(e) = fs::rename(&data, target).await {
            let _ = fs::remove_file(super::blobs::LocalBlobStore::sidecar_of(target)).await;
            return Err(BlobError::write(e, "cannot publish blob"));
        }
        if let Some(parent) = target.parent() {
            super::blobs::sync_dir(parent).await?;
        }
        self.remove(&dir).await?;
        drop(whole);
        self.forget(id);
        Ok(true)
    }

    pub(super) async fn abort(&self, id: &str) -> Result<(), BlobError> {
        let dir = self.dir_of(id)?;
        let upload = self.upload(id);
        let _whole = upload.whole.write().await;
        self.remove(&dir).await?;
        drop(_whole);
        self.forget(id);
        Ok(())
    }

    /// Removes a multipart upload's folder (already gone is fine).
    pub(super) async fn remove(&self, dir: &Path) -> Result<(), BlobError> {
        match fs::remove_dir_all(dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(anyhow::Error::new(e)
                .context("cannot remove multipart upload")
                .into()),
        }
    }

    /// Removes the uploads on disk that `keep` does not name (start-up clean-up: a crash
    /// between creating one and recording it leaves an orphan).
    pub(super) async fn remove_all_but(&self, keep: &std::collections::HashSet<String>) {
        let Ok(ids) = self.ids_on_disk() else {
            return;
        };
        for id in ids.into_iter().filter(|id| !keep.contains(id)) {
            let path = self.root.join(&id);
            if let Err(e) = self.remove(&path).await {
                tracing::warn!(multipart = %id, error = ?e, "cannot remove an orphaned multipart upload");
            }
        }
    }
}

/// The parts the log says are stored: the last line of each part wins.
async fn read_log(dir: &Path) -> Result<BTreeMap<u32, StoredPart>, BlobError> {
    let raw = match fs::read(dir.join("parts")).await {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BlobError::NoSuchUpload),
        Err(e) => return Err(anyhow::Error::new(e).context("cannot read part log").into()),
    };
    let mut parts = BTreeMap::new();
    // A line cut short by a crash has no newline: it never counts.
    for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Some(line) = std::str::from_utf8(line).ok() else {
            continue;
        };
        let mut fields = line.split(' ');
        let Some(number) = fields.next().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let record = match (fields.next(), fields.next(), fields.next()) {
            (Some(size), Some(sha), None) => size.parse().ok().zip(Sha256::parse(sha).ok()),
            _ => None,
        };
        match record {
            Some((size, sha256)) => {
                parts.insert(
                    number,
                    StoredPart {
                        number,
                        size,
                        sha256: Some(sha256),
                        etag: None,
                    },
                );
            }
            // A strike, or a line a crash cut short: the part does not count.
            None => {
                parts.remove(&number);
            }
        }
    }
    if !raw.ends_with(b"\n")
        && let Some(last) = raw.rsplit(|b| *b == b'\n').next()
        && let Some(number) = std::str::from_utf8(last)
            .ok()
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse::<u32>().ok())
    {
        // The cut line may have been a strike-out of this part: it counts as one.
        parts.remove(&number);
    }
    Ok(parts)
}

/// Appends a line to the part log, durably. Each line starts with a newline too, so one
/// cut short by a crash never runs into the next.
async fn append_log(dir: &Path, line: &str) -> Result<(), BlobError> {
    let appended = async {
        let mut log = fs::OpenOptions::new()
            .append(true)
            .open(dir.join("parts"))
            .await?;
        log.write_all(format!("\n{line}\n").as_bytes()).await?;
        log.flush().await?;
        log.sync_data().await
    }
    .await;
    appended.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BlobError::NoSuchUpload,
        _ => BlobError::write(e, "cannot write part log"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(n: u8) -> String {
        Sha256([n; 32]).to_hex()
    }

    async fn parts_of(log: &str) -> Vec<(u32, u64)> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("parts"), log).unwrap();
        read_log(dir.path())
            .await
            .unwrap()
            .into_values()
            .map(|p| (p.number, p.size))
            .collect()
    }

    #[tokio::test]
    async fn the_last_line_of_a_part_counts_and_a_cut_line_never_does() {
        let log = format!("\n1 8 {}\n\n2 8 {}\n\n3 5 {}\n", sha(1), sha(2), sha(3));
        assert_eq!(parts_of(&log).await, [(1, 8), (2, 8), (3, 5)]);
        // Struck before it was written again, then recorded again.
        let again = format!("{log}\n2 -\n\n2 8 {}\n", sha(9));
        assert_eq!(parts_of(&again).await, [(1, 8), (2, 8), (3, 5)]);
        // A crash after the strike: part 2 is missing.
        assert_eq!(parts_of(&format!("{log}\n2 -\n")).await, [(1, 8), (3, 5)]);
        // A record cut short by a crash does not count, nor does the part it names...
        let cut = format!("{log}\n2 -\n\n2 8 {}", &sha(9)[..20]);
        assert_eq!(parts_of(&cut).await, [(1, 8), (3, 5)]);
        // ...and the next record, on a line of its own, is read whole.
        let next = format!("{cut}\n4 8 {}\n", sha(4));
        assert_eq!(parts_of(&next).await, [(1, 8), (3, 5), (4, 8)]);
        // A cut strike strikes all the same.
        let cut_strike = format!("{log}\n3 \n1 8 {}\n", sha(1));
        assert_eq!(parts_of(&cut_strike).await, [(1, 8), (2, 8)]);
    }
}
