//! The local tree: walks the folder (all of it, or the paths a watcher reported),
//! fingerprints every file, and hashes those whose fingerprint the base does not vouch
//! for, several at a time. A file that is changing is reported busy, not hashed half
//! written; a folder that cannot be read makes the files the base has under it busy, so
//! an unreadable folder never reads as deleted files.

pub mod hash;
pub mod rules;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use crate::paths::RelPath;
use crate::state::{State, StateError};

/// Why a scan could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    State(#[from] StateError),
    /// The folder itself cannot be read (gone, unmounted, no permission): nothing in it
    /// can be told apart from deleted, so nothing is synced.
    #[error("the folder {0} cannot be read ({1}); nothing was synced")]
    Root(String, std::io::Error),
}
use crate::tree::{BaseFile, FileId, Fingerprint, LocalFile};
use hash::{Hashed, hash_stable};
use rules::Rules;

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    pub files: HashMap<RelPath, LocalFile>,
    /// Paths to leave alone this pass (changing, or unreadable).
    pub busy: HashSet<RelPath>,
    /// Per path, why it cannot be synced.
    pub problems: Vec<(String, String)>,
    /// Base files whose fingerprint changed but not their bytes (a `touch`, a copy back).
    pub refreshed: Vec<(FileId, Fingerprint)>,
    /// Files being written (changed recently, or while they were read): worth another
    /// look soon, unlike files that cannot be read.
    pub changing: HashSet<RelPath>,
    /// Symbolic links left alone (not synced, and not a failure).
    pub links: usize,
}

/// How to scan.
pub struct Scanner<'a> {
    pub root: &'a Path,
    pub rules: &'a Rules,
    pub state: &'a State,
    pub base: &'a HashMap<FileId, BaseFile>,
    /// A file modified more recently than this is left for a later pass.
    pub settle: Duration,
    pub threads: usize,
    /// Rename files whose names are not in Unicode NFC (the form the server stores names
    /// in) to that form; off for a dry run.
    pub normalize_names: bool,
}

struct Found {
    path: RelPath,
    fingerprint: Fingerprint,
}

impl Scanner<'_> {
    /// Scans the whole folder.
    pub fn full(&self) -> Result<Scan, ScanError> {
        // A folder that cannot be listed must not read as empty.
        std::fs::read_dir(self.root)
            .map_err(|e| ScanError::Root(self.root.display().to_string(), e))?;
        let mut scan = Scan::default();
        let mut found = Vec::new();
        let mut unreadable = Vec::new();
        self.walk(self.root, &mut found, &mut unreadable, &mut scan);
        self.mark_unreadable(&unreadable, &mut scan);
        self.fill(found, &mut scan)?;
        Ok(scan)
    }

    /// Scans only `paths` (files or folders, present or not); everything else is taken
    /// to be as the base has it. A new file whose inode the base knows under a path not
    /// in `paths` brings that path in, so a rename split across two batches of events is
    /// still seen as one.
    pub fn paths(&self, paths: &HashSet<RelPath>) -> Result<Scan, ScanError> {
        std::fs::read_dir(self.root)
            .map_err(|e| ScanError::Root(self.root.display().to_string(), e))?;
        let mut scan = Scan::default();
        let mut found = Vec::new();
        let mut unreadable = Vec::new();
        let mut scope: Vec<RelPath> = paths
            .iter()
            .filter(|p| !self.rules.ignores(p, false))
            .cloned()
            .collect();
        scope.sort();
        scope.dedup();
        let by_inode: HashMap<u64, &BaseFile> = self
            .base
            .values()
            .filter(|b| b.local.inode != 0)
            .map(|b| (b.local.inode, b))
            .collect();
        let mut i = 0;
        while i < scope.len() {
            let path = scope[i].clone();
            i += 1;
            let local = path.to_local(self.root);
            // Under a symbolic link is outside the folder: as good as missing (the full
            // scan does not follow links either).
            if crate::exec::through_link(self.root, &path) {
                continue;
            }
            match std::fs::symlink_metadata(&local) {
                Ok(meta) if meta.is_dir() => {
                    self.walk(&local, &mut found, &mut unreadable, &mut scan)
                }
                Ok(meta) if meta.is_file() => {
                    let fingerprint = Fingerprint::of(&meta);
                    // A rename from a path outside the scope: bring that path in.
                    if let Some(b) = by_inode.get(&fingerprint.inode)
                        && b.path != path
                        && !scope.contains(&b.path)
                    {
                        scope.push(b.path.clone());
                    }
                    found.push(Found { path, fingerprint });
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    scan.problems.push((path.to_string(), e.to_string()));
                    unreadable.push(path.to_string());
                }
            }
        }
        // Outside the scope, the base stands.
        let in_scope = |p: &RelPath| scope.iter().any(|s| p.is_within(s.as_str()));
        for b in self.base.values() {
            if !in_scope(&b.path) {
                scan.files.insert(b.path.clone(), b.as_local());
            }
        }
        self.mark_unreadable(&unreadable, &mut scan);
        self.fill(found, &mut scan)?;
        Ok(scan)
    }

    fn walk(
        &self,
        dir: &Path,
        found: &mut Vec<Found>,
        unreadable: &mut Vec<String>,
        scan: &mut Scan,
    ) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                // Moved away while the scan ran: what the base has under it is not
                // deleted, only not seen this time.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    unreadable.push(self.relative(&dir));
                    continue;
                }
                Err(e) => {
                    let rel = self.relative(&dir);
                    scan.problems
                        .push((rel.clone(), format!("the folder cannot be read: {e}")));
                    unreadable.push(rel);
                    continue;
                }
            };
            for entry in entries {
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        let rel = self.relative(&dir);
                        scan.problems
                            .push((rel.clone(), format!("cannot be listed: {e}")));
                        unreadable.push(rel);
                        continue;
                    }
                };
                self.visit(entry.path(), &mut stack, found, unreadable, scan);
            }
        }
    }

    fn visit(
        &self,
        local: PathBuf,
        stack: &mut Vec<PathBuf>,
        found: &mut Vec<Found>,
        unreadable: &mut Vec<String>,
        scan: &mut Scan,
    ) {
        let path = match RelPath::from_local(self.root, &local) {
            Ok(path) => path,
            Err(why) => {
                scan.problems.push((self.relative(&local), why));
                return;
            }
        };
        // The server stores names in NFC; a name in another form (from a Mac, say) would
        // come back renamed. Give it that form here first.
        if !path.is_nfc() {
            let nfc = path.to_nfc();
            let target = nfc.to_local(self.root);
            let renamed = self.normalize_names && crate::exec::rename_new(&local, &target).is_ok();
            if !renamed {
                scan.problems.push((
                    path.to_string(),
                    format!(
                        "the name is not in Unicode NFC form, and {nfc} is taken (or this \
                         is a dry run); rename one of them"
                    ),
                ));
                return;
            }
            return self.visit(target, stack, found, unreadable, scan);
        }
        let meta = match std::fs::symlink_metadata(&local) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                scan.problems.push((path.to_string(), e.to_string()));
                unreadable.push(path.to_string());
                return;
            }
        };
        if self.rules.ignores(&path, meta.is_dir()) {
            return;
        }
        if meta.is_dir() {
            stack.push(local);
        } else if meta.is_file() {
            found.push(Found {
                path,
                fingerprint: Fingerprint::of(&meta),
            });
        } else if meta.file_type().is_symlink() {
            scan.links += 1;
        }
    }

    fn relative(&self, local: &Path) -> String {
        local
            .strip_prefix(self.root)
            .unwrap_or(local)
            .to_string_lossy()
            .into_owned()
    }

    fn mark_unreadable(&self, unreadable: &[String], scan: &mut Scan) {
        for dir in unreadable {
            for b in self.base.values() {
                if b.path.is_within(dir) {
                    scan.busy.insert(b.path.clone());
                }
            }
        }
    }

    /// Gives each found file its hash: the base's when the base vouches for it, a cached
    /// one, or a fresh one (several files at a time).
    fn fill(&self, found: Vec<Found>, scan: &mut Scan) -> Result<(), ScanError> {
        let by_path: HashMap<&RelPath, &BaseFile> =
            self.base.values().map(|b| (&b.path, b)).collect();
        let mut to_hash = Vec::new();
        for f in found {
            if let Some(b) = by_path.get(&f.path)
                && b.vouches_for(&f.fingerprint)
            {
                scan.files.insert(f.path.clone(), file(f, b.sha256.clone()));
            } else if let Some(sha) = self.state.cached_hash(&f.path, &f.fingerprint)? {
                scan.files.insert(f.path.clone(), file(f, sha));
            } else {
                to_hash.push(f);
            }
        }
        let queue = Mutex::new(to_hash);
        let results = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..self.threads.max(1) {
                s.spawn(|| {
                    loop {
                        let Some(f) = queue.lock().expect("queue").pop() else {
                            break;
                        };
                        let local = f.path.to_local(self.root);
                        let hashed = hash_stable(&local, &f.fingerprint, self.settle);
                        results.lock().expect("results").push((f, hashed));
                    }
                });
            }
        });
        let mut changing_inodes = HashSet::new();
        for (f, hashed) in results.into_inner().expect("results") {
            match hashed {
                Hashed::Done(sha) => {
                    match by_path.get(&f.path) {
                        Some(b) if b.sha256 == sha => {
                            scan.refreshed.push((b.id.clone(), f.fingerprint))
                        }
                        _ => self.state.cache_hash(&f.path, &f.fingerprint, &sha)?,
                    }
                    scan.files.insert(f.path.clone(), file(f, sha));
                }
                Hashed::Busy => {
                    changing_inodes.insert(f.fingerprint.inode);
                    scan.changing.insert(f.path.clone());
                    scan.busy.insert(f.path);
                }
                Hashed::Failed(e) => {
                    scan.problems
                        .push((f.path.to_string(), format!("cannot be read: {e}")));
                    scan.busy.insert(f.path);
                }
            }
        }
        // A file being written that the base knows under another name was moved there:
        // its old name is not deleted while it settles.
        changing_inodes.remove(&0);
        for b in self.base.values() {
            if changing_inodes.contains(&b.local.inode) {
                scan.busy.insert(b.path.clone());
            }
        }
        Ok(())
    }
}

fn file(f: Found, sha256: String) -> LocalFile {
    LocalFile {
        path: f.path,
        fingerprint: f.fingerprint,
        sha256,
    }
}
