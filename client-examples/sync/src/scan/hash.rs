//! Hashing files that may be changing under us.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::tree::{Fingerprint, now_ns};

/// The outcome of hashing a file.
#[derive(Debug)]
pub enum Hashed {
    Done(String),
    /// The file is being written (it changed while it was read, or very recently).
    Busy,
    /// It cannot be read.
    Failed(std::io::Error),
}

/// Hashes the file at `path` that looked like `seen`, unless it changed within `settle`
/// or while it was read.
pub fn hash_stable(path: &Path, seen: &Fingerprint, settle: Duration) -> Hashed {
    if recently_changed(seen, settle) {
        return Hashed::Busy;
    }
    let sha256 = match sha256_file(path) {
        Ok(sha256) => sha256,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Hashed::Busy,
        Err(e) => return Hashed::Failed(e),
    };
    match std::fs::symlink_metadata(path) {
        Ok(after) if Fingerprint::of(&after) == *seen => Hashed::Done(sha256),
        Ok(_) => Hashed::Busy,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Hashed::Busy,
        Err(e) => Hashed::Failed(e),
    }
}

/// Whether the file's bytes were modified less than `settle` ago (a rename or a chmod
/// changes nothing a reader sees, so `ctime` does not count).
pub fn recently_changed(seen: &Fingerprint, settle: Duration) -> bool {
    let settle = i64::try_from(settle.as_nanos()).unwrap_or(i64::MAX);
    now_ns().saturating_sub(seen.mtime_ns) < settle
}

/// The hex SHA-256 of a file's bytes.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
