//! File system steps, each checking first that the file is as the plan saw it.

use std::io;
use std::path::{Path, PathBuf};

use crate::paths::RelPath;
use crate::tree::Fingerprint;

/// What is at a path now.
pub enum Found {
    Missing,
    /// A regular file, as the plan expected it.
    Expected,
    /// Something else: the file changed since the scan, or is not a file.
    Other,
}

pub fn check(path: &Path, expect: &Fingerprint) -> io::Result<Found> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() && Fingerprint::of(&meta).same_file(expect) => {
            Ok(Found::Expected)
        }
        Ok(_) => Ok(Found::Other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Found::Missing),
        Err(e) => Err(e),
    }
}

pub fn fingerprint(path: &Path) -> io::Result<Fingerprint> {
    std::fs::symlink_metadata(path).map(|m| Fingerprint::of(&m))
}

/// Whether a folder on the way from `root` to `path` is a symbolic link or a file:
/// following it would leave the synced folder (or fail), so the path is left alone.
pub fn through_link(root: &Path, path: &RelPath) -> bool {
    let mut dir = root.to_path_buf();
    if path.parent().is_empty() {
        return false;
    }
    for part in path.parent().split('/') {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return true,
            // Missing: it will be made a real folder.
            Err(_) => return false,
        }
    }
    false
}

/// Renames `from` to `to`, refusing to replace anything at `to`
/// (`io::ErrorKind::AlreadyExists`); creates `to`'s folders.
pub fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    make_parent(to)?;
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in a path"))
        };
        let (f, t) = (c(from)?, c(to)?);
        // SAFETY: both are valid NUL-terminated paths; AT_FDCWD with absolute or
        // relative paths is what renameat2 expects.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                f.as_ptr(),
                libc::AT_FDCWD,
                t.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        // On a case-insensitive file system `a.txt` -> `A.txt` finds itself in the way.
        if e.raw_os_error() == Some(libc::EEXIST) && same_inode(from, to) {
            return std::fs::rename(from, to);
        }
        // File systems without RENAME_NOREPLACE: check, then rename.
        if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(e);
        }
    }
    if std::fs::symlink_metadata(to).is_ok() && !same_inode(from, to) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "another file is there",
        ));
    }
    std::fs::rename(from, to)
}

fn same_inode(a: &Path, b: &Path) -> bool {
    match (std::fs::symlink_metadata(a), std::fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => Fingerprint::of(&a).inode == Fingerprint::of(&b).inode,
        _ => false,
    }
}

/// Creates the folders above `path`. A file where a folder must be is reported as such.
pub fn make_parent(path: &Path) -> io::Result<()> {
    let Some(parent) = path.parent() else {
        return Ok(());
    };
    std::fs::create_dir_all(parent).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(20) {
            io::Error::new(
                e.kind(),
                format!("a file is where the folder {} must be", parent.display()),
            )
        } else {
            e
        }
    })
}

/// Makes a rename or a new file in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Removes the folders above `path` that are now empty, up to (not including) `root`.
pub fn prune_empty_parents(root: &Path, path: &RelPath) {
    let mut dir = PathBuf::from(path.parent());
    while !dir.as_os_str().is_empty() {
        if std::fs::remove_dir(root.join(&dir)).is_err() {
            break;
        }
        if !dir.pop() {
            break;
        }
    }
}

/// Words for a local failure, and whether it will pass by itself.
pub fn describe(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => "the disk is full".into(),
        Some(libc::EDQUOT) => "the disk quota is used up".into(),
        Some(libc::ENAMETOOLONG) => "the name is too long for this file system".into(),
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied".into(),
        Some(libc::EROFS) => "the file system is read-only".into(),
        Some(libc::EISDIR) => "a folder is where the file must be".into(),
        Some(libc::ENOTDIR) => "a file is where a folder must be".into(),
        Some(libc::EILSEQ) | Some(libc::EINVAL) => {
            "the name is not valid on this file system".into()
        }
        _ => e.to_string(),
    }
}
