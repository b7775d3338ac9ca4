//! What is never synced: `.filesync/` (the state), a few files operating systems and
//! editors leave behind, and what `.filesyncignore` at the top of the folder lists
//! (gitignore syntax; `!pattern` re-includes what a built-in rule leaves out).

use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use sha2::{Digest, Sha256};

use crate::paths::RelPath;

/// The folder the state lives in, at the top of the synced folder.
pub const STATE_DIR: &str = ".filesync";

/// The ignore file, at the top of the synced folder.
pub const IGNORE_FILE: &str = ".filesyncignore";

/// Left out unless `.filesyncignore` says otherwise: Finder's and Explorer's metadata,
/// office suites' lock files, editors' swap files.
const BUILT_IN: &[&str] = &[
    ".DS_Store",
    "Thumbs.db",
    "desktop.ini",
    ".~lock.*#",
    "~$*",
    ".*.sw[px]",
];

pub struct Rules {
    root: PathBuf,
    matcher: Gitignore,
    /// The SHA-256 of `.filesyncignore` (empty when there is none).
    pub digest: String,
}

impl Rules {
    /// The rules of the folder at `root`; a problem with the ignore file is returned
    /// beside rules built from what could be read.
    pub fn load(root: &Path) -> (Self, Option<String>) {
        let mut builder = GitignoreBuilder::new(root);
        for line in BUILT_IN {
            builder.add_line(None, line).expect("built-in rules parse");
        }
        let file = root.join(IGNORE_FILE);
        let mut problem = None;
        let digest = match std::fs::read(&file) {
            Ok(bytes) => {
                if let Some(e) = builder.add(&file) {
                    problem = Some(format!("{IGNORE_FILE}: {e}"));
                }
                hex::encode(Sha256::digest(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                problem = Some(format!("{IGNORE_FILE} cannot be read: {e}"));
                String::new()
            }
        };
        let matcher = builder.build().unwrap_or_else(|e| {
            problem = Some(format!("{IGNORE_FILE}: {e}"));
            Gitignore::empty()
        });
        let rules = Self {
            root: root.to_owned(),
            matcher,
            digest,
        };
        (rules, problem)
    }

    /// Whether `path` (a file, or a folder when `is_dir`) is left alone.
    pub fn ignores(&self, path: &RelPath, is_dir: bool) -> bool {
        if path.is_within(STATE_DIR) {
            return true;
        }
        self.matcher
            .matched_path_or_any_parents(path.to_local(&self.root), is_dir)
            .is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_built_ins_and_the_ignore_file_are_honoured() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(IGNORE_FILE),
            "build/\n*.log\n!keep.log\n!Thumbs.db\n",
        )
        .unwrap();
        let (rules, problem) = Rules::load(dir.path());
        assert!(problem.is_none());
        let ignored = |p: &str| rules.ignores(&RelPath::parse(p).unwrap(), false);
        assert!(ignored(".filesync/state.db"));
        assert!(ignored("a/.DS_Store"));
        assert!(ignored("build/out/x.o"));
        assert!(ignored("a/b.log"));
        assert!(!ignored("keep.log"));
        assert!(!ignored("Thumbs.db"), "a built-in rule can be overridden");
        assert!(!ignored("src/main.rs"));
        assert!(!ignored(IGNORE_FILE), "the ignore file itself is synced");
        assert_eq!(rules.digest.len(), 64);
    }
}
