//! The entries of the three trees.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::paths::RelPath;

/// A file id as the server names it.
pub type FileId = String;

/// A file as the server holds it (its latest state, tombstones included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    pub id: FileId,
    pub path: RelPath,
    pub version: i64,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    pub size: u64,
    pub deleted: bool,
    /// A short-lived URL to the content, when the server sent one.
    pub download_url: Option<String>,
}

/// What a file on disk looked like when it was last seen: enough to tell, without
/// reading it, that it has not changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Fingerprint {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
}

impl Fingerprint {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Self {
                size: meta.len(),
                mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
                inode: meta.ino(),
            }
        }
        #[cfg(not(unix))]
        {
            let mtime = meta.modified().map(nanos).unwrap_or_default();
            Self {
                size: meta.len(),
                mtime_ns: mtime,
                ctime_ns: mtime,
                inode: 0,
            }
        }
    }

    /// The same file with the same bytes, as far as an executor about to act on it can
    /// tell (a rename changes `ctime` but not the content, so it is left out).
    pub fn same_file(&self, other: &Fingerprint) -> bool {
        self.size == other.size && self.mtime_ns == other.mtime_ns && self.inode == other.inode
    }
}

/// A file in the folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalFile {
    pub path: RelPath,
    pub fingerprint: Fingerprint,
    pub sha256: String,
}

/// What both sides last agreed on for a file: its remote identity, and how its local
/// copy looked when that agreement was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BaseFile {
    pub id: FileId,
    pub path: RelPath,
    pub version: i64,
    pub sha256: String,
    pub size: u64,
    pub local: Fingerprint,
    /// When `local` was recorded (Unix nanoseconds).
    pub recorded_ns: i64,
}

impl BaseFile {
    /// Whether a file on disk with `seen` can be taken to still hold this content without
    /// reading it. A file modified within the clock tick in which it was recorded could
    /// keep its timestamps, so such a fingerprint is not trusted (git's "racy clean").
    pub fn vouches_for(&self, seen: &Fingerprint) -> bool {
        const TICK_NS: i64 = 20_000_000;
        *seen == self.local && seen.mtime_ns + TICK_NS < self.recorded_ns
    }

    /// The remote side of this agreement, as a remote file.
    pub fn as_remote(&self) -> RemoteFile {
        RemoteFile {
            id: self.id.clone(),
            path: self.path.clone(),
            version: self.version,
            sha256: self.sha256.clone(),
            size: self.size,
            deleted: false,
            download_url: None,
        }
    }

    /// The local side of this agreement, as a local file.
    pub fn as_local(&self) -> LocalFile {
        LocalFile {
            path: self.path.clone(),
            fingerprint: self.local,
            sha256: self.sha256.clone(),
        }
    }
}

/// Nanoseconds since the Unix epoch.
pub fn nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    nanos(SystemTime::now())
}

/// The hex SHA-256 of no bytes.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
